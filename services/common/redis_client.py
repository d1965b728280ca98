"""The one place that knows how to talk to Redis."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from services.common.settings import Settings, masked_url

__all__ = ["RedisUnavailableError", "async_redis", "check_redis", "sync_redis"]


class RedisUnavailableError(ConnectionError):
    """Redis did not answer; the message names the URL and what to do."""


def _explain(url: str, exc: Exception) -> RedisUnavailableError:
    return RedisUnavailableError(
        f"cannot reach Redis at {masked_url(url)} ({exc}); start the local stack with "
        "`driftloop stack up` or set DRIFTLOOP_REDIS_URL"
    )


def sync_redis(
    settings: Settings, *, connect_timeout_s: float = 5, timeout_s: float = 10
) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=connect_timeout_s, socket_timeout=timeout_s
    )


def async_redis(
    settings: Settings, *, connect_timeout_s: float = 5, timeout_s: float = 10
) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=connect_timeout_s, socket_timeout=timeout_s
    )


def check_redis(settings: Settings) -> float:
    """PING Redis; returns the round trip in milliseconds or raises RedisUnavailableError."""
    import time

    client = sync_redis(settings)
    try:
        started = time.perf_counter()
        client.ping()
        return (time.perf_counter() - started) * 1000
    except redis.RedisError as exc:
        raise _explain(settings.redis_url, exc) from None
    finally:
        client.close()
