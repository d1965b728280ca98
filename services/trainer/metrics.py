"""Evaluation metrics for the gate, and a paired bootstrap of their difference.

Plain functions over numpy arrays, no validation beyond what the maths needs: `gate.py`
checks its inputs once and then calls these. AUC is computed from ranks (the
Mann-Whitney U statistic, ties counted as half), so it needs no scikit-learn and
vectorises over many bootstrap resamples at once: a resample is a row of multiplicity
weights, and a weighted AUC is a cumulative sum over the score-sorted negatives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "ECE_BINS",
    "HIGHER_IS_BETTER",
    "LOG_LOSS_EPS",
    "METRICS",
    "BootstrapResult",
    "GroupMetrics",
    "MetricName",
    "auc",
    "expected_calibration_error",
    "log_loss",
    "mae",
    "metric_by_group",
    "paired_bootstrap",
    "rmse",
]

MetricName = Literal["auc", "log_loss", "rmse"]
HIGHER_IS_BETTER: dict[str, bool] = {"auc": True, "log_loss": False, "rmse": False}
# Probabilities are clipped away from 0 and 1 so one confident mistake costs a finite loss.
LOG_LOSS_EPS = 1e-15
ECE_BINS = 10
# Bootstrap chunks hold about this many (replicate x row) cells per work array.
_CHUNK_CELLS = 2_000_000


def auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC = U / (n_pos * n_neg); NaN when only one class is present."""
    positive = y_true == 1
    n_pos = int(positive.sum())
    n_neg = y_true.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks: a tied pair counts one half
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def _row_log_loss(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    return -(y_true * np.log(p) + (1.0 - y_true) * np.log1p(-p))


def log_loss(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy in nats, probabilities clipped to [eps, 1 - eps]."""
    return float(_row_log_loss(y_true, probs).mean())


def rmse(y_true: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predictions - y_true) ** 2)))


def mae(y_true: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(np.abs(predictions - y_true)))


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE over equal-width bins of [0, 1]: sum over bins of (rows share) * |rate - mean prob|.

    Bins are half-open [k/bins, (k+1)/bins) except the last, which includes 1.0.
    """
    index = np.minimum((probs * bins).astype(np.int64), bins - 1)
    positives = np.bincount(index, weights=y_true, minlength=bins)
    prob_sums = np.bincount(index, weights=probs, minlength=bins)
    return float(np.abs(positives - prob_sums).sum() / y_true.size)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "auc": auc,
    "log_loss": log_loss,
    "rmse": rmse,
}


@dataclass(frozen=True)
class GroupMetrics:
    """A metric per group value (as text), for the groups with enough rows where it is defined."""

    values: dict[str, float]
    rows: dict[str, int]  # every group, including the ignored ones
    too_small: list[str]
    undefined: list[str]  # e.g. AUC of a group with a single class


def metric_by_group(
    metric: MetricName, y_true: np.ndarray, scores: np.ndarray, groups: np.ndarray, min_rows: int
) -> GroupMetrics:
    """`metric` over the rows of each distinct value of `groups`; small groups are skipped."""
    labels, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.reshape(-1)
    sizes = np.bincount(inverse, minlength=labels.size)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    result = GroupMetrics(values={}, rows={}, too_small=[], undefined=[])
    for k, label in enumerate(labels):
        name = str(label)
        result.rows[name] = int(sizes[k])
        if sizes[k] < min_rows:
            result.too_small.append(name)
            continue
        rows = order[bounds[k] : bounds[k + 1]]
        value = METRICS[metric](y_true[rows], scores[rows])
        if np.isfinite(value):
            result.values[name] = value
        else:
            result.undefined.append(name)
    return result


@dataclass(frozen=True)
class BootstrapResult:
    """Sign-normalised improvements (challenger better => positive), one per kept replicate."""

    improvements: np.ndarray
    skipped: int  # replicates where the metric was undefined (a single class for AUC)


def _resample_counts(rng: np.random.Generator, replicates: int, n: int) -> np.ndarray:
    """How often each row is drawn in each replicate: shape (replicates, n), rows sum to n."""
    draws = rng.integers(0, n, size=(replicates, n))
    counts = np.empty((replicates, n))
    for r in range(replicates):  # one small bincount per row stays in cache
        counts[r] = np.bincount(draws[r], minlength=n)
    return counts


class _WeightedAuc:
    """AUC of one score vector under many row-weight vectors, sorting the scores only once.

    Per replicate, the weight of negatives scored below each positive is a cumulative sum
    over the score-sorted negatives, read at a position found once by `searchsorted`.
    """

    def __init__(self, positive: np.ndarray, scores: np.ndarray) -> None:
        negatives = np.flatnonzero(~positive)
        positives = np.flatnonzero(positive)
        self._negatives = negatives[np.argsort(scores[negatives], kind="stable")]
        # Positives in score order too, so the lookups below walk the cumulative sum forwards.
        self._positives = positives[np.argsort(scores[positives], kind="stable")]
        negative_scores = scores[self._negatives]
        positive_scores = scores[self._positives]
        self._below = np.searchsorted(negative_scores, positive_scores, side="left")
        self._not_above = np.searchsorted(negative_scores, positive_scores, side="right")
        self._ties = bool((self._below != self._not_above).any())

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        negative = weights[:, self._negatives]
        cumulative = np.zeros((weights.shape[0], negative.shape[1] + 1))
        np.cumsum(negative, axis=1, out=cumulative[:, 1:])
        beaten = cumulative[:, self._below]
        if self._ties:  # a tied negative counts one half
            beaten += cumulative[:, self._not_above]
            beaten *= 0.5
        positive = weights[:, self._positives]
        wins = np.einsum("ij,ij->i", positive, beaten)
        pairs = positive.sum(axis=1) * cumulative[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1.0), np.nan)


def paired_bootstrap(
    metric: MetricName,
    y_true: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    replicates: int,
    rng: np.random.Generator,
) -> BootstrapResult:
    """Improvement of challenger over champion on `replicates` shared resamples of the rows.

    Both models are scored on the same resample in every replicate (paired), so the
    row-to-row noise they share cancels out of the difference.
    """
    n = y_true.size
    chunk = max(1, min(replicates, _CHUNK_CELLS // max(n, 1)))
    if metric == "auc":
        positive = y_true == 1
        auc_challenger = _WeightedAuc(positive, challenger)
        auc_champion = _WeightedAuc(positive, champion)
    elif metric == "log_loss":
        loss_gap = _row_log_loss(y_true, champion) - _row_log_loss(y_true, challenger)
    else:
        sq_challenger = (challenger - y_true) ** 2
        sq_champion = (champion - y_true) ** 2

    parts: list[np.ndarray] = []
    done = 0
    while done < replicates:
        size = min(chunk, replicates - done)
        weights = _resample_counts(rng, size, n)
        if metric == "auc":
            parts.append(auc_challenger(weights) - auc_champion(weights))
        elif metric == "log_loss":
            parts.append(weights @ loss_gap / n)
        else:
            parts.append(np.sqrt(weights @ sq_champion / n) - np.sqrt(weights @ sq_challenger / n))
        done += size
    improvements = np.concatenate(parts)
    kept = improvements[np.isfinite(improvements)]
    return BootstrapResult(improvements=kept, skipped=int(improvements.size - kept.size))
