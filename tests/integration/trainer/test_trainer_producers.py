"""The trainer keeps deciding whatever a producer writes to its trigger topics (issue 11):
an lz4-compressed and a transactional `DatasetVersion` are decided, an aborted one never
is, a tombstone and bytes that are no DatasetVersion are logged and passed over, and a
batch the trainer cannot decode (zstd while the service lacks the codec) pauses only its
partition, named by `/readyz` (503), while the decisions go on."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import uuid
from pathlib import Path

from driftloop.v1 import events_pb2 as pb
from services.common.kafka import create_producer, ensure_topics
from services.common.kafka_stuck import RedisStuckLedger
from services.common.redis_client import sync_redis
from services.common.settings import Settings
from tests.integration.harness import ServiceProcess, isolated_settings
from tests.integration.kcat import kcat_produce, kcat_tombstone
from tests.integration.trainer.loop_harness import get_json, model_events, write_spec


def _version(tag: str) -> pb.DatasetVersion:
    return pb.DatasetVersion(
        dataset="credit",
        version_id=f"{tag}-{uuid.uuid4().hex}",
        row_count=10,
        status="ok",
        created_at_ms=int(time.time() * 1000),
    )


def _ready_status(port: int) -> int:
    try:
        return get_json(port, "/readyz")[0]
    except urllib.error.URLError:  # not listening yet
        return 0


def _decided(events: list[pb.ModelEvent]) -> set[str]:
    return {
        e.attributes["version_id"]
        for e in events
        if e.type == pb.MODEL_EVENT_TYPE_TRAINING_SKIPPED and "version_id" in e.attributes
    }


async def test_trainer_decides_compressed_and_transactional_versions_and_survives_the_rest(
    stack: Settings, tmp_path: Path
) -> None:
    settings, env = isolated_settings(stack, tmp_path)
    t = settings.topics
    # Two partitions on datasets.versions: one to poison, one that must keep flowing.
    await ensure_topics(settings, [t.datasets_versions], partitions=2)
    await ensure_topics(settings, [t.drift_events, t.experiments_events, t.models_events], 1)
    write_spec(tmp_path, "credit-producers", min_new_rows=10**9)  # every version: skipped
    port = env["DRIFTLOOP_TRAINER_HEALTH_PORT"]
    trainer = ServiceProcess(
        ["-m", "services.trainer"],
        {**env, "DRIFTLOOP_KAFKA_DISABLED_CODECS": "zstd"},
        tmp_path / "trainer.log",
    ).start()
    try:
        deadline = time.monotonic() + 180
        while await asyncio.to_thread(_ready_status, int(port)) != 200:
            assert trainer.alive() and time.monotonic() < deadline, trainer.log_tail()
            await asyncio.sleep(0.5)

        lz4, committed, aborted, after = (_version(x) for x in ("lz4", "tx", "aborted", "after"))
        async with create_producer(settings, compression_type="lz4") as producer:
            await producer.send_and_wait(t.datasets_versions, lz4, key="credit", partition=0)
        tx = create_producer(settings, transactional_id=f"versions-{uuid.uuid4().hex[:6]}")
        async with tx:
            for version, commit in ((committed, True), (aborted, False)):
                await tx.raw.begin_transaction()
                await tx.send_and_wait(t.datasets_versions, version, key="credit", partition=0)
                if commit:
                    await tx.raw.commit_transaction()
                else:
                    await tx.raw.abort_transaction()
        bootstrap = settings.kafka_bootstrap
        kcat_tombstone(bootstrap, t.datasets_versions, "credit")
        kcat_produce(bootstrap, t.datasets_versions, [b"\x0a\xff garbage"], key="x", partition=0)
        poison = _version("zstd")
        # librdkafka sends a batch uncompressed when compression would not shrink it
        poison.status_reasons.append("compressible " * 200)
        kcat_produce(
            bootstrap, t.datasets_versions, [poison.SerializeToString()], codec="zstd", partition=1
        )
        async with create_producer(settings) as producer:
            await producer.send_and_wait(t.datasets_versions, after, key="credit", partition=0)

        want = {lz4.version_id, committed.version_id, after.version_id}
        deadline = time.monotonic() + 60
        while not want <= (decided := _decided(await model_events(settings, idle_s=0.5))):
            assert trainer.alive() and time.monotonic() < deadline, trainer.log_tail()
        status, body = await asyncio.to_thread(get_json, int(port), "/readyz")
        assert trainer.alive(), trainer.log_tail()
    finally:
        trainer.stop()
        # the session's Redis is shared: leave no stuck partition behind for other tests
        ledger = RedisStuckLedger(sync_redis(settings))
        ledger.clear(env["DRIFTLOOP_TRAINER_GROUP_ID"], t.datasets_versions, 1)
    assert aborted.version_id not in decided and poison.version_id not in decided
    assert status == 503 and f"{t.datasets_versions}/1 stuck" in body["detail"], body
    log = (tmp_path / "trainer.log").read_text()
    assert log.count('"trigger.undecodable"') >= 2  # the tombstone and the garbage
