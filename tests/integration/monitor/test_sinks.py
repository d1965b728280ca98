"""The monitor's sinks on the real broker and chDB: every topic into its table exactly once,
across a replay from offset 0 and a SIGKILL mid-stream; the read-only query API."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from driftloop.v1 import events_pb2 as pb
from services.common.settings import Settings
from tests.integration.monitor.harness import MonitorHarness, group_caught_up, wait_until

T0_MS = 1_764_000_000_000  # a fixed past time: partitions by day stay few


def _predictions(
    start: int, n: int, model: str = "sink-model"
) -> list[tuple[str, pb.PredictionLog]]:
    return [
        (
            f"k{i % 97}",
            pb.PredictionLog(
                request_id=f"req-{i}",
                time_ms=T0_MS + i * 10,
                model=model,
                version="1",
                variant="champion",
                entity_key=f"k{i % 97}",
                numeric={"f0": i * 0.01, "f1": 1.0},
                categorical={"region": "north" if i % 2 else "south"},
                score=0.3,
                latency_ms=2.0,
            ),
        )
        for i in range(start, start + n)
    ]


@pytest.fixture(scope="module")
def monitor(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitorHarness]:
    harness = MonitorHarness(
        stack,
        tmp_path_factory.mktemp("monitor-sinks"),
        DRIFTLOOP_MONITOR_SINK_MAX_ROWS="700",
        DRIFTLOOP_MONITOR_SINK_MAX_AGE_MS="200",
        DRIFTLOOP_MONITOR_POLL_MAX_RECORDS="300",
        DRIFTLOOP_MONITOR_TICK_S="60",
    )
    harness.start()
    yield harness
    harness.stop()


def _counts(m: MonitorHarness) -> dict[str, int]:
    tables = list(EXPECTED)
    row = m.query("SELECT " + ", ".join(f"(SELECT count() FROM {t})" for t in tables))[0]
    return dict(zip(tables, (int(v) for v in row), strict=True))


EXPECTED = {
    "predictions": 3000,
    "labels": 500,
    "dataset_versions": 2,
    "data_rejected": 2,
    "model_events": 2,
    "drift_events": 1,
    "experiment_events": 1,
    "sink_rejected": 4,
}


def test_every_topic_lands_once_and_a_replay_from_offset_0_adds_nothing(
    monitor: MonitorHarness,
) -> None:
    t = monitor.topics
    preds = _predictions(0, 3000)
    monitor.publish(t.predictions_log, [*preds, *preds[:100]])  # 100 sent twice
    monitor.publish(
        t.labels_feedback,
        [
            (
                f"k{i}",
                pb.LabelEvent(
                    label_id=f"lab-{i}",
                    request_id=f"req-{i}",
                    model="sink-model",
                    outcome=float(i % 2),
                    event_time_ms=T0_MS + 60_000,
                ),
            )
            for i in range(500)
        ],
    )
    versions = [
        pb.DatasetVersion(
            dataset="credit",
            version_id=f"v{i}",
            row_count=10,
            status="ok",
            features=[pb.FeatureStats(name="f0", kind="numeric", count=10)],
        )
        for i in range(2)
    ]
    monitor.publish(t.datasets_versions, [("credit", v) for v in [*versions, versions[0]]])
    rejected = [
        pb.RejectedEvent(
            source_topic="data.events",
            source_partition=0,
            source_offset=o,
            original_value=b"\xff\x00",
            service="ingest",
            reasons=[pb.RejectionReason(code="decode_error", message="bad")],
        )
        for o in (7, 8, 7)  # ingest may dead-letter one record twice after a crash
    ]
    monitor.publish(t.data_rejected, [("x", r) for r in rejected])
    monitor.publish(
        t.models_events,
        [
            (
                "m",
                pb.ModelEvent(
                    event_id=f"me-{i}",
                    model="sink-model",
                    type=pb.MODEL_EVENT_TYPE_REGISTERED,
                    attributes={"a": "b"},
                ),
            )
            for i in (1, 2, 1)
        ],
    )
    monitor.publish(
        t.drift_events,
        [
            (
                "m",
                pb.DriftEvent(
                    event_id="de-1",
                    model="sink-model",
                    metric="psi",
                    feature="f0",
                    severity=pb.SEVERITY_WARNING,
                ),
            )
        ]
        * 2,
    )
    monitor.publish(
        t.experiments_events,
        [
            (
                "e",
                pb.ExperimentEvent(
                    event_id="ee-1", experiment="e", decision=pb.EXPERIMENT_DECISION_INVALID
                ),
            )
        ],
    )
    monitor.publish_raw(t.predictions_log, [b"\x0a\xff\xff", b"not protobuf", b"\x12"])
    # decodes, but its time is beyond what DateTime64 holds: dead-lettered, not a crash
    monitor.publish(t.predictions_log, [("k", pb.PredictionLog(request_id="far", time_ms=10**16))])

    wait_until(lambda: _counts(monitor), lambda c: c == EXPECTED, 60, "every topic sunk once")
    assert monitor.scalar("SELECT uniqExact(request_id) FROM predictions") == 3000
    assert monitor.scalar("SELECT decision FROM experiment_events") == "EXPERIMENT_DECISION_INVALID"
    assert monitor.scalar("SELECT min(length(reason)) > 0 FROM sink_rejected") == 1
    wait_until(
        lambda: group_caught_up(monitor.settings, monitor.group, monitor.topics.all()),
        bool,
        30,
        "offsets committed to the end",
    )

    # A new consumer group starts from offset 0 and reads everything again.
    monitor.stop()
    monitor.group = f"{monitor.group}-replay"
    monitor.start()
    wait_until(
        lambda: group_caught_up(monitor.settings, monitor.group, monitor.topics.all()),
        bool,
        60,
        "the replay group to reach the end",
    )
    assert _counts(monitor) == EXPECTED


def test_sigkill_mid_stream_loses_and_duplicates_nothing(monitor: MonitorHarness) -> None:
    t = monitor.topics
    before = int(monitor.scalar("SELECT count() FROM predictions"))
    total = 0
    for round_ in range(6):
        monitor.publish(
            t.predictions_log, _predictions(100_000 + round_ * 2000, 2000, "kill-model")
        )
        total += 2000
        if round_ == 2:
            # Kill while the sinks are busy with the rounds in flight: nothing is flushed.
            wait_until(
                lambda: int(
                    monitor.scalar("SELECT count() FROM predictions WHERE model = 'kill-model'")
                ),
                lambda n: n > 0,
                30,
                "the first inserts",
            )
            monitor.stop(sig=signal.SIGKILL)
            monitor.start()
    wait_until(
        lambda: int(monitor.scalar("SELECT count() FROM predictions WHERE model = 'kill-model'")),
        lambda n: n >= total,
        60,
        "all predictions after the restart",
    )
    wait_until(
        lambda: group_caught_up(monitor.settings, monitor.group, monitor.topics.all()),
        bool,
        30,
        "offsets committed to the end",
    )
    count, unique = monitor.query(
        "SELECT count(), uniqExact(request_id) FROM predictions WHERE model = 'kill-model'"
    )[0]
    assert (count, unique) == (total, total)
    assert int(monitor.scalar("SELECT count() FROM predictions")) == before + total


def test_query_api_is_read_only_and_explains_refusals(monitor: MonitorHarness) -> None:
    assert monitor.request("GET", "/healthz") == (200, {"status": "ok"})
    status, body = monitor.request("POST", "/v1/query", {"sql": "DROP TABLE predictions"})
    assert status == 400 and "read-only" in body["detail"]
    status, body = monitor.request("POST", "/v1/query", {"sql": "SELECT 1; SELECT 2"})
    assert status == 400 and "exactly one statement" in body["detail"]
    status, body = monitor.request("POST", "/v1/query", {"sql": "SELECT nope FROM predictions"})
    assert status == 400 and "query failed" in body["detail"]
    status, body = monitor.request("GET", "/v1/tables")
    assert status == 200 and ["predictions"] in [r[:1] for r in body["rows"]]
    assert int(monitor.scalar("SELECT count() FROM predictions")) > 0
