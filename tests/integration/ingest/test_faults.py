"""Crash the ingest process (SIGKILL) mid-stream, restart it, and show that the rows
across all versions are exactly the accepted input, each once; again with Redis flushed
between (and during) the runs, so dedup has to come from the sealed versions.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from pathlib import Path

import pytest

from driftloop.v1.events_pb2 import DataEvent, DatasetVersion, RejectedEvent
from services.common.redis_client import sync_redis
from services.common.settings import Settings
from tests.integration.harness import (
    INGEST,
    ServiceProcess,
    isolated_settings,
    wait_committed_to_end,
    wait_for,
)
from tests.integration.ingest.events_gen import (
    create_topics,
    disjoint_source_ranges,
    make_stream,
    publish,
    read_topic,
    sealed_rows,
)

N_EVENTS = 12_000
SERVICE_ENV = {
    "DRIFTLOOP_INGEST_SEAL_MAX_ROWS": "800",
    "DRIFTLOOP_INGEST_SEAL_MAX_AGE_MS": "800",
    "DRIFTLOOP_INGEST_POLL_MAX_RECORDS": "200",
}
KINDS = ["duplicate_event_id", "out_of_range", "decode_error", "duplicate_event_id"]


def _versions_dir(root: str) -> Path:
    return Path(root.removeprefix("file://")) / "datasets" / "credit" / "versions"


def _manifest_count(root: str) -> int:
    return len(list(_versions_dir(root).glob("*/manifest.json")))


def _mid_seal(root: str) -> bool:
    """A version whose Parquet is written but whose manifest is not (yet)."""
    return any(
        not (d / "manifest.json").exists() for d in _versions_dir(root).glob("*/") if d.is_dir()
    )


async def _kill_mid_seal(service: ServiceProcess, root: str, timeout_s: float = 20) -> str:
    """SIGKILL while a seal is between its data and its manifest, if we catch one;
    else right after the next manifest appears (before its offsets are committed)."""
    start = _manifest_count(root)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and service.alive():
        if _mid_seal(root):
            service.signal(signal.SIGKILL)
            return "mid-seal"
        if _manifest_count(root) > start + 1:
            service.signal(signal.SIGKILL)
            return "after-seal"
        await asyncio.sleep(0.001)
    raise AssertionError(f"no seal to interrupt in {timeout_s}s\n{service.log_tail()}")


async def _run_with_crashes(stack: Settings, tmp: Path, flush_redis: bool) -> None:
    settings, env = isolated_settings(stack, tmp)
    await create_topics(settings)
    items = make_stream(N_EVENTS, bad_fraction=0.05, kinds=KINDS, prefix=uuid.uuid4().hex[:8])
    published = await publish(settings, settings.topics.data_events, items)
    good = {p.item.event_id: p for p in published if p.item.expected is None}
    bad = {(p.partition, p.offset) for p in published if p.item.expected}
    root, redis = settings.artifact_root, sync_redis(settings)
    log = tmp / "ingest.log"
    moments = []

    # 1: killed right after the first version is sealed.
    service = ServiceProcess(INGEST, {**env, **SERVICE_ENV}, log)
    service.start()
    await wait_for(lambda: _manifest_count(root) >= 1, 60, "first version", service)
    service.signal(signal.SIGKILL)
    moments.append("after first seal")
    if flush_redis:
        redis.flushdb()

    # 2: killed during a later seal, once a few more versions are sealed.
    service.start()
    await wait_for(lambda: _manifest_count(root) >= 4, 60, "more versions", service)
    moments.append(await _kill_mid_seal(service, root))

    # 3: Redis flushed while it runs; killed as soon as its next version appears.
    starts = log.read_text().count('"ingest.started"')
    service.start()
    restarted = lambda: log.read_text().count('"ingest.started"') > starts  # noqa: E731
    await wait_for(restarted, 60, "restart", service)
    if flush_redis:  # as soon as it is up: its first claims find no ready marker
        redis.flushdb()
    sealed = _manifest_count(root)
    await wait_for(lambda: _manifest_count(root) > sealed, 60, "a new version", service)
    service.signal(signal.SIGKILL)
    moments.append("right after a seal")

    # Then it runs to the end.
    service.start()
    n_good = len(good)
    await wait_for(lambda: sealed_rows(root)[1].num_rows >= n_good, 120, "all rows", service)
    await wait_committed_to_end(settings, env["DRIFTLOOP_INGEST_GROUP_ID"], service)
    assert service.signal(signal.SIGTERM) == 0
    stopped = json.loads(log.read_text().strip().splitlines()[-1])
    assert stopped["event"] == "ingest.stopped", stopped
    print(f"kills: {moments}; last run: {stopped}")

    # Exactly the accepted input, each row once, with its values.
    manifests, table = sealed_rows(root)
    ids = table.column("event_id").to_pylist()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} rows are in two versions"
    assert set(ids) == set(good)
    amounts = dict(zip(ids, table.column("loan_amount").to_pylist(), strict=True))
    for event_id, p in good.items():
        assert amounts[event_id] == DataEvent.FromString(p.item.value).numeric["loan_amount"]

    # One chain of versions whose source ranges never overlap on a partition.
    assert [m.parent_version_id for m in manifests[1:]] == [m.version_id for m in manifests[:-1]]
    disjoint_source_ranges(manifests)

    # At least once on the side topics: every version announced, every bad record dead-lettered.
    announced = await read_topic(settings, settings.topics.datasets_versions, DatasetVersion)
    assert {m.version_id for _, _, m in announced} >= {m.version_id for m in manifests}
    rejected = await read_topic(settings, settings.topics.data_rejected, RejectedEvent)
    dead = {(m.source_partition, m.source_offset) for _, _, m in rejected}
    assert dead == bad
    if flush_redis:
        rebuilt = [
            json.loads(line) for line in log.read_text().splitlines() if "dedup.rebuilt" in line
        ]
        assert any(r["sealed_ids"] > 0 for r in rebuilt), rebuilt  # rebuilt from the versions


@pytest.mark.slow
async def test_sigkill_mid_stream_loses_and_duplicates_nothing(
    stack: Settings, tmp_path: Path
) -> None:
    await _run_with_crashes(stack, tmp_path, flush_redis=False)


@pytest.mark.slow
async def test_sigkill_with_redis_flushed_still_duplicates_nothing(
    stack: Settings, tmp_path: Path
) -> None:
    await _run_with_crashes(stack, tmp_path, flush_redis=True)
