"""Alerts that do not cry wolf: hysteresis over windows, one open incident per key (pure).

A key is (model, metric, feature, slice). Each evaluated window reports whether its value
is above the threshold (the threshold itself comes from the reference's own windows, or
the model spec's override: thresholds.py). An incident opens — and one `Firing` is
returned, which becomes one DriftEvent — after `fire_after` consecutive windows above; it
stays open, raising nothing more, until `clear_after` consecutive windows below close it.
A window at or before the last one seen for its key is ignored, so re-evaluating windows
after a restart raises nothing twice.

The state after each window (`AlertState`) is written with the window's metric row, and
`AlertTracker.restore` rebuilds the tracker from those rows on start.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

__all__ = ["AlertKey", "AlertState", "AlertTracker", "Firing", "Observation", "severity_for"]

State = Literal["ok", "pending", "firing", "clearing"]
SEVERITY_WARNING = 2  # driftloop.v1.Severity
SEVERITY_CRITICAL = 3


@dataclass(frozen=True, order=True)
class AlertKey:
    model: str
    metric: str
    feature: str
    slice: str = ""


@dataclass(frozen=True)
class Observation:
    key: AlertKey
    version: str
    window_start_ms: int
    window_end_ms: int
    value: float
    threshold: float
    breached: bool


@dataclass(frozen=True)
class AlertState:
    state: State
    consecutive: int  # windows above (ok/pending/firing) or below (clearing) in a row
    last_window_ms: int


@dataclass(frozen=True)
class Firing:
    """An incident opened by `observation` after `consecutive` windows above."""

    observation: Observation
    consecutive: int
    severity: int
    event_id: str


def severity_for(value: float, threshold: float) -> int:
    """Critical at twice the threshold or more, warning above it."""
    if threshold > 0 and value >= 2 * threshold:
        return SEVERITY_CRITICAL
    return SEVERITY_WARNING


def event_id_for(obs: Observation) -> str:
    """Deterministic: a window re-evaluated after a crash raises the same event id."""
    raw = "|".join(
        (obs.key.model, obs.version, obs.key.metric, obs.key.feature, obs.key.slice,
         str(obs.window_start_ms))
    )  # fmt: skip
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class AlertTracker:
    def __init__(self, fire_after: int, clear_after: int) -> None:
        if fire_after < 1 or clear_after < 1:
            raise ValueError("fire_after and clear_after must be >= 1")
        self._fire_after = fire_after
        self._clear_after = clear_after
        self._states: dict[AlertKey, AlertState] = {}

    def state(self, key: AlertKey) -> AlertState:
        return self._states.get(key, AlertState("ok", 0, -1))

    def restore(self, key: AlertKey, state: AlertState) -> None:
        current = self._states.get(key)
        if current is None or state.last_window_ms > current.last_window_ms:
            self._states[key] = state

    def open_incidents(self) -> list[AlertKey]:
        return sorted(k for k, s in self._states.items() if s.state in ("firing", "clearing"))

    def observe(self, obs: Observation) -> tuple[AlertState, Firing | None]:
        """Advance `obs.key` by one window; a Firing when this window opens an incident."""
        prev = self.state(obs.key)
        if obs.window_start_ms <= prev.last_window_ms:
            return prev, None
        firing: Firing | None = None
        at = obs.window_start_ms
        if prev.state in ("firing", "clearing"):
            if obs.breached:
                new = AlertState(
                    "firing", prev.consecutive + 1 if prev.state == "firing" else 1, at
                )
            else:
                below = prev.consecutive + 1 if prev.state == "clearing" else 1
                new = (
                    AlertState("ok", 0, at)
                    if below >= self._clear_after
                    else AlertState("clearing", below, at)
                )
        elif obs.breached:
            above = prev.consecutive + 1
            if above >= self._fire_after:
                new = AlertState("firing", above, at)
                firing = Firing(
                    obs, above, severity_for(obs.value, obs.threshold), event_id_for(obs)
                )
            else:
                new = AlertState("pending", above, at)
        else:
            new = AlertState("ok", 0, at)
        self._states[obs.key] = new
        return new, firing
