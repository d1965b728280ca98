"""Rolling drift per model version: every closed window judged against the version's own
reference windows, in ClickHouse SQL (services/monitor/drift.py), then through the alert
tracker.

Windows are tumbling windows of `window_ms` over the prediction time. A window is closed
when the version's watermark is `lateness_ms` past its end, so a slightly late log still
lands in its window; `traffic.last_ms` is that watermark: the newest stored prediction
bounded by what every partition has written (sinks/watermark.py, applied by
scheduler.py). The reference is the version's first `reference_windows` closed windows:
the traffic it served when it was deployed, which is
what "normal" looks like for it, and whose window-to-window variation sets each metric's
default threshold (thresholds.py; a model spec's `monitor.thresholds` overrides a metric).
Each tick judges the windows closed since the last tick, in order, so the hysteresis sees
every window once; the rows, the alert state after each window and the incidents are
written, and an incident opening becomes a `DriftEvent` (published before its rows are
written: a crash in between re-judges the window and publishes the same event id again,
which the drift_events sink drops).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client

from driftloop.v1 import events_pb2 as pb
from services.monitor.alerts import AlertKey, AlertState, AlertTracker, Firing, Observation
from services.monitor.drift import DriftRow, DriftSpec, compute_drift
from services.monitor.live.traffic import (
    LABEL_COLUMN,
    SCORE_COLUMN,
    TIME_COLUMN,
    VersionTraffic,
    feature_names,
    label_relation,
    labelled_predictions,
    segment_value,
    version_filter,
    version_relation,
)
from services.monitor.performance import estimate_binary, realised_binary
from services.monitor.sinks.rows import ts
from services.monitor.specs import ModelMonitorSpec
from services.monitor.sql import by_time, literal
from services.monitor.thresholds import derive_threshold

__all__ = [
    "DRIFT_COLUMNS",
    "INCIDENT_COLUMNS",
    "DriftJob",
    "DriftOutcome",
    "open_incident_count",
    "window_plan",
]

_SEVERITY_NAMES = {2: "warning", 3: "critical"}
PERFORMANCE_DROP = "estimated_auc_drop"
REALISED_DROP = "realised_auc_drop"


def _columns(names: str) -> list[str]:
    return names.split()


DRIFT_COLUMNS = _columns(
    "model version window_start window_end metric feature slice value threshold breached "
    "computed_at window_kind rows reference_rows is_reference alert_state consecutive severity"
)
INCIDENT_COLUMNS = _columns(
    "model version metric feature slice opened_window last_window closed_window peak_value "
    "threshold severity event_id updated_at"
)


@dataclass(frozen=True)
class WindowPlan:
    reference: tuple[int, int]  # chunk ids [first, last] of the reference windows
    analysis: tuple[int, int] | None  # chunk ids to judge now, or None


def window_plan(
    traffic: VersionTraffic, spec: ModelMonitorSpec, last_done: int | None, max_windows: int
) -> WindowPlan | None:
    """Which windows to judge now (pure); None while the reference is still filling."""
    w = spec.window_ms
    first = traffic.first_ms // w
    ref_last = first + spec.reference_windows - 1
    closed = (traffic.last_ms - spec.lateness_ms) // w - 1  # newest closed window
    if closed < ref_last:
        return None
    start = max(ref_last + 1, (last_done + 1) if last_done is not None else ref_last + 1)
    if start > closed:
        return WindowPlan((first, ref_last), None)
    return WindowPlan((first, ref_last), (start, min(closed, start + max_windows - 1)))


def _naming(row: DriftRow) -> tuple[str, str]:
    """(metric, feature) as stored and published: the score's metrics are prediction_*,
    the label's label_*, the multivariate detector is model-level (no feature)."""
    if row.kind == "score":
        return f"prediction_{row.metric}", ""
    if row.kind == "label" or row.feature == LABEL_COLUMN:
        return f"label_{row.metric}", ""
    if row.kind == "multivariate":
        return row.metric, ""
    return row.metric, row.feature


@dataclass
class DriftOutcome:
    metric_rows: list[tuple[Any, ...]] = field(default_factory=list)
    incident_rows: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[pb.DriftEvent] = field(default_factory=list)


@dataclass
class _Incident:
    opened_ms: int
    event_id: str
    peak: float
    threshold: float
    severity: str
    version: str


