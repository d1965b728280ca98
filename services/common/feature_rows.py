"""Rows of accepted data as the online feature store sees them: pure functions, no I/O.

Which columns are features, each entity's latest row, how a row becomes arguments of the
store's write script, and how a stored hash decodes back into typed values.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal, Protocol, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "EVENT_ID_FIELD",
    "EVENT_TIME_FIELD",
    "FeatureKind",
    "FeatureValues",
    "HasFeatureKinds",
    "decode_hash",
    "feature_columns",
    "kinds_of",
    "latest_per_key",
    "write_script_args",
]

EVENT_TIME_FIELD = "__event_time_ms"
EVENT_ID_FIELD = "__event_id"
_NOT_FEATURES = frozenset({"event_id", "entity_key", "event_time_ms", "label", "dataset"})

FeatureKind: TypeAlias = Literal["numeric", "categorical"]
FeatureValues: TypeAlias = dict[str, float | str]


class HasFeatureKinds(Protocol):
    """A dataset schema as far as decoding needs it (`common.datasets.schema.DatasetSchema`)."""

    @property
    def numeric(self) -> Mapping[str, object]: ...

    @property
    def categorical(self) -> Mapping[str, object]: ...


def feature_columns(table: pa.Table) -> list[str]:
    """The feature columns of an accepted-rows table: all but ids, event time and label."""
    return [name for name in table.column_names if name not in _NOT_FEATURES]


def latest_per_key(table: pa.Table) -> pa.Table:
    """One row per entity key: the one with the greatest event_time_ms (ties: greatest
    event_id, so the answer does not depend on row order). Ordered by entity key."""
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(
        table,
        sort_keys=[
            ("entity_key", "ascending"),
            ("event_time_ms", "descending"),
            ("event_id", "descending"),
        ],
    )
    ordered = table.take(order)
    keys = ordered.column("entity_key").to_numpy(zero_copy_only=False)
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return ordered.filter(pa.array(first))


def kinds_of(spec: HasFeatureKinds | Mapping[str, FeatureKind]) -> Mapping[str, FeatureKind]:
    if isinstance(spec, Mapping):
        return spec
    kinds: dict[str, FeatureKind] = dict.fromkeys(spec.numeric, "numeric")
    kinds.update(dict.fromkeys(spec.categorical, "categorical"))
    return kinds


def write_script_args(
    keys: list[str], latest: pa.Table, chunk: int
) -> Iterator[tuple[list[str], list[str | int]]]:
    """(KEYS, ARGV) of the store's write script for each `chunk` of `latest`'s rows (one
    per entity, `keys` their Redis keys): time, id, n, then n non-null (field, value)."""
    times = latest.column("event_time_ms").to_pylist()
    ids = latest.column("event_id").to_pylist()
    columns: list[tuple[str, list[str | None]]] = []
    for name in feature_columns(latest):
        column = latest.column(name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            columns.append((name, column.to_pylist()))
        else:
            values = column.to_pylist()
            columns.append((name, [None if v is None else repr(float(v)) for v in values]))
    for start in range(0, len(keys), chunk):
        stop = min(start + chunk, len(keys))
        argv: list[str | int] = []
        for i in range(start, stop):
            pairs = [(name, values[i]) for name, values in columns if values[i] is not None]
            argv += [times[i], ids[i], len(pairs)]
            for name, value in pairs:
                argv += [name, value]  # type: ignore[list-item]  # not None: filtered
        yield keys[start:stop], argv


def decode_hash(
    stored: Mapping[bytes, bytes], field_kinds: Mapping[str, FeatureKind]
) -> FeatureValues:
    """A stored hash -> its features: numeric as float, categorical as str; fields
    `field_kinds` does not know (including the row's time and id) are left out."""
    values: FeatureValues = {}
    for raw_field, raw_value in stored.items():
        name = raw_field.decode()
        kind = field_kinds.get(name)
        if kind == "numeric":
            values[name] = float(raw_value)
        elif kind == "categorical":
            values[name] = raw_value.decode()
    return values
