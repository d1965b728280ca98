"""The evaluation gate on synthetic holdouts whose answer is known by construction."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from pydantic import ValidationError

from services.trainer.gate import CheckResult, GateConfig, GateInputError, GateReport, evaluate_gate


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _holdout(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from a known probability `p`, so `p` itself is a calibrated model."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    p = _sigmoid(2.0 * x)
    y = (rng.random(n) < p).astype(float)
    return x, p, y


def _noisy(x: np.ndarray, scale: float, seed: int) -> np.ndarray:
    return _sigmoid(2.0 * (x + np.random.default_rng(seed).normal(scale=scale, size=x.size)))


def _check(report: GateReport, name: str) -> CheckResult:
    return next(c for c in report.checks if c.name == name)


def test_a_clearly_better_challenger_passes() -> None:
    x, p, y = _holdout(2000)
    report = evaluate_gate(GateConfig(), y, p, _noisy(x, 1.5, seed=1))
    assert report.passed, report.summary()
    assert report.has_champion and report.champion is not None
    names = ["min_holdout_rows", "primary_threshold", "improvement_ci", "calibration"]
    assert [c.name for c in report.checks] == names
    assert report.challenger["auc"] > report.champion["auc"] + 0.05
    assert report.difference_ci is not None
    low, high = report.difference_ci
    assert 0.0 < low < report.challenger["auc"] - report.champion["auc"] < high
    assert _check(report, "improvement_ci").value == low
    assert report.summary().startswith(
        f"passed: auc {report.challenger['auc']:.3f} vs {report.champion['auc']:.3f}, "
        f"\N{GREEK CAPITAL LETTER DELTA} CI [{low:.3f}, {high:.3f}]"
    )
    assert report.failed_checks() == []


def test_the_same_model_as_champion_fails_the_improvement_check() -> None:
    _, p, y = _holdout(1000)
    report = evaluate_gate(GateConfig(), y, p, p.copy())
    assert report.failed_checks() == ["improvement_ci"]
    assert report.difference_ci == (0.0, 0.0)
    assert "lower bound <= tolerance 0" in _check(report, "improvement_ci").detail
    assert report.summary().startswith("failed: improvement_ci (0 vs 0)")


def test_a_slightly_better_but_noisy_challenger_fails_the_ci_check() -> None:
    x, _, y = _holdout(400)
    champion, challenger = _noisy(x, 1.0, seed=10), _noisy(x, 0.9, seed=11)
    config = GateConfig(max_calibration_error=None)
    report = evaluate_gate(config, y, challenger, champion)
    assert report.champion is not None and report.difference_ci is not None
    assert report.challenger["auc"] > report.champion["auc"]  # better point estimate …
    assert report.difference_ci[0] < 0.0 < report.difference_ci[1]  # … within the noise
    assert report.failed_checks() == ["improvement_ci"]


def test_tolerance_raises_the_bar() -> None:
    x, p, y = _holdout(2000)
    report = evaluate_gate(GateConfig(tolerance=0.5), y, p, _noisy(x, 1.5, seed=1))
    assert report.failed_checks() == ["improvement_ci"]
    assert _check(report, "improvement_ci").threshold == 0.5


def test_a_model_near_random_on_one_group_fails_fairness() -> None:
    _, p, y = _holdout(1010)
    groups = np.array(["A"] * 500 + ["B"] * 500 + ["C"] * 10, dtype=object)
    scores = p.copy()
    scores[500:1000] = np.random.default_rng(4).random(500)  # uninformative on B
    config = GateConfig(fairness_group="region", max_calibration_error=None)
    report = evaluate_gate(config, y, scores, groups=groups)
    check = _check(report, "fairness_gap")
    assert not check.passed and report.failed_checks() == ["fairness_gap"]
    assert check.value is not None and check.value > 0.3
    assert check.threshold == 0.1
    assert "auc by region: B 0.5" in check.detail
    assert "ignored (< 50 rows): C (n=10)" in check.detail
    assert "fairness_gap" in report.summary()


def test_fairness_passes_for_a_model_equally_good_on_every_group() -> None:
    _, p, y = _holdout(2000)
    groups = np.where(np.arange(2000) % 2 == 0, "A", "B")
    config = GateConfig(fairness_group="region", max_fairness_gap=0.1)
    report = evaluate_gate(config, y, p, groups=groups)
    check = _check(report, "fairness_gap")
    assert check.passed and check.value is not None and check.value < 0.1


def test_fairness_configured_without_groups_fails_with_a_reason() -> None:
    _, p, y = _holdout(500)
    report = evaluate_gate(GateConfig(fairness_group="region"), y, p)
    check = _check(report, "fairness_gap")
    assert not check.passed and check.value is None
    assert "'region' is configured but no group values were passed" in check.detail


def test_fairness_with_a_single_comparable_group_passes_and_says_so() -> None:
    _, p, y = _holdout(500)
    groups = np.array(["A"] * 490 + ["B"] * 10)
    report = evaluate_gate(GateConfig(fairness_group="region"), y, p, groups=groups)
    check = _check(report, "fairness_gap")
    assert check.passed and check.value is None
    assert "fewer than 2 groups" in check.detail


def test_too_few_rows_fails_but_every_check_still_runs() -> None:
    x, p, y = _holdout(150)
    report = evaluate_gate(GateConfig(), y, p, _noisy(x, 3.0, seed=1))
    assert "min_holdout_rows" in report.failed_checks()
    rows = _check(report, "min_holdout_rows")
    assert (rows.value, rows.threshold) == (150.0, 200.0)
    assert len(report.checks) == 4
    assert report.holdout_rows == 150


def test_without_a_champion_only_absolute_thresholds_apply() -> None:
    _, p, y = _holdout(1000)
    report = evaluate_gate(GateConfig(), y, p)
    assert report.passed and not report.has_champion
    assert [c.name for c in report.checks] == [
        "min_holdout_rows",
        "primary_threshold",
        "calibration",
    ]
    assert report.champion is None and report.difference_ci is None
    assert report.summary().endswith("(no champion)")
    weak = _noisy(np.random.default_rng(8).normal(size=1000), 1.0, seed=2)  # unrelated to y
    failed = evaluate_gate(GateConfig(max_calibration_error=None), y, weak)
    assert failed.failed_checks() == ["primary_threshold"]
    assert "< floor 0.6" in _check(failed, "primary_threshold").detail


@pytest.mark.parametrize("squash", ["toward_half", "times_0.3"])
def test_a_badly_calibrated_model_fails_calibration(squash: str) -> None:
    _, p, y = _holdout(2000)
    scores = 0.5 + 0.2 * (p - 0.5) if squash == "toward_half" else 0.3 * p
    report = evaluate_gate(GateConfig(), y, scores)
    calibrated = evaluate_gate(GateConfig(), y, p)
    assert report.failed_checks() == ["calibration"]
    assert report.challenger["auc"] == pytest.approx(calibrated.challenger["auc"])  # same ranking
    assert report.challenger["ece"] > 0.1 > 0.05 > calibrated.challenger["ece"]


def test_regression_with_rmse_is_lower_is_better() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000)
    y = 3.0 * x + rng.normal(scale=0.5, size=1000)
    good, poor = 3.0 * x, 3.0 * x + rng.normal(scale=1.0, size=1000)
    config = GateConfig(task="regression")
    assert config.primary_metric == "rmse" and config.min_primary is None
    report = evaluate_gate(config, y, good, poor)
    assert report.passed, report.summary()
    assert report.champion is not None and report.difference_ci is not None
    assert report.challenger["rmse"] < report.champion["rmse"]
    assert report.difference_ci[0] > 0.0  # improvement is positive although rmse went down
    assert set(report.challenger) == {"rmse", "mae"}
    assert "calibration" not in [c.name for c in report.checks]
    swapped = evaluate_gate(config, y, poor, good)
    assert swapped.difference_ci is not None and swapped.difference_ci[1] < 0.0
    assert swapped.failed_checks() == ["improvement_ci"]
    ceiling = evaluate_gate(GateConfig(task="regression", max_primary=0.4), y, good)
    assert ceiling.failed_checks() == ["primary_threshold"]
    assert "> ceiling 0.4" in _check(ceiling, "primary_threshold").detail


def test_log_loss_as_primary_metric() -> None:
    x, p, y = _holdout(2000)
    config = GateConfig(primary_metric="log_loss", max_primary=0.6)
    report = evaluate_gate(config, y, p, _noisy(x, 1.5, seed=1))
    assert report.passed, report.summary()
    assert report.difference_ci is not None and report.difference_ci[0] > 0.0


def test_the_same_seed_gives_the_same_report() -> None:
    x, p, y = _holdout(500)
    champion = _noisy(x, 1.0, seed=3)
    first = evaluate_gate(GateConfig(seed=7), y, p, champion)
    again = evaluate_gate(GateConfig(seed=7), y, p, champion)
    assert first == again
    assert first.to_json_dict() == again.to_json_dict()
    other = evaluate_gate(GateConfig(seed=8), y, p, champion)
    assert other.difference_ci != first.difference_ci


def test_single_class_bootstrap_replicates_are_skipped_and_counted() -> None:
    y = np.zeros(30)
    y[:2] = 1.0
    challenger = np.linspace(1.0, 0.0, 30)
    champion = np.linspace(0.0, 1.0, 30)
    config = GateConfig(min_holdout_rows=10, max_calibration_error=None, min_primary=None)
    report = evaluate_gate(config, y, challenger, champion)
    detail = _check(report, "improvement_ci").detail
    assert "skipped: single class" in detail
    assert report.difference_ci is not None


def test_report_is_json_serialisable() -> None:
    x, p, y = _holdout(500)
    config = GateConfig(fairness_group="g")
    groups = np.array(["a", "b"] * 250)
    report = evaluate_gate(config, y, p, _noisy(x, 1.0, seed=1), groups)
    data = report.to_json_dict()
    assert json.loads(json.dumps(data)) == data
    assert isinstance(data["difference_ci"], list)
    assert GateReport.model_validate(data) == report


def test_big_holdout_bootstrap_runs_vectorised() -> None:
    x, p, y = _holdout(20_000)
    report = evaluate_gate(GateConfig(), y, p, _noisy(x, 0.5, seed=1))
    assert report.difference_ci is not None
    assert report.difference_ci[0] > 0.0


@pytest.mark.parametrize(
    ("y", "challenger", "champion", "groups", "message"),
    [
        ([0, 1, 0], [0.1, 0.9], None, None, "challenger_scores has 2 rows, y_true has 3"),
        ([0, 1], [0.1, 0.9], [0.5], None, "champion_scores has 1 rows"),
        ([0, 1], [0.1, np.nan], None, None, "challenger_scores has 1 NaN/inf values"),
        ([0, 1], [0.1, 0.9], [np.inf, 0.2], None, "champion_scores has 1 NaN/inf"),
        ([0, 1, 2], [0.1, 0.9, 0.5], None, None, "y_true must be 0/1"),
        ([0, 1], [0.1, 1.2], None, None, "must be probabilities in [0, 1]"),
        ([0, 1], [-0.1, 0.5], None, None, "must be probabilities in [0, 1]"),
        ([1, 1], [0.1, 0.9], None, None, "single class"),
        ([0, 1], [[0.9, 0.1], [0.2, 0.8]], None, None, "positive-class column"),
        ([], [], None, None, "holdout is empty"),
        ([0, 1], ["a", "b"], None, None, "must be numeric"),
        ([0, np.nan], [0.1, 0.9], None, None, "y_true has 1 NaN/inf"),
        ([0, 1], [0.1, 0.9], None, ["a"], "groups has shape (1,)"),
    ],
)
def test_bad_input_raises_gate_input_error(
    y: list[float],
    challenger: list[float],
    champion: list[float] | None,
    groups: list[str] | None,
    message: str,
) -> None:
    config = GateConfig(fairness_group="g")
    with pytest.raises(GateInputError, match=re.escape(message)):
        evaluate_gate(
            config,
            np.array(y, dtype=float),
            np.array(challenger),
            None if champion is None else np.array(champion),
            None if groups is None else np.array(groups),
        )


def test_gate_input_error_is_a_value_error() -> None:
    assert issubclass(GateInputError, ValueError)


def test_config_defaults_follow_the_task_and_metric() -> None:
    binary = GateConfig()
    assert (binary.primary_metric, binary.min_primary, binary.max_calibration_error) == (
        "auc",
        0.6,
        0.1,
    )
    regression = GateConfig.model_validate({"task": "regression"})
    assert regression.primary_metric == "rmse"
    assert regression.min_primary is None and regression.max_calibration_error is None
    assert GateConfig(primary_metric="log_loss").min_primary is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"task": "regression", "primary_metric": "auc"}, "needs task 'binary'"),
        ({"task": "regression", "primary_metric": "log_loss"}, "needs task 'binary'"),
        ({"max_primary": 0.9}, "set min_primary, not max_primary"),
        ({"primary_metric": "log_loss", "min_primary": 0.5}, "set max_primary, not min_primary"),
        ({"task": "regression", "max_calibration_error": 0.1}, "task 'binary' only"),
        ({"confidence": 1.0}, "less than 1"),
        ({"bootstrap_samples": 0}, "greater than or equal to 1"),
        ({"min_primary": float("nan")}, "finite number"),
        ({"unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_config_rejects_contradictions(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GateConfig.model_validate(fields)


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        GateConfig().seed = 3  # type: ignore[misc]
