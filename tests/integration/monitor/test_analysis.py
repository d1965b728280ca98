"""The monitor's analysis on the real broker and chDB: drift events with hysteresis, no
event on stable data, late labels updating performance, sample-ratio mismatch, and the
trainer's policy retraining on the monitor's own DriftEvent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from driftloop.v1 import events_pb2 as pb
from services.common.settings import Settings
from services.monitor.panels import DASHBOARDS
from services.trainer.policy import ModelState, decide
from services.trainer.specs import load_model_spec
from services.trainer.triggers import triggers_for
from tests.conftest import REPO_ROOT, run_cli
from tests.integration.ingest.events_gen import read_topic
from tests.integration.monitor.harness import MonitorHarness, wait_until

W_MS = 60_000
T0_MS = (1_764_000_000_000 // W_MS) * W_MS
REF = 10  # reference windows
SHIFT_AT = REF + 3  # first shifted window of shift-model
FEATURES = [f"f{i}" for i in range(5)]


def _window_predictions(
    model: str,
    window: int,
    n: int,
    rng: np.random.Generator,
    shift: float = 0.0,
    sharpness: float = 1.0,
    **kw: object,
) -> list[tuple[str, pb.PredictionLog]]:
    x = rng.normal(size=(n, len(FEATURES)))
    x[:, 0] += shift
    scores = 1 / (1 + np.exp(-sharpness * x[:, 1]))  # the score does not depend on f0
    out = []
    for i in range(n):
        rid = f"{model}-{window}-{i}"
        out.append(
            (
                rid,
                pb.PredictionLog(
                    request_id=rid,
                    time_ms=T0_MS + window * W_MS + int(i * (W_MS - 1) / n),
                    model=model,
                    version="1",
                    variant="champion",
                    entity_key=rid,
                    numeric={f: float(v) for f, v in zip(FEATURES, x[i], strict=True)},
                    categorical={"region": "north" if rng.random() < 0.5 else "south"},
                    score=float(scores[i]),
                    latency_ms=3.0,
                    **kw,  # type: ignore[arg-type]
                ),
            )
        )
    return out


@pytest.fixture(scope="module")
def monitor(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitorHarness]:
    tmp = tmp_path_factory.mktemp("monitor-analysis")
    harness = MonitorHarness(
        stack,
        tmp,
        DRIFTLOOP_MONITOR_WINDOW_MS=str(W_MS),
        DRIFTLOOP_MONITOR_LATENESS_MS="0",
        DRIFTLOOP_MONITOR_TICK_S="0.5",
        DRIFTLOOP_MONITOR_REFERENCE_WINDOWS=str(REF),
        DRIFTLOOP_MONITOR_MAX_WINDOWS_PER_TICK="60",
    )
    (tmp / "models" / "shift-model.yaml").write_text(
        "name: shift-model\ngate: {task: binary}\nmonitor:\n  segments: [region]\n"
    )
    (tmp / "models" / "segment-model.yaml").write_text(
        "name: segment-model\nmonitor:\n  drift_segments: [region]\n  drift_segment_min_rows: 500\n"
    )
    (tmp / "models" / "rows-model.yaml").write_text(
        "name: rows-model\nmonitor:\n  window_rows: 500\n  thresholds: {null_rate: 0.5}\n"
    )
    rng = np.random.default_rng(7)
    t = harness.topics
    # shift-model: 10 reference windows, 3 stable, then f0 moves by +0.5 sigma; one more
    # window closes the last shifted one.
    shift = [
        item
        for w in range(SHIFT_AT + 4)
        for item in _window_predictions(
            "shift-model", w, 600, rng, shift=0.5 if w >= SHIFT_AT else 0.0
        )
    ]
    # stable-model: 10 reference windows and 100 judged windows, no shift.
    stable = [
        item for w in range(REF + 101) for item in _window_predictions("stable-model", w, 300, rng)
    ]
    # rows-model: the same story judged in chunks of 500 predictions instead of minutes
    # (500 a minute, so chunk c holds minute c once the chunks are cut from complete data).
    by_rows = [
        item
        for w in range(SHIFT_AT + 4)
        for item in _window_predictions(
            "rows-model", w, 500, rng, shift=0.5 if w >= SHIFT_AT else 0.0
        )
    ]
    # perf-model: confident scores, then from SHIFT_AT scores near 0.5 (a model that has
    # become unsure): the label-free AUC estimate drops, no feature moves
    unsure = [
        item
        for w in range(SHIFT_AT + 4)
        for item in _window_predictions(
            "perf-model", w, 400, rng, sharpness=0.3 if w >= SHIFT_AT else 2.5
        )
    ]
    # concept-model: the same confident scores throughout, but from SHIFT_AT the outcomes
    # go against them (the world changed, the inputs did not): only labels can tell
    concept = [
        item
        for w in range(SHIFT_AT + 4)
        for item in _window_predictions("concept-model", w, 400, rng, sharpness=2.5)
    ]
    # segment-model: from SHIFT_AT, f2 moves by +1 sigma for region=north only
    segment = []
    for w in range(SHIFT_AT + 4):
        for rid, p in _window_predictions("segment-model", w, 400, rng):
            if w >= SHIFT_AT and p.categorical["region"] == "north":
                p.numeric["f2"] += 1.0
            segment.append((rid, p))
    harness.publish(t.predictions_log, shift + stable + by_rows + unsure + concept + segment)
    concept_labels = []
    for rid, p in concept:
        window = (p.time_ms - T0_MS) // W_MS
        chance = 1 - p.score if window >= SHIFT_AT else p.score
        label = pb.LabelEvent(
            label_id=f"l-{rid}",
            request_id=rid,
            entity_key=rid,
            model="concept-model",
            outcome=float(rng.random() < chance),
            event_time_ms=p.time_ms + 1_000,
        )
        concept_labels.append((rid, label))
    harness.publish(t.labels_feedback, concept_labels)
    # label-model: only labels, 400 a minute; the positive rate moves from 0.2 to 0.5
    harness.publish(
        t.labels_feedback,
        [
            (
                f"lab-{w}-{i}",
                pb.LabelEvent(
                    label_id=f"lab-{w}-{i}",
                    entity_key=f"lab-{w}-{i}",
                    model="label-model",
                    outcome=float(rng.random() < (0.5 if w >= SHIFT_AT else 0.2)),
                    event_time_ms=T0_MS + w * W_MS + i * 100,
                ),
            )
            for w in range(SHIFT_AT + 4)
            for i in range(400)
        ],
    )
    harness.start()
    yield harness
    harness.stop()


def _events(m: MonitorHarness) -> list[pb.DriftEvent]:
    rows = asyncio.run(read_topic(m.settings, m.topics.drift_events, pb.DriftEvent, idle_s=1.0))
    return [msg for _, _, msg in rows]


def _wait_events(
    m: MonitorHarness,
    model: str,
    done: Callable[[list[pb.DriftEvent]], bool],
    what: str,
    timeout_s: float = 120,
) -> list[pb.DriftEvent]:
    """`model`'s DriftEvents once `done(events)` holds (an event is published after the
    metric rows of its window are written: wait for it, do not read at one instant)."""
    return wait_until(lambda: [e for e in _events(m) if e.model == model], done, timeout_s, what)


def _judged(m: MonitorHarness, model: str) -> int:
    return int(
        m.scalar(
            "SELECT uniqExact(window_start) FROM drift_metrics "
            f"WHERE model = '{model}' AND NOT is_reference"
        )
    )


def test_a_half_sigma_shift_fires_for_that_feature_within_two_windows(
    monitor: MonitorHarness,
) -> None:
    wait_until(lambda: _judged(monitor, "shift-model"), lambda n: n >= 6, 120, "judged windows")
    events = [e for e in _events(monitor) if e.model == "shift-model"]
    f0 = [e for e in events if e.feature == "f0"]
    assert f0, events
    first = min(e.window_start_ms for e in f0)
    assert T0_MS + SHIFT_AT * W_MS <= first <= T0_MS + (SHIFT_AT + 1) * W_MS
    assert all(e.consecutive_windows >= 2 and e.value > e.threshold for e in f0)
    # no other feature fired (a model-level multivariate detector may see the f0 change)
    assert {e.feature for e in events} <= {"f0", ""}
    assert {e.metric for e in events if e.feature == ""} <= {"pca_reconstruction_error"}
    # one open incident per metric of f0, not one per window
    assert len(f0) == len({e.metric for e in f0})
    states = monitor.query(
        "SELECT alert_state, count() FROM drift_metrics WHERE model = 'shift-model' "
        "AND feature = 'f0' AND metric = 'psi' AND NOT is_reference GROUP BY alert_state"
    )
    assert "firing" in {s for s, _ in states}


def test_row_count_chunks_fire_too_and_a_spec_threshold_overrides_the_learnt_one(
    monitor: MonitorHarness,
) -> None:
    wait_until(lambda: _judged(monitor, "rows-model"), lambda n: n >= 5, 120, "judged chunks")
    # the event of a judged chunk is published after its metric rows are written: wait
    # for it rather than read the topic at the instant the fifth chunk is judged
    events = _wait_events(
        monitor, "rows-model", lambda found: any(e.feature == "f0" for e in found),
        "a DriftEvent for f0 of rows-model", 60,
    )  # fmt: skip
    f0 = [e for e in events if e.feature == "f0"]
    assert f0 and {e.feature for e in events} <= {"f0", ""}
    # chunk SHIFT_AT is the first shifted one; fire_after = 2 fires at most one chunk later
    first = min(e.window_start_ms for e in f0)
    assert T0_MS + SHIFT_AT * W_MS <= first <= T0_MS + (SHIFT_AT + 1) * W_MS
    sizes = monitor.query("SELECT DISTINCT rows FROM drift_metrics WHERE model = 'rows-model'")
    assert sizes == [[500]]
    kinds = monitor.query(
        "SELECT DISTINCT window_kind FROM drift_metrics WHERE model = 'rows-model'"
    )
    assert kinds == [["rows"]]
    thresholds = monitor.query(
        "SELECT DISTINCT threshold FROM drift_metrics WHERE model = 'rows-model' "
        "AND metric = 'null_rate'"
    )
    assert thresholds == [[0.5]]


def test_a_hundred_stable_windows_raise_no_event(monitor: MonitorHarness) -> None:
    wait_until(lambda: _judged(monitor, "stable-model"), lambda n: n >= 100, 180, "100 windows")
    assert [e for e in _events(monitor) if e.model == "stable-model"] == []
    # every window was judged whole: the windows close on the sinks' watermark, not on the
    # newest prediction stored while the partitions of predictions.log are read unevenly
    sizes = monitor.query(
        "SELECT DISTINCT rows FROM drift_metrics WHERE model = 'stable-model' AND metric = 'psi'"
    )
    assert sizes == [[300]]
    # the rows are there, with thresholds learnt from the reference windows
    n_ref = monitor.scalar(
        "SELECT uniqExact(window_start) FROM drift_metrics "
        "WHERE model = 'stable-model' AND is_reference"
    )
    assert n_ref == REF


def test_label_drift_fires_on_the_labels_own_windows(monitor: MonitorHarness) -> None:
    events = _wait_events(monitor, "label-model", lambda found: bool(found), "a label DriftEvent")
    assert {e.feature for e in events} == {""}
    assert {e.metric for e in events} <= {"label_psi", "label_jensen_shannon", "label_cramers_v"}
    first = min(e.window_start_ms for e in events)
    assert T0_MS + SHIFT_AT * W_MS <= first <= T0_MS + (SHIFT_AT + 1) * W_MS
    judged = monitor.query(
        "SELECT DISTINCT rows FROM drift_metrics WHERE model = 'label-model' "
        "AND metric = 'label_psi' AND NOT is_reference"
    )
    assert judged == [[400]]  # whole windows of labels


def test_a_label_free_performance_drop_fires_before_any_label(monitor: MonitorHarness) -> None:
    events = _wait_events(
        monitor, "perf-model", lambda found: any(e.metric == "estimated_auc_drop" for e in found),
        "an estimated_auc_drop DriftEvent",
    )  # fmt: skip
    drop = [e for e in events if e.metric == "estimated_auc_drop"]
    assert len(drop) == 1 and drop[0].feature == "" and drop[0].value > drop[0].threshold
    assert T0_MS + SHIFT_AT * W_MS <= drop[0].window_start_ms <= T0_MS + (SHIFT_AT + 1) * W_MS
    assert not [e for e in events if e.feature], "no feature moved"


def test_a_realised_performance_drop_fires_once_the_labels_show_it(
    monitor: MonitorHarness,
) -> None:
    events = _wait_events(
        monitor, "concept-model", lambda found: any(e.metric == "realised_auc_drop" for e in found),
        "a realised_auc_drop DriftEvent",
    )  # fmt: skip
    drop = [e for e in events if e.metric == "realised_auc_drop"]
    assert len(drop) == 1 and drop[0].feature == "" and drop[0].value > 0.3 > drop[0].threshold
    assert T0_MS + SHIFT_AT * W_MS <= drop[0].window_start_ms <= T0_MS + (SHIFT_AT + 1) * W_MS
    assert [e.metric for e in events] == ["realised_auc_drop"], "the inputs did not move"
    before = monitor.query(
        "SELECT count(), max(value) FROM drift_metrics FINAL WHERE model = 'concept-model' "
        "AND metric = 'realised_auc_drop' AND window_start < "
        f"toDateTime64({(T0_MS + SHIFT_AT * W_MS) / 1000}, 3, 'UTC')"
    )
    assert before[0][0] == SHIFT_AT and before[0][1] < 0.1  # 10 reference + 3 stable windows


def test_drift_in_one_segment_fires_for_that_slice_only(monitor: MonitorHarness) -> None:
    events = _wait_events(
        monitor, "segment-model", lambda found: any(e.slice == "region=north" for e in found),
        "a DriftEvent for the region=north slice",
    )  # fmt: skip
    north = [e for e in events if e.slice == "region=north"]
    assert {e.feature for e in north if e.feature} == {"f2"}, north  # "": model-level
    first = min(e.window_start_ms for e in north)
    assert T0_MS + SHIFT_AT * W_MS <= first <= T0_MS + (SHIFT_AT + 1) * W_MS
    wait_until(lambda: _judged(monitor, "segment-model"), lambda n: n >= 6, 60, "judged windows")
    assert not [
        e
        for e in _events(monitor)
        if e.model == "segment-model" and e.slice not in ("", "region=north")
    ]
    slices = monitor.query(
        "SELECT DISTINCT slice FROM drift_metrics WHERE model = 'segment-model' ORDER BY slice"
    )
    assert [s for (s,) in slices] == ["", "region=north", "region=south"]


def test_late_labels_update_performance(monitor: MonitorHarness) -> None:
    window = REF  # a window the monitor has already judged, with no label yet
    start = f"toDateTime64({(T0_MS + window * W_MS) / 1000}, 3, 'UTC')"
    sql = (
        "SELECT estimated, argMax(labelled, computed_at), argMax(value, computed_at) "
        "FROM performance_metrics WHERE model = 'shift-model' AND variant = '' "
        f"AND segment = '' AND metric = 'auc' AND window_start = {start} GROUP BY estimated"
    )
    rows = wait_until(lambda: monitor.query(sql), lambda r: len(r) >= 1, 60, "an auc estimate")
    assert [r[0] for r in rows] == [True]  # label-free estimate only
    estimate = rows[0][2]
    assert 0.5 < estimate < 1.0
    rng = np.random.default_rng(3)
    preds = monitor.query(
        "SELECT request_id, score FROM predictions WHERE model = 'shift-model' "
        f"AND time >= {start} AND time < {start} + INTERVAL 60 SECOND"
    )
    labels = [
        (
            rid,
            pb.LabelEvent(
                label_id=f"l-{rid}",
                # half name the request, half only the entity (labelled up to the label time)
                request_id=rid if n % 2 else "",
                entity_key=rid,
                model="shift-model",
                outcome=float(rng.random() < score),
                event_time_ms=T0_MS + (window + 20) * W_MS,
            ),
        )
        for n, (rid, score) in enumerate(preds)
    ]
    monitor.publish(monitor.topics.labels_feedback, labels)
    rows = wait_until(
        lambda: monitor.query(sql),
        lambda r: any(not est and n == len(labels) for est, n, _ in r),
        60,
        "realised auc with the late labels",
    )
    realised = next(v for est, _, v in rows if not est)
    assert abs(realised - estimate) < 0.1  # calibrated scores: CBPE is close
    segments = monitor.query(
        "SELECT DISTINCT segment FROM performance_metrics WHERE model = 'shift-model'"
    )
    assert {"", "region=north", "region=south"} <= {s for (s,) in segments}


def test_a_fifty_fifty_experiment_receiving_55_45_is_flagged_invalid(
    monitor: MonitorHarness,
) -> None:
    rng = np.random.default_rng(11)
    items = []
    for name, split in (("exp-srm", 0.55), ("exp-ok", 0.5)):
        for w in range(3):
            for variant, bucket_lo, n in (
                ("a", 0, int(1500 * split)),
                ("b", 5000, 1500 - int(1500 * split)),
            ):
                for rid, msg in _window_predictions(f"ab-{name}", w, n, rng, experiment=name):
                    msg.variant = variant
                    msg.request_id = f"{rid}-{variant}"
                    msg.bucket = bucket_lo + int(rng.integers(0, 5000))
                    items.append((msg.request_id, msg))
        items += _window_predictions(f"ab-{name}", 4, 1, rng)  # closes windows 0-2
    monitor.publish(monitor.topics.predictions_log, items)

    def experiment_events() -> list[pb.ExperimentEvent]:
        rows = asyncio.run(
            read_topic(
                monitor.settings, monitor.topics.experiments_events, pb.ExperimentEvent, idle_s=0.5
            )
        )
        return [m for _, _, m in rows]

    events = wait_until(
        experiment_events,
        lambda ev: {e.experiment for e in ev} >= {"exp-srm", "exp-ok"},
        90,
        "experiment events",
    )
    srm = [e for e in events if e.experiment == "exp-srm"]
    ok = [e for e in events if e.experiment == "exp-ok"]
    assert srm[-1].srm_detected and srm[-1].srm_p_value < 0.001
    assert srm[-1].decision == pb.EXPERIMENT_DECISION_INVALID
    assert not ok[-1].srm_detected
    assert ok[-1].decision == pb.EXPERIMENT_DECISION_CONTINUE  # too few labels to judge
    shares = monitor.query(
        "SELECT variant, argMax(expected_share, computed_at), argMax(requests, computed_at) "
        "FROM experiment_stats WHERE experiment = 'exp-srm' GROUP BY variant ORDER BY variant"
    )
    assert [(v, round(s, 2), n) for v, s, n in shares] == [("a", 0.5, 2475), ("b", 0.5, 2025)]


def test_the_trainer_policy_retrains_on_the_monitors_drift_event(monitor: MonitorHarness) -> None:
    wait_until(lambda: _judged(monitor, "shift-model"), lambda n: n >= 6, 120, "judged windows")
    event = next(e for e in _events(monitor) if e.model == "shift-model" and e.feature == "f0")
    spec = load_model_spec(REPO_ROOT / "deploy" / "models" / "credit-default.yaml")
    spec = spec.model_copy(update={"name": "shift-model"})
    (trigger,) = triggers_for(event, [spec], now_ms=event.created_at_ms)
    decision = decide(spec.policy, ModelState(model="shift-model"), trigger)
    assert decision.train, decision
    assert decision.reason == "drift"


def test_a_restart_keeps_the_open_incident_and_raises_nothing_twice(
    monitor: MonitorHarness,
) -> None:
    wait_until(lambda: _judged(monitor, "shift-model"), lambda n: n >= 6, 120, "judged windows")
    before = [e for e in _events(monitor) if e.model == "shift-model"]
    judged = _judged(monitor, "shift-model")
    monitor.stop()
    rng = np.random.default_rng(21)
    more = [
        item
        for w in range(SHIFT_AT + 4, SHIFT_AT + 7)
        for item in _window_predictions("shift-model", w, 600, rng, shift=0.5)
    ]
    monitor.publish(monitor.topics.predictions_log, more)
    monitor.start()
    wait_until(
        lambda: _judged(monitor, "shift-model"), lambda n: n >= judged + 2, 120, "new windows"
    )
    after = [e for e in _events(monitor) if e.model == "shift-model"]
    assert sorted(e.event_id for e in after) == sorted(e.event_id for e in before)
    open_incidents = monitor.query(
        "SELECT metric, closed_window IS NULL FROM alert_incidents FINAL "
        "WHERE model = 'shift-model' AND feature = 'f0'"
    )
    assert {m for m, is_open in open_incidents if is_open} >= {"psi", "ks"}
    assert int(monitor.scalar("SELECT count() - uniqExact(event_id) FROM drift_events")) == 0


def test_the_report_renders_every_panel_through_the_query_api(
    monitor: MonitorHarness, tmp_path: Path
) -> None:
    wait_until(lambda: _judged(monitor, "shift-model"), lambda n: n >= 6, 120, "judged windows")
    page = tmp_path / "report.html"
    run_cli(
        "report", "--model", "shift-model", "--api", f"http://127.0.0.1:{monitor.port}",
        "--html", str(page), home=monitor.tmp,
    )  # fmt: skip
    html = page.read_text()
    assert "plotly" in html.lower() and "shift-model" in html
    assert "class='panel-error'" not in html  # every panel's SQL ran through the API
    assert html.count("class='panel'") == sum(len(d.panels) for d in DASHBOARDS)
