"""A/B statistics of every running experiment, cumulative to the newest closed window.

An experiment is running while its predictions arrive (`predictions.experiment`, live
traffic only: shadow copies are not assigned). The expected split comes from the model
spec (`monitor.experiments.weights`), else from the newest `models.events` record that
declares the experiment's weights (attributes `experiment` and `weights`, JSON), else
from the sticky-hash buckets each variant was given (a variant's bucket span out of
10,000). An `ExperimentEvent` is published when an experiment's decision hint changes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from driftloop.v1 import events_pb2 as pb
from services.monitor.experiments import ArmStats, Comparison, compare
from services.monitor.live.traffic import labelled_predictions
from services.monitor.sinks.rows import ts
from services.monitor.specs import ModelMonitorSpec
from services.monitor.sql import literal

__all__ = ["EXPERIMENT_STATS_COLUMNS", "ExperimentJob", "ExperimentOutcome"]

EXPERIMENT_STATS_COLUMNS = tuple(
    str.split(
        "experiment model variant version window_start window_end expected_share requests "
        "labelled outcome_mean outcome_std error_rate latency_p99_ms computed_at"
    )
)
_DECISIONS = {
    "continue": pb.EXPERIMENT_DECISION_CONTINUE,
    "promote": pb.EXPERIMENT_DECISION_PROMOTE,
    "rollback": pb.EXPERIMENT_DECISION_ROLLBACK,
    "invalid": pb.EXPERIMENT_DECISION_INVALID,
}


@dataclass
class ExperimentOutcome:
    stats_rows: list[tuple[Any, ...]]
    events: list[pb.ExperimentEvent]
    comparisons: dict[str, Comparison]


def _arms(client: Client, experiment: str, hi_ms: int) -> tuple[str, int, dict[str, Any]]:
    source = labelled_predictions(
        "request_id, model, time, variant, version, error, latency_ms, bucket",
        f"experiment = {literal(experiment)} AND NOT shadow "
        f"AND time < fromUnixTimestamp64Milli(toInt64({int(hi_ms)}), 'UTC')",
    )
    rows = client.query(
        "SELECT model, toUnixTimestamp64Milli(min(time)), variant, any(version), "
        "count(), countIf(has = 1), avgIf(outcome, has = 1), stddevSampIf(outcome, has = 1), "
        "countIf(error != ''), quantileExact(0.99)(latency_ms), min(bucket), max(bucket) "
        f"FROM {source} GROUP BY model, variant",
        settings={"join_use_nulls": 0},
    ).result_rows
    model, first_ms = "", 0
    arms: dict[str, Any] = {}
    for m, first, variant, version, n, nl, mean, std, errs, p99, bmin, bmax in rows:
        model = str(m)
        first_ms = int(first) if not first_ms else min(first_ms, int(first))
        arms[str(variant)] = (
            ArmStats(
                str(variant),
                str(version),
                int(n),
                int(nl),
                _num(mean),
                _num(std),
                int(errs),
                _num(p99),
            ),
            int(bmax) - int(bmin) + 1,
        )
    return model, first_ms, arms


def _num(value: Any) -> float:
    v = float(value) if value is not None else 0.0
    return v if v == v else 0.0  # NaN (no labelled rows) -> 0


def _declared_weights(client: Client, experiment: str) -> dict[str, float]:
    rows = client.query(
        "SELECT attributes['weights'] FROM model_events "
        f"WHERE attributes['experiment'] = {literal(experiment)} AND attributes['weights'] != '' "
        "ORDER BY created_at DESC LIMIT 1"
    ).result_rows
    if not rows:
        return {}
    try:
        data = json.loads(rows[0][0])
        return {str(k): float(v) for k, v in data.items()}
    except (ValueError, AttributeError, TypeError):
        return {}


class ExperimentJob:
    """Owns the last decision published per (experiment, treatment)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], str] = {}

    def restore(self, client: Client) -> None:
        for experiment, treatment, decision in client.query(
            "SELECT experiment, treatment_variant, argMax(decision, created_at) "
            "FROM experiment_events GROUP BY experiment, treatment_variant"
        ).result_rows:
            name = str(decision).removeprefix("EXPERIMENT_DECISION_").lower()
            self._last[(str(experiment), str(treatment))] = name

    def run(
        self, client: Client, experiment: str, hi_ms: int, specs: dict[str, ModelMonitorSpec]
    ) -> ExperimentOutcome | None:
        model, first_ms, found = _arms(client, experiment, hi_ms)
        if len(found) < 2 or model not in specs:
            return None
        policy = specs[model].experiments
        arms = {name: arm for name, (arm, _span) in found.items()}
        shares = dict(policy.weights) or _declared_weights(client, experiment)
        if not shares:
            shares = {name: span / 10_000 for name, (_arm, span) in found.items()}
        control = policy.control or max(sorted(arms), key=lambda n: shares.get(n, 0.0))
        now_ms = int(time.time() * 1000)
        share_total = sum(shares.get(n, 0.0) for n in arms) or 1.0
        stats_rows = [
            (
                experiment,
                model,
                a.variant,
                a.version,
                ts(first_ms),
                ts(hi_ms),
                shares.get(a.variant, 0.0) / share_total,
                a.requests,
                a.labelled,
                a.outcome_mean,
                a.outcome_std,
                a.error_rate,
                a.latency_p99_ms,
                ts(now_ms),
            )
            for a in arms.values()
        ]
        events, comparisons = [], {}
        for treatment in sorted(arms):
            if treatment == control or control not in arms:
                continue
            cmp = compare(arms, shares, control, treatment, policy)
            comparisons[treatment] = cmp
            if self._last.get((experiment, treatment)) == cmp.decision:
                continue
            self._last[(experiment, treatment)] = cmp.decision
            events.append(self._event(experiment, model, first_ms, hi_ms, arms, cmp, now_ms))
        return ExperimentOutcome(stats_rows, events, comparisons)

    @staticmethod
    def _event(
        experiment: str,
        model: str,
        first_ms: int,
        hi_ms: int,
        arms: dict[str, ArmStats],
        cmp: Comparison,
        now_ms: int,
    ) -> pb.ExperimentEvent:
        raw = f"{experiment}|{cmp.treatment}|{hi_ms}|{cmp.decision}"
        return pb.ExperimentEvent(
            event_id=hashlib.sha256(raw.encode()).hexdigest()[:32],
            experiment=experiment,
            model=model,
            window_start_ms=first_ms,
            window_end_ms=hi_ms,
            variants=[
                pb.VariantResult(
                    variant=a.variant,
                    version=a.version,
                    requests=a.requests,
                    labelled=a.labelled,
                    metric_value=a.outcome_mean,
                )
                for a in (arms[cmp.control], arms[cmp.treatment])
            ],
            control_variant=cmp.control,
            treatment_variant=cmp.treatment,
            metric="outcome_mean",
            effect=cmp.effect,
            ci_low=cmp.ci_low,
            ci_high=cmp.ci_high,
            p_value=cmp.p_value,
            significant=cmp.significant,
            srm_detected=cmp.srm_detected,
            srm_p_value=cmp.srm_p_value,
            guardrail_breaches=cmp.guardrail_breaches,
            decision=_DECISIONS[cmp.decision],
            created_at_ms=now_ms,
        )


def running_experiments(client: Client) -> list[str]:
    return [
        str(r[0])
        for r in client.query(
            "SELECT DISTINCT experiment FROM predictions WHERE experiment != '' ORDER BY 1"
        ).result_rows
    ]
