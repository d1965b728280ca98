"""Every branch of the trigger policy, including the boundaries of cooldown and schedule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from driftloop.v1 import events_pb2 as pb
from services.trainer import policy
from services.trainer.policy import (
    Decision,
    ModelState,
    PolicyConfig,
    Trigger,
    TriggerKind,
    decide,
    due,
    finished,
    schedule_due,
    started,
)

T0 = 1_700_000_000_000  # ms
COOLDOWN_MS = 600_000  # the default cooldown_s = 600
CONFIG = PolicyConfig()
FRESH = ModelState(model="churn")


def _trigger(kind: TriggerKind, at_ms: int = T0, **fields: object) -> Trigger:
    if kind == "dataset_version":
        fields.setdefault("version_id", "v1")
    return Trigger(kind=kind, model="churn", dataset="events", at_ms=at_ms, **fields)  # type: ignore[arg-type]


def _version(version_id: str, rows: int, at_ms: int = T0, suspect: bool = False) -> Trigger:
    return _trigger("dataset_version", at_ms, version_id=version_id, rows=rows, suspect=suspect)


def _trained_at(at_ms: int, state: ModelState = FRESH) -> ModelState:
    return finished(started(state, at_ms))


def test_severity_constants_match_the_proto_enum() -> None:
    assert policy.SEVERITY_UNSPECIFIED == pb.SEVERITY_UNSPECIFIED
    assert policy.SEVERITY_INFO == pb.SEVERITY_INFO
    assert policy.SEVERITY_WARNING == pb.SEVERITY_WARNING
    assert policy.SEVERITY_CRITICAL == pb.SEVERITY_CRITICAL
    assert PolicyConfig().min_drift_severity == pb.SEVERITY_WARNING


def test_a_trigger_for_another_model_is_rejected() -> None:
    with pytest.raises(ValueError, match="'churn' given the state of 'fraud'"):
        decide(CONFIG, ModelState(model="fraud"), _trigger("manual"))


# dataset versions


def test_rows_accumulate_until_the_threshold_then_train() -> None:
    first = decide(CONFIG, FRESH, _version("v1", 6_000))
    assert (first.train, first.reason) == (False, "skipped:not_enough_rows")
    assert first.state.rows_since_last == 6_000
    assert first.state.versions_since_last == ("v1",)
    assert "6000 rows in 1 versions since the last training (need 10000)" in first.detail
    second = decide(CONFIG, first.state, _version("v2", 4_000))
    assert (second.train, second.reason) == (True, "new_rows")
    assert second.state.rows_since_last == 10_000
    assert second.state.versions_since_last == ("v1", "v2")


def test_a_replayed_version_is_counted_once() -> None:
    first = decide(CONFIG, FRESH, _version("v1", 6_000))
    replay = decide(CONFIG, first.state, _version("v1", 6_000))
    assert replay.reason == "skipped:not_enough_rows"
    assert replay.state == first.state
    assert "already counted (replay)" in replay.detail


def test_a_suspect_version_is_skipped_and_not_counted() -> None:
    state = FRESH.model_copy(update={"rows_since_last": 9_000, "versions_since_last": ("v0",)})
    decision = decide(CONFIG, state, _version("bad", 5_000, suspect=True))
    assert (decision.train, decision.reason) == (False, "skipped:suspect_version")
    assert decision.state == state
    assert "bad is suspect" in decision.detail


def test_a_suspect_version_counts_when_allowed() -> None:
    config = PolicyConfig(allow_suspect=True)
    decision = decide(config, FRESH, _version("sus", 12_000, suspect=True))
    assert (decision.train, decision.reason) == (True, "new_rows")
    assert decision.state.rows_since_last == 12_000
    assert "(suspect, allowed)" in decision.detail


def test_a_version_created_before_the_last_training_start_is_not_counted() -> None:
    state = _trained_at(T0)
    decision = decide(CONFIG, state, _version("old", 50_000, at_ms=T0))
    assert decision.state.rows_since_last == 0
    assert decision.reason == "skipped:not_enough_rows"
    assert "predates the last training start" in decision.detail


def test_zero_min_new_rows_trains_on_any_version() -> None:
    decision = decide(PolicyConfig(min_new_rows=0), FRESH, _version("v1", 0))
    assert (decision.train, decision.reason) == (True, "new_rows")


def test_enough_rows_still_wait_for_the_cooldown() -> None:
    state = _trained_at(T0)
    decision = decide(CONFIG, state, _version("v9", 20_000, at_ms=T0 + 60_000))
    assert (decision.train, decision.reason) == (False, "skipped:cooldown")
    assert decision.state.rows_since_last == 20_000  # kept for the next trigger
    later = decide(CONFIG, decision.state, _version("v10", 1, at_ms=T0 + COOLDOWN_MS))
    assert (later.train, later.reason) == (True, "new_rows")
    assert later.state.rows_since_last == 20_001


def test_a_dataset_version_trigger_needs_a_version_id() -> None:
    with pytest.raises(ValidationError, match="needs a version_id"):
        Trigger(kind="dataset_version", model="churn", dataset="events", at_ms=T0, rows=5)


# cooldown


@pytest.mark.parametrize(
    ("elapsed_ms", "train"),
    [(COOLDOWN_MS - 1, False), (COOLDOWN_MS, True), (COOLDOWN_MS + 1, True)],
)
def test_cooldown_boundary_is_inclusive(elapsed_ms: int, train: bool) -> None:
    decision = decide(CONFIG, _trained_at(T0), _trigger("drift", T0 + elapsed_ms, severity=2))
    assert decision.train is train
    assert decision.reason == ("drift" if train else "skipped:cooldown")


def test_cooldown_detail_gives_the_numbers() -> None:
    decision = decide(CONFIG, _trained_at(T0), _trigger("drift", T0 + 477_000, severity=3))
    assert decision.detail.startswith(
        f"cooldown: 123 s left of 600 s (last training started at {T0} ms)"
    )


def test_cooldown_of_a_model_never_trained_has_passed() -> None:
    assert decide(CONFIG, FRESH, _trigger("experiment")).train


def test_an_event_older_than_the_last_start_is_in_cooldown() -> None:
    decision = decide(CONFIG, _trained_at(T0), _trigger("drift", T0 - 5_000, severity=3))
    assert decision.reason == "skipped:cooldown"
    assert "cooldown: 605 s left" in decision.detail


# drift and experiments


@pytest.mark.parametrize(
    ("minimum", "severity", "train"),
    [(2, 0, False), (2, 1, False), (2, 2, True), (2, 3, True), (3, 2, False), (3, 3, True)],
)
def test_drift_severity_threshold(minimum: int, severity: int, train: bool) -> None:
    config = PolicyConfig(min_drift_severity=minimum)
    trigger = _trigger("drift", severity=severity, metric="psi(annual_income)")
    decision = decide(config, FRESH, trigger)
    assert decision.train is train
    assert decision.reason == ("drift" if train else "skipped:severity_below_threshold")
    assert f"psi(annual_income) severity {severity} (need >= {minimum})" in decision.detail
    assert decision.state == FRESH


def test_experiment_trains_outside_cooldown_only() -> None:
    trigger = _trigger("experiment", T0 + 1_000, detail="guardrail breach: latency")
    inside = decide(CONFIG, _trained_at(T0), trigger)
    assert inside.reason == "skipped:cooldown"
    outside = decide(CONFIG, _trained_at(T0 - COOLDOWN_MS), trigger)
    assert (outside.train, outside.reason) == (True, "experiment")
    assert "guardrail breach: latency" in outside.detail


# schedule


def test_schedule_without_an_interval_is_never_due() -> None:
    assert not schedule_due(CONFIG, FRESH, T0)
    decision = decide(CONFIG, FRESH, _trigger("schedule"))
    assert (decision.train, decision.reason) == (False, "skipped:schedule_not_due")
    assert decision.detail == "no schedule is configured"


@pytest.mark.parametrize(
    ("elapsed_ms", "due"), [(3_599_999, False), (3_600_000, True), (7_200_000, True)]
)
def test_schedule_is_due_once_the_interval_has_passed(elapsed_ms: int, due: bool) -> None:
    config = PolicyConfig(schedule_interval_s=3600.0)
    state = _trained_at(T0)
    assert schedule_due(config, state, T0 + elapsed_ms) is due
    decision = decide(config, state, _trigger("schedule", T0 + elapsed_ms))
    assert decision.train is due
    assert decision.reason == ("schedule" if due else "skipped:schedule_not_due")


def test_schedule_is_due_for_a_model_never_trained() -> None:
    config = PolicyConfig(schedule_interval_s=60.0)
    assert schedule_due(config, FRESH, T0)
    assert decide(config, FRESH, _trigger("schedule")).reason == "schedule"


def test_a_schedule_shorter_than_the_cooldown_still_waits() -> None:
    config = PolicyConfig(schedule_interval_s=60.0, cooldown_s=600.0)
    decision = decide(config, _trained_at(T0), _trigger("schedule", T0 + 120_000))
    assert decision.reason == "skipped:cooldown"


# manual


def test_manual_bypasses_the_cooldown_by_default() -> None:
    trigger = _trigger("manual", T0 + 1, requested_by="alice", detail="new features")
    decision = decide(CONFIG, _trained_at(T0), trigger)
    assert (decision.train, decision.reason) == (True, "manual")
    assert decision.detail == "manual by alice: new features"


def test_manual_respects_the_cooldown_when_configured() -> None:
    config = PolicyConfig(manual_bypasses_cooldown=False)
    assert decide(config, _trained_at(T0), _trigger("manual", T0 + 1)).reason == "skipped:cooldown"
    assert decide(config, _trained_at(T0), _trigger("manual", T0 + COOLDOWN_MS)).train


# in flight


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("dataset_version", {"version_id": "v7", "rows": 50_000}),
        ("drift", {"severity": 3}),
        ("experiment", {}),
        ("schedule", {}),
        ("manual", {}),
    ],
)
def test_nothing_trains_while_a_training_is_in_flight(
    kind: TriggerKind, fields: dict[str, object]
) -> None:
    config = PolicyConfig(schedule_interval_s=60.0)
    state = started(FRESH, T0 - 10 * COOLDOWN_MS)
    trigger = Trigger.model_validate(
        {"kind": kind, "model": "churn", "dataset": "events", "at_ms": T0, **fields}
    )
    decision = decide(config, state, trigger)
    assert (decision.train, decision.reason) == (False, "skipped:in_flight")
    assert decision.detail.startswith("a training of churn is in flight")
    assert decision.state.in_flight


def test_rows_arriving_during_a_training_count_towards_the_next() -> None:
    state = started(FRESH, T0)
    decision = decide(CONFIG, state, _version("v8", 50_000, at_ms=T0 + 1))
    assert decision.reason == "skipped:in_flight"
    assert decision.state.rows_since_last == 50_000
    done = finished(decision.state)
    after = decide(CONFIG, done, _version("v9", 0, at_ms=T0 + COOLDOWN_MS))
    assert (after.train, after.reason) == (True, "new_rows")


def test_a_skip_of_the_trigger_itself_is_named_before_in_flight() -> None:
    decision = decide(CONFIG, started(FRESH, T0), _trigger("drift", T0 + 1, severity=1))
    assert decision.reason == "skipped:severity_below_threshold"


# state transitions


def test_started_resets_counters_and_finished_clears_in_flight() -> None:
    state = ModelState(model="churn", rows_since_last=123, versions_since_last=("a", "b"))
    running = started(state, T0)
    assert running == ModelState(model="churn", last_started_ms=T0, in_flight=True)
    assert state.rows_since_last == 123  # states are immutable values
    assert finished(running) == ModelState(model="churn", last_started_ms=T0)


def test_a_full_cycle() -> None:
    state = FRESH
    decisions: list[Decision] = []
    for i, rows in enumerate([4_000, 4_000, 4_000]):
        decision = decide(CONFIG, state, _version(f"v{i}", rows, at_ms=T0 + i))
        decisions.append(decision)
        state = started(decision.state, T0 + i) if decision.train else decision.state
    assert [d.reason for d in decisions] == [
        "skipped:not_enough_rows",
        "skipped:not_enough_rows",
        "new_rows",
    ]
    assert state.in_flight and state.rows_since_last == 0
    state = finished(state)
    assert decide(CONFIG, state, _trigger("drift", T0 + 3, severity=3)).reason == (
        "skipped:cooldown"
    )


@pytest.mark.parametrize(
    "fields",
    [{"cooldown_s": -1}, {"schedule_interval_s": 0}, {"min_new_rows": -5}, {"extra": 1}],
)
def test_policy_config_rejects_bad_values(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PolicyConfig.model_validate(fields)


# deferred triggers


def test_rows_deferred_by_the_cooldown_train_once_it_ends() -> None:
    state = _trained_at(T0)
    held = decide(CONFIG, state, _version("v2", 20_000, at_ms=T0 + 139_000))
    assert (held.train, held.reason) == (False, "skipped:cooldown")
    assert held.state.deferred is not None and "retried when it ends" in held.detail
    assert due(CONFIG, held.state, T0 + COOLDOWN_MS - 1) is None  # still cooling down
    retried = due(CONFIG, held.state, T0 + COOLDOWN_MS)
    assert retried is not None and retried.train and retried.reason == "new_rows"
    assert retried.state.deferred is None and retried.state.rows_since_last == 20_000
    assert retried.detail.startswith("deferred, now retried")


def test_a_drift_event_deferred_by_a_run_in_flight_trains_when_the_run_ends() -> None:
    running = started(FRESH, T0)
    drift = _trigger("drift", T0 + 1, severity=policy.SEVERITY_CRITICAL, metric="psi(x)")
    held = decide(PolicyConfig(cooldown_s=0), running, drift)
    assert (held.train, held.reason) == (False, "skipped:in_flight")
    assert due(PolicyConfig(cooldown_s=0), held.state, T0 + 2) is None  # still in flight
    retried = due(PolicyConfig(cooldown_s=0), finished(held.state), T0 + 3)
    assert retried is not None and (retried.train, retried.reason) == (True, "drift")


def test_nothing_deferred_nothing_due_and_a_start_clears_what_was_deferred() -> None:
    assert due(CONFIG, FRESH, T0) is None
    low = decide(CONFIG, _trained_at(T0), _version("v2", 10))  # no merit: not deferred
    assert low.reason == "skipped:not_enough_rows" and low.state.deferred is None
    held = decide(CONFIG, _trained_at(T0), _version("v3", 20_000, at_ms=T0 + 1))
    assert held.state.deferred is not None
    assert started(held.state, T0 + COOLDOWN_MS).deferred is None


def test_a_retry_does_not_recount_a_version_that_predates_the_run_it_waited_for() -> None:
    """Replayed announcements of versions the run in flight already reads are not
    deferred (they add no rows), so the run's end does not start a second one."""
    running = started(FRESH, T0)
    replay = decide(CONFIG, running, _version("old", 20_000, at_ms=T0 - 1))
    assert replay.reason == "skipped:not_enough_rows" and replay.state.deferred is None
    fresh = decide(CONFIG, running, _version("new", 20_000, at_ms=T0 + 1))
    assert fresh.reason == "skipped:in_flight" and fresh.state.deferred is not None
    retried = due(PolicyConfig(cooldown_s=0), finished(fresh.state), T0 + 5)
    assert retried is not None and retried.train and retried.state.rows_since_last == 20_000
