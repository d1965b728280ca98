"""The event-id dedup index (one Redis hash per dataset per window bucket, one Lua call
per chunk) against the real redis-server: claims, replays, other owners, repeats within a
chunk and across chunks, two replicas racing, losing the index and rebuilding it from
the sealed versions, and forgetting ids after the window."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pytest
import redis.asyncio as aioredis
from redis import Redis

from services.common.redis_client import async_redis, sync_redis
from services.common.settings import Settings
from services.ingest.dedup import EventDedup, owner_of

DATASET = "credit"


class SealedVersions:
    """Stands for the artifact store's reader: the ids sealed since a time, recorded."""

    def __init__(self, ids: Sequence[str] = ()) -> None:
        self.ids, self.calls = list(ids), list[tuple[str, int]]()
        self.on_read: list[tuple[aioredis.Redis, str]] = []  # drop an index while reading

    async def __call__(self, dataset: str, since_ms: int) -> Sequence[str]:
        self.calls.append((dataset, since_ms))
        for client, prefix in self.on_read:
            await _drop_index(client, prefix)
        self.on_read.clear()
        return self.ids


@pytest.fixture
async def redis(stack: Settings) -> AsyncIterator[aioredis.Redis]:
    client = async_redis(stack)
    yield client
    await client.aclose()


@pytest.fixture
def claims_client(stack: Settings) -> Iterator[Redis]:
    """The kind of client the service claims with (used from a worker thread)."""
    client = sync_redis(stack)
    yield client
    client.close()


def _prefix() -> str:
    return f"test:dedup:{uuid.uuid4().hex}"


def _dedup(
    client: Redis, prefix: str, sealed: SealedVersions | None = None, ttl_s: int = 600
) -> EventDedup:
    return EventDedup(
        client,
        sealed or SealedVersions(),
        ttl_s,
        prefix=prefix,
        now_ms=lambda: int(time.time() * 1000),
    )


def _owners(partition: int, start: int, n: int) -> list[str]:
    return [owner_of("data.events", partition, offset) for offset in range(start, start + n)]


async def _drop_index(redis: aioredis.Redis, prefix: str) -> None:
    """What a FLUSHDB or a failover to an empty replica does to this index."""
    keys = await redis.keys(f"{prefix}:*")
    assert keys, "the index should exist before it is dropped"
    await redis.delete(*keys)


async def test_new_ids_replays_and_other_owners(claims_client: Redis) -> None:
    prefix = _prefix()
    dedup = _dedup(claims_client, prefix)
    ids = [f"e{i}" for i in range(100)]
    owners = _owners(0, 0, 100)

    first = await dedup.claim(DATASET, ids, owners, [])
    assert not first.any()
    assert dedup.rebuilds == 1  # the first claim finds no ready marker and builds the index

    # The same records again (a replay after a crash before the seal): still theirs.
    assert not (await dedup.claim(DATASET, ids, owners, [])).any()
    # The same ids from other records (a producer retry, a copy): duplicates, except the
    # new ids among them.
    mixed = ids[:50] + [f"new{i}" for i in range(50)]
    copies = await dedup.claim(DATASET, mixed, _owners(1, 0, 100), [])
    assert copies.tolist() == [True] * 50 + [False] * 50
    # Arrow arrays work as well as lists (the pipeline passes Arrow columns).
    again = await dedup.claim(DATASET, pa.array(ids[:10]), pa.array(_owners(2, 0, 10)), [])
    assert again.all()
    # Another dataset has its own index: the same ids are new there.
    assert not (await dedup.claim("other", ids, _owners(1, 0, 100), [])).any()


async def test_repeats_within_a_chunk_and_across_chunks(claims_client: Redis) -> None:
    dedup = _dedup(claims_client, _prefix())
    # 12,000 ids in one call: three Lua chunks of 5,000. Every 7th id repeats an id
    # from 5,001 places earlier (the chunk before), every 11th one from 3 places earlier
    # (the same chunk), with a different owner; a repeat with the *same* owner (the same
    # record twice in one batch) is not a duplicate.
    n = 12_000
    ids = [f"id{i}" for i in range(n)]
    owners = _owners(0, 0, n)
    expected = np.zeros(n, dtype=bool)
    for i in range(n):
        if i >= 5_001 and i % 7 == 0:
            ids[i], expected[i] = ids[i - 5_001], True
        elif i >= 3 and i % 11 == 0:
            ids[i], expected[i] = ids[i - 3], True
    ids[n - 1], owners[n - 1], expected[n - 1] = ids[n - 3], owners[n - 3], False
    assert not expected[n - 3]

    duplicate = await dedup.claim(DATASET, ids, owners, [])
    assert duplicate.tolist() == expected.tolist()
    # A replay of the whole batch by its own records: nothing is a duplicate of itself,
    # the repeats are still duplicates (their first copy holds the id).
    assert (await dedup.claim(DATASET, ids, owners, [])).tolist() == expected.tolist()


