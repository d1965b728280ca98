"""Single flight per model across trainer replicas: a Redis lease with a fencing token.

`acquire` sets `lock:{model}` only if nobody holds it, with a TTL, and hands out a token
from a counter that only grows. A holder renews the lease while it trains; a trainer that
dies simply stops renewing and its lease expires. A holder that stalled past its TTL (a
long GC pause, a frozen VM) may wake up after another trainer took over: its token is
then older than the new holder's, and the registry's alias log refuses fenced writes with
an older token than it has already seen (`ModelRegistry.set_alias(fence=…)`), so the
stale result can never become an alias. The counter is floored by that durable
high-water mark at every acquisition, so a Redis flush cannot hand out an old token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from services.common.logging import get_logger

__all__ = ["Lease", "LeaseLostError", "TrainingLock"]

_log = get_logger(__name__)

_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if token <= floor then
  token = floor + 1
  redis.call('SET', KEYS[2], token)
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return token
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLostError(RuntimeError):
    """The lease expired or was taken over while its holder was still working."""


@dataclass(frozen=True)
class Lease:
    model: str
    owner: str
    token: int

    @property
    def value(self) -> str:
        return f"{self.owner}|{self.token}"


class TrainingLock:
    def __init__(
        self, client: redis.Redis, ttl_s: float, prefix: str = "driftloop:trainer"
    ) -> None:
        self._redis = client
        self._ttl_ms = int(ttl_s * 1000)
        self._prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def _key(self, model: str) -> str:
        return f"{self._prefix}:lock:{model}"

    def _counter(self, model: str) -> str:
        return f"{self._prefix}:fence:{model}"

    def acquire(self, model: str, owner: str, floor: int = 0) -> Lease | None:
        """A new lease, or None when another holder has one. `floor`: the highest token
        already accepted durably (the alias log's), so tokens never go backwards."""
        token = self._acquire(
            keys=[self._key(model), self._counter(model)], args=[owner, self._ttl_ms, floor]
        )
        if token is None:
            return None
        lease = Lease(model, owner, int(token))
        _log.info("lease.acquired", model=model, owner=owner, token=lease.token)
        return lease

    def holder(self, model: str) -> str | None:
        value = self._redis.get(self._key(model))
        return value.decode() if isinstance(value, bytes) else value

    def holds(self, lease: Lease) -> bool:
        return self.holder(lease.model) == lease.value

    def renew(self, lease: Lease) -> bool:
        return bool(self._renew(keys=[self._key(lease.model)], args=[lease.value, self._ttl_ms]))

    def release(self, lease: Lease) -> bool:
        released = bool(self._release(keys=[self._key(lease.model)], args=[lease.value]))
        _log.info("lease.released", model=lease.model, token=lease.token, released=released)
        return released

    @contextmanager
    def kept_alive(self, lease: Lease, every_s: float) -> Iterator[threading.Event]:
        """Renew `lease` every `every_s` in a thread; the yielded event is set if it is lost."""
        lost, done = threading.Event(), threading.Event()

        def renew_until_done() -> None:
            while not done.wait(every_s):
                try:
                    ok = self.renew(lease)
                except redis.RedisError as exc:  # keep trying until the TTL runs out
                    _log.warning("lease.renew_failed", model=lease.model, error=str(exc))
                    continue
                if not ok:
                    _log.warning("lease.lost", model=lease.model, token=lease.token)
                    lost.set()
                    return

        thread = threading.Thread(target=renew_until_done, name="lease-keeper", daemon=True)
        thread.start()
        try:
            yield lost
        finally:
            done.set()
            thread.join(timeout=5)
