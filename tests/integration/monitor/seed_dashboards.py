"""Seed a chDB store with a little of every table the dashboards read, then run every
panel's SQL; prints {panel title: rows or "error: …"} as JSON. Its own process (one chDB
store per process): `python -m tests.integration.monitor.seed_dashboards chdb:///path`."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta

from services.common.clickhouse import apply_migrations, connect
from services.monitor.panels import DASHBOARDS, bind

MODEL = "credit-default"
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def seed(dsn: str) -> None:
    client = connect(dsn)
    apply_migrations(client)
    ins = {"async_insert": 0}
    windows = [T0 + timedelta(minutes=10 * i) for i in range(6)]
    client.insert(
        "predictions",
        [[f"r{i}", T0 + timedelta(seconds=30 * i), MODEL, "1", "a", "", False, f"k{i}", 0,
          ["f0"], [0.1 * i], [], [], 0.5, 3.0] for i in range(60)],
        column_names=["request_id", "time", "model", "version", "variant", "experiment",
                      "shadow", "entity_key", "bucket", "feature_names", "feature_values",
                      "category_names", "category_values", "score", "latency_ms"],
        settings=ins,
    )  # fmt: skip
    metrics = []
    for i, w in enumerate(windows):
        for feature, metric in (
            ("f0", "psi"),
            ("f0", "ks"),
            ("f0", "null_rate"),
            ("home", "jensen_shannon"),
            ("*", "pca_reconstruction_error"),
        ):
            breached = i >= 4 and metric == "psi"
            metrics.append(
                [
                    MODEL,
                    "1",
                    w,
                    w + timedelta(minutes=10),
                    metric,
                    feature,
                    "",
                    0.3 if breached else 0.01,
                    0.1,
                    breached,
                    w,
                    "time",
                    1000,
                    1000,
                    i < 2,
                    "firing" if breached else "ok",
                ]
            )
    client.insert(
        "drift_metrics", metrics,
        column_names=["model", "version", "window_start", "window_end", "metric", "feature",
                      "slice", "value", "threshold", "breached", "computed_at", "window_kind",
                      "rows", "reference_rows", "is_reference", "alert_state"],
        settings=ins,
    )  # fmt: skip
    client.insert(
        "alert_incidents",
        [[MODEL, "1", "psi", "f0", "", windows[4], windows[5], None, 0.3, 0.1, "warning", "e1",
          windows[5]]],
        column_names=["model", "version", "metric", "feature", "slice", "opened_window",
                      "last_window", "closed_window", "peak_value", "threshold", "severity",
                      "event_id", "updated_at"],
        settings=ins,
    )  # fmt: skip
    client.insert(
        "performance_metrics",
        [[MODEL, "1", "a", "", w, w + timedelta(minutes=10), "auc", est, 0.8, 0.75, 0.85, 100,
          50, w] for w in windows for est in (True, False)],
        column_names=["model", "version", "variant", "segment", "window_start", "window_end",
                      "metric", "estimated", "value", "ci_low", "ci_high", "rows", "labelled",
                      "computed_at"],
        settings=ins,
    )  # fmt: skip
    client.insert(
        "experiment_stats",
        [["exp1", MODEL, v, "1", T0, w, 0.5, 100 * (i + 1), 50, 0.3, 0.1, 0.0, 12.0, w]
         for i, w in enumerate(windows) for v in ("control", "treatment")],
        column_names=["experiment", "model", "variant", "version", "window_start", "window_end",
                      "expected_share", "requests", "labelled", "outcome_mean", "outcome_std",
                      "error_rate", "latency_p99_ms", "computed_at"],
        settings=ins,
    )  # fmt: skip
    client.insert(
        "experiment_events",
        [["x1", "exp1", MODEL, T0, windows[-1], "control", "treatment", "outcome", 0.02,
          -0.01, 0.05, 0.2, False, False, 0.5, [], "continue", "{}", windows[-1]]],
        column_names=["event_id", "experiment", "model", "window_start", "window_end",
                      "control_variant", "treatment_variant", "metric", "effect", "ci_low",
                      "ci_high", "p_value", "significant", "srm_detected", "srm_p_value",
                      "guardrail_breaches", "decision", "variants_json", "created_at"],
        settings=ins,
    )  # fmt: skip
    client.insert(
        "data_rejected",
        [["credit.raw", 0, i, "credit", f"e{i}", "ingest", ["schema"], ["x"], ["bad"], "{}",
          T0] for i in range(3)],
        column_names=["source_topic", "source_partition", "source_offset", "dataset",
                      "event_id", "service", "reason_codes", "reason_fields", "reason_messages",
                      "original_value", "rejected_at"],
        settings=ins,
    )  # fmt: skip
    client.insert(
        "dataset_versions",
        [["credit", "v1", "", 1000, "h", "ok", [], "file:///x", "file:///m", T0, T0, T0, "{}"]],
        column_names=["dataset", "version_id", "parent_version_id", "row_count", "schema_hash",
                      "status", "status_reasons", "storage_uri", "manifest_uri",
                      "min_event_time", "max_event_time", "created_at", "features_json"],
        settings=ins,
    )  # fmt: skip
    results: dict[str, object] = {}
    for dashboard in DASHBOARDS:
        for panel in dashboard.panels:
            try:
                results[f"{dashboard.uid}/{panel.title}"] = len(
                    client.query(bind(panel.sql, MODEL)).result_rows
                )
            except Exception as exc:
                results[f"{dashboard.uid}/{panel.title}"] = f"error: {exc}"
    client.close()
    print(json.dumps(results))


if __name__ == "__main__":
    seed(sys.argv[1])