async def test_two_replicas_racing_give_each_id_to_one_record(
    stack: Settings, claims_client: Redis
) -> None:
    prefix = _prefix()
    other = sync_redis(stack)
    try:
        a, b = _dedup(claims_client, prefix), _dedup(other, prefix)
        ids = [f"race{i}" for i in range(20_000)]
        dup_a, dup_b = await asyncio.gather(
            a.claim(DATASET, ids, _owners(0, 0, len(ids)), [], distinct=True),
            b.claim(DATASET, ids, _owners(1, 0, len(ids)), [], distinct=True),
        )
    finally:
        other.close()
    # Every id is accepted by exactly one of them.
    assert (dup_a ^ dup_b).all()


async def test_a_lost_index_is_rebuilt_from_sealed_and_pending_ids(
    redis: aioredis.Redis, claims_client: Redis
) -> None:
    prefix = _prefix()
    sealed = SealedVersions([f"sealed{i}" for i in range(7_000)])
    dedup = _dedup(claims_client, prefix, sealed, ttl_s=600)
    pending_ids = [f"pending{i}" for i in range(300)]
    pending_owners = _owners(3, 1_000, 300)
    assert not (await dedup.claim(DATASET, pending_ids, pending_owners, [])).any()
    rebuilds = dedup.rebuilds

    await _drop_index(redis, prefix)
    assert not await dedup.is_ready(DATASET)

    sealed_copies = sealed.ids[::100]  # 70 copies of sealed ids, from new records
    replays = pending_ids[:20]  # pending records read again after a rebalance
    pending_copies = pending_ids[20:40]  # other records with pending ids
    fresh = [f"fresh{i}" for i in range(10)]
    ids = sealed_copies + replays + pending_copies + fresh
    owners = (
        _owners(4, 0, len(sealed_copies))
        + pending_owners[:20]
        + _owners(4, 500, 20)
        + _owners(4, 900, 10)
    )
    duplicate = await dedup.claim(
        DATASET, ids, owners, [(pending_ids, pending_owners)], distinct=True
    )
    expected = [True] * len(sealed_copies) + [False] * 20 + [True] * 20 + [False] * 10
    assert duplicate.tolist() == expected
    assert dedup.rebuilds == rebuilds + 1 and await dedup.is_ready(DATASET)
    # The sealed ids were asked for within the window, for this dataset.
    dataset, since_ms = sealed.calls[-1]
    now_ms = time.time() * 1000
    assert dataset == DATASET and now_ms - 601_000 <= since_ms <= now_ms - 600_000 + 1_000


async def test_an_index_lost_during_its_rebuild_is_rebuilt_again(
    redis: aioredis.Redis, claims_client: Redis
) -> None:
    prefix = _prefix()
    sealed = SealedVersions(["s1", "s2"])
    sealed.on_read.append((redis, prefix))  # a flush while the rebuild reads the versions
    dedup = _dedup(claims_client, prefix, sealed)

    duplicate = await dedup.claim(DATASET, ["s1", "x"], _owners(0, 0, 2), [])
    assert duplicate.tolist() == [True, False]
    assert len(sealed.calls) == 2  # the first rebuild's token was lost: it ran again
    assert dedup.rebuilds == 1 and await dedup.is_ready(DATASET)


@pytest.mark.slow
async def test_ids_are_remembered_for_the_window_and_then_forgotten(
    redis: aioredis.Redis, claims_client: Redis
) -> None:
    prefix = _prefix()
    dedup = _dedup(claims_client, prefix, ttl_s=1)
    await dedup.claim(DATASET, ["old"], _owners(0, 0, 1), [])
    # Within the window a copy is refused; the bucket expires after at most two windows.
    assert (await dedup.claim(DATASET, ["old"], _owners(1, 0, 1), [])).all()
    buckets = await redis.keys(f"{prefix}:*:ids:*")
    assert buckets and all(0 < ttl <= 2_000 for ttl in [await redis.pttl(k) for k in buckets])
    expired_by = time.monotonic() + 3.2  # two windows and a margin
    while await redis.keys(f"{prefix}:*:ids:*"):
        assert time.monotonic() < expired_by, "a bucket outlived two windows"
        await asyncio.sleep(0.05)
    # Past the window the id is forgotten: the stated limit, a later copy is accepted.
    assert not (await dedup.claim(DATASET, ["old"], _owners(1, 0, 1), [])).any()
