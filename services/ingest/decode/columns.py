"""Decoded records as flat columns (`FlatEvents`), and one dataset's view of them as
columns per declared feature (`EventColumns`), the input of every validation rule.

`FlatEvents` holds the scalar fields of every record and its map entries as flat
(record, key, value) arrays, in message order. It is built either from raw payloads
without any per-record Python (`services.ingest.decode.wire`) or from decoded `DataEvent`s
(`flat_from_events`, for callers that already hold messages); both give equal columns.
`columns_from_flat` then scatters the entries into one column per declared feature with
array indexing, so the cost grows with the number of map entries, not with entries
times declared features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from driftloop.v1.events_pb2 import DataEvent
from services.common.datasets.schema import DatasetSchema

__all__ = [
    "EventColumns",
    "FlatEvents",
    "MapEntries",
    "columns_from_events",
    "columns_from_flat",
    "flat_from_events",
]


@dataclass(frozen=True)
class MapEntries:
    """The entries of one map field over a batch; a record's entries in message order."""

    rows: np.ndarray  # int64: the record each entry belongs to
    keys: pa.Array  # string
    values: np.ndarray | pa.Array  # float64 (numeric map) or string (categorical map)

    def take(self, mask: np.ndarray, rows: np.ndarray) -> MapEntries:
        """The entries where `mask`, renumbered to `rows` (aligned with the kept ones)."""
        values = (
            self.values[mask]
            if isinstance(self.values, np.ndarray)
            else self.values.filter(pa.array(mask))
        )
        return MapEntries(rows, self.keys.filter(pa.array(mask)), values)


@dataclass(frozen=True)
class FlatEvents:
    """A batch of records as columns. A record that is not a `DataEvent` has an entry in
    `errors` (index -> why) and default values everywhere else."""

    n: int
    dataset: pa.Array  # string ("" when unset)
    event_id: pa.Array
    entity_key: pa.Array
    event_time_ms: np.ndarray  # int64
    label: np.ndarray  # float64, meaningful where has_label
    has_label: np.ndarray  # bool
    numeric: MapEntries
    categorical: MapEntries
    errors: Mapping[int, str] = field(default_factory=dict)

    def take(self, indices: np.ndarray) -> FlatEvents:
        """The records at `indices` (increasing), renumbered 0..len-1."""
        local = np.full(self.n, -1, dtype=np.int64)
        local[indices] = np.arange(indices.size)
        picked = pa.array(indices, pa.int64())
        maps = []
        for entries in (self.numeric, self.categorical):
            renumbered = local[entries.rows]
            keep = renumbered >= 0
            maps.append(entries.take(keep, renumbered[keep]))
        return FlatEvents(
            n=int(indices.size),
            dataset=self.dataset.take(picked),
            event_id=self.event_id.take(picked),
            entity_key=self.entity_key.take(picked),
            event_time_ms=self.event_time_ms[indices],
            label=self.label[indices],
            has_label=self.has_label[indices],
            numeric=maps[0],
            categorical=maps[1],
            errors={int(local[i]): e for i, e in self.errors.items() if local[i] >= 0},
        )


