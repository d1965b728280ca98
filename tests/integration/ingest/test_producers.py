"""Every standard producer's records reach ingest correctly (issue 11), on the real broker:

* librdkafka's `kcat` with each codec (none, gzip, snappy, lz4, zstd), a null key, a
  tombstone and bytes that are no DataEvent: every good record sealed exactly once, every
  bad one dead-lettered with its own reason;
* a transactional aiokafka producer that commits one transaction and aborts another: only
  the committed rows are ever sealed; the aborted ones are neither sealed nor dead-lettered;
* a poison batch (lz4 while the service cannot decode lz4: the codec is taken out of
  aiokafka in the service process) in front of good records on the same partition, and
  good records on the others: the service stays up, the other partitions are sealed, the
  stuck partition is reported (log line, /readyz, `driftloop kafka stuck`, `driftloop stack
  status`), and after the documented fix (restart with the codec) it resumes with nothing
  lost or duplicated.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaProducer

from driftloop.v1.events_pb2 import DataEvent, RejectedEvent
from services.common.settings import Settings
from tests.conftest import run_cli
from tests.integration.harness import (
    INGEST,
    ServiceProcess,
    free_port,
    isolated_settings,
    wait_committed_to_end,
    wait_for,
)
from tests.integration.ingest.events_gen import create_topics, credit_event, read_topic, sealed_rows
from tests.integration.kcat import kcat_produce, kcat_tombstone
from tests.integration.trainer.loop_harness import get_json

SERVICE_ENV = {"DRIFTLOOP_INGEST_SEAL_MAX_AGE_MS": "400", "DRIFTLOOP_INGEST_POLL_TIMEOUT_MS": "200"}
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
# compressible, so that librdkafka does compress it (it sends a batch plain otherwise)
_JUNK = b"\xff\xfe not a DataEvent " * 50


def _events(prefix: str, n: int, seed: int) -> list[DataEvent]:
    rng, now = random.Random(seed), int(time.time() * 1000)
    return [credit_event(rng, f"{prefix}-{i}", now) for i in range(n)]


def _sealed_ids(root: str) -> Counter[str]:
    return Counter(sealed_rows(root)[1].column("event_id").to_pylist())


async def _rejected(settings: Settings) -> list[RejectedEvent]:
    rows = await read_topic(settings, settings.topics.data_rejected, RejectedEvent, idle_s=1.0)
    return [m for _, _, m in rows]  # type: ignore[misc]


async def test_kcat_every_codec_null_key_tombstone_and_garbage(
    stack: Settings, tmp_path: Path
) -> None:
    settings, env = isolated_settings(stack, tmp_path)
    await create_topics(settings)
    topic, bootstrap = settings.topics.data_events, settings.kafka_bootstrap
    run = uuid.uuid4().hex[:6]
    good: list[str] = []
    for n, codec in enumerate(CODECS):
        events = _events(f"{run}-{codec}", 20, seed=n)
        good += [e.event_id for e in events]
        key = None if codec == "none" else f"key-{codec}"  # "none" also has null keys
        kcat_produce(
            bootstrap, topic, [e.SerializeToString() for e in events], codec=codec, key=key
        )
    kcat_tombstone(bootstrap, topic, "deleted-entity")
    kcat_produce(bootstrap, topic, [_JUNK], codec="lz4", key="junk")

    service = ServiceProcess(INGEST, {**env, **SERVICE_ENV}, tmp_path / "ingest.log")
    service.start()
    try:
        root = settings.artifact_root
        await wait_for(lambda: sum(_sealed_ids(root).values()) >= len(good), 90, "rows", service)
        rejected = await _rejected(settings)
        deadline = time.monotonic() + 30
        while len(rejected) < 2 and time.monotonic() < deadline:
            rejected = await _rejected(settings)
        assert service.alive(), service.log_tail()
    finally:
        service.signal(signal.SIGTERM)
    sealed = _sealed_ids(settings.artifact_root)
    assert sealed == Counter(good), "every good record sealed exactly once"
    reasons = sorted((r.original_key, r.reasons[0].code) for r in rejected)
    assert reasons == [(b"deleted-entity", "tombstone"), (b"junk", "decode_error")], reasons
    junk = next(r for r in rejected if r.original_key == b"junk")
    assert junk.original_value == _JUNK  # decompressed, as sent


async def test_transactional_producer_only_committed_rows_are_sealed(
    stack: Settings, tmp_path: Path
) -> None:
    settings, env = isolated_settings(stack, tmp_path)
    await create_topics(settings)
    topic, run = settings.topics.data_events, uuid.uuid4().hex[:6]
    committed = _events(f"{run}-committed", 5, seed=1)
    aborted = _events(f"{run}-aborted", 7, seed=2)
    later = _events(f"{run}-later", 3, seed=3)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, transactional_id=f"app-{run}"
    )
    await producer.start()
    try:
        last_committed: dict[int, int] = {}  # partition -> offset of its last committed record
        for batch, commit in ((committed, True), (aborted, False), (later, True)):
            await producer.begin_transaction()
            for e in batch:
                meta = await producer.send_and_wait(
                    topic, e.SerializeToString(), key=e.entity_key.encode()
                )
                if commit:
                    last_committed[meta.partition] = meta.offset
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()

    service = ServiceProcess(INGEST, {**env, **SERVICE_ENV}, tmp_path / "ingest.log")
    service.start()
    try:
        want = Counter(e.event_id for e in committed + later)
        root = settings.artifact_root
        await wait_for(lambda: sum(_sealed_ids(root).values()) >= len(want), 90, "rows", service)
        # every record up to the last committed one is handled (sealed or dead-lettered:
        # ingest commits only then), so an aborted row sealed late would show up here
        group = env["DRIFTLOOP_INGEST_GROUP_ID"]
        await wait_committed_to_end(settings, group, service, through=last_committed)
        sealed = _sealed_ids(root)
        rejected = await _rejected(settings)
    finally:
        service.signal(signal.SIGTERM)
    assert sealed == want
    assert not rejected, [(r.event_id, r.reasons[0].code) for r in rejected]


async def test_poison_batch_stops_only_its_partition_and_resumes_after_the_fix(
    stack: Settings, tmp_path: Path
) -> None:
    settings, env = isolated_settings(stack, tmp_path)
    await create_topics(settings)
    topic, bootstrap, run = (
        settings.topics.data_events,
        settings.kafka_bootstrap,
        uuid.uuid4().hex[:6],
    )
    group = env["DRIFTLOOP_INGEST_GROUP_ID"]
    before = _events(f"{run}-p0-before", 10, seed=1)
    poison = _events(f"{run}-p0-lz4", 10, seed=2)
    after = _events(f"{run}-p0-after", 10, seed=3)
    others = _events(f"{run}-p1", 10, seed=4) + _events(f"{run}-p2", 10, seed=5)
    values = lambda evs: [e.SerializeToString() for e in evs]  # noqa: E731
    kcat_produce(bootstrap, topic, values(before), partition=0)
    kcat_produce(bootstrap, topic, values(poison), codec="lz4", partition=0)
    kcat_produce(bootstrap, topic, values(after), partition=0)
    kcat_produce(bootstrap, topic, values(others[:10]), codec="gzip", partition=1)
    kcat_produce(bootstrap, topic, values(others[10:]), codec="zstd", partition=2)

    port = free_port()
    broken_env = {
        **env,
        **SERVICE_ENV,
        "DRIFTLOOP_KAFKA_DISABLED_CODECS": "lz4",  # as on a machine without cramjam
        "DRIFTLOOP_INGEST_HTTP_PORT": str(port),
    }
    log = tmp_path / "ingest.log"
    service = ServiceProcess([*INGEST, "--http"], broken_env, log)
    service.start()
    root = settings.artifact_root
    try:
        want_now = Counter(e.event_id for e in before + others)
        await wait_for(
            lambda: sum(_sealed_ids(root).values()) >= len(want_now), 90, "rows", service
        )
        await wait_for(lambda: "kafka.partition_stuck" in log.read_text(), 30, "stuck", service)
        assert _sealed_ids(root) == want_now, (
            "the records in front of the bad batch and the other partitions"
        )
        [line] = [
            json.loads(x) for x in log.read_text().splitlines() if "kafka.partition_stuck" in x
        ]
        assert (line["topic"], line["partition"]) == (topic, 0)
        assert line["offset"] == 10 and "lz4" in line["cause"], line
        status, body = await asyncio.to_thread(get_json, port, "/readyz")
        assert status == 503 and body["stuck_partitions"] == [f"{topic}/0"], body
        listed = run_cli("kafka", "stuck", home=stack.home, check=False)
        assert listed.returncode == 1 and f"{topic}/0" in listed.stdout, listed.stdout
        stack_status = run_cli("stack", "status", home=stack.home, check=False)
        assert "stuck partitions" in stack_status.stdout and group in stack_status.stdout
        assert service.alive()
    finally:
        service.signal(signal.SIGTERM)

    # The documented fix: start the service where the codec is available.
    fixed = ServiceProcess(INGEST, {**env, **SERVICE_ENV}, log)
    fixed.start()
    try:
        want = Counter(e.event_id for e in before + poison + after + others)
        await wait_for(lambda: sum(_sealed_ids(root).values()) >= len(want), 90, "rows", fixed)
        await wait_for(lambda: not _stuck_listing(stack, group), 30, "clear")
        await wait_committed_to_end(settings, group, fixed)  # everything read is handled
        assert _sealed_ids(root) == want, "nothing lost or duplicated"
        assert not await _rejected(settings)
    finally:
        fixed.signal(signal.SIGTERM)


def _stuck_listing(stack: Settings, group: str) -> str:
    """What `driftloop kafka stuck` says about `group` ("" when none of it is stuck)."""
    proc = run_cli("kafka", "stuck", home=stack.home, check=False)
    return "\n".join(line for line in proc.stdout.splitlines() if group in line)


async def test_an_operator_skips_a_poison_batch_and_it_is_dead_lettered(
    stack: Settings, tmp_path: Path
) -> None:
    settings, env = isolated_settings(stack, tmp_path)
    await create_topics(settings)
    topic, bootstrap = settings.topics.data_events, settings.kafka_bootstrap
    run, group = uuid.uuid4().hex[:6], env["DRIFTLOOP_INGEST_GROUP_ID"]
    poison = _events(f"{run}-lz4", 5, seed=1)
    after = _events(f"{run}-after", 5, seed=2)
    kcat_produce(
        bootstrap, topic, [e.SerializeToString() for e in poison], codec="lz4", partition=1
    )
    kcat_produce(bootstrap, topic, [e.SerializeToString() for e in after], partition=1)
    log = tmp_path / "ingest.log"
    broken = {**env, **SERVICE_ENV, "DRIFTLOOP_KAFKA_DISABLED_CODECS": "lz4"}
    service = ServiceProcess(INGEST, broken, log)
    service.start()
    root = settings.artifact_root
    try:
        await wait_for(lambda: "kafka.partition_stuck" in log.read_text(), 60, "stuck", service)
        answer = run_cli("kafka", "seek", topic, "1", "--group", group, "--skip", home=stack.home)
        assert "skip" in answer.stdout
        want = Counter(e.event_id for e in after)
        await wait_for(lambda: sum(_sealed_ids(root).values()) >= len(want), 60, "rows", service)
        await wait_for(lambda: not _stuck_listing(stack, group), 30, "cleared")
        assert _sealed_ids(root) == want
        [dead] = await _rejected(settings)
    finally:
        service.signal(signal.SIGTERM)
    assert (dead.source_topic, dead.source_partition, dead.source_offset) == (topic, 1, 0)
    assert [r.code for r in dead.reasons] == ["batch_undecodable"]
    assert "0..4" in dead.reasons[0].message and "lz4" in dead.reasons[0].message
    assert '"kafka.partition_skipped"' in log.read_text()
