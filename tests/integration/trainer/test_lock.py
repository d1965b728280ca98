"""The single-flight lease against the real Redis: one holder, expiry, renewal, fencing."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from services.common.redis_client import sync_redis
from services.common.settings import Settings
from services.trainer.lock import TrainingLock


@pytest.fixture()
def model() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def test_only_one_of_many_concurrent_acquirers_gets_the_lease(stack: Settings, model: str) -> None:
    locks = [TrainingLock(sync_redis(stack), ttl_s=30) for _ in range(8)]
    barrier = threading.Barrier(len(locks))
    won: list[int] = []

    def race(i: int) -> None:
        barrier.wait()
        if locks[i].acquire(model, f"owner-{i}") is not None:
            won.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(locks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert locks[0].holder(model).startswith(f"owner-{won[0]}|")


def test_an_expired_lease_goes_to_the_next_trainer_with_a_newer_token(
    stack: Settings, model: str
) -> None:
    lock = TrainingLock(sync_redis(stack), ttl_s=1.5)
    first = lock.acquire(model, "dead-trainer")
    assert first is not None and lock.acquire(model, "other") is None
    deadline = time.monotonic() + 10
    second = None
    while second is None and time.monotonic() < deadline:  # never renewed: it expires
        time.sleep(0.2)
        second = lock.acquire(model, "other")
    assert second is not None and second.token > first.token
    assert not lock.holds(first) and lock.holds(second)
    assert not lock.renew(first), "a stale holder must not extend someone else's lease"
    assert not lock.release(first), "nor release it"
    assert lock.holds(second)


def test_tokens_never_go_backwards_after_a_redis_flush(stack: Settings, model: str) -> None:
    client = sync_redis(stack)
    lock = TrainingLock(client, ttl_s=30)
    lease = lock.acquire(model, "a", floor=0)
    assert lease is not None and lock.release(lease)
    client.delete(f"driftloop:trainer:fence:{model}")  # what a flush does to the counter
    again = lock.acquire(model, "b", floor=41)  # the alias log has seen token 41
    assert again is not None and again.token == 42


def test_a_kept_alive_lease_outlives_its_ttl_and_reports_loss(stack: Settings, model: str) -> None:
    client = sync_redis(stack)
    lock = TrainingLock(client, ttl_s=2.0)
    lease = lock.acquire(model, "worker")
    assert lease is not None
    # Renewed 10 times per TTL, so a stall of the keeper thread of up to 1.8 s (a loaded
    # 2-core machine) does not lose the lease. It outlives its TTL once a renewal made
    # after the first TTL ran out has pushed the expiry on: polled, no fixed sleep.
    key = f"driftloop:trainer:lock:{model}"
    acquired = time.monotonic()
    with lock.kept_alive(lease, every_s=0.2) as lost:
        deadline = acquired + 30
        while (expiry := time.monotonic() + client.pttl(key) / 1000) < acquired + 5.0:
            assert lock.holds(lease) and not lost.is_set(), "lost within its first TTL"
            assert time.monotonic() < deadline, "the keeper never renewed the lease"
            time.sleep(0.05)
        assert time.monotonic() > acquired + 2.5  # renewed half a TTL after it would expire
        assert lock.holds(lease) and not lost.is_set() and expiry >= acquired + 5.0
        client.delete(key)  # taken away (e.g. expired in a stall)
        assert lost.wait(5), "the keeper must notice that the lease is gone"
    assert lock.release(lease) is False
