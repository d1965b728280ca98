"""Live performance per model version, variant and declared segment, per window.

Predictions are joined with their labels by request id (the newest label of a request
wins). Every tick recomputes the last `performance_lookback_windows` closed windows, so a
label arriving late updates its window's realised metrics (the newest `computed_at` row
wins in the ReplacingMergeTree). Next to the realised values, each window gets the
label-free CBPE estimate of the same metrics with its band (performance.py), computed on
all its predictions: this is what the dashboards show while labels are still missing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client

from services.monitor.live.traffic import VersionTraffic, labelled_predictions, version_filter
from services.monitor.performance import estimate_binary, realised_binary, realised_regression
from services.monitor.sinks.rows import ts
from services.monitor.specs import ModelMonitorSpec
from services.monitor.sql import literal

__all__ = ["PERFORMANCE_COLUMNS", "performance_rows"]

PERFORMANCE_COLUMNS = tuple(
    str.split(
        "model version variant segment window_start window_end metric estimated value "
        "ci_low ci_high rows labelled computed_at"
    )
)


def _fetch(
    client: Client, traffic: VersionTraffic, spec: ModelMonitorSpec, lo_ms: int, hi_ms: int
) -> list[tuple[Any, ...]]:
    segs = ", ".join(
        f"if(indexOf(category_names, {literal(s)}) = 0, '', "
        f"category_values[indexOf(category_names, {literal(s)})])"
        for s in spec.segments
    )
    seg_array = f"[{segs}]" if segs else "CAST([] AS Array(String))"
    source = labelled_predictions(
        "request_id, time, variant, score, category_names, category_values",
        version_filter(traffic.model, traffic.version, lo_ms, hi_ms),
        traffic.model,
    )
    rows = client.query(
        f"SELECT intDiv(toUnixTimestamp64Milli(time), {int(spec.window_ms)}) AS chunk, "
        f"variant, {seg_array} AS segs, score, has, outcome FROM {source}",
        settings={"join_use_nulls": 0},
    ).result_rows
    return [tuple(r) for r in rows]


def performance_rows(
    client: Client, traffic: VersionTraffic, spec: ModelMonitorSpec, lookback_windows: int
) -> list[tuple[Any, ...]]:
    """Rows for performance_metrics over the last closed windows of one version."""
    w = spec.window_ms
    closed = (traffic.last_ms - spec.lateness_ms) // w - 1
    first = max(traffic.first_ms // w, closed - lookback_windows + 1)
    if closed < first:
        return []
    raw = _fetch(client, traffic, spec, first * w, (closed + 1) * w)
    groups: dict[tuple[int, str, str], list[tuple[float, int, float]]] = defaultdict(list)
    for chunk, variant, segs, score, has, outcome in raw:
        item = (float(score), int(has), float(outcome))
        for v in (str(variant), ""):
            groups[(int(chunk), v, "")].append(item)
            for name, value in zip(spec.segments, segs, strict=True):
                if value:
                    groups[(int(chunk), v, f"{name}={value}")].append(item)
    now = ts(int(time.time() * 1000))
    out: list[tuple[Any, ...]] = []
    for (chunk, variant, segment), items in sorted(groups.items()):
        arr = np.asarray(items, dtype=float)
        scores, has, outcomes = arr[:, 0], arr[:, 1] > 0, arr[:, 2]
        n, labelled = len(items), int(has.sum())
        base = (
            traffic.model,
            traffic.version,
            variant,
            segment,
            ts(chunk * w),
            ts((chunk + 1) * w),
        )
        if spec.task == "binary":
            realised = realised_binary(scores[has], outcomes[has]) if labelled else {}
            for metric, est in estimate_binary(scores).items():
                out.append((*base, metric, True, est.value, est.low, est.high, n, labelled, now))
        else:
            realised = realised_regression(scores[has], outcomes[has]) if labelled else {}
        for metric, value in realised.items():
            out.append((*base, metric, False, value, value, value, n, labelled, now))
    return out


def latest(values: Sequence[float]) -> float:
    return values[-1] if values else float("nan")
