"""Deduplication of accepted events by (dataset, event id) across batches and restarts.

Fast path: Redis. Each accepted row *claims* its id with `SET key owner NX EX ttl`, where
the owner is the record's source position `topic/partition/offset`. A claim succeeds if
the key was free or already held by the same position (the record itself, replayed after
a crash before its version was sealed); any other owner means a different record got the
id first, and this one is a `duplicate_event_id`. One Lua script claims a whole chunk in
one round trip; the keys of a dataset share a hash tag, so the script is cluster-safe.

Correctness does not depend on Redis. The durable truth is the sealed versions and the
watermarks rebuilt from their manifests (`storage`):

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
(`maxmemory-policy noeviction`): an evicted claim is indistinguishable from a new id.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence

import numpy as np
import redis.asyncio as aioredis

from services.common.logging import get_logger

__all__ = ["DedupUnavailableError", "EventDedup", "owner_of"]

_log = get_logger(__name__)
_READY = b"ready"
_CHUNK = 2_000
_MAX_REBUILDS = 5

# KEYS[1] ready marker, KEYS[2..] id keys; ARGV[1] ttl_s, ARGV[2] the owners joined by
# newlines (positions never contain one). Returns -1 when not ready, else one '0' (claimed)
# or '1' (held by another record) per id: one bulk string parses in O(1) Python calls.
_CLAIM_LUA = """
if redis.call('GET', KEYS[1]) ~= 'ready' then return -1 end
local out, i = {}, 2
for owner in string.gmatch(ARGV[2], '[^\\n]+') do
  if redis.call('SET', KEYS[i], owner, 'NX', 'EX', ARGV[1]) then
    out[i - 1] = '0'
  elseif redis.call('GET', KEYS[i]) == owner then
    out[i - 1] = '0'
  else
    out[i - 1] = '1'
  end
  i = i + 1
end
return table.concat(out)
"""
# KEYS[1] ready marker; ARGV[1] the rebuild's token: promote it to ready only if unchanged.
_FINISH_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'ready')
  return 1
end
return 0
"""

# (dataset, since_ms) -> ids of the versions sealed since then (reads the artifact store)
SealedIds = Callable[[str, int], Awaitable[Sequence[str]]]


class DedupUnavailableError(RuntimeError):
    """The dedup index could not be made ready (Redis keeps losing it)."""


def owner_of(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


class EventDedup:
    """Claims event ids in Redis; rebuilds the index from sealed versions when lost."""

    def __init__(
        self,
        redis: aioredis.Redis,
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
        return f"{self._prefix}:{{{dataset}}}:ready"

    def _id_key(self, dataset: str, event_id: str) -> str:
        return f"{self._prefix}:{{{dataset}}}:id:{event_id}"

    async def claim(
        self,
        dataset: str,
        event_ids: Sequence[str],
        owners: Sequence[str],
        pending: Mapping[str, str],
    ) -> np.ndarray:
        """Claim each id for its owner; True where another record already holds it.

        `pending` (id -> owner) are this process's unsealed rows, re-claimed if the index
        has to be rebuilt.
        """
        duplicate = np.zeros(len(event_ids), dtype=bool)
        for start in range(0, len(event_ids), _CHUNK):
            stop = start + _CHUNK
            ids, who = event_ids[start:stop], owners[start:stop]
            duplicate[start:stop] = await self._claim_chunk(dataset, ids, who, pending)
        return duplicate

    async def _claim_chunk(
        self, dataset: str, ids: Sequence[str], owners: Sequence[str], pending: Mapping[str, str]
    ) -> np.ndarray:
        keys = [self._ready_key(dataset), *(self._id_key(dataset, i) for i in ids)]
        args: list[str | int] = [self._ttl_s, "\n".join(owners)]
        for _ in range(_MAX_REBUILDS):
            result = await self._claim(keys=keys, args=args)
            if result != -1:
                return np.frombuffer(result, dtype=np.uint8) == ord("1")
            await self.rebuild(dataset, pending)
        raise DedupUnavailableError(
            f"the dedup index of dataset {dataset!r} was lost {_MAX_REBUILDS} times in a row"
        )

    async def rebuild(self, dataset: str, pending: Mapping[str, str]) -> None:
        """Re-claim sealed (within the window) and pending ids, then mark the index ready."""
        ready = self._ready_key(dataset)
        for _ in range(_MAX_REBUILDS):
            token = f"rebuilding:{uuid.uuid4().hex}"
            await self._redis.set(ready, token)
            since_ms = self._now_ms() - self._ttl_s * 1000
            sealed = await self._sealed_ids(dataset, since_ms)
            await self._set_many(dataset, [(i, "sealed") for i in sealed])
            await self._set_many(dataset, list(pending.items()))
            if await self._finish(keys=[ready], args=[token]):
                self.rebuilds += 1
                _log.warning(
                    "dedup.rebuilt",
                    dataset=dataset,
                    sealed_ids=len(sealed),
                    pending_ids=len(pending),
                )
                return
            await asyncio.sleep(0.05)  # lost again (or a racing rebuild): start over
        raise DedupUnavailableError(f"could not rebuild the dedup index of {dataset!r}")

    async def _set_many(self, dataset: str, claims: Sequence[tuple[str, str]]) -> None:
        for start in range(0, len(claims), _CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for event_id, owner in claims[start : start + _CHUNK]:
                    pipe.set(self._id_key(dataset, event_id), owner, nx=True, ex=self._ttl_s)
                await pipe.execute()

    async def is_ready(self, dataset: str) -> bool:
        return bool(await self._redis.get(self._ready_key(dataset)) == _READY)