def flat_from_events(events: Sequence[DataEvent | None]) -> FlatEvents:
    """`FlatEvents` of decoded messages (None: a record that is not one; give its error
    in the result's `errors` yourself). Copying each map into a dict first is deliberate:
    iterating a upb map directly is about twice as slow."""
    present = [e if e is not None else DataEvent() for e in events]
    n = len(present)
    num_keys: list[str] = []
    num_values: list[float] = []
    num_lengths: list[int] = []
    cat_keys: list[str] = []
    cat_values: list[str] = []
    cat_lengths: list[int] = []
    for event in present:
        numeric = dict(event.numeric)
        num_keys.extend(numeric)
        num_values.extend(numeric.values())
        num_lengths.append(len(numeric))
        categorical = dict(event.categorical)
        cat_keys.extend(categorical)
        cat_values.extend(categorical.values())
        cat_lengths.append(len(categorical))
    record = np.arange(n, dtype=np.int64)
    return FlatEvents(
        n=n,
        dataset=pa.array([e.dataset for e in present], pa.string()),
        event_id=pa.array([e.event_id for e in present], pa.string()),
        entity_key=pa.array([e.entity_key for e in present], pa.string()),
        event_time_ms=np.fromiter((e.event_time_ms for e in present), np.int64, count=n),
        label=np.fromiter((e.label for e in present), np.float64, count=n),
        has_label=np.fromiter((e.HasField("label") for e in present), bool, count=n),
        numeric=MapEntries(
            np.repeat(record, num_lengths),
            pa.array(num_keys, pa.string()),
            np.asarray(num_values, dtype=np.float64),
        ),
        categorical=MapEntries(
            np.repeat(record, cat_lengths),
            pa.array(cat_keys, pa.string()),
            pa.array(cat_values, pa.string()),
        ),
    )


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
    # Map entries whose key is not declared in the map they came in: (row, key) pairs,
    # once per key of a record, ordered by row then key.
    stray_numeric: tuple[np.ndarray, np.ndarray]  # (int64 rows, object keys)
    stray_categorical: tuple[np.ndarray, np.ndarray]


def _locate(entries: MapEntries, names: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per entry its position in `names` (-1 if undeclared); a repeated declared key of a
    record keeps only its last entry (protobuf map semantics), the others get -2."""
    found = pc.index_in(entries.keys, value_set=pa.array(names, pa.string()))
    pos = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    hit = np.flatnonzero(pos >= 0)
    slot = pos[hit] * n + entries.rows[hit]
    if hit.size and np.bincount(slot, minlength=len(names) * n).max() > 1:
        _, last = np.unique(slot[::-1], return_index=True)
        shadowed = np.ones(hit.size, dtype=bool)
        shadowed[hit.size - 1 - last] = False
        pos[hit[shadowed]] = -2
    return pos, entries.rows


def _strays(entries: MapEntries, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    misses = np.flatnonzero(pos == -1)
    if not misses.size:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    keys = entries.keys.take(pa.array(misses)).to_pylist()
    pairs = sorted(set(zip(entries.rows[misses].tolist(), keys, strict=True)))
    rows = np.array([row for row, _ in pairs], dtype=np.int64)
    return rows, np.array([key for _, key in pairs], dtype=object)


def columns_from_flat(schema: DatasetSchema, flat: FlatEvents) -> EventColumns:
    """Columns of the declared features of every record of `flat` (one dataset's)."""
    n = flat.n
    num_names, cat_names = sorted(schema.numeric), sorted(schema.categorical)

    pos, rows = _locate(flat.numeric, num_names, n)
    hit = pos >= 0
    matrix = np.full((len(num_names), n), np.nan)
    present = np.zeros((len(num_names), n), dtype=bool)
    values = np.asarray(flat.numeric.values, dtype=np.float64)
    matrix[pos[hit], rows[hit]] = values[hit]
    present[pos[hit], rows[hit]] = True
    stray_numeric = _strays(flat.numeric, pos)

    pos, rows = _locate(flat.categorical, cat_names, n)
    hit = pos >= 0
    where = np.full((len(cat_names), n), -1, dtype=np.int64)
    where[pos[hit], rows[hit]] = np.flatnonzero(hit)  # index into the flat values
    strings = flat.categorical.values
    return EventColumns(
        n=n,
        event_id=flat.event_id,
        entity_key=flat.entity_key,
        event_time_ms=flat.event_time_ms,
        label=flat.label,
        has_label=flat.has_label,
        numeric={name: matrix[j] for j, name in enumerate(num_names)},
        numeric_present={name: present[j] for j, name in enumerate(num_names)},
        categorical={
            name: pc.take(strings, pa.array(where[j], mask=where[j] < 0))
            for j, name in enumerate(cat_names)
        },
        stray_numeric=stray_numeric,
        stray_categorical=_strays(flat.categorical, pos),
    )


def columns_from_events(schema: DatasetSchema, events: Sequence[DataEvent]) -> EventColumns:
    """Columns of one dataset's decoded events."""
    return columns_from_flat(schema, flat_from_events(events))
