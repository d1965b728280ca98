"""The dashboards' panels, once: Grafana's JSON (deploy/grafana) and `driftloop report`
both come from these definitions, so the SQL a test executes is the SQL Grafana runs.

Panel SQL uses two Grafana macros of the ClickHouse data source plugin,
`$__timeFilter(column)` and `${model}`; `bind` replaces them for a plain ClickHouse client
(the report and the tests), with the same meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["DASHBOARDS", "Dashboard", "Panel", "bind"]

PanelKind = Literal["timeseries", "table", "barchart"]


@dataclass(frozen=True)
class Panel:
    title: str
    kind: PanelKind
    sql: str  # time series: columns (time, series, value); others: any columns
    description: str = ""


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]


_M = "model = '${model}'"


def _metric_series(metric: str) -> str:
    return (
        "SELECT window_start AS time, feature AS series, value FROM drift_metrics FINAL "
        f"WHERE {_M} AND metric = '{metric}' AND NOT is_reference AND slice = '' "
        "AND $__timeFilter(window_start) ORDER BY time"
    )


DASHBOARDS: tuple[Dashboard, ...] = (
    Dashboard(
        "driftloop-overview",
        "driftloop: overview",
        (
            Panel(
                "Predictions per minute by version",
                "timeseries",
                "SELECT toStartOfMinute(time) AS minute, version AS series, count() AS value "
                f"FROM predictions WHERE {_M} AND $__timeFilter(time) "
                "GROUP BY minute, series ORDER BY minute",
            ),
            Panel(
                "Drift alerts per window",
                "timeseries",
                "SELECT window_start AS time, metric AS series, countIf(breached) AS value "
                f"FROM drift_metrics FINAL WHERE {_M} AND NOT is_reference AND slice = '' "
                "AND $__timeFilter(window_start) GROUP BY time, series ORDER BY time",
            ),
            Panel(
                "Open incidents",
                "table",
                "SELECT metric, feature, slice, version, opened_window, last_window, peak_value, "
                f"threshold, severity FROM alert_incidents FINAL WHERE {_M} "
                "AND closed_window IS NULL ORDER BY opened_window DESC",
            ),
        ),
    ),
    Dashboard(
        "driftloop-drift",
        "driftloop: drift",
        (
            Panel("PSI per feature", "timeseries", _metric_series("psi")),
            Panel("Kolmogorov-Smirnov per feature", "timeseries", _metric_series("ks")),
            Panel(
                "Jensen-Shannon per categorical feature",
                "timeseries",
                _metric_series("jensen_shannon"),
            ),
            Panel(
                "PCA reconstruction error (multivariate)",
                "timeseries",
                "SELECT window_start AS time, if(is_reference, 'reference', 'live') AS series, "
                f"value FROM drift_metrics FINAL WHERE {_M} AND slice = '' "
                "AND metric = 'pca_reconstruction_error' AND $__timeFilter(window_start) "
                "ORDER BY time",
            ),
            Panel(
                "Values above their threshold",
                "table",
                "SELECT window_start, version, feature, slice, metric, value, threshold, "
                "alert_state "
                f"FROM drift_metrics FINAL WHERE {_M} AND breached AND NOT is_reference "
                "AND $__timeFilter(window_start) ORDER BY window_start DESC LIMIT 200",
            ),
        ),
    ),
    Dashboard(
        "driftloop-performance",
        "driftloop: performance",
        (
            Panel(
                "Realised and estimated (CBPE) performance",
                "timeseries",
                "SELECT window_start AS time, "
                "concat(metric, if(estimated, ' (estimated)', ' (realised)')) AS series, value "
                f"FROM performance_metrics FINAL WHERE {_M} AND segment = '' "
                "AND $__timeFilter(window_start) ORDER BY time",
            ),
            Panel(
                "Labelled share of predictions",
                "timeseries",
                "SELECT window_start AS time, version AS series, "
                "if(rows > 0, labelled / rows, 0) AS value FROM performance_metrics FINAL "
                f"WHERE {_M} AND segment = '' AND NOT estimated "
                "AND $__timeFilter(window_start) ORDER BY time",
            ),
        ),
    ),
    Dashboard(
        "driftloop-experiments",
        "driftloop: experiments",
        (
            Panel(
                "Requests per variant",
                "timeseries",
                "SELECT window_end AS time, concat(experiment, '/', variant) AS series, "
                f"requests AS value FROM experiment_stats FINAL WHERE {_M} "
                "AND $__timeFilter(window_end) ORDER BY time",
            ),
            Panel(
                "Outcome mean per variant",
                "timeseries",
                "SELECT window_end AS time, concat(experiment, '/', variant) AS series, "
                f"outcome_mean AS value FROM experiment_stats FINAL WHERE {_M} "
                "AND $__timeFilter(window_end) ORDER BY time",
            ),
            Panel(
                "Decisions",
                "table",
                "SELECT window_end, experiment, treatment_variant, metric, effect, ci_low, "
                "ci_high, p_value, srm_detected, decision FROM experiment_events FINAL "
                f"WHERE {_M} AND $__timeFilter(window_end) ORDER BY window_end DESC LIMIT 100",
            ),
        ),
    ),
    Dashboard(
        "driftloop-data-quality",
        "driftloop: data quality",
        (
            Panel("Null rate per feature", "timeseries", _metric_series("null_rate")),
            Panel(
                "Rejected records per reason",
                "barchart",
                "SELECT arrayJoin(reason_codes) AS reason, count() AS records "
                "FROM data_rejected FINAL WHERE $__timeFilter(rejected_at) "
                "GROUP BY reason ORDER BY records DESC",
            ),
            Panel(
                "Dataset versions",
                "table",
                "SELECT created_at, dataset, version_id, row_count, status, status_reasons "
                "FROM dataset_versions FINAL WHERE $__timeFilter(created_at) "
                "ORDER BY created_at DESC LIMIT 50",
            ),
        ),
    ),
)

_TIME_FILTER = re.compile(r"\$__timeFilter\((\w+)\)")


def bind(sql: str, model: str, since_ms: int = 0, until_ms: int | None = None) -> str:
    """`sql` with the Grafana macros replaced for a plain client: a time range in epoch
    milliseconds (default: everything) and the model's name."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", model):
        raise ValueError(f"invalid model name {model!r}")

    def time_filter(match: re.Match[str]) -> str:
        ms = f"toUnixTimestamp64Milli(toDateTime64({match[1]}, 3))"
        until = "" if until_ms is None else f" AND {ms} < {int(until_ms)}"
        return f"({ms} >= {int(since_ms)}{until})"

    return _TIME_FILTER.sub(time_filter, sql).replace("${model}", model)