class DriftJob:
    """Owns the alert tracker, the open incidents and which windows each version has had."""

    def __init__(
        self,
        max_windows_per_tick: int,
        bins: Callable[[str, str], Mapping[str, Sequence[float]]] | None = None,
    ) -> None:
        self._max_windows = max_windows_per_tick
        self._bins = bins or (lambda _model, _version: {})
        self._trackers: dict[str, AlertTracker] = {}
        self._done: dict[tuple[str, str, str], int] = {}  # (model, version, kind) -> chunk
        self._incidents: dict[AlertKey, _Incident] = {}

    def _tracker(self, spec: ModelMonitorSpec) -> AlertTracker:
        tracker = self._trackers.get(spec.model)
        if tracker is None:
            tracker = self._trackers[spec.model] = AlertTracker(spec.fire_after, spec.clear_after)
        return tracker

    def restore(self, client: Client, specs: dict[str, ModelMonitorSpec]) -> None:
        """Progress, alert states and open incidents from the store (after a restart)."""
        for model, version, kind, last, judged in client.query(
            "SELECT model, version, window_kind, toUnixTimestamp64Milli(max(window_start)), "
            "uniqExact(window_start) FROM drift_metrics WHERE NOT is_reference "
            "GROUP BY model, version, window_kind"
        ).result_rows:
            spec = specs.get(str(model))
            if spec is None:
                continue
            if kind == "time":
                self._done[(str(model), str(version), "time")] = int(last) // spec.window_ms
            elif kind == "rows":  # chunks are judged in order from the first after the reference
                self._done[(str(model), str(version), "rows")] = (
                    spec.reference_windows + int(judged) - 1
                )
        for model, version, metric, last in client.query(
            "SELECT model, version, metric, toUnixTimestamp64Milli(max(window_start)) "
            "FROM drift_metrics WHERE NOT is_reference AND metric IN "
            f"({literal(PERFORMANCE_DROP)}, {literal(REALISED_DROP)}) "
            "GROUP BY model, version, metric"
        ).result_rows:
            spec = specs.get(str(model))
            if spec is not None:
                kind = "performance" if metric == PERFORMANCE_DROP else "realised"
                self._done[(str(model), str(version), kind)] = int(last) // spec.window_ms
        for model, version, metric, feature, sl, state, consecutive, last in client.query(
            "SELECT model, version, metric, feature, slice, "
            "argMax(alert_state, window_start), argMax(consecutive, window_start), "
            "toUnixTimestamp64Milli(max(window_start)) FROM drift_metrics FINAL "
            "WHERE NOT is_reference AND alert_state != '' "
            "GROUP BY model, version, metric, feature, slice"
        ).result_rows:
            spec = specs.get(str(model))
            if spec is None:
                continue
            key = AlertKey(f"{model}@{version}", str(metric), str(feature), str(sl))
            self._tracker(spec).restore(key, AlertState(state, int(consecutive), int(last)))
        for row in client.query(
            "SELECT model, version, metric, feature, slice, toUnixTimestamp64Milli(opened_window),"
            " event_id, peak_value, threshold, severity FROM alert_incidents FINAL "
            "WHERE closed_window IS NULL"
        ).result_rows:
            model, version, metric, feature, sl, opened, event_id, peak, threshold, sev = row
            key = AlertKey(f"{model}@{version}", str(metric), str(feature), str(sl))
            self._incidents[key] = _Incident(
                int(opened), str(event_id), float(peak), float(threshold), str(sev), str(version)
            )

    def run(self, client: Client, traffic: VersionTraffic, spec: ModelMonitorSpec) -> DriftOutcome:
        if spec.window_rows > 0:
            return self._run_rows(client, traffic, spec)
        outcome = DriftOutcome()
        vkey = (traffic.model, traffic.version, "time")
        plan = window_plan(traffic, spec, self._done.get(vkey), self._max_windows)
        if plan is None or plan.analysis is None:
            return outcome
        w = spec.window_ms
        ref_lo, ref_hi = plan.reference[0] * w, (plan.reference[1] + 1) * w
        ana_lo, ana_hi = plan.analysis[0] * w, (plan.analysis[1] + 1) * w
        numeric, categorical = feature_names(client, traffic.model, traffic.version, ref_lo, ref_hi)
        drift_spec = DriftSpec(
            numeric=numeric,
            categorical=categorical,
            score=SCORE_COLUMN,
            multivariate=spec.multivariate and len(numeric) >= 2,
            overrides=spec.thresholds,
            bins=self._reference_bins(traffic, numeric),
        )

        def bounds(r: DriftRow) -> tuple[int, int]:
            return r.chunk * w, (r.chunk + 1) * w

        slices: list[tuple[str, str] | None] = [None]
        slices += _segments(client, traffic, spec, ref_lo, ref_hi)
        for segment in slices:
            cats = [c for c in categorical if segment is None or c != segment[0]]
            ref_sql, ana_sql = (
                by_time(
                    version_relation(
                        traffic.model, traffic.version, lo, hi, numeric, cats, segment=segment
                    ),
                    w,
                    TIME_COLUMN,
                )
                for lo, hi in ((ref_lo, ref_hi), (ana_lo, ana_hi))
            )
            rows = compute_drift(
                client, ref_sql, ana_sql, replace(drift_spec, categorical=tuple(cats))
            )
            name = "" if segment is None else f"{segment[0]}={segment[1]}"
            self._judge(rows, traffic, spec, outcome, "time", bounds, slice_=name)
        self._done[vkey] = plan.analysis[1]
        return outcome

    def run_labels(
        self, client: Client, labels: VersionTraffic, spec: ModelMonitorSpec
    ) -> DriftOutcome:
        """Label drift: the outcomes received per window of label time against the model's
        first `reference_windows` windows of labels (version ""). Labels come late, so a
        window of them is judged when the labels have arrived, not with the predictions
        they label. Classes (a binary task) are judged as categories (PSI, JS, Cramér's
        V), a regression's outcomes as numbers (PSI, KS); metrics are named label_*."""
        outcome = DriftOutcome()
        vkey = (labels.model, labels.version, "time")
        plan = window_plan(labels, spec, self._done.get(vkey), self._max_windows)
        if plan is None or plan.analysis is None:
            return outcome
        w, classes = spec.window_ms, spec.task != "regression"
        ref_lo, ref_hi = plan.reference[0] * w, (plan.reference[1] + 1) * w
        ana_lo, ana_hi = plan.analysis[0] * w, (plan.analysis[1] + 1) * w
        drift_spec = DriftSpec(
            numeric=() if classes else (LABEL_COLUMN,),
            label=LABEL_COLUMN if classes else None,
            multivariate=False,
            overrides=spec.thresholds,
        )
        rows = compute_drift(
            client,
            by_time(label_relation(labels.model, ref_lo, ref_hi, classes), w, TIME_COLUMN),
            by_time(label_relation(labels.model, ana_lo, ana_hi, classes), w, TIME_COLUMN),
            drift_spec,
        )
        self._judge(rows, labels, spec, outcome, "time", lambda r: (r.chunk * w, (r.chunk + 1) * w))
        self._done[vkey] = plan.analysis[1]
        return outcome

    def run_performance(
        self, client: Client, traffic: VersionTraffic, spec: ModelMonitorSpec
    ) -> DriftOutcome:
        """A label-free performance drop (binary tasks, time windows): each closed window's
        CBPE-estimated AUC against the mean over the version's reference windows, as
        `estimated_auc_drop` = reference mean - the window's estimate. Its threshold comes
        from the reference windows' own drops like any drift metric (thresholds.py, with
        a floor of 0.05 AUC), and the same hysteresis raises a model-level DriftEvent: a
        model that has become unsure of its answers is flagged before any label arrives."""
        outcome = DriftOutcome()
        if spec.task != "binary" or spec.window_rows > 0:
            return outcome
        vkey = (traffic.model, traffic.version, "performance")
        plan = window_plan(traffic, spec, self._done.get(vkey), self._max_windows)
        if plan is None or plan.analysis is None:
            return outcome
        w = spec.window_ms
        (ref_lo, ref_hi), (ana_lo, ana_hi) = plan.reference, plan.analysis
        estimates = _estimated_auc(client, traffic, ref_lo * w, (ana_hi + 1) * w, w)
        self._done[vkey] = ana_hi
        judged = range(ana_lo, ana_hi + 1)
        self._judge_drop(PERFORMANCE_DROP, estimates, ref_hi, judged, traffic, spec, outcome)
        return outcome

    def run_realised(
        self, client: Client, traffic: VersionTraffic, spec: ModelMonitorSpec
    ) -> DriftOutcome:
        """A realised performance drop (binary tasks, time windows), once the labels are
        in: each window's AUC over its labelled predictions against the mean over the
        version's reference windows, as `realised_auc_drop` = reference mean - the window's
        AUC, thresholded and raised like `estimated_auc_drop`. Windows are judged in order,
        each once it has `min_labelled_per_window` labels; the walk waits at the first one
        without them, and passes over it when `label_wait_windows` newer windows have
        closed (its labels are not coming). Labels that arrive after a window was judged
        still update its realised metrics in `performance_metrics`, not this alert."""
        outcome = DriftOutcome()
        if spec.task != "binary" or spec.window_rows > 0:
            return outcome
        vkey = (traffic.model, traffic.version, "realised")
        plan = window_plan(traffic, spec, self._done.get(vkey), self._max_windows)
        if plan is None or plan.analysis is None:
            return outcome
        w = spec.window_ms
        (ref_lo, ref_hi), (ana_lo, ana_hi) = plan.reference, plan.analysis
        closed = (traffic.last_ms - spec.lateness_ms) // w - 1
        aucs = {
            c: v
            for c, v in _realised_auc(client, traffic, ref_lo * w, (ana_hi + 1) * w, w).items()
            if v[1] >= spec.min_labelled_per_window
        }
        if sum(1 for c in aucs if c <= ref_hi) < 2:
            return outcome  # nothing judged: the reference's labels may still come
        judged, done = [], ana_lo - 1
        for c in range(ana_lo, ana_hi + 1):
            if c in aucs:
                judged.append(c)
            elif closed - c < spec.label_wait_windows:
                break
            done = c
        self._done[vkey] = done
        if judged:
            self._judge_drop(REALISED_DROP, aucs, ref_hi, judged, traffic, spec, outcome)
        return outcome

    def _judge_drop(
        self,
        metric: str,
        windows: Mapping[int, tuple[float, int]],
        ref_hi: int,
        judged: Container[int],
        traffic: VersionTraffic,
        spec: ModelMonitorSpec,
        outcome: DriftOutcome,
    ) -> None:
        """`metric` = the reference windows' mean of a per-window value (window -> (value,
        rows); windows up to `ref_hi` are the reference) - each window's value, with its
        threshold from the reference windows' own drops; the `judged` windows are judged."""
        reference = [v for c, (v, _) in windows.items() if c <= ref_hi]
        if len(reference) < 2:
            return
        mean = sum(reference) / len(reference)
        threshold = derive_threshold(
            metric, [mean - v for v in reference], overrides=spec.thresholds
        )
        w = spec.window_ms
        rows = [
            DriftRow(
                period="reference" if c <= ref_hi else "analysis",
                chunk=c,
                start=c * w,
                end=(c + 1) * w - 1,
                rows=n,
                kind="multivariate",
                feature="",
                metric=metric,
                value=mean - v,
                threshold=threshold.value,
                alert=threshold.breached(mean - v),
            )
            for c, (v, n) in sorted(windows.items())
            if c <= ref_hi or c in judged
        ]
        self._judge(
            rows, traffic, spec, outcome, "time", lambda r: (r.chunk * w, (r.chunk + 1) * w)
        )

    def _reference_bins(
        self, traffic: VersionTraffic, numeric: Sequence[str]
    ) -> dict[str, Sequence[float]]:
        found = self._bins(traffic.model, traffic.version)
        return {name: edges for name, edges in found.items() if name in numeric}

    def _run_rows(
        self, client: Client, traffic: VersionTraffic, spec: ModelMonitorSpec
    ) -> DriftOutcome:
        """Chunks of `window_rows` predictions in time order (ties by request id): chunk c
        is complete once (c + 1) * N predictions are older than the watermark."""
        outcome = DriftOutcome()
        vkey = (traffic.model, traffic.version, "rows")
        n, refs = spec.window_rows, spec.reference_windows
        watermark = traffic.last_ms - spec.lateness_ms
        scope = (traffic.model, traffic.version, traffic.first_ms, watermark)
        eligible = int(
            client.query(
                f"SELECT count() FROM predictions WHERE {version_filter(*scope)}"
            ).result_rows[0][0]
        )
        last_done = self._done.get(vkey)
        start = max(refs, last_done + 1 if last_done is not None else refs)
        end = min(eligible // n - 1, start + self._max_windows - 1)
        if end < start:
            return outcome
        numeric, categorical = feature_names(client, *scope)
        rel = version_relation(*scope, numeric, categorical, extra=["request_id AS __rid"])
        chunked = (
            f"SELECT *, intDiv(toInt64(row_number() OVER (ORDER BY {TIME_COLUMN}, __rid)) - 1, "
            f"{int(n)}) AS __chunk, toFloat64({TIME_COLUMN}) AS __key FROM {rel}"
        )
        drift_spec = DriftSpec(
            numeric=numeric,
            categorical=categorical,
            score=SCORE_COLUMN,
            multivariate=spec.multivariate and len(numeric) >= 2,
            overrides=spec.thresholds,
            bins=self._reference_bins(traffic, numeric),
        )
        rows = compute_drift(
            client,
            f"SELECT * FROM ({chunked}) WHERE __chunk < {int(refs)}",
            f"SELECT * FROM ({chunked}) WHERE __chunk BETWEEN {int(start)} AND {int(end)}",
            drift_spec,
        )
        self._judge(rows, traffic, spec, outcome, "rows", lambda r: (int(r.start), int(r.end) + 1))
        self._done[vkey] = end
        return outcome

    def _judge(
        self,
        rows: list[DriftRow],
        traffic: VersionTraffic,
        spec: ModelMonitorSpec,
        outcome: DriftOutcome,
        kind: str,
        bounds: Callable[[DriftRow], tuple[int, int]],
        slice_: str = "",
    ) -> None:
        now = ts(int(time.time() * 1000))
        ref_rows = sum(r.rows for r in rows if r.period == "reference" and r.metric == "psi")
        tracker = self._tracker(spec)
        for row in sorted(rows, key=lambda r: (r.period != "reference", r.chunk)):
            metric, feature = _naming(row)
            start_ms, end_ms = bounds(row)
            state, consecutive, severity = "", 0, ""
            alertable = math.isfinite(row.threshold) and row.period == "analysis"
            if alertable:
                key = AlertKey(f"{traffic.model}@{traffic.version}", metric, feature, slice_)
                obs = Observation(
                    key, traffic.version, start_ms, end_ms, row.value, row.threshold, row.alert
                )
                after, firing = tracker.observe(obs)
                state, consecutive = after.state, after.consecutive
                if firing is not None:
                    severity = _SEVERITY_NAMES.get(firing.severity, "warning")
                    self._open(firing, traffic, metric, feature, severity, outcome, now)
                elif key in self._incidents:
                    self._advance(key, obs, after, traffic, metric, feature, outcome, now)
            outcome.metric_rows.append(
                (
                    traffic.model,
                    traffic.version,
                    ts(start_ms),
                    ts(end_ms),
                    metric,
                    feature,
                    slice_,
                    row.value,
                    row.threshold,
                    bool(row.alert),
                    now,
                    kind,
                    row.rows,
                    ref_rows,
                    row.period == "reference",
                    state,
                    consecutive,
                    severity,
                )
            )

    def _open(
        self,
        firing: Firing,
        traffic: VersionTraffic,
        metric: str,
        feature: str,
        severity: str,
        outcome: DriftOutcome,
        now: Any,
    ) -> None:
        obs = firing.observation
        outcome.events.append(
            pb.DriftEvent(
                event_id=firing.event_id,
                model=traffic.model,
                version=traffic.version,
                window_start_ms=obs.window_start_ms,
                window_end_ms=obs.window_end_ms,
                metric=metric,
                feature=feature,
                slice=obs.key.slice,
                value=obs.value,
                threshold=obs.threshold,
                severity=firing.severity,  # type: ignore[arg-type]
                consecutive_windows=firing.consecutive,
                created_at_ms=int(time.time() * 1000),
            )
        )
        incident = _Incident(
            obs.window_start_ms,
            firing.event_id,
            obs.value,
            obs.threshold,
            severity,
            traffic.version,
        )
        self._incidents[obs.key] = incident
        outcome.incident_rows.append(self._incident_row(obs.key, incident, obs, None, now))

    def _advance(
        self,
        key: AlertKey,
        obs: Observation,
        after: AlertState,
        traffic: VersionTraffic,
        metric: str,
        feature: str,
        outcome: DriftOutcome,
        now: Any,
    ) -> None:
        incident = self._incidents[key]
        incident.peak = max(incident.peak, obs.value)
        closed = obs.window_end_ms if after.state == "ok" else None
        outcome.incident_rows.append(self._incident_row(key, incident, obs, closed, now))
        if closed is not None:
            del self._incidents[key]

    @staticmethod
    def _incident_row(
        key: AlertKey, incident: _Incident, obs: Observation, closed_ms: int | None, now: Any
    ) -> tuple[Any, ...]:
        model = key.model.rsplit("@", 1)[0]
        return (
            model,
            incident.version,
            key.metric,
            key.feature,
            key.slice,
            ts(incident.opened_ms),
            ts(obs.window_start_ms),
            ts(closed_ms) if closed_ms is not None else None,
            incident.peak,
            incident.threshold,
            incident.severity,
            incident.event_id,
            now,
        )


def _estimated_auc(
    client: Client, traffic: VersionTraffic, lo_ms: int, hi_ms: int, window_ms: int
) -> dict[int, tuple[float, int]]:
    """Per window in [lo_ms, hi_ms): the CBPE-estimated AUC of its scores and its rows."""
    out: dict[int, tuple[float, int]] = {}
    for chunk, scores in client.query(
        f"SELECT intDiv(toUnixTimestamp64Milli(time), {int(window_ms)}) AS chunk, "
        f"groupArray(score) FROM predictions "
        f"WHERE {version_filter(traffic.model, traffic.version, lo_ms, hi_ms)} GROUP BY chunk"
    ).result_rows:
        auc = estimate_binary(np.asarray(scores, dtype=float)).get("auc")
        if auc is not None and math.isfinite(auc.value):
            out[int(chunk)] = (auc.value, len(scores))
    return out


def _segments(
    client: Client, traffic: VersionTraffic, spec: ModelMonitorSpec, lo_ms: int, hi_ms: int
) -> list[tuple[str, str] | None]:
    """(column, value) of every `drift_segments` value with at least
    `drift_segment_min_rows` predictions in the reference windows."""
    out: list[tuple[str, str] | None] = []
    for column in spec.drift_segments:
        rows = client.query(
            f"SELECT {segment_value(column)} AS v, count() AS n FROM predictions "
            f"WHERE {version_filter(traffic.model, traffic.version, lo_ms, hi_ms)} "
            f"GROUP BY v HAVING v != '' AND n >= {int(spec.drift_segment_min_rows)} ORDER BY v"
        ).result_rows
        out += [(column, str(v)) for v, _n in rows]
    return out


def _realised_auc(
    client: Client, traffic: VersionTraffic, lo_ms: int, hi_ms: int, window_ms: int
) -> dict[int, tuple[float, int]]:
    """Per window in [lo_ms, hi_ms): the AUC of its labelled predictions and how many
    there are (windows whose labels are all of one class have no AUC)."""
    source = labelled_predictions(
        "request_id, time, score",
        version_filter(traffic.model, traffic.version, lo_ms, hi_ms),
        traffic.model,
    )
    out: dict[int, tuple[float, int]] = {}
    for chunk, scores, outcomes in client.query(
        f"SELECT intDiv(toUnixTimestamp64Milli(time), {int(window_ms)}) AS chunk, "
        f"groupArray(score), groupArray(outcome) FROM {source} WHERE has = 1 GROUP BY chunk",
        settings={"join_use_nulls": 0},
    ).result_rows:
        auc = realised_binary(np.asarray(scores, float), np.asarray(outcomes, float)).get("auc")
        if auc is not None and math.isfinite(auc):
            out[int(chunk)] = (float(auc), len(scores))
    return out


def open_incident_count(client: Client, model: str) -> int:
    return int(
        client.query(
            "SELECT count() FROM alert_incidents FINAL "
            f"WHERE model = {literal(model)} AND closed_window IS NULL"
        ).result_rows[0][0]
    )
