"""PCA reconstruction error sees a change in the joint distribution that marginals hide."""

from __future__ import annotations

import numpy as np

from services.monitor.multivariate import fit_pca


def _error(model, x: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    z = (x - np.array(model.means)) / np.array(model.stds)
    w = np.array(model.components)
    return float(np.mean((z**2).sum(axis=1) - ((z @ w.T) ** 2).sum(axis=1)))


def test_broken_correlation_raises_the_error_with_unchanged_marginals() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    a = rng.normal(size=n)
    ref = np.column_stack([a, a + 0.1 * rng.normal(size=n), rng.normal(size=n)])
    means, stds = ref.mean(axis=0), ref.std(axis=0, ddof=1)
    cov = np.cov((ref - means) / stds, rowvar=False)
    model = fit_pca(["a", "b", "c"], list(means), list(stds), cov)
    assert model is not None
    b = rng.normal(size=n)  # same marginal as before, no longer tied to a
    moved = np.column_stack([rng.normal(size=n), b + 0.1 * rng.normal(size=n), rng.normal(size=n)])
    assert _error(model, moved) > 5 * _error(model, ref)


def test_fewer_than_two_features_has_no_model() -> None:
    assert fit_pca(["a"], [0.0], [1.0], np.eye(1)) is None
