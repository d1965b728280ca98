"""Decoded `DataEvent`s of one dataset as columns: the only per-record loop of validation.

The protobuf maps are flattened into (row, key, value) arrays in one pass and then
scattered into one column per declared feature with array indexing, so the cost grows
with the number of map entries, not with entries times declared features. Copying each
map into a dict first is deliberate: iterating a upb map directly is about twice as slow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from driftloop.v1.events_pb2 import DataEvent
from services.ingest.schema import DatasetSchema

__all__ = ["EventColumns", "columns_from_events"]


@dataclass(frozen=True)
class EventColumns:
    """One dataset's events as columns; absent map entries are nulls / `present=False`."""

    n: int
    event_id: pa.Array  # string
    entity_key: pa.Array  # string
    event_time_ms: np.ndarray  # int64
    label: np.ndarray  # float64, meaningful where has_label
    has_label: np.ndarray  # bool
    numeric: dict[str, np.ndarray]  # declared numeric feature -> float64 (NaN when absent)
    numeric_present: dict[str, np.ndarray]  # -> bool
    categorical: dict[str, pa.Array]  # declared categorical feature -> string with nulls
    # Map entries whose key is not declared in the map they came in: (row, key) pairs.
    stray_numeric: tuple[np.ndarray, np.ndarray]  # (int64 rows, object keys)
    stray_categorical: tuple[np.ndarray, np.ndarray]


def _locate(keys: list[str], lengths: list[int], names: list[str]) -> tuple[np.ndarray, ...]:
    """Per flattened map entry: its position in `names` (-1 if undeclared) and its row."""
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    found = pc.index_in(pa.array(keys, pa.string()), value_set=pa.array(names, pa.string()))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), rows


def _strays(keys: list[str], rows: np.ndarray, hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    misses = np.flatnonzero(~hit)
    return rows[misses], np.array([keys[i] for i in misses], dtype=object)


def columns_from_events(schema: DatasetSchema, events: Sequence[DataEvent]) -> EventColumns:
    """Columns of one dataset's events; the one place that loops over records."""
    n = len(events)
    num_keys: list[str] = []
    num_values: list[float] = []
    num_lengths: list[int] = []
    cat_keys: list[str] = []
    cat_values: list[str] = []
    cat_lengths: list[int] = []
    for event in events:
        numeric = dict(event.numeric)
        num_keys.extend(numeric)
        num_values.extend(numeric.values())
        num_lengths.append(len(numeric))
        categorical = dict(event.categorical)
        cat_keys.extend(categorical)
        cat_values.extend(categorical.values())
        cat_lengths.append(len(categorical))
    num_names, cat_names = sorted(schema.numeric), sorted(schema.categorical)

    pos, rows = _locate(num_keys, num_lengths, num_names)
    hit = pos >= 0
    matrix = np.full((len(num_names), n), np.nan)
    present = np.zeros((len(num_names), n), dtype=bool)
    matrix[pos[hit], rows[hit]] = np.asarray(num_values, dtype=np.float64)[hit]
    present[pos[hit], rows[hit]] = True
    stray_numeric = _strays(num_keys, rows, hit)

    pos, rows = _locate(cat_keys, cat_lengths, cat_names)
    hit = pos >= 0
    where = np.full((len(cat_names), n), -1, dtype=np.int64)
    where[pos[hit], rows[hit]] = np.flatnonzero(hit)  # index into the flat values
    strings = pa.array(cat_values, pa.string())
    return EventColumns(
        n=n,
        event_id=pa.array([e.event_id for e in events], pa.string()),
        entity_key=pa.array([e.entity_key for e in events], pa.string()),
        event_time_ms=np.fromiter((e.event_time_ms for e in events), np.int64, count=n),
        label=np.fromiter((e.label for e in events), np.float64, count=n),
        has_label=np.fromiter((e.HasField("label") for e in events), bool, count=n),
        numeric={name: matrix[j] for j, name in enumerate(num_names)},
        numeric_present={name: present[j] for j, name in enumerate(num_names)},
        categorical={
            name: pc.take(strings, pa.array(where[j], mask=where[j] < 0))
            for j, name in enumerate(cat_names)
        },
        stray_numeric=stray_numeric,
        stray_categorical=_strays(cat_keys, rows, hit),
    )
