"""The blocking evaluation gate: may this challenger replace the champion?

Challenger and champion are scored on the same holdout rows. Every check runs, even after
one has failed, so the report (stored in the manifest and the `models.events` record)
says everything that is wrong at once. The improvement check is a paired bootstrap of the
difference, sign-normalised so that a positive improvement is better for every metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, JsonValue, model_validator

from services.trainer.metrics import (
    ECE_BINS,
    HIGHER_IS_BETTER,
    METRICS,
    MetricName,
    auc,
    expected_calibration_error,
    log_loss,
    mae,
    metric_by_group,
    paired_bootstrap,
    rmse,
)

__all__ = [
    "CheckResult",
    "GateConfig",
    "GateInputError",
    "GateReport",
    "TaskKind",
    "evaluate_gate",
]

TaskKind = Literal["binary", "regression"]
_BINARY_ONLY = {"auc", "log_loss"}
_LISTED_GROUPS = 20  # a fairness detail names at most this many groups of each kind


class GateInputError(ValueError):
    """The holdout arrays cannot be evaluated (shape, NaN, labels or scores out of range)."""


class GateConfig(BaseModel, frozen=True, extra="forbid"):
    """Gate thresholds. Defaults follow the task: regression scores `rmse` by default, and
    thresholds that do not apply to the chosen metric/task default to None (unset)."""

    task: TaskKind = "binary"
    primary_metric: MetricName = "auc"
    min_primary: float | None = Field(default=0.6, allow_inf_nan=False)
    max_primary: float | None = Field(default=None, allow_inf_nan=False)
    min_holdout_rows: int = Field(default=200, ge=1)
    tolerance: float = Field(default=0.0, allow_inf_nan=False)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    bootstrap_samples: int = Field(default=1000, ge=1)
    max_calibration_error: float | None = Field(default=0.1, ge=0.0, le=1.0)
    fairness_group: str | None = Field(default=None, min_length=1)
    max_fairness_gap: float | None = Field(default=0.1, ge=0.0, allow_inf_nan=False)
    min_group_rows: int = Field(default=50, ge=1)
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        # Only defaults are adapted; a threshold the caller set explicitly is checked below.
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        task = data.get("task", "binary")
        if task == "regression":
            data.setdefault("primary_metric", "rmse")
            data.setdefault("max_calibration_error", None)
        metric = data.get("primary_metric", "auc")
        if isinstance(metric, str) and not HIGHER_IS_BETTER.get(metric, True):
            data.setdefault("min_primary", None)
        return data

    @model_validator(mode="after")
    def _check_combination(self) -> GateConfig:
        metric = self.primary_metric
        if self.task == "regression" and metric in _BINARY_ONLY:
            raise ValueError(f"primary_metric {metric!r} needs task 'binary'; use 'rmse'")
        if self.higher_is_better and self.max_primary is not None:
            raise ValueError(f"{metric} is higher-is-better: set min_primary, not max_primary")
        if not self.higher_is_better and self.min_primary is not None:
            raise ValueError(f"{metric} is lower-is-better: set max_primary, not min_primary")
        if self.task == "regression" and self.max_calibration_error is not None:
            raise ValueError("max_calibration_error applies to task 'binary' only")
        return self

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.primary_metric]


class CheckResult(BaseModel, frozen=True):
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str


class GateReport(BaseModel, frozen=True):
    passed: bool
    checks: list[CheckResult]
    primary_metric: str
    challenger: dict[str, float]
    champion: dict[str, float] | None
    difference_ci: tuple[float, float] | None
    holdout_rows: int
    has_champion: bool

    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def summary(self) -> str:
        metric = self.primary_metric
        score = f"{metric} {self.challenger[metric]:.3f}"
        if self.champion is not None:
            score += f" vs {self.champion[metric]:.3f}"
        if self.difference_ci is not None:
            low, high = self.difference_ci
            score += f", \N{GREEK CAPITAL LETTER DELTA} CI [{low:.3f}, {high:.3f}]"
        elif not self.has_champion:
            score += " (no champion)"
        if self.passed:
            return f"passed: {score}"
        failed = ", ".join(f"{c.name} ({_brief(c)})" for c in self.checks if not c.passed)
        return f"failed: {failed}; {score}"

    def to_json_dict(self) -> dict[str, JsonValue]:
        """Plain JSON types (the CI tuple becomes a list): the manifest's `gate_report`."""
        return self.model_dump(mode="json")


def _brief(check: CheckResult) -> str:
    if check.value is None:
        return check.detail
    if check.threshold is None:
        return f"{check.value:.4g}"
    return f"{check.value:.4g} vs {check.threshold:.4g}"


