"""Deduplication of accepted events by (dataset, event id) across batches and restarts.

Fast path: Redis. Each accepted row *claims* its id for its owner, the record's source
position `topic/partition/offset`. A claim succeeds if the id was free or already held by
the same position (the record itself, replayed after a crash before its version was
sealed); any other owner means a different record got the id first, and this one is a
`duplicate_event_id`.

Layout: per dataset, one Redis hash per time bucket of `ttl_s` seconds (bucket numbers
from the Redis server's clock, so replicas with skewed clocks agree), field = event id,
value = owner. A claim looks the ids up in the current and the previous bucket and
writes the new ones to the current bucket, which expires when it stops being looked at
(two buckets later). So an id is remembered for at least `ttl_s` and at most twice that.
One Lua script claims a whole chunk in one round trip with a handful of bulk commands
(HMGET, HSET), and the ids and owners travel as two joined arguments: no per-id key,
argument or command, which made the claim a third of the ingest cost when every id was
a key of its own with `SET NX EX`. The keys of a dataset share a hash tag and are all
declared, so the script is cluster-safe.

Correctness does not depend on Redis. The durable truth is the sealed versions and the
watermarks rebuilt from their manifests (`seal.history`):

* A replayed record at or below its dataset's sealed watermark is skipped by the
  pipeline before it reaches this module: it is in a version already. So a replay after
  a crash never re-offers a sealed row, with or without Redis.
* A replayed record above the watermark was pending (in memory) when the process died;
  its old claim, if Redis still has it, names the same position, so it is re-accepted.
* Losing Redis (FLUSHDB, a failover to an empty replica) is detected, not assumed away:
  every claim script first checks a per-dataset *ready* marker, atomically with the
  claims. The marker is written only at the end of a rebuild that re-claims, from the
  artifact store, the ids of every version sealed within the dedup window (`ttl_s`), and
  this process's pending ids with their owners. If the marker is missing the script
  claims nothing; the caller rebuilds and retries. A flush during a rebuild deletes the
  rebuild's token, so the token check at its end fails and the rebuild runs again. Hence
  whenever a claim succeeds, Redis holds every id sealed in the window and every id this
  process has pending, and a later copy of any of them is refused even after a flush.
* Ids pending in this process are also passed to validation as `seen_event_ids`, so
  repeats within the unsealed rows never depend on Redis at all.

Limits, stated: the window is `ttl_s` (a copy arriving later than that after the
original is accepted), and Redis must not evict keys under memory pressure
(`maxmemory-policy noeviction`): an evicted bucket is indistinguishable from new ids.
A bucket holds up to `ttl_s` worth of ids and is freed at once when it expires; with
millions of ids per bucket set `lazyfree-lazy-expire yes` so that does not stall Redis.
(The local stack's redis-server runs with both, `services/stack/redis_server.py`.)
This layout replaced one key per id (`…:id:<event id>`); its ready marker has a new name
(`…:ready:v2`), so the first claim after the upgrade rebuilds the index from the sealed
versions. Replicas on the old and the new layout do not see each other's claims: upgrade
all replicas of a consumer group together.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from redis import Redis

from services.common.logging import get_logger

__all__ = ["Claims", "DedupUnavailableError", "EventDedup", "Strings", "owner_of"]

_log = get_logger(__name__)
_READY = b"ready"
_CHUNK = 5_000
_MAX_REBUILDS = 5
# Event ids are UTF-8 (proto3 strings), positions ASCII: neither ever holds byte 0xFF.
_SEP = b"\xff"

# KEYS[1] ready marker, KEYS[2..5] the id buckets b-2 .. b+1 of the caller's clock.
# ARGV[1] b, ARGV[2] bucket width (s), ARGV[3] id, owner, id, owner, ... joined by 0xFF,
# ARGV[4] "claim", "distinct" (a claim of ids known to be distinct) or "rebuild" (skips
# the ready check). Returns -1 when not ready, else one '0' (claimed) or '1' (held by
# another record) per id: one bulk string, parsed in O(1) Python calls. A rebuild only
# adds missing ids, like a claim, and ignores the result. Usual case: distinct ids none
# of which is held, written with one HSET of the pairs as they came.
_CLAIM_LUA = """
if ARGV[4] ~= 'rebuild' and redis.call('GET', KEYS[1]) ~= 'ready' then return -1 end
local width = tonumber(ARGV[2])
local now = math.floor(tonumber(redis.call('TIME')[1]) / width)
local shift = now - tonumber(ARGV[1])
if shift < -1 or shift > 1 then return redis.error_reply('clock skew beyond a dedup bucket') end
local current, previous = KEYS[4 + shift], KEYS[3 + shift]
local s, items, k, from = ARGV[3], {}, 0, 1
while true do
  local at = string.find(s, '\\255', from, true)
  k = k + 1
  if not at then items[k] = string.sub(s, from); break end
  items[k] = string.sub(s, from, at - 1)
  from = at + 1
