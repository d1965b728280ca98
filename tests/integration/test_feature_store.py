"""The online feature store against the real redis-server of the local stack."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from services.common.artifacts import ArtifactStore
from services.common.datasets.schema import DatasetSchema
from services.common.feature_store import (
    EVENT_TIME_FIELD,
    FeatureKind,
    FeatureValues,
    OnlineFeatureReader,
    OnlineFeatureStore,
)
from services.common.redis_client import async_redis, sync_redis
from services.common.settings import Settings, load_settings
from services.ingest.pipeline import update_online_features
from services.ingest.seal.version import VersionWriter, seal_version
from tests.conftest import run_cli

KINDS: dict[str, FeatureKind] = {"amount": "numeric", "age": "numeric", "region": "categorical"}


def _schema(name: str) -> DatasetSchema:
    return DatasetSchema.model_validate(
        {
            "name": name,
            "entity_key": "customer_id",
            "event_time": {"max_age_s": 3600},
            "numeric": {"amount": {}, "age": {"dtype": "int"}},
            "categorical": {"region": {"domain": ["north", "south"]}},
            "label": {"kind": "binary"},
        }
    )


def _table(rows: list[tuple[str, str, int, float | None, int | None, str | None]]) -> pa.Table:
    ids, keys, times, amounts, ages, regions = (list(c) for c in zip(*rows, strict=True))
    return pa.table(
        {
            "event_id": pa.array(ids, pa.string()),
            "entity_key": pa.array(keys, pa.string()),
            "event_time_ms": pa.array(times, pa.int64()),
            "age": pa.array(ages, pa.int64()),
            "amount": pa.array(amounts, pa.float64()),
            "region": pa.array(regions, pa.string()),
            "label": pa.array([1.0] * len(rows), pa.float64()),
        }
    )


@pytest.fixture
def client(stack: Settings) -> Iterator[redis.Redis]:
    c = sync_redis(stack)
    yield c
    c.close()


@pytest.fixture
def dataset() -> str:
    return f"fs-{uuid.uuid4().hex[:10]}"


FIRST = _table(
    [
        ("e1", "a", 1_000, 10.5, 30, "north"),
        ("e2", "b", 1_000, 20.0, 40, "south"),
        ("e3", "a", 2_000, 11.25, 31, None),  # a's latest: region null -> absent
        ("e4", "c", 5_000, None, 50, "north"),
    ]
)
SECOND = _table(
    [
        ("e5", "a", 1_500, 99.0, 99, "south"),  # older than a's stored row: ignored
        ("e6", "b", 3_000, 21.0, None, "north"),  # newer: replaces b
        ("e7", "c", 4_999, 0.0, 0, "south"),  # older: ignored
        ("e8", "d", 10, 1e-7, 1, "south"),  # new key
    ]
)


def _hashes(client: redis.Redis, store: OnlineFeatureStore, dataset: str) -> dict[bytes, dict]:
    keys = sorted(client.scan_iter(match=store.key(dataset, "*")))
    return {k: client.hgetall(k) for k in keys}


def test_out_of_order_batches_never_move_a_key_backwards(client: redis.Redis, dataset: str) -> None:
    store = OnlineFeatureStore(client, schemas={dataset: _schema(dataset)})
    assert store.write_latest(dataset, FIRST) == 3
    assert store.write_latest(dataset, SECOND) == 2  # b and d only
    assert store.write_latest(dataset, SECOND) == 2  # a replay rewrites the same rows

    a, b, c, d, unknown = store.get(dataset, ["a", "b", "c", "d", "zz"])
    assert a == {"amount": 11.25, "age": 31.0}
    assert b == {"amount": 21.0, "region": "north"}
    assert c == {"age": 50.0, "region": "north"}
    assert d == {"amount": 1e-7, "age": 1.0, "region": "south"}
    assert unknown is None
    assert isinstance(d["amount"], float) and isinstance(d["region"], str)
    assert store.event_time_ms(dataset, "a") == 2_000
    assert store.event_time_ms(dataset, "b") == 3_000
    # An explicit kind map works without a schema; unknown fields are left out.
    bare = OnlineFeatureStore(client)
    assert bare.get(dataset, ["b"], kinds={"amount": "numeric"}) == [{"amount": 21.0}]
    with pytest.raises(KeyError):
        bare.get(dataset, ["b"])
    store.delete_dataset(dataset)


def test_get_fields_reads_only_the_named_fields(client: redis.Redis, dataset: str) -> None:
    store = OnlineFeatureStore(client)
    store.write_latest(dataset, FIRST)
    kinds: dict[str, FeatureKind] = {"region": "categorical", EVENT_TIME_FIELD: "numeric"}
    a, b, c, unknown = store.get_fields(dataset, ["a", "b", "c", "zz"], kinds)
    # a's region is null: the row is still there (its event time), without the feature
    assert a == {EVENT_TIME_FIELD: 2_000.0}
    assert b == {"region": "south", EVENT_TIME_FIELD: 1_000.0}
    assert unknown is None
    # the same values as the whole-hash read, restricted to the named fields
    full = store.get(dataset, ["a", "b", "c"], kinds=KINDS)
    for got, whole in zip(store.get_fields(dataset, ["a", "b", "c"], KINDS), full, strict=True):
        assert got == whole
    assert c is not None and c["region"] == "north"
    store.delete_dataset(dataset)


def test_the_async_reader_reads_what_the_store_reads(
    stack: Settings, client: redis.Redis, dataset: str
) -> None:
    """The router's reader (asyncio Redis, on its event loop) returns the same values as
    the store's synchronous `get_fields`, absent keys included."""
    store = OnlineFeatureStore(client)
    store.write_latest(dataset, FIRST)
    keys = ["a", "b", "c", "zz"]
    kinds: dict[str, FeatureKind] = {**KINDS, EVENT_TIME_FIELD: "numeric"}

    async def read() -> list[FeatureValues | None]:
        aclient = async_redis(stack)
        try:
            return await OnlineFeatureReader(aclient).get_fields(dataset, keys, kinds)
        finally:
            await aclient.aclose()

    got = asyncio.run(read())
    assert got == store.get_fields(dataset, keys, kinds)
    assert got[3] is None and got[1] is not None and got[1]["region"] == "south"
    store.delete_dataset(dataset)


