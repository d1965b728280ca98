"""A circuit breaker for a best-effort fast path: stop waiting on a dependency that is down.

closed ── a failure ──▶ open ── `retry_after_s` later, the next call ──▶ half-open
  ▲                      ▲                                                 │
  └──── it succeeds ─────┼──────────────── the trial call ─────────────────┘
                         └──────────────────── it fails ───────────────────┘

While open, `allow()` says no at once, so a caller skips the call instead of waiting out
a client timeout on every batch. Half-open lets exactly one trial call through; other
callers keep skipping until it has succeeded (closed) or failed (open again, with a fresh
`retry_after_s`). Pure state over an injectable clock: no I/O, no threads of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum

__all__ = ["BreakerState", "CircuitBreaker", "StateChange"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


StateChange = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Thread-safe; `on_change(old, new)` is called on every transition (under the lock,
    so transitions are reported in order: keep it short, e.g. a log line)."""

    def __init__(
        self,
        retry_after_s: float = 5.0,
        *,
        clock_s: Callable[[], float] = time.monotonic,
        on_change: StateChange | None = None,
    ) -> None:
        if retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {retry_after_s}")
        self.retry_after_s = retry_after_s
        self._clock_s, self._on_change = clock_s, on_change
        self._state = BreakerState.CLOSED
        self._opened_at_s = 0.0
        self._lock = threading.Lock()

    @property
    def state(self) -> BreakerState:
        return self._state

    def allow(self) -> bool:
        """Whether to attempt the call now. True when closed, and for the one trial call
        once `retry_after_s` has passed since opening; then report its outcome."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.HALF_OPEN:
                return False  # a trial is under way
            if self._clock_s() - self._opened_at_s >= self.retry_after_s:
                self._move(BreakerState.HALF_OPEN)
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            if self._state is not BreakerState.CLOSED:
                self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """Open (again) now: the next trial is `retry_after_s` away."""
        with self._lock:
            self._opened_at_s = self._clock_s()
            if self._state is not BreakerState.OPEN:
                self._move(BreakerState.OPEN)

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if self._on_change is not None:
            self._on_change(old, new)
