"""The online feature store: the latest accepted features of each entity, in Redis.

Ingest writes (`write_latest`, for every batch of accepted rows), the router reads (`get`,
to fill the features a request does not carry). One Redis hash per entity,
`fs:{dataset}:{entity_key}` (the dataset is a hash tag, so a chunk's keys share a slot and
the write script is cluster-safe), with `__event_time_ms`, `__event_id` and one field per
non-null feature value: numeric values as `repr(float)`, categorical ones as the string.

A key only moves forward: the write script replaces a hash only when the new row's
(event_time_ms, event_id) is >= the stored one, so replays, out-of-order batches and
concurrent writers converge on the row with the greatest event time (ties broken by the
greatest event id) — whatever order the rows arrive in. That is what makes the store
rebuildable: `rebuild` replays the sealed dataset versions (the offline store) and gets
exactly the hashes the live path wrote. Redis holds nothing that cannot be rebuilt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, Protocol, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis

__all__ = [
    "EVENT_ID_FIELD",
    "EVENT_TIME_FIELD",
    "FeatureKind",
    "FeatureValues",
    "OnlineFeatureStore",
    "feature_columns",
    "latest_per_key",
]

EVENT_TIME_FIELD = "__event_time_ms"
EVENT_ID_FIELD = "__event_id"
_NOT_FEATURES = frozenset({"event_id", "entity_key", "event_time_ms", "label", "dataset"})
_CHUNK = 1_000
_SCAN_COUNT = 1_000

FeatureKind: TypeAlias = Literal["numeric", "categorical"]
FeatureValues: TypeAlias = dict[str, float | str]

# KEYS: one hash per entity. ARGV per key, in order: event_time_ms, event_id, n, then n
# (field, value) pairs. A hash is replaced (not merged: it is the latest row, nulls and
# all) when (time, id) >= the stored pair. Returns how many keys were written.
_WRITE_LUA = """
local updated, a = 0, 1
for _, key in ipairs(KEYS) do
  local t, id, n = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2])
  local first = a + 3
  a = first + 2 * n
  local stored = redis.call('HMGET', key, '__event_time_ms', '__event_id')
  local st = tonumber(stored[1])
  if st == nil or st < t or (st == t and (stored[2] or '') <= id) then
    local args = {'__event_time_ms', ARGV[first - 3], '__event_id', id}
    for j = first, a - 1 do args[#args + 1] = ARGV[j] end
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(args))
    updated = updated + 1
  end
end
return updated
"""


class HasFeatureKinds(Protocol):
    """A dataset schema as far as decoding needs it (`services.ingest.schema.DatasetSchema`)."""

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


def _kinds_of(spec: HasFeatureKinds | Mapping[str, FeatureKind]) -> Mapping[str, FeatureKind]:
    if isinstance(spec, Mapping):
        return spec
    kinds: dict[str, FeatureKind] = dict.fromkeys(spec.numeric, "numeric")
    kinds.update(dict.fromkeys(spec.categorical, "categorical"))
    return kinds


class OnlineFeatureStore:
    """Latest accepted features per entity key, over a synchronous Redis client."""

    def __init__(
        self,
        redis: redis.Redis,
        prefix: str = "fs",
        schemas: Mapping[str, HasFeatureKinds] | None = None,
    ) -> None:
        self._redis, self._prefix = redis, prefix
        self._schemas = dict(schemas or {})
        self._write = redis.register_script(_WRITE_LUA)

    def key(self, dataset: str, entity_key: str) -> str:
        return f"{self._prefix}:{{{dataset}}}:{entity_key}"

    # -- write ---------------------------------------------------------------------------

    def write_latest(self, dataset: str, table: pa.Table) -> int:
        """Write each entity's latest row of `table` where it is not older than what Redis
        holds; one script call per chunk of keys. Returns how many keys were written."""
        latest = latest_per_key(table)
        if latest.num_rows == 0:
            return 0
        keys = [self.key(dataset, k) for k in latest.column("entity_key").to_pylist()]
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
        updated = 0
        for start in range(0, len(keys), _CHUNK):
            stop = min(start + _CHUNK, len(keys))
            argv: list[str | int] = []
            for i in range(start, stop):
                pairs = [(name, values[i]) for name, values in columns if values[i] is not None]
                argv += [times[i], ids[i], len(pairs)]
                for name, value in pairs:
                    argv += [name, value]  # type: ignore[list-item]  # not None: filtered
            updated += int(self._write(keys=keys[start:stop], args=argv))
        return updated

    # -- read ----------------------------------------------------------------------------

    def get(
        self,
        dataset: str,
        keys: Sequence[str],
        kinds: HasFeatureKinds | Mapping[str, FeatureKind] | None = None,
    ) -> list[FeatureValues | None]:
        """The stored features of each entity key (None where nothing is stored), in one
        round trip. Numeric features come back as float, categorical ones as str;
        `kinds` (a schema or a field -> kind map) defaults to the dataset's schema given
        at construction. A stored field `kinds` does not know is left out."""
        if kinds is None:
            if dataset not in self._schemas:
                raise KeyError(f"no schema for dataset {dataset!r}: pass kinds=")
            kinds = self._schemas[dataset]
        field_kinds = _kinds_of(kinds)
        pipe = self._redis.pipeline(transaction=False)
        for entity_key in keys:
            pipe.hgetall(self.key(dataset, entity_key))
        found: list[FeatureValues | None] = []
        for stored in pipe.execute():
            if not stored:
                found.append(None)
                continue
            values: FeatureValues = {}
            for raw_field, raw_value in stored.items():
                name = raw_field.decode()
                kind = field_kinds.get(name)
                if kind == "numeric":
                    values[name] = float(raw_value)
                elif kind == "categorical":
                    values[name] = raw_value.decode()
            found.append(values)
        return found

    def event_time_ms(self, dataset: str, entity_key: str) -> int | None:
        """The event time of the row stored for `entity_key`, if any."""
        raw = self._redis.hget(self.key(dataset, entity_key), EVENT_TIME_FIELD)
        return None if raw is None else int(raw)

    # -- rebuild -------------------------------------------------------------------------

    def delete_dataset(self, dataset: str) -> int:
        """UNLINK every key of `dataset` (found with SCAN); returns how many."""
        pattern = self.key(dataset, "*")
        deleted = 0
        batch: list[bytes] = []
        for key in self._redis.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _SCAN_COUNT:
                deleted += int(self._redis.unlink(*batch))
                batch = []
        if batch:
            deleted += int(self._redis.unlink(*batch))
        return deleted

    def rebuild(self, dataset: str, tables: Iterable[pa.Table]) -> int:
        """Replace the dataset's keys with the latest rows of `tables` (the sealed versions,
        oldest first). Returns how many entity keys the store holds for it afterwards.
        Readers may see keys missing while it runs."""
        self.delete_dataset(dataset)
        entities: set[str] = set()
        for table in tables:
            self.write_latest(dataset, table)
            entities.update(pc.unique(table.column("entity_key")).to_pylist())
        return len(entities)
