"""Hysteresis: k windows above to fire, m below to clear, one incident per key."""

from __future__ import annotations

from services.monitor.alerts import (
    SEVERITY_CRITICAL,
    SEVERITY_WARNING,
    AlertKey,
    AlertTracker,
    Observation,
    severity_for,
)

KEY = AlertKey("m@1", "psi", "f0")


def _obs(i: int, breached: bool, value: float = 0.3, key: AlertKey = KEY) -> Observation:
    return Observation(key, "1", i * 60_000, (i + 1) * 60_000, value, 0.2, breached)


def _run(tracker: AlertTracker, pattern: str, key: AlertKey = KEY) -> list[int]:
    """Windows (indexes) at which an incident opened, for a pattern of '+' (above) / '-'."""
    fired = []
    for i, c in enumerate(pattern):
        _, firing = tracker.observe(_obs(i, c == "+", key=key))
        if firing is not None:
            fired.append(i)
    return fired


def test_fires_after_k_consecutive_windows_only() -> None:
    assert _run(AlertTracker(fire_after=2, clear_after=3), "+-+-+-+-") == []
    assert _run(AlertTracker(fire_after=2, clear_after=3), "-++-") == [2]
    assert _run(AlertTracker(fire_after=3, clear_after=1), "++-+++") == [5]


def test_one_incident_until_m_windows_below_clear_it() -> None:
    tracker = AlertTracker(fire_after=2, clear_after=3)
    # opens at 1; two below do not clear it, so the next run above raises nothing;
    # three below clear it, and the next two above open a second incident.
    assert _run(tracker, "++--++---++") == [1, 10]
    assert tracker.open_incidents() == [KEY]


def test_states_and_consecutive_counts() -> None:
    tracker = AlertTracker(fire_after=2, clear_after=2)
    seen = [tracker.observe(_obs(i, c == "+"))[0] for i, c in enumerate("++-+--")]
    assert [(s.state, s.consecutive) for s in seen] == [
        ("pending", 1), ("firing", 2), ("clearing", 1), ("firing", 1), ("clearing", 1), ("ok", 0),
    ]  # fmt: skip


def test_a_window_seen_again_raises_nothing_and_restore_continues() -> None:
    tracker = AlertTracker(fire_after=2, clear_after=2)
    _run(tracker, "++")
    state, firing = tracker.observe(_obs(1, True))  # re-judged after a restart
    assert firing is None and state.state == "firing"
    fresh = AlertTracker(fire_after=2, clear_after=2)
    fresh.restore(KEY, state)
    assert fresh.observe(_obs(2, True))[1] is None  # still the same incident


def test_keys_are_independent_and_event_ids_deterministic() -> None:
    other = AlertKey("m@1", "psi", "f1")
    a, b = AlertTracker(2, 2), AlertTracker(2, 2)
    a.observe(_obs(0, True))
    assert a.observe(_obs(0, True, key=other))[1] is None
    first = a.observe(_obs(1, True))[1]
    b.observe(_obs(0, True))
    second = b.observe(_obs(1, True))[1]
    assert first is not None and second is not None and first.event_id == second.event_id


def test_severity_grows_with_the_effect() -> None:
    assert severity_for(0.25, 0.2) == SEVERITY_WARNING
    assert severity_for(0.45, 0.2) == SEVERITY_CRITICAL
