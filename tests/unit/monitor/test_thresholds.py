"""Thresholds learnt from the reference's chunks: noise keeps quiet, effect sizes floor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.monitor.thresholds import K_SIGMA, derive_threshold


def test_noisy_reference_raises_the_threshold_above_its_own_spread() -> None:
    values = [0.10, 0.14, 0.12, 0.18, 0.11]
    t = derive_threshold("psi", values)
    mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
    assert t.basis == "reference"
    assert t.value == pytest.approx(mean + K_SIGMA * std)
    assert all(not t.breached(v) for v in values)


def test_quiet_reference_falls_back_to_the_effect_size_floor() -> None:
    t = derive_threshold("ks", [0.004, 0.005, 0.006])
    assert (t.value, t.basis) == (0.1, "floor")
    assert not t.breached(0.09)
    assert t.breached(0.11)


def test_threshold_is_never_below_the_largest_reference_value() -> None:
    # Two chunks: mean + 3 std can sit below the max only if std is tiny; max still holds.
    t = derive_threshold("jensen_shannon", [0.5, 0.5000001])
    assert t.value >= 0.5000001


def test_relative_floors_follow_the_reference_level() -> None:
    nulls = derive_threshold("null_rate", [0.20, 0.20, 0.20])
    assert nulls.value == pytest.approx(0.25)
    pca = derive_threshold("pca_reconstruction_error", [2.0, 2.0, 2.0])
    assert pca.value == pytest.approx(2.2)


def test_override_wins_and_informational_metrics_never_alert() -> None:
    assert derive_threshold("psi", [0.5, 0.9], overrides={"psi": 0.2}).value == 0.2
    chi2 = derive_threshold("chi_squared", [1.0, 2.0, 3.0])
    assert math.isnan(chi2.value)
    assert not chi2.breached(1e9)


def test_non_finite_values_are_not_breaches() -> None:
    t = derive_threshold("psi", [0.01, 0.02])
    assert not t.breached(math.nan)
