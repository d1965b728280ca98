"""Performance on labelled predictions, and its label-free estimate while labels are late
(pure numpy).

Realised: AUC (ties as sklearn), log-loss, accuracy at 0.5 for binary tasks; RMSE for
regression. Estimated (confidence-based performance estimation, CBPE, as NannyML): when
scores are calibrated probabilities, the label of row i is Bernoulli(p_i), so the expected
accuracy is mean(max(p, 1 - p)) with the exact variance of a sum of Bernoullis; the
expected log-loss is the mean binary entropy; the expected AUC weights every pair by the
probability that it is a (positive, negative) pair, with a Hanley-McNeil band for the
expected class counts. The band is the estimate's 95 % sampling interval: a realised value
outside it says the scores are not calibrated any more (concept drift), not noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate", "estimate_binary", "realised_binary", "realised_regression"]

_EPS = 1e-15
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


def _auc(scores: np.ndarray, pos_weight: np.ndarray, neg_weight: np.ndarray) -> float:
    """Weighted AUC: P(score of a positive > score of a negative), ties count half."""
    order = np.argsort(scores, kind="mergesort")
    s, wp, wn = scores[order], pos_weight[order], neg_weight[order]
    total_p, total_n = wp.sum(), wn.sum()
    if total_p <= 0 or total_n <= 0:
        return math.nan
    uniq, start = np.unique(s, return_index=True)
    grp_p = np.add.reduceat(wp, start)
    grp_n = np.add.reduceat(wn, start)
    neg_below = np.cumsum(grp_n) - grp_n  # negatives with a strictly lower score
    _ = uniq
    return float(((neg_below + 0.5 * grp_n) * grp_p).sum() / (total_p * total_n))


def realised_binary(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    p = np.clip(np.asarray(scores, dtype=float), _EPS, 1 - _EPS)
    y = (np.asarray(labels, dtype=float) > 0.5).astype(float)
    if p.size == 0:
        return {}
    out = {
        "log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
    }
    if 0 < y.sum() < y.size:
        out["auc"] = _auc(p, y, 1 - y)
    return out


def realised_regression(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    if np.asarray(predictions).size == 0:
        return {}
    err = np.asarray(predictions, dtype=float) - np.asarray(targets, dtype=float)
    return {"rmse": float(np.sqrt(np.mean(err**2)))}


def estimate_binary(scores: np.ndarray) -> dict[str, Estimate]:
    """CBPE estimates of accuracy, log-loss and AUC from calibrated probabilities alone."""
    p = np.clip(np.asarray(scores, dtype=float), _EPS, 1 - _EPS)
    n = p.size
    if n == 0:
        return {}
    out: dict[str, Estimate] = {}
    q = np.maximum(p, 1 - p)  # P(the 0.5-threshold prediction is right)
    acc = float(q.mean())
    sd = float(np.sqrt(np.sum(q * (1 - q)))) / n
    out["accuracy"] = Estimate(acc, acc - _Z95 * sd, acc + _Z95 * sd)
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    ll = float(entropy.mean())
    ll_sd = float(np.sqrt(np.sum(p * (1 - p) * np.log(p / (1 - p)) ** 2))) / n
    out["log_loss"] = Estimate(ll, ll - _Z95 * ll_sd, ll + _Z95 * ll_sd)
    auc = _auc(p, p, 1 - p)
    if math.isfinite(auc):
        n_pos, n_neg = float(p.sum()), float((1 - p).sum())
        q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
        var = (
            auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)
        ) / max(n_pos * n_neg, 1.0)
        half = _Z95 * math.sqrt(max(var, 0.0))
        out["auc"] = Estimate(auc, max(0.0, auc - half), min(1.0, auc + half))
    return out
