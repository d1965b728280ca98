"""Which windows the live drift job judges (pure), and the query API's statement check."""

from __future__ import annotations

import pytest

from services.monitor.config import MonitorSettings
from services.monitor.http_api import read_only_statement
from services.monitor.live import drift as live_drift
from services.monitor.live.drift import window_plan
from services.monitor.live.traffic import VersionTraffic
from services.monitor.specs import default_spec

W = 60_000


def _spec(lateness_ms: int = 0) -> object:
    return default_spec(
        "m", MonitorSettings(window_ms=W, lateness_ms=lateness_ms, reference_windows=3)
    )


def test_no_judgement_until_the_reference_windows_are_closed() -> None:
    spec = _spec()
    assert window_plan(VersionTraffic("m", "1", 0, 3 * W - 1, 10), spec, None, 50) is None  # type: ignore[arg-type]
    plan = window_plan(VersionTraffic("m", "1", 0, 3 * W, 10), spec, None, 50)  # type: ignore[arg-type]
    assert plan is not None and plan.reference == (0, 2) and plan.analysis is None


def test_closed_windows_after_the_last_judged_one_bounded_per_tick() -> None:
    spec = _spec()
    traffic = VersionTraffic("m", "1", 5, 20 * W + 1, 10)
    plan = window_plan(traffic, spec, None, 50)  # type: ignore[arg-type]
    assert plan is not None and plan.analysis == (3, 19)
    assert window_plan(traffic, spec, 10, 4).analysis == (11, 14)  # type: ignore[arg-type, union-attr]
    assert window_plan(traffic, spec, 19, 50).analysis is None  # type: ignore[arg-type, union-attr]


def test_lateness_holds_a_window_open() -> None:
    plan = window_plan(VersionTraffic("m", "1", 0, 10 * W + 500, 10), _spec(1_000), None, 50)  # type: ignore[arg-type]
    assert plan is not None and plan.analysis == (3, 8)


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1", "  with x as (select 1) select * from x;", "-- c\nSHOW TABLES", "DESCRIBE t"],
)
def test_read_only_statements_pass(sql: str) -> None:
    assert read_only_statement(sql)


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("INSERT INTO t VALUES (1)", "read-only"),
        ("DROP TABLE t", "read-only"),
        ("SELECT 1; DROP TABLE t", "exactly one"),
        ("-- only a comment", "exactly one"),
    ],
)
def test_other_statements_are_refused(sql: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        read_only_statement(sql)


def test_realised_windows_wait_for_their_labels_and_pass_over_ones_that_never_come(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The realised-AUC walk (its store query replaced by the labelled windows it would
    find): judged in order while labelled, waiting at the first unlabelled window until
    `label_wait_windows` newer ones have closed, then passing over it."""
    labelled: dict[int, tuple[float, int]] = {c: (0.8, 50) for c in (0, 1, 2, 3, 4, 6, 7)}
    labelled[2] = (0.81, 50)
    monkeypatch.setattr(live_drift, "_realised_auc", lambda *_args: dict(labelled))
    spec = default_spec(
        "m", MonitorSettings(window_ms=W, lateness_ms=0, reference_windows=3, fire_after=1)
    ).model_copy(update={"label_wait_windows": 2, "min_labelled_per_window": 10})
    job = live_drift.DriftJob(max_windows_per_tick=60)

    def judged(last_window: int) -> list[int]:
        traffic = VersionTraffic("m", "1", 0, (last_window + 1) * W, 100)
        outcome = job.run_realised(None, traffic, spec)  # type: ignore[arg-type]
        return sorted(
            int(row[2].timestamp() * 1000) // W
            for row in outcome.metric_rows
            if int(row[2].timestamp() * 1000) // W >= 3
        )

    # windows 0-2 are the reference; 3..9 closed: 5 has no labels and 4 newer closed
    # windows, so it is passed over; 8 has none yet and only 1 newer: the walk waits there
    assert judged(9) == [3, 4, 6, 7]
    labelled[8] = (0.3, 40)  # 8's labels arrive late; 9 has none, and 1 newer window
    assert judged(10) == [8]
    labelled[9] = (0.79, 5)  # too few labels to judge: passed over once 2 newer have closed
    assert judged(11) == []
    assert judged(12) == []
    labelled[11] = (0.8, 30)
    assert judged(13) == [11]
