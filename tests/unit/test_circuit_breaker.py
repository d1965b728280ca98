"""The circuit breaker's state machine, on a fake clock."""

from __future__ import annotations

import pytest

from services.common.circuit_breaker import BreakerState, CircuitBreaker

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _breaker(clock: Clock) -> tuple[CircuitBreaker, list[tuple[BreakerState, BreakerState]]]:
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(5.0, clock_s=clock, on_change=lambda a, b: changes.append((a, b)))
    return breaker, changes


def test_closed_allows_every_call_and_successes_change_nothing(clock: Clock) -> None:
    breaker, changes = _breaker(clock)
    for _ in range(3):
        assert breaker.allow()
        breaker.record_success()
    assert breaker.state is CLOSED and changes == []


def test_one_failure_opens_and_calls_are_refused_until_retry_after(clock: Clock) -> None:
    breaker, changes = _breaker(clock)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is OPEN and changes == [(CLOSED, OPEN)]
    for dt in (0.0, 1.0, 4.999):
        clock.now_s = 100.0 + dt
        assert not breaker.allow()
    assert breaker.state is OPEN


def test_half_open_lets_one_trial_through_and_its_success_closes(clock: Clock) -> None:
    breaker, changes = _breaker(clock)
    breaker.record_failure()
    clock.now_s += 5.0
    assert breaker.allow()  # the trial
    assert breaker.state is HALF_OPEN
    assert not breaker.allow() and not breaker.allow()  # others skip while it runs
    breaker.record_success()
    assert breaker.state is CLOSED and breaker.allow()
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_a_failed_trial_reopens_with_a_fresh_wait(clock: Clock) -> None:
    breaker, changes = _breaker(clock)
    breaker.record_failure()
    clock.now_s += 60.0  # long after: still one trial only
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is OPEN
    clock.now_s += 4.0
    assert not breaker.allow()  # the wait restarted at the failed trial
    clock.now_s += 1.0
    assert breaker.allow()
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN)]


def test_zero_wait_retries_on_the_next_call_and_negative_is_refused(clock: Clock) -> None:
    breaker = CircuitBreaker(0.0, clock_s=clock)
    breaker.record_failure()
    assert breaker.allow() and breaker.state is HALF_OPEN
    with pytest.raises(ValueError):
        CircuitBreaker(-1.0)
