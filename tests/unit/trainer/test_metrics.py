"""Gate metrics on inputs with known answers, and the vectorised bootstrap against a naive loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from services.trainer.metrics import (
    auc,
    expected_calibration_error,
    log_loss,
    mae,
    metric_by_group,
    paired_bootstrap,
    rmse,
)


def _pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_auc_of_a_hand_computed_example() -> None:
    # Positive 0.35 beats the negative 0.1 only; positive 0.8 beats both: 3 of 4 pairs.
    y = np.array([0, 0, 1, 1])
    assert auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)


def test_auc_counts_a_tie_as_half() -> None:
    # Positive 0.5 ties negative 0.5 (1/2) and beats 0.2 (1); positive 0.9 beats both (2).
    y = np.array([0, 1, 0, 1])
    assert auc(y, np.array([0.5, 0.5, 0.2, 0.9])) == pytest.approx(3.5 / 4)


def test_auc_matches_mann_whitney_and_pairwise_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) * 0.6 + 0.3 * y, 1)  # heavy ties
    u = mannwhitneyu(s[y == 1], s[y == 0]).statistic
    expected = u / ((y == 1).sum() * (y == 0).sum())
    assert auc(y, s) == pytest.approx(expected)
    assert auc(y, s) == pytest.approx(_pairwise_auc(y, s))


def test_auc_extremes_and_undefined() -> None:
    y = np.array([0, 0, 1, 1])
    assert auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auc(y, np.full(4, 0.5)) == 0.5
    assert math.isnan(auc(np.ones(3), np.array([0.1, 0.2, 0.3])))


def test_log_loss_known_value_and_clipping() -> None:
    y = np.array([1.0, 0.0])
    assert log_loss(y, np.array([0.8, 0.4])) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # A certain, wrong prediction costs -ln(1e-15), not infinity.
    assert log_loss(np.array([1.0]), np.array([0.0])) == pytest.approx(-math.log(1e-15))
    assert math.isfinite(log_loss(np.array([0.0]), np.array([1.0])))


def test_rmse_and_mae_known_values() -> None:
    y = np.array([1.0, 2.0, 3.0])
    p = np.array([1.0, 2.0, 5.0])
    assert rmse(y, p) == pytest.approx(math.sqrt(4 / 3))
    assert mae(y, p) == pytest.approx(2 / 3)


def test_ece_known_values() -> None:
    # One row per bin: |0-0.05| + |0-0.15| + |1-0.85| + |1-0.95| over 4 rows.
    y = np.array([0.0, 0.0, 1.0, 1.0])
    assert expected_calibration_error(y, np.array([0.05, 0.15, 0.85, 0.95])) == pytest.approx(0.1)
    # All in bin [0.7, 0.8): |3/4 - mean(0.7, 0.7, 0.75, 0.72)|.
    y = np.array([0.0, 1.0, 1.0, 1.0])
    probs = np.array([0.7, 0.7, 0.75, 0.72])
    assert expected_calibration_error(y, probs) == pytest.approx(0.0325)
    # 0.0 and 1.0 fall into the first and last bins.
    assert expected_calibration_error(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0


def test_ece_of_a_calibrated_model_is_small_and_of_a_scaled_one_large() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(50_000)
    y = (rng.random(50_000) < p).astype(float)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, p * 0.3) == pytest.approx(0.35, abs=0.01)


def _naive_improvements(
    metric: str, y: np.ndarray, a: np.ndarray, b: np.ndarray, replicates: int, seed: int
) -> np.ndarray:
    """The same resamples paired_bootstrap draws (one (replicates, n) block), scored one by one."""
    fn = {"auc": auc, "log_loss": log_loss, "rmse": rmse}[metric]
    draws = np.random.default_rng(seed).integers(0, y.size, size=(replicates, y.size))
    sign = 1.0 if metric == "auc" else -1.0
    return np.array([sign * (fn(y[d], a[d]) - fn(y[d], b[d])) for d in draws])


@pytest.mark.parametrize("metric", ["auc", "log_loss", "rmse"])
def test_paired_bootstrap_matches_a_naive_loop(metric: str) -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 120).astype(float)
    a = np.round(np.clip(0.3 * y + rng.random(120) * 0.7, 0, 1), 2)  # ties within a model
    b = np.round(rng.random(120), 2)
    result = paired_bootstrap(metric, y, a, b, 50, np.random.default_rng(9))  # type: ignore[arg-type]
    expected = _naive_improvements(metric, y, a, b, 50, seed=9)
    assert result.skipped == 0
    np.testing.assert_allclose(result.improvements, expected, rtol=1e-10, atol=1e-12)


def test_paired_bootstrap_skips_single_class_replicates() -> None:
    y = np.zeros(20)
    y[0] = 1.0  # a resample misses the only positive about (19/20)^20 = 36% of the time
    a = np.linspace(0.0, 1.0, 20)
    result = paired_bootstrap("auc", y, a, a[::-1].copy(), 200, np.random.default_rng(0))
    assert 30 < result.skipped < 120
    assert result.improvements.size == 200 - result.skipped
    assert np.isfinite(result.improvements).all()


def test_paired_bootstrap_is_chunked_without_changing_the_answer_size() -> None:
    rng = np.random.default_rng(2)
    n = 50_000  # more than one chunk of replicates at this size
    y = rng.integers(0, 2, n).astype(float)
    s = rng.random(n)
    result = paired_bootstrap("auc", y, s, s, 100, np.random.default_rng(0))
    assert result.improvements.shape == (100,)
    assert np.all(result.improvements == 0.0)


def test_metric_by_group_ignores_small_and_undefined_groups() -> None:
    y = np.array([0, 1, 0, 1, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.9, 0.1, 0.5, 0.6])
    groups = np.array(["a", "a", "a", "a", "b", "b", "b", "c", "c"])
    result = metric_by_group("auc", y, s, groups, min_rows=3)
    assert result.values == {"a": 1.0, "b": pytest.approx(0.0)}
    assert result.rows == {"a": 4, "b": 3, "c": 2}
    assert result.too_small == ["c"]
    assert result.undefined == []
    single = metric_by_group("auc", y, s, groups, min_rows=2)
    assert single.undefined == ["c"]  # two positives only
