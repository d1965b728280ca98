"""Whether a trigger should start a training: the trainer's policy, as pure functions.

`decide` looks at one trigger and the model's `ModelState` and returns a `Decision` with
a machine-readable reason and the updated state (rows are accumulated even when the
trigger is skipped). It never starts anything: on `train=True` the caller starts the
training and records it with `started`, then `finished` when it ends.

Checks run from the trigger's own merit to the model's circumstances, and the first one
that fails names the reason: the trigger itself (suspect version, too few rows, low
severity, schedule not due), then a training in flight, then the cooldown.

A trigger that has merit but is held back by a training in flight or by the cooldown is
not forgotten: it is kept as the state's `deferred` trigger, and `due(now)` re-decides it
once nothing holds it back any more (the caller asks when a run finishes and on every
tick). A training that starts covers whatever was deferred.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, model_validator

__all__ = [
    "SEVERITY_CRITICAL",
    "SEVERITY_INFO",
    "SEVERITY_UNSPECIFIED",
    "SEVERITY_WARNING",
    "Decision",
    "ModelState",
    "PolicyConfig",
    "Trigger",
    "TriggerKind",
    "decide",
    "due",
    "finished",
    "schedule_due",
    "started",
]

# driftloop.v1.Severity (proto/driftloop/v1/events.proto), as plain ints.
SEVERITY_UNSPECIFIED = 0
SEVERITY_INFO = 1
SEVERITY_WARNING = 2
SEVERITY_CRITICAL = 3

TriggerKind = Literal["dataset_version", "drift", "experiment", "schedule", "manual"]


class Trigger(BaseModel, frozen=True):
    kind: TriggerKind
    model: str
    dataset: str
    at_ms: int = Field(ge=0)  # for dataset versions: when the version was created
    # dataset_version
    version_id: str | None = None
    rows: int = Field(default=0, ge=0)
    suspect: bool = False
    # drift
    severity: int = Field(default=SEVERITY_UNSPECIFIED, ge=0)
    metric: str = ""
    # experiment / manual
    detail: str = ""
    requested_by: str = ""

    @model_validator(mode="after")
    def _check_version(self) -> Trigger:
        if self.kind == "dataset_version" and not self.version_id:
            raise ValueError("a dataset_version trigger needs a version_id")
        return self


class PolicyConfig(BaseModel, frozen=True, extra="forbid"):
    cooldown_s: float = Field(default=600.0, ge=0.0, allow_inf_nan=False)
    min_new_rows: int = Field(default=10_000, ge=0)
    allow_suspect: bool = False
    min_drift_severity: int = Field(default=SEVERITY_WARNING, ge=0)
    schedule_interval_s: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    manual_bypasses_cooldown: bool = True


class ModelState(BaseModel, frozen=True):
    model: str
    last_started_ms: int | None = None
    rows_since_last: int = Field(default=0, ge=0)
    versions_since_last: tuple[str, ...] = ()
    in_flight: bool = False
    # The newest trigger with merit that was held back by a run in flight or the cooldown.
    deferred: Trigger | None = None


class Decision(BaseModel, frozen=True):
    train: bool
    reason: str
    detail: str
    state: ModelState


def started(state: ModelState, at_ms: int) -> ModelState:
    """A training started at `at_ms`: counters restart from zero and it is in flight."""
    return state.model_copy(
        update={
            "last_started_ms": at_ms,
            "rows_since_last": 0,
            "versions_since_last": (),
            "in_flight": True,
            "deferred": None,
        }
    )


def finished(state: ModelState) -> ModelState:
    return state.model_copy(update={"in_flight": False})


def schedule_due(config: PolicyConfig, state: ModelState, now_ms: int) -> bool:
    """A schedule is configured and its interval has passed since the last training start."""
    if config.schedule_interval_s is None:
        return False
    if state.last_started_ms is None:
        return True
    return (now_ms - state.last_started_ms) / 1000.0 >= config.schedule_interval_s


def _cooldown_left_s(config: PolicyConfig, state: ModelState, now_ms: int) -> float:
    if state.last_started_ms is None:
        return 0.0
    return max(0.0, config.cooldown_s - (now_ms - state.last_started_ms) / 1000.0)


def _observe_version(
    config: PolicyConfig, state: ModelState, trigger: Trigger
) -> tuple[ModelState, str | None, str]:
    """Count a dataset version's rows once; a skip reason if the version itself rules it out."""
    version = trigger.version_id or ""
    if trigger.suspect and not config.allow_suspect:
        return state, "skipped:suspect_version", f"version {version} is suspect; rows not counted"
    if version in state.versions_since_last:
        note = f"version {version} was already counted (replay)"
    elif state.last_started_ms is not None and trigger.at_ms <= state.last_started_ms:
        # Created before the last training started, so that training already read it.
        note = f"version {version} predates the last training start; rows not counted"
    else:
        state = state.model_copy(
            update={
                "rows_since_last": state.rows_since_last + trigger.rows,
                "versions_since_last": (*state.versions_since_last, version),
            }
        )
        suspect = " (suspect, allowed)" if trigger.suspect else ""
        note = f"version {version}{suspect} adds {trigger.rows} rows"
    counted = (
        f"{note}; {state.rows_since_last} rows in {len(state.versions_since_last)} versions "
        f"since the last training (need {config.min_new_rows})"
    )
    if state.rows_since_last < config.min_new_rows:
        return state, "skipped:not_enough_rows", counted
    return state, None, counted


