"""`latest_per_key`: one row per entity, the latest, whatever the row order; and the
store's write path behind its circuit breaker, over a fake Redis (no network)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest
import redis
from structlog.testing import capture_logs

from services.common.circuit_breaker import BreakerState
from services.common.feature_store import OnlineFeatureStore, feature_columns, latest_per_key


def _table(rows: list[tuple[str, str, int, float | None, str | None]]) -> pa.Table:
    ids, keys, times, amounts, regions = (list(c) for c in zip(*rows, strict=True))
    return pa.table(
        {
            "event_id": pa.array(ids, pa.string()),
            "entity_key": pa.array(keys, pa.string()),
            "event_time_ms": pa.array(times, pa.int64()),
            "amount": pa.array(amounts, pa.float64()),
            "region": pa.array(regions, pa.string()),
            "label": pa.array([None] * len(rows), pa.float64()),
        }
    )


def test_keeps_the_row_with_the_greatest_event_time_per_key() -> None:
    table = _table(
        [
            ("e1", "a", 100, 1.0, "north"),
            ("e2", "b", 300, 2.0, None),
            ("e3", "a", 200, 3.0, "south"),
            ("e4", "a", 150, 4.0, "east"),
            ("e5", "b", 100, 5.0, "west"),
        ]
    )
    latest = latest_per_key(table)
    assert latest.column("entity_key").to_pylist() == ["a", "b"]
    assert latest.column("event_id").to_pylist() == ["e3", "e2"]
    assert latest.column("amount").to_pylist() == [3.0, 2.0]
    assert latest.column("region").to_pylist() == ["south", None]
    assert latest.schema == table.schema


def test_ties_and_row_order_do_not_change_the_answer() -> None:
    rows = [("e1", "a", 100, 1.0, "x"), ("e9", "a", 100, 9.0, "y"), ("e5", "a", 50, 5.0, "z")]
    rng = np.random.default_rng(0)
    for _ in range(5):
        shuffled = [rows[i] for i in rng.permutation(len(rows))]
        assert latest_per_key(_table(shuffled)).column("event_id").to_pylist() == ["e9"]


def test_empty_table_and_feature_columns() -> None:
    empty = _table([("e1", "a", 1, 1.0, "x")]).slice(0, 0)
    assert latest_per_key(empty).num_rows == 0
    assert feature_columns(empty) == ["amount", "region"]


def test_many_keys_vectorised() -> None:
    n = 10_000
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 500, n)
    times = rng.permutation(n)  # distinct
    table = pa.table(
        {
            "event_id": pa.array([f"e{i}" for i in range(n)]),
            "entity_key": pa.array([f"k{k}" for k in keys]),
            "event_time_ms": pa.array(times, pa.int64()),
            "v": pa.array(times.astype(np.float64)),
        }
    )
    latest = latest_per_key(table)
    expected = {f"k{k}": int(times[keys == k].max()) for k in np.unique(keys)}
    got = dict(
        zip(
            latest.column("entity_key").to_pylist(),
            latest.column("event_time_ms").to_pylist(),
            strict=True,
        )
    )
    assert got == expected


class _FakeRedis:
    """Just enough of `redis.Redis` for `write_latest`: counts script calls; while `down`
    every call fails the way an unreachable server does."""

    def __init__(self) -> None:
        self.calls, self.down = 0, True

    def register_script(self, _: str) -> Callable[..., int]:
        def run(keys: list[str], args: list[object]) -> int:
            self.calls += 1
            if self.down:
                raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Refused.")
            return len(keys)

        return run


def _rows(n_keys: int) -> pa.Table:
    return _table([(f"e{i}", f"k{i}", 1_000 + i, float(i), "north") for i in range(n_keys)])


def test_an_open_breaker_skips_writes_without_calling_redis_and_counts_them() -> None:
    now_s = [0.0]
    fake = _FakeRedis()
    store = OnlineFeatureStore(fake, retry_after_s=5.0, clock_s=lambda: now_s[0])  # type: ignore[arg-type]
    with capture_logs() as logs:
        with pytest.raises(redis.ConnectionError):
            store.write_latest("ds", _rows(3))  # the failure opens the breaker
        assert fake.calls == 1 and store.breaker.state is BreakerState.OPEN
        skipped = [store.write_latest("ds", _rows(4)) for _ in range(10)]
        assert skipped == [None] * 10 and fake.calls == 1  # not one more call
        assert store.write_latest("ds", _rows(1).slice(0, 0)) == 0  # nothing to write is not a skip
        now_s[0] = 5.0
        with pytest.raises(redis.ConnectionError):
            store.write_latest("other", _rows(2))  # the trial fails: open again
        assert fake.calls == 2 and store.breaker.state is BreakerState.OPEN
        assert store.write_latest("ds", _rows(1)) is None and fake.calls == 2
        fake.down, now_s[0] = False, 10.0
        assert store.write_latest("ds", _rows(5)) == 5  # the trial succeeds: closed
        assert store.write_latest("ds", _rows(6)) == 6
    assert fake.calls == 4 and store.breaker.state is BreakerState.CLOSED
    stats = store.stats
    assert (stats.skipped_writes, stats.skipped_keys) == (11, 41)
    assert (stats.failed_writes, stats.failed_keys) == (2, 5)
    assert stats.written_keys == 11 and stats.outage_keys == {}
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [
        ("features.breaker_opened", "warning"),
        ("features.breaker_half_open", "debug"),
        ("features.breaker_reopened", "warning"),
        ("features.breaker_half_open", "debug"),
        ("features.breaker_closed", "warning"),
    ]
    assert "ConnectionError" in logs[0]["error"]
    assert logs[2]["unwritten"] == {"ds": 43, "other": 2}
    assert logs[-1]["unwritten"] == {"ds": 44, "other": 2}  # what a rebuild must restore
