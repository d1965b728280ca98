"""One analysis tick over the store: drift, performance and experiments for every model
version with traffic. Runs in the analysis thread (its own store client); returns what to
publish and what to write, so the app publishes events before it writes the rows that
record them (see live/drift.py for why that order)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from clickhouse_connect.driver.client import Client
from google.protobuf.message import Message

from services.monitor.config import MonitorSettings
from services.monitor.live.drift import DRIFT_COLUMNS, INCIDENT_COLUMNS, DriftJob, DriftOutcome
from services.monitor.live.experiments import (
    EXPERIMENT_STATS_COLUMNS,
    ExperimentJob,
    running_experiments,
)
from services.monitor.live.performance import PERFORMANCE_COLUMNS, performance_rows
from services.monitor.live.traffic import VersionTraffic, discover, discover_labels
from services.monitor.sinks.watermark import HOLD
from services.monitor.specs import ModelMonitorSpec, default_spec
from services.monitor.store import INSERT_SETTINGS

__all__ = ["Analysis", "TickResult"]


@dataclass
class TickResult:
    drift_events: list[Message] = field(default_factory=list)
    experiment_events: list[Message] = field(default_factory=list)
    rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = field(default_factory=dict)

    def add_rows(self, table: str, columns: list[str] | tuple[str, ...], rows: list[Any]) -> None:
        if rows:
            self.rows.setdefault(table, (list(columns), []))[1].extend(rows)

    def add_drift(self, drift: DriftOutcome) -> None:
        self.drift_events.extend(drift.events)
        self.add_rows("drift_metrics", DRIFT_COLUMNS, drift.metric_rows)
        self.add_rows("alert_incidents", INCIDENT_COLUMNS, drift.incident_rows)


class Analysis:
    """Owns the jobs' state; `tick(client)` then `write(client, result)`."""

    def __init__(
        self,
        settings: MonitorSettings,
        specs: dict[str, ModelMonitorSpec],
        bins: Callable[[str, str], Mapping[str, Sequence[float]]] | None = None,
    ) -> None:
        self._settings = settings
        self._specs = dict(specs)
        self._drift = DriftJob(settings.max_windows_per_tick, bins)
        self._experiments = ExperimentJob()

    def spec(self, model: str) -> ModelMonitorSpec:
        if model not in self._specs:
            self._specs[model] = default_spec(model, self._settings)
        return self._specs[model]

    def restore(self, client: Client) -> None:
        for (model,) in client.query("SELECT DISTINCT model FROM predictions").result_rows:
            self.spec(str(model))
        self._drift.restore(client, self._specs)
        self._experiments.restore(client)

    def tick(
        self,
        client: Client,
        watermark: Callable[[str], int | None] | None = None,
        label_watermark: Callable[[str], int | None] | None = None,
    ) -> TickResult:
        """`watermark(model)`: the prediction time up to which the store holds all of the
        model's predictions (sinks/watermark.py); None = all of them. Windows close on it,
        not on the newest stored prediction. `label_watermark`: the same for labels."""
        result = TickResult()
        horizon: dict[str, int] = {}
        for found in discover(client):
            traffic = _bounded(found, watermark(found.model) if watermark else None)
            if traffic is None:
                continue
            spec = self.spec(traffic.model)
            result.add_drift(self._drift.run(client, traffic, spec))
            result.add_drift(self._drift.run_performance(client, traffic, spec))
            result.add_drift(self._drift.run_realised(client, traffic, spec))
            perf = performance_rows(
                client, traffic, spec, self._settings.performance_lookback_windows
            )
            result.add_rows("performance_metrics", PERFORMANCE_COLUMNS, perf)
            closed_end = ((traffic.last_ms - spec.lateness_ms) // spec.window_ms) * spec.window_ms
            horizon[traffic.model] = max(horizon.get(traffic.model, 0), closed_end)
        for found in discover_labels(client):  # label drift, by when the labels came
            mark = label_watermark(found.model) if label_watermark else None
            labels = _bounded(found, mark)
            if labels is None:
                continue
            result.add_drift(self._drift.run_labels(client, labels, self.spec(labels.model)))
        for experiment in running_experiments(client):
            hi = max(horizon.values(), default=0)
            outcome = self._experiments.run(client, experiment, hi, self._specs) if hi else None
            if outcome is not None:
                result.experiment_events.extend(outcome.events)
                result.add_rows("experiment_stats", EXPERIMENT_STATS_COLUMNS, outcome.stats_rows)
        return result

    @staticmethod
    def write(client: Client, result: TickResult) -> None:
        for table, (columns, rows) in result.rows.items():
            client.insert(table, rows, column_names=columns, settings=INSERT_SETTINGS)


def _bounded(traffic: VersionTraffic, watermark: int | None) -> VersionTraffic | None:
    """The traffic as far as it is complete; None while none of it is known to be."""
    if watermark is None or watermark >= traffic.last_ms:
        return traffic
    if watermark == HOLD or watermark < traffic.first_ms:
        return None
    return replace(traffic, last_ms=watermark)