def test_many_keys_span_chunks(client: redis.Redis, dataset: str) -> None:
    n = 2_500
    rows = [(f"e{i}", f"k{i}", 1_000 + i, float(i), i, "north") for i in range(n)]
    store = OnlineFeatureStore(client)
    assert store.write_latest(dataset, _table(rows)) == n
    got = store.get(dataset, [f"k{i}" for i in range(0, n, 499)], kinds=KINDS)
    assert [g and g["amount"] for g in got] == [float(i) for i in range(0, n, 499)]
    assert store.delete_dataset(dataset) == n


def test_rebuild_restores_exactly_the_same_hashes(client: redis.Redis, dataset: str) -> None:
    store = OnlineFeatureStore(client)
    store.write_latest(dataset, SECOND)  # the live path saw the batches out of order
    store.write_latest(dataset, FIRST)
    before = _hashes(client, store, dataset)
    assert len(before) == 4
    assert store.delete_dataset(dataset) == 4
    assert _hashes(client, store, dataset) == {}
    # A stray key is removed by the rebuild; another dataset's keys are untouched.
    client.hset(store.key(dataset, "stray"), mapping={"amount": "1.0"})
    other = f"{dataset}-other"
    store.write_latest(other, FIRST)
    assert store.rebuild(dataset, [FIRST, SECOND]) == 4
    assert _hashes(client, store, dataset) == before
    assert len(_hashes(client, store, other)) == 3
    store.delete_dataset(dataset)
    store.delete_dataset(other)


def _version(keys: range, time_ms: int, amount: float) -> pa.Table:
    return _table([(f"v{time_ms}-{i}", f"k{i}", time_ms, amount, i, "north") for i in keys])


