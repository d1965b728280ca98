"""The ingest service end to end against the real broker, Redis and artifact store.

20,000 events, about 5% of them bad in every way validation knows, go through
`python -m services.ingest`; then a batch whose income distribution has shifted. Every
record must end up exactly once: as one row of one sealed version, or as one record on
the dead-letter topic with its original bytes and the right reason code.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa

from driftloop.v1.events_pb2 import DataEvent, DatasetVersion, RejectedEvent
from services.common.artifacts import ArtifactStore
from services.common.datasets.schema import load_schema
from services.common.feature_store import OnlineFeatureStore, feature_columns, latest_per_key
from services.common.redis_client import sync_redis
from services.common.settings import Settings
from services.ingest.seal.version import VersionWriter
from tests.integration.harness import (
    INGEST,
    ServiceProcess,
    isolated_settings,
    wait_committed_to_end,
    wait_for,
)
from tests.integration.ingest.events_gen import (
    BAD_KINDS,
    create_topics,
    make_stream,
    publish,
    read_topic,
    sealed_rows,
)

CREDIT_SCHEMA = Path(__file__).resolve().parents[3] / "deploy" / "datasets" / "credit.yaml"
N_EVENTS = 20_000
N_SHIFTED = 1_500
SERVICE_ENV = {
    "DRIFTLOOP_INGEST_SEAL_MAX_ROWS": "3000",
    "DRIFTLOOP_INGEST_SEAL_MAX_AGE_MS": "1000",
    "DRIFTLOOP_INGEST_POLL_MAX_RECORDS": "1000",
}


def _row_count(root: str) -> int:
    return sealed_rows(root)[1].num_rows


def _check_online_features(settings: Settings, table: pa.Table) -> None:
    latest = latest_per_key(table).slice(0, 200)
    keys = latest.column("entity_key").to_pylist()
    client = sync_redis(settings)
    try:
        store = OnlineFeatureStore(client)
        found = store.get("credit", keys, kinds=load_schema(CREDIT_SCHEMA))
        times = [store.event_time_ms("credit", k) for k in keys]
    finally:
        client.close()
    same = 0
    for i, (stored, stored_ms) in enumerate(zip(found, times, strict=True)):
        ours = latest.column("event_time_ms")[i].as_py()
        assert stored is not None and stored_ms is not None and stored_ms >= ours, keys[i]
        if stored_ms == ours:
            same += 1
            expected = {
                name: v if isinstance(v, str) else float(v)
                for name in feature_columns(latest)
                if (v := latest.column(name)[i].as_py()) is not None
            }
            assert stored == expected, keys[i]
    assert same > 0


async def test_every_event_is_versioned_or_dead_lettered_exactly_once(
    stack: Settings, tmp_path: Path
) -> None:
    settings, env = isolated_settings(stack, tmp_path)
    await create_topics(settings)
    uid = uuid.uuid4().hex[:8]
    items = make_stream(N_EVENTS, bad_fraction=0.05, prefix=uid)
    published = await publish(settings, settings.topics.data_events, items)
    good = {p.item.event_id: p for p in published if p.item.expected is None}
    bad = {(p.partition, p.offset): p for p in published if p.item.expected}
    assert {p.item.expected for p in bad.values()} == set(BAD_KINDS)
    assert 0.04 < len(bad) / N_EVENTS < 0.06

    service = ServiceProcess(INGEST, {**env, **SERVICE_ENV}, tmp_path / "ingest.log")
    service.start()
    root = settings.artifact_root
    await wait_for(lambda: _row_count(root) >= len(good), 120, "all good rows sealed", service)

    # A batch whose income is 4x the reference: sealed on its own, marked suspect.
    shifted = make_stream(N_SHIFTED, bad_fraction=0.0, prefix=f"{uid}s", seed=2, income_scale=4)
    await publish(settings, settings.topics.data_events, shifted)
    total_good = len(good) + N_SHIFTED
    await wait_for(lambda: _row_count(root) >= total_good, 60, "shifted rows sealed", service)
    # Offsets are committed to the end (after the last version is announced), so a
    # restart has nothing to do. Waited for before the stop: a stop commits nothing more.
    group = env["DRIFTLOOP_INGEST_GROUP_ID"]
    await wait_committed_to_end(settings, group, service)
    assert service.signal(signal.SIGTERM) == 0, service.log_tail()

    # Every good record is in exactly one version, with its values.
    manifests, table = sealed_rows(root)
    ids = table.column("event_id").to_pylist()
    assert len(ids) == len(set(ids)) == total_good
    assert set(ids) == set(good) | {it.event_id for it in shifted}
    assert sum(m.row_count for m in manifests) == total_good
    by_id = dict(zip(ids, table.column("loan_amount").to_pylist(), strict=True))
    regions = dict(zip(ids, table.column("region").to_pylist(), strict=True))
    for event_id, p in good.items():
        event = DataEvent.FromString(p.item.value)
        assert by_id[event_id] == event.numeric["loan_amount"]
        assert regions[event_id] == event.categorical["region"]
    # Sealed by size once a poll takes pending rows to 3,000 (so < 3,000 + 1,000 rows: a
    # seal still running when the next reaches the size is waited for), the tail by age:
    # >= 5 versions for ~19,000 rows, then the shifted batch on its own.
    assert len(manifests) >= 6 and all(m.row_count < 4_000 for m in manifests)
    assert [m.parent_version_id for m in manifests[1:]] == [m.version_id for m in manifests[:-1]]

    # The shifted batch is its own version, suspect, with the feature named.
    last = manifests[-1]
    storage = VersionWriter(ArtifactStore(root))
    last_ids = storage.read_table(last, ["event_id"]).column("event_id").to_pylist()
    assert set(last_ids) == {it.event_id for it in shifted}
    assert last.row_count == N_SHIFTED and last.status == "suspect", last.status_reasons
    assert any(r.startswith("psi(annual_income)") for r in last.status_reasons)
    assert all(m.status == "ok" for m in manifests[:-1]), [m.status_reasons for m in manifests]

    # The online feature store holds each entity's latest accepted row (or a newer one that
    # another test of the session wrote for the same key).
    _check_online_features(settings, table)

    # Every bad record is dead-lettered once, with its bytes, position and reason.
    rejected = await read_topic(settings, settings.topics.data_rejected, RejectedEvent)
    seen = Counter((r.source_partition, r.source_offset) for _, _, r in rejected)
    assert set(seen) == set(bad) and max(seen.values()) == 1
    for _, _, message in rejected:
        assert isinstance(message, RejectedEvent)
        p = bad[(message.source_partition, message.source_offset)]
        assert message.source_topic == settings.topics.data_events
        assert message.original_value == p.item.value
        assert message.original_key == p.item.key.encode()
        assert {r.code for r in message.reasons} == {p.item.expected}, (p.item, message.reasons)
        assert message.service == "driftloop-ingest"
    assert len(ids) + len(rejected) == N_EVENTS + N_SHIFTED

    # Each version was announced, pointing at its manifest in the store.
    announced = await read_topic(settings, settings.topics.datasets_versions, DatasetVersion)
    versions = {m.version_id: m for _, _, m in announced}
    assert set(versions) == {m.version_id for m in manifests}
    for manifest in manifests:
        message = versions[manifest.version_id]
        assert isinstance(message, DatasetVersion)
        assert message.row_count == manifest.row_count and message.status == manifest.status
        assert Path(message.manifest_uri.removeprefix("file://")).is_file()
        assert Path(message.storage_uri.removeprefix("file://")).is_file()

    # A restart finds nothing to do: one new event after it is up is all it consumes
    # (waiting for that event's version shows it was consuming, without a fixed sleep).
    again = ServiceProcess(INGEST, {**env, **SERVICE_ENV}, tmp_path / "ingest-again.log")
    again.start()
    started = lambda: "ingest.started" in again.log_text()  # noqa: E731
    await wait_for(started, 60, "restart", again)
    sentinel = make_stream(1, bad_fraction=0.0, prefix=f"{uid}x", seed=3)
    await publish(settings, settings.topics.data_events, sentinel)
    await wait_for(lambda: _row_count(root) > total_good, 60, "the new event sealed", again)
    assert again.signal(signal.SIGTERM) == 0
    stopped = json.loads(again.log_path.read_text().strip().splitlines()[-1])
    assert stopped["event"] == "ingest.stopped" and stopped["consumed"] == 1, stopped
    assert len(sealed_rows(root)[0]) == len(manifests) + 1
