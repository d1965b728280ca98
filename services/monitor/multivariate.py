"""PCA reconstruction error: a drift detector for the joint distribution.

Fit on the reference: standardise each numeric feature (z = (x - mean) / std, a missing
value becomes 0, the mean), take the principal axes that explain `variance_kept` of the
variance, and measure a row by how much of it those axes cannot explain,
`|z|^2 - |W^T z|^2`. A change in the correlation between features moves rows off the
reference's principal plane, raising the mean error of a chunk, even when every feature's
own distribution is unchanged (so no univariate metric can see it). The covariance comes
from ClickHouse (`covarSampMatrix`), the eigen-decomposition of the small d x d matrix
from numpy, and the per-row error is a SQL expression again, evaluated where the rows are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.monitor.sql import ident

__all__ = ["PcaModel", "fit_pca", "standardized_array"]


@dataclass(frozen=True)
class PcaModel:
    features: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    components: tuple[tuple[float, ...], ...]  # the kept axes: k rows of length d
    residual: tuple[tuple[float, ...], ...]  # the other d - k axes

    def error_sql(self) -> str:
        """The SQL expression of one row's reconstruction error.

        The axes are an orthonormal basis, so |z|^2 - |W^T z|^2 is the squared length of
        z on the discarded axes: a few dot products written as plain column arithmetic
        (a lambda over a constant matrix would copy the matrix for every row)."""
        z = [
            _standardized(n, m, s)
            for n, m, s in zip(self.features, self.means, self.stds, strict=True)
        ]
        dots = [
            "(" + " + ".join(f"{w!r} * {zi}" for w, zi in zip(axis, z, strict=True)) + ")"
            for axis in self.residual
        ]
        return "(" + " + ".join(f"pow({d}, 2)" for d in dots) + ")"


def _standardized(name: str, mean: float, std: float) -> str:
    v = f"ifNull(toFloat64({ident(name)}), nan)"
    return f"if(isFinite({v}), ({v} - {mean!r}) / {std!r}, 0.)"


def standardized_array(
    features: Sequence[str], means: Sequence[float], stds: Sequence[float]
) -> str:
    parts = [_standardized(*args) for args in zip(features, means, stds, strict=True)]
    return "[" + ", ".join(parts) + "]"


def fit_pca(
    features: Sequence[str],
    means: Sequence[float],
    stds: Sequence[float],
    covariance: np.ndarray,
    variance_kept: float = 0.9,
) -> PcaModel | None:
    """Principal axes of the standardised reference; None with fewer than 2 features."""
    d = len(features)
    if d < 2:
        return None
    eigvals, eigvecs = np.linalg.eigh(np.asarray(covariance, dtype=float))
    order = np.argsort(eigvals)[::-1]
    eigvals, eigvecs = np.clip(eigvals[order], 0.0, None), eigvecs[:, order]
    total = float(eigvals.sum())
    if total <= 0:
        return None
    kept = int(np.searchsorted(np.cumsum(eigvals) / total, variance_kept) + 1)
    kept = max(1, min(kept, d - 1))  # leave at least one axis for the error to live in
    axes = [tuple(float(x) for x in eigvecs[:, i]) for i in range(d)]
    return PcaModel(
        tuple(features), tuple(means), tuple(stds), tuple(axes[:kept]), tuple(axes[kept:])
    )
