"""Consumers read every producer (issue 11), the pure parts: one security factory for every
client, read_committed by default, and locating the batch aiokafka cannot decode."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import READ_COMMITTED, PartitionRecords
from aiokafka.errors import UnsupportedCodecError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from services.common import kafka_fetch
from services.common.kafka import create_consumer
from services.common.kafka_security import client_options, describe, faust_credentials
from services.common.kafka_stuck import MemoryStuckLedger, Resolution, StuckPartition
from services.common.settings import SettingsError, load_settings, masked_url

_LZ4 = 3


def _batch(base_offset: int, n: int, codec: int = 0) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i in range(n):
        builder.append(i, timestamp=None, key=b"k", value=b"value " * 20, headers=[])
    data = bytearray(builder.build())
    data[0:8] = base_offset.to_bytes(8, "big")  # the broker assigns base offsets
    return bytes(data)


async def test_settings_default_to_plaintext_and_read_committed(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    assert client_options(settings) == {"security_protocol": "PLAINTEXT"}
    consumer = create_consumer(settings, "t", group_id="g")
    assert consumer.raw._isolation_level == "read_committed"
    other = load_settings(home=tmp_path, kafka_isolation_level="read_uncommitted")
    assert create_consumer(other, "t", group_id="g").raw._isolation_level == "read_uncommitted"


def test_sasl_ssl_options_read_the_password_file_and_never_print_it(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret-value\n")
    settings = load_settings(
        home=tmp_path,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="driftloop",
        kafka_sasl_password_file=secret,
    )
    options = client_options(settings)
    assert options["sasl_plain_password"] == "s3cret-value"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512" and options["ssl_context"] is not None
    assert "s3cret" not in describe(settings) and "s3cret" not in repr(settings)
    credentials = faust_credentials(settings)
    assert credentials.protocol.value == "SASL_SSL" and credentials.password == "s3cret-value"
    assert faust_credentials(load_settings(home=tmp_path)) is None


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "SASL_MECHANISM"),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "u",
            },
            "SASL_PASSWORD",
        ),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"}, "CAFILE"),
    ],
)
def test_incomplete_security_settings_say_what_is_missing(
    tmp_path: Path, overrides: dict[str, str], names: str
) -> None:
    with pytest.raises(SettingsError, match=names):
        client_options(load_settings(home=tmp_path, **overrides))


def test_failed_batch_names_the_partition_and_span_of_an_undecodable_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiokafka import codec

    tp = TopicPartition("data.events", 2)
    raw = _batch(40, 3) + _batch(43, 5, codec=_LZ4)
    monkeypatch.setattr(codec, "has_lz4", lambda: False)  # as without cramjam
    records = PartitionRecords(tp, MemoryRecords(raw), [], 40, None, None, True, READ_COMMITTED)
    got = []
    with pytest.raises(UnsupportedCodecError) as caught:
        for record in records:
            got.append(record.offset)
    assert got == [40, 41, 42]  # the good batch in front is readable
    where = kafka_fetch.failed_batch(caught.value)
    assert where is not None
    assert (where.tp, where.offset, where.next_offset) == (tp, 43, 48)


def test_failed_batch_is_none_for_errors_that_are_not_decoding() -> None:
    try:
        raise ConnectionError("broker went away")
    except ConnectionError as exc:
        assert kafka_fetch.failed_batch(exc) is None


def test_stuck_partition_says_how_to_resume() -> None:
    stuck = StuckPartition("g", "data.events", 1, 10, 20, 10, "UnsupportedCodecError: lz4", 0, "s")
    text = stuck.describe()
    assert "data.events/1" in text and "10..19" in text and "--retry" in text and "--skip" in text
    assert StuckPartition.from_json(stuck.to_json()) == stuck


def test_urls_printed_never_show_a_password() -> None:
    assert masked_url("rediss://:pw@cache:6380/0") == "rediss://:***@cache:6380/0"
    assert masked_url("https://ops:pw@ch:8443") == "https://ops:***@ch:8443"
    assert masked_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    with pytest.raises(SettingsError) as caught:
        load_settings(redis_url="http://user:hunter2@x:1")
    assert "hunter2" not in str(caught.value)


class _Consumer:
    """Stands in for AIOKafkaConsumer over in-memory partitions of real record batches,
    decoded by aiokafka's own PartitionRecords (so a bad batch raises from aiokafka's own
    frame, as with a broker). Like aiokafka, a partition drained before another one raises
    has its position moved and its records lost with the exception."""

    def __init__(self, logs: dict[TopicPartition, list[tuple[int, int, bytes]]]) -> None:
        self.logs, self.pos = logs, dict.fromkeys(logs, 0)  # (base offset, count, batch)
        self._paused: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return set(self.logs)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    async def position(self, tp: TopicPartition) -> int:
        return self.pos[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.pos[tp] = offset

    def pause(self, *tps: TopicPartition) -> None:
        self._paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused -= set(tps)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[object]]:
        out: dict[TopicPartition, list[object]] = {}
        for tp in sorted(partitions or self.logs, key=lambda p: -p.partition):
            if tp in self._paused:
                continue
            # as a broker: from the batch holding the fetch position on
            data = b"".join(b for base, n, b in self.logs[tp] if base + n > self.pos[tp])
            records = PartitionRecords(
                tp, MemoryRecords(data), [], self.pos[tp], None, None, True, READ_COMMITTED
            )
            got = []
            for record in records:
                if record.offset >= self.pos[tp]:
                    got.append(record)
                if max_records is not None and len(got) >= max_records:
                    break
            if got:
                self.pos[tp] = got[-1].offset + 1
                out[tp] = got
        return out


def _offsets(records: dict[TopicPartition, list[object]]) -> dict[int, list[int]]:
    return {tp.partition: [r.offset for r in recs] for tp, recs in records.items()}  # type: ignore[attr-defined]


async def test_guarded_fetcher_pauses_the_bad_partition_and_resumes_on_retry_or_skip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiokafka import codec
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    bad, good = TopicPartition("t", 0), TopicPartition("t", 1)
    logs = {
        bad: [(0, 3, _batch(0, 3)), (3, 5, _batch(3, 5, codec=_LZ4)), (8, 2, _batch(8, 2))],
        good: [(0, 5, _batch(0, 5))],
    }
    monkeypatch.setattr(codec, "has_lz4", lambda: False)
    reader = InMemoryMetricReader()
    now = [0.0]
    ledger = MemoryStuckLedger()
    skipped: list[StuckPartition] = []

    async def dead_letter(stuck: StuckPartition) -> None:
        skipped.append(stuck)

    consumer = _Consumer(logs)
    fetcher = kafka_fetch.GuardedFetcher(
        consumer,  # type: ignore[arg-type]
        group="g",
        service="s",
        ledger=ledger,
        retry_s=60,
        on_skip=dead_letter,
        meter=MeterProvider(metric_readers=[reader]).get_meter("test"),
        clock=lambda: now[0],
    )
    # Partition 1 is drained first, then partition 0 raises: 1 is read again, 0 hands
    # over what is in front of the bad batch and is paused.
    assert _offsets(await fetcher.getmany()) == {0: [0, 1, 2]}
    assert _offsets(await fetcher.getmany()) == {1: [0, 1, 2, 3, 4]}
    assert _offsets(await fetcher.getmany()) == {}
    [stuck] = fetcher.stuck
    assert (stuck.name, stuck.offset, stuck.next_offset, stuck.position) == ("t/0", 3, 8, 3)
    assert "lz4" in stuck.cause and ledger.recorded("g") == [stuck]
    [metric] = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
    assert metric.name == "driftloop.kafka.stuck_batches"
    assert metric.data.data_points[0].value == 1  # type: ignore[union-attr]

    # The periodic retry meets the same batch: still stuck, not counted twice.
    now[0] += 61
    assert _offsets(await fetcher.getmany()) == {}
    assert _offsets(await fetcher.getmany()) == {} and fetcher.stuck
    assert (
        reader.get_metrics_data()
        .resource_metrics[0]
        .scope_metrics[0]
        .metrics[0]
        .data.data_points[0]
        .value
        == 1
    )  # type: ignore[union-attr]

    # An operator skips it: the span is dead-lettered, then the records after it come.
    ledger.request("g", "t", 0, Resolution("skip", 3, 0))
    now[0] += 2
    assert _offsets(await fetcher.getmany()) == {0: [8, 9]}
    assert [s.offset for s in skipped] == [3] and not fetcher.stuck and not ledger.recorded("g")


async def test_guarded_fetcher_retry_after_the_fix_reads_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiokafka import codec

    tp = TopicPartition("t", 0)
    consumer = _Consumer({tp: [(0, 4, _batch(0, 4, codec=_LZ4)), (4, 1, _batch(4, 1))]})
    has_lz4 = codec.has_lz4
    monkeypatch.setattr(codec, "has_lz4", lambda: False)
    ledger, now = MemoryStuckLedger(), [0.0]
    fetcher = kafka_fetch.GuardedFetcher(
        consumer,
        group="g",
        service="s",
        ledger=ledger,
        clock=lambda: now[0],  # type: ignore[arg-type]
    )
    assert _offsets(await fetcher.getmany()) == {} and fetcher.stuck
    monkeypatch.setattr(codec, "has_lz4", has_lz4)  # the fix
    ledger.request("g", "t", 0, Resolution("retry", 0, 0))
    now[0] += 2
    assert _offsets(await fetcher.getmany()) == {0: [0, 1, 2, 3, 4]}
    assert not fetcher.stuck and not ledger.recorded("g")
