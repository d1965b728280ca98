"""Issue 14: the trainer, given the monitor's DriftEvent, retrains. One run with the real
parts: ingest seals labelled data, the trainer service registers a champion, the monitor
service judges that champion's logged predictions against the reference bins of its
registered manifest, raises a DriftEvent on `drift.events` when one feature shifts, and
the running trainer retrains on that very event and gates the challenger against the
champion.

The three services share one topic set and one model spec file (the trainer's sections
and the monitor's `monitor:` section). The logged scores do not depend on the shifted
feature and the spec leaves PSI the only alerting metric (no PCA detector; KS, at most
1, never exceeds its fixed threshold of 1), so one shift raises exactly one DriftEvent
and one retrain, and the test ends without a second training in flight.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from driftloop.v1 import events_pb2 as pb
from services.common.artifacts import ArtifactStore
from services.common.registry import ModelRegistry
from services.common.settings import Settings, TopicNames
from services.ingest.samples import credit_sample
from services.monitor.drift import PSI_SMOOTHING
from tests.integration.harness import ServiceProcess, isolated_settings
from tests.integration.ingest.events_gen import publish, read_topic
from tests.integration.monitor.harness import MonitorHarness, wait_until
from tests.integration.trainer.loop_harness import (
    labelled_stream,
    until_model_events,
    write_spec,
)

MODEL = "credit-loop"
FEATURE = "debt_to_income"  # credit_sample's `shift` moves this feature only
W_MS = 60_000
REF = 5  # reference windows
SHIFT_AT = REF + 2  # the first shifted window, after two judged stable ones
WINDOWS = SHIFT_AT + 4  # three shifted windows judged; the last one only closes them
PER_WINDOW = 400
MONITOR_SECTION = (
    "monitor:\n"
    f"  window_ms: {W_MS}\n"
    "  lateness_ms: 0\n"
    f"  reference_windows: {REF}\n"
    "  multivariate: false\n"
    "  thresholds: {ks: 1.0}\n"
)
INGEST_ENV = {"DRIFTLOOP_INGEST_SEAL_MAX_ROWS": "2000", "DRIFTLOOP_INGEST_SEAL_MAX_AGE_MS": "1500"}
T = pb.ModelEventType
GATES = (pb.MODEL_EVENT_TYPE_GATE_PASSED, pb.MODEL_EVENT_TYPE_GATE_FAILED)


def _predictions(
    version: str, t0_ms: int
) -> tuple[list[tuple[str, pb.PredictionLog]], list[list[float]]]:
    """`WINDOWS` windows of prediction logs of `MODEL` `version` (credit features, FEATURE
    shifted by +0.5 from window SHIFT_AT) and each window's FEATURE values."""
    logs, values = [], []
    for w in range(WINDOWS):
        shift = 0.5 if w >= SHIFT_AT else 0.0
        events = credit_sample(PER_WINDOW, seed=100 + w, shift=shift)
        values.append([e.numeric[FEATURE] for e in events])
        for i, e in enumerate(events):
            x = e.numeric
            logit = -1.0 + 1.2 * x["credit_utilization"] - 0.02 * (x["age"] - 40)
            rid = f"{MODEL}-{w}-{i}"
            log = pb.PredictionLog(
                request_id=rid,
                time_ms=t0_ms + w * W_MS + i * (W_MS - 1) // PER_WINDOW,
                model=MODEL,
                version=version,
                variant="champion",
                entity_key=e.entity_key,
                numeric=dict(x),
                categorical=dict(e.categorical),
                score=1 / (1 + math.exp(-logit)),  # independent of FEATURE
                latency_ms=3.0,
            )
            logs.append((rid, log))
    return logs, values


def _psi(
    reference: Sequence[float], window: Sequence[float], inner_edges: Sequence[float]
) -> float:
    """The monitor's PSI (services/monitor/drift.py): bins cut at `inner_edges` (a value
    lands in the bin of the edges at or below it), PSI_SMOOTHING added to every count."""
    k = len(inner_edges) + 1
    r, t = (
        np.bincount(np.searchsorted(inner_edges, v, side="right"), minlength=k) + PSI_SMOOTHING
        for v in (np.asarray(reference), np.asarray(window))
    )
    e, a = r / r.sum(), t / t.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def _drift_events(monitor: MonitorHarness) -> list[pb.DriftEvent]:
    rows = asyncio.run(
        read_topic(monitor.settings, monitor.topics.drift_events, pb.DriftEvent, idle_s=1.0)
    )
    return [m for _, _, m in rows if isinstance(m, pb.DriftEvent) and m.model == MODEL]


