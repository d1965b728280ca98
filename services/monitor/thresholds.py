"""Alert thresholds learnt from the reference's own chunks, with an effect-size floor.

A drift metric computed on a chunk of data is never exactly zero: sampling noise alone
gives a stable feature a small PSI, KS or JS. So each (feature, metric) gets the threshold

    max(floor(metric), mean(ref) + k * std(ref), max(ref))

where `ref` are the metric's values on the reference's own chunks (each chunk against the
whole reference, as NannyML does). The noise term keeps a noisy metric quiet on data that
did not move; the floor is an effect size (PSI 0.1, KS 0.1, JS distance 0.1, Cramér's V
0.1, +5 points of null rate, +10 % of reconstruction error, an estimated AUC
0.05 below the reference's) so that huge chunks, whose
noise is tiny, do not fire on differences too small to matter — p-values alone fire on
everything at 100k rows. A per-metric override from the model spec replaces all of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ABSOLUTE_FLOORS",
    "INFORMATIONAL",
    "K_SIGMA",
    "RELATIVE_FLOORS",
    "Threshold",
    "derive_threshold",
]

K_SIGMA = 3.0
# Effect sizes below which a difference is not worth an alert, whatever the noise.
ABSOLUTE_FLOORS: dict[str, float] = {
    "psi": 0.1,
    "ks": 0.1,
    "jensen_shannon": 0.1,
    "cramers_v": 0.1,
    "estimated_auc_drop": 0.05,  # a label-free AUC estimate 0.05 below the reference's
    "realised_auc_drop": 0.05,  # the labelled AUC 0.05 below the reference windows'
}
# Metrics whose floor is relative to their reference level: value must exceed
# mean(ref) + floor (null rate, in rate points) or mean(ref) * (1 + floor) (reconstruction).
RELATIVE_FLOORS: dict[str, tuple[str, float]] = {
    "null_rate": ("add", 0.05),
    "pca_reconstruction_error": ("mul", 0.10),
}
# Reported for the record, never alerted on: the chi-squared statistic grows with the
# rows compared (its effect size, Cramér's V, carries the alert).
INFORMATIONAL = frozenset({"chi_squared"})


@dataclass(frozen=True)
class Threshold:
    value: float
    basis: str  # "reference" (noise of the reference chunks), "floor", "override", "none"

    def breached(self, value: float) -> bool:
        return math.isfinite(self.value) and math.isfinite(value) and value > self.value


def _floor(metric: str, ref_mean: float) -> float:
    if metric in ABSOLUTE_FLOORS:
        return ABSOLUTE_FLOORS[metric]
    if metric in RELATIVE_FLOORS:
        how, amount = RELATIVE_FLOORS[metric]
        return ref_mean + amount if how == "add" else ref_mean * (1.0 + amount)
    return 0.0


def derive_threshold(
    metric: str,
    reference_values: Sequence[float],
    *,
    k_sigma: float = K_SIGMA,
    overrides: Mapping[str, float] | None = None,
) -> Threshold:
    """The threshold for `metric` given its values on the reference's chunks."""
    if overrides and metric in overrides:
        return Threshold(float(overrides[metric]), "override")
    if metric in INFORMATIONAL:
        return Threshold(math.nan, "none")
    values = [v for v in reference_values if math.isfinite(v)]
    mean = sum(values) / len(values) if values else 0.0
    if len(values) >= 2:
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        noise = max(mean + k_sigma * math.sqrt(var), max(values))
    else:
        noise = max(values, default=0.0)
    floor = _floor(metric, mean)
    if noise > floor:
        return Threshold(noise, "reference")
    return Threshold(floor, "floor")