end
if k % 2 ~= 0 then return redis.error_reply('ids and owners differ in number') end
local n, ids = k / 2, {}
for i = 1, n do ids[i] = items[2 * i - 1] end
local held, clash = {}, false
for _, bucket in ipairs({previous, current}) do
  if redis.call('EXISTS', bucket) == 1 then
    for first = 1, n, 1000 do
      local found = redis.call('HMGET', bucket, unpack(ids, first, math.min(first + 999, n)))
      for j = 1, #found do
        if found[j] and not held[first + j - 1] then
          held[first + j - 1] = found[j]
          clash = true
        end
      end
    end
  end
end
local out, new = nil, items
if clash or ARGV[4] ~= 'distinct' then
  local mine, m = {}, 0
  out, new = {}, {}
  for i = 1, n do
    local holder = held[i] or mine[ids[i]]
    if not holder then
      mine[ids[i]] = items[2 * i]
      new[m + 1], new[m + 2], m = ids[i], items[2 * i], m + 2
      out[i] = '0'
    elseif holder == items[2 * i] then
      out[i] = '0'
    else
      out[i] = '1'
    end
  end
end
for first = 1, #new, 1000 do
  redis.call('HSET', current, unpack(new, first, math.min(first + 999, #new)))
end
if #new > 0 then redis.call('EXPIREAT', current, (now + 2) * width) end
return out and table.concat(out) or string.rep('0', n)
"""
# KEYS[1] ready marker; ARGV[1] the rebuild's token: promote it to ready only if unchanged.
_FINISH_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'ready')
  return 1
end
return 0
"""

Strings: TypeAlias = Sequence[str] | pa.Array
# (ids, owners) chunks, aligned
Claims: TypeAlias = Sequence[tuple[Strings, Strings]]
# (dataset, since_ms) -> ids of the versions sealed since then (reads the artifact store)
SealedIds = Callable[[str, int], Awaitable[Sequence[str]]]


class DedupUnavailableError(RuntimeError):
    """The dedup index could not be made ready (Redis keeps losing it)."""


def owner_of(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


def _pairs(ids: Strings, owners: Strings, start: int, stop: int) -> bytes:
    """ids[start:stop] and their owners as one argument: id, owner, id, ... separated by
    0xFF (Arrow interleaves and joins them in C)."""
    both = pa.concat_arrays([_binary(ids, start, stop), _binary(owners, start, stop)])
    n = stop - start
    order = np.empty(2 * n, dtype=np.int64)
    order[0::2], order[1::2] = np.arange(n), np.arange(n, 2 * n)
    lists = pa.ListArray.from_arrays(pa.array([0, 2 * n], pa.int32()), both.take(order))
    return bytes(pc.binary_join(lists, _SEP)[0].as_py())


def _binary(values: Strings, start: int, stop: int) -> pa.Array:
    if isinstance(values, pa.Array):
        return values.slice(start, stop - start).cast(pa.binary())
    return pa.array([v.encode() for v in values[start:stop]], pa.binary())


class EventDedup:
    """Claims event ids in Redis; rebuilds the index from sealed versions when lost."""

    def __init__(
        self,
        redis: Redis,
        sealed_ids: SealedIds,
        ttl_s: int,
        *,
        prefix: str = "driftloop:ingest:dedup",
        now_ms: Callable[[], int],
    ) -> None:
        self._redis, self._sealed_ids, self._ttl_s = redis, sealed_ids, ttl_s
        self._prefix, self._now_ms = prefix, now_ms
        self._claim = redis.register_script(_CLAIM_LUA)
        self._finish = redis.register_script(_FINISH_LUA)
        self.rebuilds = 0

    def _ready_key(self, dataset: str) -> str:
        return f"{self._prefix}:{{{dataset}}}:ready:v2"

    def _keys(self, dataset: str) -> tuple[list[str], int]:
        bucket = int(time.time()) // self._ttl_s
        ids = [f"{self._prefix}:{{{dataset}}}:ids:{b}" for b in range(bucket - 2, bucket + 2)]
        return [self._ready_key(dataset), *ids], bucket

    async def _run(self, dataset: str, pairs: bytes, mode: str) -> bytes | int:
        keys, bucket = self._keys(dataset)
        args: list[str | int | bytes] = [bucket, self._ttl_s, pairs, mode]
        # A worker thread, not redis.asyncio: a claim carries ~50 bytes an id (250 KB a
        # chunk), and an asyncio write of that size only goes out as the event loop turns,
        # i.e. after the loop's next CPU-bound stretch (decoding and validating the next
        # batch), which then waited for Redis. A blocking send from a thread goes out at
        # once and the round trip overlaps that work (the socket calls release the GIL).
        result: bytes | int = await asyncio.to_thread(self._claim, keys=keys, args=args)
        return result

    async def claim(
        self,
        dataset: str,
        event_ids: Strings,
        owners: Strings,
        pending: Claims,
        *,
        distinct: bool = False,
    ) -> np.ndarray:
        """Claim each id for its owner; True where another record already holds it (or an
        earlier position of `event_ids` claimed it for another owner).

        `pending` are this process's unsealed claims, re-claimed if the index has to be
        rebuilt. `distinct`: the caller knows no id repeats in `event_ids` (one lookup
        table less in Redis).
        """
        duplicate = np.zeros(len(event_ids), dtype=bool)
        mode = "distinct" if distinct else "claim"
        for start in range(0, len(event_ids), _CHUNK):
            stop = min(start + _CHUNK, len(event_ids))
            pairs = _pairs(event_ids, owners, start, stop)
            for _ in range(_MAX_REBUILDS):
                result = await self._run(dataset, pairs, mode)
                if result != -1:
                    assert isinstance(result, bytes)
                    duplicate[start:stop] = np.frombuffer(result, dtype=np.uint8) == ord("1")
                    break
                await self.rebuild(dataset, pending)
            else:
                raise DedupUnavailableError(
                    f"the dedup index of dataset {dataset!r} was lost {_MAX_REBUILDS} times"
                    " in a row"
                )
        return duplicate

    async def rebuild(self, dataset: str, pending: Claims) -> None:
        """Re-claim sealed (within the window) and pending ids, then mark the index ready."""
        ready = self._ready_key(dataset)
        for _ in range(_MAX_REBUILDS):
            token = f"rebuilding:{uuid.uuid4().hex}"
            await asyncio.to_thread(self._redis.set, ready, token)
            since_ms = self._now_ms() - self._ttl_s * 1000
            sealed = list(await self._sealed_ids(dataset, since_ms))
            claims: list[tuple[Strings, Strings]] = [(sealed, ["sealed"] * len(sealed))]
            for ids, owners in [*claims, *pending]:
                for start in range(0, len(ids), _CHUNK):
                    stop = min(start + _CHUNK, len(ids))
                    await self._run(dataset, _pairs(ids, owners, start, stop), "rebuild")
            if await asyncio.to_thread(self._finish, keys=[ready], args=[token]):
                self.rebuilds += 1
                _log.warning(
                    "dedup.rebuilt",
                    dataset=dataset,
                    sealed_ids=len(sealed),
                    pending_ids=sum(len(ids) for ids, _ in pending),
                )
                return
            await asyncio.sleep(0.05)  # lost again (or a racing rebuild): start over
        raise DedupUnavailableError(f"could not rebuild the dedup index of {dataset!r}")

    async def is_ready(self, dataset: str) -> bool:
        return bool(await asyncio.to_thread(self._redis.get, self._ready_key(dataset)) == _READY)
