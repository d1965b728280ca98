"""The online feature store: the latest accepted features of each entity, in Redis.

Ingest writes (`write_latest`, for every batch of accepted rows), the router reads
(`OnlineFeatureReader.get_fields`, on its event loop, to fill the features a request does
not carry). One Redis hash per entity,
`fs:{dataset}:{entity_key}` (the dataset is a hash tag, so a chunk's keys share a slot and
the write script is cluster-safe), with `__event_time_ms`, `__event_id` and one field per
non-null feature value: numeric values as `repr(float)`, categorical ones as the string.

A key only moves forward: the write script replaces a hash only when the new row's
(event_time_ms, event_id) is >= the stored one, so replays, out-of-order batches and
concurrent writers converge on the row with the greatest event time (ties broken by the
greatest event id) — whatever order the rows arrive in. That is what makes the store
rebuildable: `rebuild` replays the sealed dataset versions (the offline store) and gets
exactly the hashes the live path wrote. Redis holds nothing that cannot be rebuilt.

Writes are a fast path behind a circuit breaker (`services.common.circuit_breaker`): the
first failed write opens it, and while it is open writes are skipped at once instead of
each waiting out the client's timeouts; after `retry_after_s` one write tries again and
closes it on success. Skipping is safe for correctness because the sealed versions hold
every accepted row: `driftloop datasets rebuild-features DATASET` restores what was
skipped. Skips are counted (`stats`, metric `driftloop.features.skipped`) and logged on
every change of state — `features.breaker_closed` reports how many keys of which
datasets went unwritten during the outage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import redis
import redis.asyncio as aioredis
from opentelemetry import metrics

from services.common.circuit_breaker import BreakerState, CircuitBreaker
from services.common.feature_rows import (
    EVENT_ID_FIELD,
    EVENT_TIME_FIELD,
    FeatureKind,
    FeatureValues,
    HasFeatureKinds,
    decode_hash,
    feature_columns,
    kinds_of,
    latest_per_key,
    write_script_args,
)
from services.common.logging import get_logger

__all__ = [
    "EVENT_ID_FIELD",
    "EVENT_TIME_FIELD",
    "FeatureKind",
    "FeatureValues",
    "FieldRead",
    "OnlineFeatureReader",
    "OnlineFeatureStore",
    "WriteStats",
    "entity_hash_key",
    "feature_columns",
    "latest_per_key",
]

_CHUNK = 1_000
_SCAN_COUNT = 1_000
_log = get_logger(__name__)

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

# KEYS: entity hashes; ARGV: the fields to read. One HMGET reply per key, in order (a
# missing field comes back as nil).
_READ_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HMGET', key, unpack(ARGV))
end
return out
"""

# KEYS: keys to drop; ARGV: the (event_time_ms, event_id) each held when it was chosen
# ('' for absent). A key is deleted only if it still holds that row: one a live writer
# replaced in the meantime stays. Returns how many keys were deleted.
_DELETE_UNCHANGED_LUA = """
local deleted = 0
for i, key in ipairs(KEYS) do
  local stored = redis.call('HMGET', key, '__event_time_ms', '__event_id')
  if (stored[1] or '') == ARGV[2 * i - 1] and (stored[2] or '') == ARGV[2 * i] then
    deleted = deleted + redis.call('UNLINK', key)
  end
end
return deleted
"""


def entity_hash_key(prefix: str, dataset: str, entity_key: str) -> str:
    """The entity's hash: the dataset is a hash tag, so one dataset's keys share a slot."""
    return f"{prefix}:{{{dataset}}}:{entity_key}"


class FieldRead:
    """One HMGET per key of the fields `kinds` names, plus the event time (which every
    stored row has, so it tells a stored row from an absent one), and the parse of the
    replies: numeric values as float, categorical ones as str, absent ones left out. The
    event time is returned under `EVENT_TIME_FIELD` when `kinds` names it."""

    def __init__(self, kinds: Mapping[str, FeatureKind]) -> None:
        self.names = [n for n in kinds if n != EVENT_TIME_FIELD]
        self.fields = [EVENT_TIME_FIELD, *self.names]
        self._decoders: list[Callable[[bytes], float | str]] = [
            float if kinds.get(n) == "numeric" else bytes.decode for n in self.names
        ]
        self._with_time = EVENT_TIME_FIELD in kinds

    def parse(self, replies: Iterable[Sequence[bytes | None]]) -> list[FeatureValues | None]:
        out: list[FeatureValues | None] = []
        for stored in replies:
            if stored[0] is None:
                out.append(None)
                continue
            values: FeatureValues = {
                n: decode(raw)
                for n, decode, raw in zip(self.names, self._decoders, stored[1:], strict=True)
                if raw is not None
            }
            if self._with_time:
                values[EVENT_TIME_FIELD] = float(stored[0])
            out.append(values)
        return out