def test_the_trainer_retrains_on_the_monitors_drift_event(stack: Settings, tmp_path: Path) -> None:
    settings, env = isolated_settings(stack, tmp_path, static_ingest=False)
    # the monitor's topics (every one of them) are the trainer's and ingest's too
    monitor = MonitorHarness(
        stack,
        tmp_path,
        DRIFTLOOP_ARTIFACT_ROOT=env["DRIFTLOOP_ARTIFACT_ROOT"],  # its registry: the trainer's
        DRIFTLOOP_MONITOR_TICK_S="0.5",
    )
    settings = settings.model_copy(update={"topics": monitor.topics})
    env |= {
        f"DRIFTLOOP_TOPICS__{f.upper()}": getattr(monitor.topics, f)
        for f in TopicNames.model_fields
    }
    write_spec(tmp_path, MODEL)  # tmp_path/models: the trainer's and the monitor's spec dir
    with (tmp_path / "models" / f"{MODEL}.yaml").open("a") as spec:
        spec.write(MONITOR_SECTION)

    ingest = ServiceProcess(
        ["-m", "services.ingest"], {**env, **INGEST_ENV}, tmp_path / "ingest.log"
    ).start()
    trainer = ServiceProcess(["-m", "services.trainer"], env, tmp_path / "trainer.log").start()
    try:
        # 4,000 labelled rows (min_new_rows 3,000): the trainer trains and registers v1
        asyncio.run(publish(settings, settings.topics.data_events, labelled_stream(4000, seed=1)))
        monitor.start()  # while the champion trains
        assert monitor.process is not None
        procs = (ingest, trainer, monitor.process)
        events = asyncio.run(
            until_model_events(
                settings,
                lambda ev: any(
                    e.type == T.Value("MODEL_EVENT_TYPE_ALIAS_CHANGED") and e.alias == "champion"
                    for e in ev
                ),
                300,
                *procs,
            )
        )
        [registered] = [e for e in events if e.type == pb.MODEL_EVENT_TYPE_REGISTERED]
        registry = ModelRegistry(ArtifactStore(settings.artifact_root))
        assert registry.aliases(MODEL) == {"champion": int(registered.version)}
        edges = registry.manifest(MODEL, "champion").reference_profile.numeric[FEATURE].bin_edges

        # the champion's traffic of the last minutes, logged on predictions.log
        t0_ms = (int(time.time() * 1000) // W_MS - WINDOWS - 1) * W_MS
        logs, values = _predictions(registered.version, t0_ms)
        monitor.publish(monitor.topics.predictions_log, logs)

        # the monitor judges every closed window and raises one event: PSI of FEATURE
        judged = wait_until(
            lambda: int(
                monitor.scalar(
                    "SELECT uniqExact(window_start) FROM drift_metrics "
                    f"WHERE model = '{MODEL}' AND NOT is_reference"
                )
            ),
            lambda n: n >= WINDOWS - 1 - REF,
            120,
            f"the monitor judging {MODEL}'s windows\n{monitor.log_tail()}",
        )
        assert judged == WINDOWS - 1 - REF
        drift = _drift_events(monitor)
        assert [(e.metric, e.feature, e.slice) for e in drift] == [("psi", FEATURE, "")], drift
        [event] = drift
        assert event.version == registered.version
        assert event.window_start_ms == t0_ms + (SHIFT_AT + 1) * W_MS  # fire_after 2
        assert event.consecutive_windows == 2 and event.value > event.threshold
        # judged on the bins of the trainer's registered manifest, not the live deciles
        reference = [v for window in values[:REF] for v in window]
        shifted = values[SHIFT_AT + 1]
        inner = edges[1:-1]
        assert math.isclose(event.value, _psi(reference, shifted, inner), rel_tol=1e-9)
        # the fallback, the live reference's own deciles, would give another value
        deciles = sorted(set(np.quantile(reference, np.linspace(0, 1, 11)).tolist()))[1:-1]
        assert not math.isclose(event.value, _psi(reference, shifted, deciles), rel_tol=1e-6)

        # the running trainer consumes that event, retrains and gates against v1
        events = asyncio.run(
            until_model_events(
                settings,
                lambda ev: any(e.type in GATES and e.version != registered.version for e in ev),
                300,
                *procs,
            )
        )
        named = (
            f"{event.metric}({event.feature}) = {event.value:.4g} over "
            f"{event.threshold:.4g} for {event.consecutive_windows} windows"
        )
        starts = [e for e in events if e.type == pb.MODEL_EVENT_TYPE_TRAINING_STARTED]
        assert [e.attributes["trigger"] for e in starts] == ["new_rows", "drift"], starts
        retrain = starts[-1]
        assert named in retrain.reason, (named, retrain.reason)
        assert retrain.created_at_ms >= event.created_at_ms
        [gate] = [e for e in events if e.type in GATES and e.version != registered.version]
        assert gate.attributes["trigger"] == "drift"
        assert gate.previous_version == registered.version
        assert gate.created_at_ms > retrain.created_at_ms
        report = json.loads(gate.report_json)
        assert report["has_champion"] and report["difference_ci"] is not None
        aliases = registry.aliases(MODEL)
        assert aliases["champion"] == int(registered.version), "the champion stays"
        assert aliases.get("challenger") == (int(gate.version) if report["passed"] else None)
    finally:
        monitor.stop()
        trainer.stop()
        ingest.stop()