def _vector(name: str, values: np.ndarray, rows: int | None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        hint = " (pass the positive-class column of predict_proba)" if array.ndim == 2 else ""
        raise GateInputError(f"{name} must be 1-D, got shape {array.shape}{hint}")
    if array.dtype.kind not in "biuf":
        raise GateInputError(f"{name} must be numeric, got dtype {array.dtype}")
    if rows is not None and array.size != rows:
        raise GateInputError(f"{name} has {array.size} rows, y_true has {rows}")
    array = array.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise GateInputError(f"{name} has {bad.size} NaN/inf values (first at row {bad[0]})")
    return array


def _check_binary(y_true: np.ndarray, scores: dict[str, np.ndarray]) -> None:
    not_label = np.flatnonzero((y_true != 0) & (y_true != 1))
    if not_label.size:
        first = not_label[0]
        raise GateInputError(
            f"y_true must be 0/1 for task 'binary'; row {first} is {y_true[first]:g}"
        )
    positives = int(y_true.sum())
    if positives in (0, y_true.size):
        raise GateInputError(
            f"y_true has a single class ({positives} positives of {y_true.size} rows): "
            "AUC is undefined"
        )
    for name, probs in scores.items():
        outside = np.flatnonzero((probs < 0.0) | (probs > 1.0))
        if outside.size:
            first = outside[0]
            raise GateInputError(
                f"{name} must be probabilities in [0, 1]; {outside.size} are not "
                f"(row {first} is {probs[first]:g})"
            )


def _group_values(groups: np.ndarray | None, rows: int) -> np.ndarray | None:
    if groups is None:
        return None
    values = np.asarray(groups)
    if values.ndim != 1 or values.size != rows:
        raise GateInputError(f"groups has shape {values.shape}, y_true has {rows} rows")
    # Mixed Python objects (None, str, int) do not sort together; their text does.
    return values.astype(str) if values.dtype.kind == "O" else values


def _metrics(config: GateConfig, y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    if config.task == "regression":
        return {"rmse": rmse(y_true, scores), "mae": mae(y_true, scores)}
    return {
        "auc": auc(y_true, scores),
        "log_loss": log_loss(y_true, scores),
        "rmse": rmse(y_true, scores),
        "ece": expected_calibration_error(y_true, scores),
    }


def _result(
    name: str, passed: bool, value: float | None, threshold: float | None, detail: str
) -> CheckResult:
    return CheckResult(name=name, passed=passed, value=value, threshold=threshold, detail=detail)


def _rows_check(config: GateConfig, rows: int) -> CheckResult:
    minimum = config.min_holdout_rows
    passed = rows >= minimum
    detail = f"{rows} holdout rows {'>=' if passed else '<'} minimum {minimum}"
    return _result("min_holdout_rows", passed, float(rows), float(minimum), detail)


def _threshold_check(config: GateConfig, value: float) -> CheckResult:
    metric = config.primary_metric
    if config.min_primary is not None:
        threshold, passed = config.min_primary, value >= config.min_primary
        relation = f"{'>=' if passed else '<'} floor"
    elif config.max_primary is not None:
        threshold, passed = config.max_primary, value <= config.max_primary
        relation = f"{'<=' if passed else '>'} ceiling"
    else:
        detail = f"{metric} {value:.4g}; no absolute threshold configured"
        return _result("primary_threshold", True, value, None, detail)
    detail = f"{metric} {value:.4g} {relation} {threshold:.4g}"
    return _result("primary_threshold", passed, value, threshold, detail)


def _improvement_check(
    config: GateConfig, y_true: np.ndarray, challenger: np.ndarray, champion: np.ndarray
) -> tuple[CheckResult, tuple[float, float] | None]:
    metric, tolerance = config.primary_metric, config.tolerance
    point = METRICS[metric](y_true, challenger) - METRICS[metric](y_true, champion)
    point = point if config.higher_is_better else -point
    rng = np.random.default_rng(config.seed)
    boot = paired_bootstrap(metric, y_true, challenger, champion, config.bootstrap_samples, rng)
    skipped = f" ({boot.skipped} skipped: single class)" if boot.skipped else ""
    replicates = f"{config.bootstrap_samples} paired bootstrap replicates{skipped}"
    if boot.improvements.size == 0:
        detail = f"{metric} improvement {point:.4g}; CI undefined: no usable one of {replicates}"
        return _result("improvement_ci", False, None, tolerance, detail), None
    alpha = 1.0 - config.confidence
    low, high = (float(q) for q in np.quantile(boot.improvements, [alpha / 2, 1 - alpha / 2]))
    passed = low > tolerance
    detail = (
        f"{metric} improvement {point:.4g}, {config.confidence:.0%} CI [{low:.4g}, {high:.4g}] "
        f"from {replicates}; lower bound {'>' if passed else '<='} tolerance {tolerance:g}"
    )
    return _result("improvement_ci", passed, low, tolerance, detail), (low, high)


def _calibration_check(config: GateConfig, ece: float) -> CheckResult:
    limit = config.max_calibration_error
    if limit is None:
        return _result("calibration", True, ece, None, f"ECE {ece:.4g}; no limit configured")
    passed = ece <= limit
    detail = f"ECE ({ECE_BINS} bins) {ece:.4g} {'<=' if passed else '>'} {limit:g}"
    return _result("calibration", passed, ece, limit, detail)


def _listed(names: list[str], text: Callable[[str], str]) -> str:
    shown = ", ".join(text(name) for name in names[:_LISTED_GROUPS])
    more = len(names) - _LISTED_GROUPS
    return shown + (f" and {more} more" if more > 0 else "")


def _fairness_check(
    config: GateConfig, y_true: np.ndarray, scores: np.ndarray, groups: np.ndarray | None
) -> CheckResult:
    column, limit, metric = config.fairness_group, config.max_fairness_gap, config.primary_metric
    if groups is None:
        detail = f"fairness_group {column!r} is configured but no group values were passed"
        return _result("fairness_gap", False, None, limit, detail)
    by_group = metric_by_group(metric, y_true, scores, groups, config.min_group_rows)
    values, rows = by_group.values, by_group.rows
    ranked = sorted(values, key=values.__getitem__)
    # Worst and best first: they define the gap, and long lists are cut short.
    extremes = ranked[:1] + ranked[:0:-1]
    parts = [
        f"{metric} by {column}: "
        + _listed(extremes, lambda g: f"{g} {values[g]:.4g} (n={rows[g]})")
    ]
    if by_group.too_small:
        ignored = _listed(by_group.too_small, lambda g: f"{g} (n={rows[g]})")
        parts.append(f"ignored (< {config.min_group_rows} rows): {ignored}")
    if by_group.undefined:
        ignored = _listed(by_group.undefined, lambda g: f"{g} (n={rows[g]})")
        parts.append(f"ignored ({metric} undefined): {ignored}")
    if len(ranked) < 2:
        parts.insert(0, f"fewer than 2 groups of {column!r} can be compared")
        return _result("fairness_gap", True, None, limit, "; ".join(parts))
    gap = values[ranked[-1]] - values[ranked[0]]
    passed = limit is None or gap <= limit
    limit_text = "no limit configured" if limit is None else f"{'<=' if passed else '>'} {limit:g}"
    parts.append(f"gap {gap:.4g} {limit_text}")
    return _result("fairness_gap", passed, gap, limit, "; ".join(parts))


def evaluate_gate(
    config: GateConfig,
    y_true: np.ndarray,
    challenger_scores: np.ndarray,
    champion_scores: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> GateReport:
    """Run every check of the gate; raises GateInputError when the arrays are unusable.

    `groups` (the values of `config.fairness_group`, row-aligned) is ignored unless a
    fairness group is configured.
    """
    y = _vector("y_true", y_true, None)
    rows = y.size
    if rows == 0:
        raise GateInputError("the holdout is empty")
    challenger = _vector("challenger_scores", challenger_scores, rows)
    scores = {"challenger_scores": challenger}
    if champion_scores is not None:
        scores["champion_scores"] = _vector("champion_scores", champion_scores, rows)
    champion = scores.get("champion_scores")
    if config.task == "binary":
        _check_binary(y, scores)
    group_values = _group_values(groups, rows) if config.fairness_group else None

    challenger_metrics = _metrics(config, y, challenger)
    checks = [
        _rows_check(config, rows),
        _threshold_check(config, challenger_metrics[config.primary_metric]),
    ]
    ci = None
    if champion is not None:
        improvement, ci = _improvement_check(config, y, challenger, champion)
        checks.append(improvement)
    if config.task == "binary":
        checks.append(_calibration_check(config, challenger_metrics["ece"]))
    if config.fairness_group is not None:
        checks.append(_fairness_check(config, y, challenger, group_values))
    return GateReport(
        passed=all(c.passed for c in checks),
        checks=checks,
        primary_metric=config.primary_metric,
        challenger=challenger_metrics,
        champion=None if champion is None else _metrics(config, y, champion),
        difference_ci=ci,
        holdout_rows=rows,
        has_champion=champion is not None,
    )