class OnlineFeatureReader:
    """The read side of the store over an asyncio Redis client, for a server on an event
    loop (the router): one round trip per call, no thread hop. The HMGETs of all keys run
    in one script call (`_READ_LUA`): a pipeline of one HMGET per key cost the router more
    CPU packing commands and handling replies in redis-py than anything else in a
    512-row PredictBatch. The keys share their dataset's hash slot, so the script is
    cluster-safe."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "fs") -> None:
        self._redis, self._prefix = redis, prefix
        self._read = redis.register_script(_READ_LUA)

    async def get_fields(
        self, dataset: str, keys: Sequence[str], kinds: Mapping[str, FeatureKind]
    ) -> list[FeatureValues | None]:
        """As `OnlineFeatureStore.get_fields`."""
        if not keys:
            return []
        read = FieldRead(kinds)
        replies = await self._read(
            keys=[entity_hash_key(self._prefix, dataset, k) for k in keys], args=read.fields
        )
        return read.parse(replies)


@dataclass
class WriteStats:
    """`write_latest` outcomes since the store was built."""

    written_keys: int = 0
    skipped_writes: int = 0  # breaker open: not attempted
    skipped_keys: int = 0
    failed_writes: int = 0  # attempted; Redis failed (and the breaker opened)
    failed_keys: int = 0
    # keys left unwritten (skipped or failed) per dataset, since the breaker last closed
    outage_keys: dict[str, int] = field(default_factory=dict)


class OnlineFeatureStore:
    """Latest accepted features per entity key, over a synchronous Redis client.

    `retry_after_s` and `clock_s` set the write path's circuit breaker; `meter` (default:
    the global meter provider's) gets the skip/failure counters."""

    def __init__(
        self,
        redis: redis.Redis,
        prefix: str = "fs",
        schemas: Mapping[str, HasFeatureKinds] | None = None,
        *,
        retry_after_s: float = 5.0,
        clock_s: Callable[[], float] = time.monotonic,
        meter: metrics.Meter | None = None,
    ) -> None:
        self._redis, self._prefix = redis, prefix
        self._schemas = dict(schemas or {})
        self._write = redis.register_script(_WRITE_LUA)
        self._delete_unchanged = redis.register_script(_DELETE_UNCHANGED_LUA)
        self.breaker = CircuitBreaker(retry_after_s, clock_s=clock_s, on_change=self._on_change)
        self.stats = WriteStats()
        self._stats_lock = threading.Lock()
        self._last_error = ""
        meter = meter or metrics.get_meter("driftloop.features")
        self._skipped_total = meter.create_counter(
            "driftloop.features.skipped",
            unit="{key}",
            description="online-store key writes skipped while the circuit breaker was open",
        )
        self._failed_total = meter.create_counter(
            "driftloop.features.write_failures", unit="{key}", description="Redis failed"
        )

    def key(self, dataset: str, entity_key: str) -> str:
        return entity_hash_key(self._prefix, dataset, entity_key)

    # -- write ---------------------------------------------------------------------------

    def write_latest(self, dataset: str, table: pa.Table) -> int | None:
        """Write each entity's latest row of `table` where it is not older than what Redis
        holds; one script call per chunk of keys. Returns how many keys were written, or
        None when the circuit breaker is open and the write was skipped (at once, without
        touching Redis). A Redis failure is raised, and opens the breaker."""
        latest = latest_per_key(table)
        if latest.num_rows == 0:
            return 0
        n = latest.num_rows
        if not self.breaker.allow():
            self._count(dataset, n, skipped=True)
            return None
        try:
            updated = self._write_rows(dataset, latest)
        except Exception as exc:  # whatever went wrong, the trial must not stay half-open
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._count(dataset, n, skipped=False)
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        with self._stats_lock:
            self.stats.written_keys += updated
        return updated

    def _write_rows(self, dataset: str, latest: pa.Table) -> int:
        keys = [self.key(dataset, k) for k in latest.column("entity_key").to_pylist()]
        calls = write_script_args(keys, latest, _CHUNK)
        return sum(int(self._write(keys=chunk, args=argv)) for chunk, argv in calls)

    def _count(self, dataset: str, keys: int, *, skipped: bool) -> None:
        with self._stats_lock:
            s = self.stats
            if skipped:
                s.skipped_writes, s.skipped_keys = s.skipped_writes + 1, s.skipped_keys + keys
            else:
                s.failed_writes, s.failed_keys = s.failed_writes + 1, s.failed_keys + keys
            s.outage_keys[dataset] = s.outage_keys.get(dataset, 0) + keys
        (self._skipped_total if skipped else self._failed_total).add(keys, {"dataset": dataset})

    def _on_change(self, old: BreakerState, new: BreakerState) -> None:
        with self._stats_lock:
            unwritten = dict(sorted(self.stats.outage_keys.items()))
            if new is BreakerState.CLOSED:
                self.stats.outage_keys = {}
        retry_after_s = self.breaker.retry_after_s
        if new is BreakerState.HALF_OPEN:
            _log.debug("features.breaker_half_open")
        elif old is BreakerState.CLOSED:
            _log.warning(
                "features.breaker_opened",
                error=self._last_error,
                retry_after_s=retry_after_s,
                detail="online feature writes are skipped until Redis answers again",
            )
        elif new is BreakerState.OPEN:
            _log.warning("features.breaker_reopened", error=self._last_error, unwritten=unwritten)
        else:
            _log.warning(
                "features.breaker_closed",
                unwritten=unwritten,
                skipped_writes_total=self.stats.skipped_writes,
                detail="keys written meanwhile are current; the unwritten ones may be stale "
                "until `driftloop datasets rebuild-features DATASET`",
            )

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
        field_kinds = kinds_of(kinds)
        pipe = self._redis.pipeline(transaction=False)
        for entity_key in keys:
            pipe.hgetall(self.key(dataset, entity_key))
        return [decode_hash(stored, field_kinds) if stored else None for stored in pipe.execute()]

    def get_fields(
        self, dataset: str, keys: Sequence[str], kinds: Mapping[str, FeatureKind]
    ) -> list[FeatureValues | None]:
        """`get` of only the fields `kinds` names (HMGET, plus the row's event time, which
        every stored row has and which tells a stored row from an absent one): a reader
        that needs 2 of 20 features parses 3 values per key instead of 40. The event time
        is returned under `EVENT_TIME_FIELD` (as float) when `kinds` names it."""
        read = FieldRead(kinds)
        pipe = self._redis.pipeline(transaction=False)
        for entity_key in keys:
            pipe.hmget(self.key(dataset, entity_key), read.fields)
        return read.parse(pipe.execute())

    def event_time_ms(self, dataset: str, entity_key: str) -> int | None:
        """The event time of the row stored for `entity_key`, if any."""
        raw = self._redis.hget(self.key(dataset, entity_key), EVENT_TIME_FIELD)
        return None if raw is None else int(raw)

    # -- rebuild -------------------------------------------------------------------------

    def _scan(self, dataset: str) -> Iterator[list[bytes]]:
        """The dataset's keys (SCAN), in batches of up to `_SCAN_COUNT`."""
        batch: list[bytes] = []
        for key in self._redis.scan_iter(match=self.key(dataset, "*"), count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _SCAN_COUNT:
                yield batch
                batch = []
        if batch:
            yield batch

    def delete_dataset(self, dataset: str) -> int:
        """UNLINK every key of `dataset` (found with SCAN); returns how many."""
        return sum(int(self._redis.unlink(*batch)) for batch in self._scan(dataset))

    def rebuild(self, dataset: str, tables: Iterable[pa.Table]) -> int:
        """Make the dataset's keys the latest rows of `tables` (the sealed versions, oldest
        first). Returns how many entity keys the sealed versions hold.

        Gap-free: readers see every key that exists before and after the rebuild, with
        its old row or its new one, never a gap. Rows are written over the stored ones in
        place (each key by one atomic script call, nothing deleted first), then only the
        keys that were there before and that no sealed row is for are deleted — and only
        if they still hold the row they held before, so a live writer's key is kept. By
        the same write rule, a stored row newer than the entity's latest sealed one stays
        (ingest wrote it from rows that are not sealed yet). `delete_dataset` first for a
        store rebuilt from the versions alone."""
        before = self._snapshot(dataset)
        entities: set[str] = set()
        for table in tables:
            latest = latest_per_key(table)
            if latest.num_rows:
                self._write_rows(dataset, latest)
                entities.update(latest.column("entity_key").to_pylist())
        rebuilt = {self.key(dataset, e).encode() for e in entities}
        stale = [(key, row) for key, row in before.items() if key not in rebuilt]
        for start in range(0, len(stale), _CHUNK):
            chunk = stale[start : start + _CHUNK]
            argv = [part for _, row in chunk for part in row]
            self._delete_unchanged(keys=[key for key, _ in chunk], args=argv)
        return len(entities)

    def _snapshot(self, dataset: str) -> dict[bytes, tuple[bytes, bytes]]:
        """Each stored key of `dataset` -> its (event_time_ms, event_id), b'' if absent."""
        rows: dict[bytes, tuple[bytes, bytes]] = {}
        for batch in self._scan(dataset):
            pipe = self._redis.pipeline(transaction=False)
            for key in batch:
                pipe.hmget(key, EVENT_TIME_FIELD, EVENT_ID_FIELD)
            for key, (t, i) in zip(batch, pipe.execute(), strict=True):
                rows[key] = (t or b"", i or b"")
        return rows