def _merit(
    config: PolicyConfig, state: ModelState, trigger: Trigger
) -> tuple[ModelState, str, str | None, str]:
    """(updated state, reason if it trains, skip reason or None, detail) for the trigger alone."""
    kind = trigger.kind
    if kind == "dataset_version":
        state, skip, detail = _observe_version(config, state, trigger)
        return state, "new_rows", skip, detail
    if kind == "drift":
        detail = (
            f"drift {trigger.metric or '(unnamed metric)'} severity {trigger.severity} "
            f"(need >= {config.min_drift_severity})"
        )
        if trigger.detail:
            detail += f": {trigger.detail}"
        low = trigger.severity < config.min_drift_severity
        return state, "drift", "skipped:severity_below_threshold" if low else None, detail
    if kind == "schedule":
        interval = config.schedule_interval_s
        if interval is None:
            return state, "schedule", "skipped:schedule_not_due", "no schedule is configured"
        if state.last_started_ms is None:
            detail = f"every {interval:g} s; never trained"
        else:
            since_s = (trigger.at_ms - state.last_started_ms) / 1000.0
            detail = f"every {interval:g} s; {since_s:.0f} s since the last training started"
        due = schedule_due(config, state, trigger.at_ms)
        return state, "schedule", None if due else "skipped:schedule_not_due", detail
    by = f" by {trigger.requested_by}" if trigger.requested_by else ""
    detail = f"{kind}{by}" + (f": {trigger.detail}" if trigger.detail else "")
    return state, kind, None, detail


def decide(
    config: PolicyConfig, state: ModelState, trigger: Trigger, now_ms: int | None = None
) -> Decision:
    """Train on this trigger now, or not and why; raises ValueError for another model's
    trigger. The cooldown is judged at `now_ms` (default: when the trigger happened)."""
    if trigger.model != state.model:
        raise ValueError(f"trigger for model {trigger.model!r} given the state of {state.model!r}")
    state, reason, skip, detail = _merit(config, state, trigger)
    if skip is not None:
        return Decision(train=False, reason=skip, detail=detail, state=state)
    if state.in_flight:
        detail = f"a training of {state.model} is in flight (retried when it ends); {detail}"
        held = state.model_copy(update={"deferred": trigger})
        return Decision(train=False, reason="skipped:in_flight", detail=detail, state=held)
    left_s = _cooldown_left_s(config, state, trigger.at_ms if now_ms is None else now_ms)
    bypass = trigger.kind == "manual" and config.manual_bypasses_cooldown
    if left_s > 0 and not bypass:
        detail = (
            f"cooldown: {math.ceil(left_s)} s left of {config.cooldown_s:g} s (last training "
            f"started at {state.last_started_ms} ms), retried when it ends; {detail}"
        )
        held = state.model_copy(update={"deferred": trigger})
        return Decision(train=False, reason="skipped:cooldown", detail=detail, state=held)
    return Decision(train=True, reason=reason, detail=detail, state=state)


def due(config: PolicyConfig, state: ModelState, now_ms: int) -> Decision | None:
    """The deferred trigger re-decided at `now_ms`, once no run is in flight and the
    cooldown is over; None while nothing is deferred or it must still wait."""
    trigger = state.deferred
    if trigger is None or state.in_flight or _cooldown_left_s(config, state, now_ms) > 0:
        return None
    # The trigger keeps its own time (a version created before the last start stays
    # counted as such); only the cooldown is judged now.
    decision = decide(config, state.model_copy(update={"deferred": None}), trigger, now_ms)
    return decision.model_copy(update={"detail": f"deferred, now retried: {decision.detail}"})
