"""SRM, Welch interval and the decision hint, against scipy and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from services.monitor.experiments import (
    ArmStats,
    compare,
    sample_ratio_mismatch,
    welch_effect,
)
from services.monitor.specs import ExperimentPolicy


def _arm(name: str, n: int, mean: float, std: float = 0.5, labelled: int | None = None,
         errors: int = 0, p99: float = 10.0) -> ArmStats:  # fmt: skip
    return ArmStats(name, "1", n, n if labelled is None else labelled, mean, std, errors, p99)


def test_srm_flags_55_45_on_a_50_50_split_but_not_noise() -> None:
    p, flagged = sample_ratio_mismatch([2200, 1800], [0.5, 0.5])
    assert flagged and p == pytest.approx(stats.chisquare([2200, 1800]).pvalue, rel=1e-12)
    p, flagged = sample_ratio_mismatch([2030, 1970], [0.5, 0.5])
    assert not flagged and p > 0.3
    _, flagged = sample_ratio_mismatch([9000, 1000], [90, 10])  # weights need not sum to 1
    assert not flagged


def test_welch_interval_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(0)
    a_vals, b_vals = rng.normal(0.50, 0.2, 4000), rng.normal(0.51, 0.3, 3000)
    a = _arm("a", 4000, a_vals.mean(), a_vals.std(ddof=1))
    b = _arm("b", 3000, b_vals.mean(), b_vals.std(ddof=1))
    effect, low, high, p = welch_effect(a, b)
    se = math.sqrt(a_vals.var(ddof=1) / 4000 + b_vals.var(ddof=1) / 3000)
    assert effect == pytest.approx(b_vals.mean() - a_vals.mean())
    assert (low, high) == pytest.approx((effect - 1.959964 * se, effect + 1.959964 * se))
    # large samples: the z p-value agrees with Welch's t-test
    assert p == pytest.approx(stats.ttest_ind(b_vals, a_vals, equal_var=False).pvalue, rel=0.02)


POLICY = ExperimentPolicy(min_samples_per_variant=1000, min_labelled_per_variant=500)


def test_decisions() -> None:
    shares = {"a": 0.5, "b": 0.5}
    base = _arm("a", 5000, 0.50)
    cases = {
        "invalid": {"a": _arm("a", 5500, 0.5), "b": _arm("b", 4500, 0.6)},
        "continue": {"a": _arm("a", 800, 0.5), "b": _arm("b", 820, 0.6)},
        "promote": {"a": base, "b": _arm("b", 5000, 0.54)},
        "rollback": {"a": base, "b": _arm("b", 5000, 0.51, errors=200)},
    }
    for expected, arms in cases.items():
        assert compare(arms, shares, "a", "b", POLICY).decision == expected, expected
    worse = compare({"a": base, "b": _arm("b", 5000, 0.47)}, shares, "a", "b", POLICY)
    assert worse.decision == "rollback" and worse.guardrail_breaches  # business metric -6 %
    flat = compare({"a": base, "b": _arm("b", 5000, 0.501)}, shares, "a", "b", POLICY)
    assert flat.decision == "continue" and not flat.significant
    slow = compare({"a": base, "b": _arm("b", 5000, 0.5, p99=30.0)}, shares, "a", "b", POLICY)
    assert slow.decision == "rollback" and "latency_p99" in slow.guardrail_breaches[0]
