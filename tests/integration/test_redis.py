"""The Redis client against the real redis-server of the local stack."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.common.redis_client import (
    RedisUnavailableError,
    async_redis,
    check_redis,
    sync_redis,
)
from services.common.settings import Settings, load_settings


def test_ping_set_get_and_ttl(stack: Settings) -> None:
    assert check_redis(stack) >= 0
    client = sync_redis(stack)
    key = f"test:{uuid.uuid4()}"
    try:
        assert client.set(key, b"v", ex=30, nx=True)
        assert not client.set(key, b"other", ex=30, nx=True)  # NX: first writer wins
        assert client.get(key) == b"v"
        assert 0 < client.ttl(key) <= 30
    finally:
        client.delete(key)
        client.close()


async def test_async_pubsub_round_trip(stack: Settings) -> None:
    channel = f"test:{uuid.uuid4()}"
    subscriber = async_redis(stack)
    publisher = async_redis(stack)
    pubsub = subscriber.pubsub()
    try:
        await pubsub.subscribe(channel)
        await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        assert await publisher.publish(channel, b"invalidate:exp-1") == 1
        message = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message:
                break
            await asyncio.sleep(0.01)
        assert message is not None and message["data"] == b"invalidate:exp-1"
    finally:
        await pubsub.aclose()
        await subscriber.aclose()
        await publisher.aclose()


def test_unreachable_redis_is_a_clear_error(stack: Settings) -> None:
    from services.stack.processes import free_port

    settings = load_settings(home=stack.home, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisUnavailableError) as info:
        check_redis(settings)
    message = str(info.value)
    assert settings.redis_url in message and "driftloop stack up" in message


def test_the_stack_redis_never_evicts_and_frees_expired_buckets_lazily(stack: Settings) -> None:
    """The ingest dedup index relies on both (services/ingest/dedup.py)."""
    client = sync_redis(stack)
    try:
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("lazyfree-lazy-expire") == {"lazyfree-lazy-expire": "yes"}
    finally:
        client.close()
