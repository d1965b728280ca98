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
from services.common.kafka_stuck import StuckPartition
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
