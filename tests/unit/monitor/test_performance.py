"""Realised metrics against sklearn-style definitions, and CBPE on a calibrated model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from services.monitor.performance import estimate_binary, realised_binary, realised_regression


def _auc_by_ranks(scores: np.ndarray, labels: np.ndarray) -> float:
    ranks = stats.rankdata(scores)  # ties get their average rank, as sklearn's roc_auc_score
    n_pos = labels.sum()
    n_neg = labels.size - n_pos
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_realised_binary_metrics() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(2000), 2)  # many ties
    labels = (rng.random(2000) < scores).astype(float)
    got = realised_binary(scores, labels)
    assert got["auc"] == pytest.approx(_auc_by_ranks(scores, labels), abs=1e-12)
    p = np.clip(scores, 1e-15, 1 - 1e-15)
    ll = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert got["log_loss"] == pytest.approx(ll, abs=1e-12)
    assert got["accuracy"] == pytest.approx(np.mean((scores >= 0.5) == (labels == 1)))
    assert "auc" not in realised_binary(scores[:5], np.ones(5))  # one class: no AUC


def test_rmse() -> None:
    assert realised_regression(np.array([1.0, 2.0]), np.array([1.0, 4.0]))["rmse"] == pytest.approx(
        np.sqrt(2.0)
    )


def test_cbpe_tracks_the_realised_metrics_of_a_calibrated_model() -> None:
    rng = np.random.default_rng(5)
    inside = {"auc": 0, "accuracy": 0, "log_loss": 0}
    trials = 200
    for _ in range(trials):
        scores = 1 / (1 + np.exp(-rng.normal(0, 1.5, 1000)))
        labels = (rng.random(1000) < scores).astype(float)  # calibrated by construction
        realised = realised_binary(scores, labels)
        for metric, est in estimate_binary(scores).items():
            inside[metric] += est.low <= realised[metric] <= est.high
    # 95 % bands: the realised value falls inside about 95 % of the time
    for metric, hits in inside.items():
        assert 0.88 <= hits / trials <= 0.995, (metric, hits)


def test_cbpe_band_does_not_cover_a_miscalibrated_model() -> None:
    rng = np.random.default_rng(6)
    scores = 1 / (1 + np.exp(-rng.normal(0, 1.5, 5000)))
    labels = (rng.random(5000) < 0.5).astype(float)  # labels no longer follow the scores
    est = estimate_binary(scores)["auc"]
    assert not est.low <= realised_binary(scores, labels)["auc"] <= est.high