def test_a_reader_never_sees_a_gap_during_rebuild(client: redis.Redis, dataset: str) -> None:
    """The live store missed two versions (an outage); a rebuild restores them while a
    reader polls every key: each key it reads holds its old row or its new one, never
    nothing. The versions are handed over one by one, each only after the reader has
    finished a full poll that started after the previous step."""
    n = 3_000
    keys = [f"k{i}" for i in range(n)]
    versions = [
        _version(range(n), 1_000, 1.0),
        _version(range(0, n, 2), 2_000, 2.0),
        _version(range(1, n, 2), 3_000, 3.0),
    ]
    store = OnlineFeatureStore(client)
    store.write_latest(dataset, versions[0])  # what the live path wrote before the outage
    for i in range(50):  # keys no sealed version holds: they may go, and must
        client.hset(store.key(dataset, f"stray{i}"), mapping={"amount": "1.0"})
    allowed = {k: {1.0, 2.0 if i % 2 == 0 else 3.0} for i, k in enumerate(keys)}

    polls, seen, missing, wrong = [0], set[float](), set[str](), list[tuple[str, object]]()
    progress, stop = threading.Condition(), threading.Event()

    def read() -> None:
        reader = OnlineFeatureStore(client)
        while not stop.is_set():
            for key, got in zip(keys, reader.get(dataset, keys, kinds=KINDS), strict=True):
                if got is None:
                    missing.add(key)
                elif got["amount"] not in allowed[key]:
                    wrong.append((key, got))
                else:
                    seen.add(float(got["amount"]))
            with progress:
                polls[0] += 1
                progress.notify_all()

    def after_a_fresh_poll() -> None:
        with progress:
            target = polls[0] + 2  # the one in flight may have started before this step
            assert progress.wait_for(lambda: polls[0] >= target, timeout=120), "reader stuck"

    def sealed() -> Iterator[pa.Table]:
        for version in versions:
            after_a_fresh_poll()
            yield version
        after_a_fresh_poll()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        assert store.rebuild(dataset, sealed()) == n
        after_a_fresh_poll()
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not missing, f"{len(missing)} keys read as missing, e.g. {sorted(missing)[:5]}"
    assert not wrong, wrong[:5]
    assert seen == {1.0, 2.0, 3.0}  # the reader saw the old rows and both new ones
    got = store.get(dataset, keys, kinds=KINDS)
    assert [g and g["amount"] for g in got] == [2.0 if i % 2 == 0 else 3.0 for i in range(n)]
    assert len(_hashes(client, store, dataset)) == n  # the strays are gone
    store.delete_dataset(dataset)


def test_rebuild_keeps_rows_written_live_meanwhile(client: redis.Redis, dataset: str) -> None:
    """A stored row newer than the sealed ones (ingest wrote it, not sealed yet) stays;
    of the keys no version holds, only those nobody wrote during the rebuild go."""
    store = OnlineFeatureStore(client)
    store.write_latest(dataset, FIRST)  # a, b, c
    store.write_latest(
        dataset, _table([("x1", "x", 100, 1.0, 1, None), ("y1", "y", 100, 1.0, 1, None)])
    )
    live = _table(
        [
            ("e9", "a", 9_000, 9.0, 9, "south"),  # newer than any sealed row of a
            ("x2", "x", 200, 2.0, 2, None),  # x: not sealed, but rewritten meanwhile
            ("f1", "fresh", 9_000, 1.0, 1, "north"),  # created meanwhile
        ]
    )

    def sealed() -> Iterator[pa.Table]:
        yield SECOND  # a, b, c, d
        store.write_latest(dataset, live)

    assert store.rebuild(dataset, sealed()) == 4
    a, c, x, y, fresh = store.get(dataset, ["a", "c", "x", "y", "fresh"], kinds=KINDS)
    assert a == {"amount": 9.0, "age": 9.0, "region": "south"}
    assert c == {"age": 50.0, "region": "north"}  # FIRST's c is newer than SECOND's
    assert x == {"amount": 2.0, "age": 2.0}
    assert y is None  # unchanged and in no version: stale
    assert fresh == {"amount": 1.0, "age": 1.0, "region": "north"}
    store.delete_dataset(dataset)


async def test_redis_outage_in_the_pipeline_hook_is_logged_not_raised(
    stack: Settings,
    dataset: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from services.stack.processes import free_port

    down = load_settings(home=stack.home, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    dead = sync_redis(down, connect_timeout_s=0.5, timeout_s=0.5)
    try:
        assert await update_online_features(OnlineFeatureStore(dead), dataset, FIRST) is None
    finally:
        dead.close()
    # structlog prints directly until configure_logging() routes it through stdlib logging
    # (which an earlier test in the session may have done): look in both places.
    captured = capsys.readouterr()
    assert "features.write_failed" in captured.out + captured.err + caplog.text


def test_cli_rebuilds_from_the_sealed_versions(
    stack: Settings, stack_home: Path, client: redis.Redis, dataset: str, tmp_path: Path
) -> None:
    schema = _schema(dataset)
    root = f"file://{tmp_path / 'artifacts'}"
    storage = VersionWriter(ArtifactStore(root))
    parent = None
    for i, table in enumerate([FIRST, SECOND]):
        typed = table.cast(schema.arrow_schema())
        parent = seal_version(
            storage,
            schema,
            typed,
            parent=parent,
            source_offsets=[],
            created_at_ms=1_000 + i,
        ).manifest
    store = OnlineFeatureStore(client)
    store.write_latest(dataset, SECOND)
    store.write_latest(dataset, FIRST)
    before = _hashes(client, store, dataset)
    store.delete_dataset(dataset)
    proc = run_cli("datasets", "rebuild-features", dataset, "--root", root, home=stack_home)
    assert "4 entity keys from 2 version(s)" in proc.stdout, proc.stdout
    assert _hashes(client, store, dataset) == before
    store.delete_dataset(dataset)
