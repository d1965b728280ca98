"""A/B statistics of one experiment and the decision hint they support (pure).

Sample-ratio mismatch first: a chi-squared goodness-of-fit test of the observed requests
per variant against the configured split; p < srm_alpha (0.001, as GrowthBook and Eppo)
means the assignment or the logging is broken, so nothing else is judged (INVALID). Then
a minimum sample per variant before any decision (CONTINUE). Guardrails next (error rate,
p99 latency, the declared business metric): a breach means ROLLBACK whatever the primary
metric says. Last the primary metric, the outcome mean (a rate for 0/1 outcomes): the
effect treatment - control with a Welch (unequal variances) normal-approximation interval
and its two-sided p-value; PROMOTE when the interval excludes 0 on the good side,
ROLLBACK when on the bad side, else CONTINUE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from scipy import stats

from services.monitor.specs import ExperimentPolicy

__all__ = ["ArmStats", "Comparison", "compare", "sample_ratio_mismatch", "welch_effect"]

CONTINUE, PROMOTE, ROLLBACK, INVALID = "continue", "promote", "rollback", "invalid"


@dataclass(frozen=True)
class ArmStats:
    variant: str
    version: str
    requests: int
    labelled: int
    outcome_mean: float
    outcome_std: float
    errors: int
    latency_p99_ms: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Comparison:
    control: str
    treatment: str
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    srm_p_value: float
    srm_detected: bool
    guardrail_breaches: list[str] = field(default_factory=list)
    decision: str = CONTINUE
    reason: str = ""


def sample_ratio_mismatch(
    counts: Sequence[int], shares: Sequence[float], alpha: float = 0.001
) -> tuple[float, bool]:
    """(p-value, mismatch?) of observed `counts` against the expected `shares`."""
    total = sum(counts)
    share_sum = sum(shares)
    if total == 0 or len(counts) < 2 or share_sum <= 0:
        return 1.0, False
    expected = [total * s / share_sum for s in shares]
    p = float(stats.chisquare(counts, expected).pvalue)
    return p, p < alpha


def welch_effect(
    a: ArmStats, b: ArmStats, alpha: float = 0.05
) -> tuple[float, float, float, float]:
    """(effect b - a, CI low, CI high, two-sided p) of the outcome means."""
    if a.labelled < 2 or b.labelled < 2:
        return math.nan, math.nan, math.nan, 1.0
    effect = b.outcome_mean - a.outcome_mean
    se = math.sqrt(a.outcome_std**2 / a.labelled + b.outcome_std**2 / b.labelled)
    if se == 0:
        return effect, effect, effect, (1.0 if effect == 0 else 0.0)
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = float(2 * stats.norm.sf(abs(effect) / se))
    return effect, effect - z * se, effect + z * se, p


def _guardrails(control: ArmStats, treatment: ArmStats, policy: ExperimentPolicy) -> list[str]:
    g = policy.guardrails
    breaches = []
    if treatment.error_rate - control.error_rate > g.max_error_rate_increase:
        breaches.append(
            f"error_rate {treatment.error_rate:.4f} vs {control.error_rate:.4f} "
            f"(> +{g.max_error_rate_increase})"
        )
    if control.latency_p99_ms > 0 and (
        treatment.latency_p99_ms / control.latency_p99_ms > g.max_latency_p99_ratio
    ):
        breaches.append(
            f"latency_p99 {treatment.latency_p99_ms:.1f} ms vs {control.latency_p99_ms:.1f} ms "
            f"(> x{g.max_latency_p99_ratio})"
        )
    if control.labelled and treatment.labelled and control.outcome_mean != 0:
        change = (treatment.outcome_mean - control.outcome_mean) / abs(control.outcome_mean)
        if not policy.higher_is_better:
            change = -change
        if change < -g.max_business_metric_drop:
            breaches.append(
                f"{g.business_metric} {treatment.outcome_mean:.4f} vs {control.outcome_mean:.4f} "
                f"({change:+.1%}, worse than -{g.max_business_metric_drop:.0%})"
            )
    return breaches


def compare(
    arms: Mapping[str, ArmStats],
    shares: Mapping[str, float],
    control: str,
    treatment: str,
    policy: ExperimentPolicy,
) -> Comparison:
    names = sorted(arms)
    srm_p, srm = sample_ratio_mismatch(
        [arms[n].requests for n in names], [shares.get(n, 0.0) for n in names], policy.srm_alpha
    )
    a, b = arms[control], arms[treatment]
    effect, low, high, p = welch_effect(a, b, policy.alpha)
    significant = p < policy.alpha
    base = Comparison(
        control=control,
        treatment=treatment,
        effect=effect,
        ci_low=low,
        ci_high=high,
        p_value=p,
        significant=significant,
        srm_p_value=srm_p,
        srm_detected=srm,
    )
    if srm:
        return replace(base, decision=INVALID, reason=f"sample-ratio mismatch p={srm_p:.2g}")
    small = [
        arm.variant
        for arm in (a, b)
        if arm.requests < policy.min_samples_per_variant
        or arm.labelled < policy.min_labelled_per_variant
    ]
    if small:
        return replace(base, decision=CONTINUE, reason=f"too few samples: {small}")
    breaches = _guardrails(a, b, policy)
    if breaches:
        return replace(base, guardrail_breaches=breaches, decision=ROLLBACK, reason="guardrail")
    better = (low > 0) if policy.higher_is_better else (high < 0)
    worse = (high < 0) if policy.higher_is_better else (low > 0)
    if significant and better:
        return replace(base, decision=PROMOTE, reason="treatment better")
    if significant and worse:
        return replace(base, decision=ROLLBACK, reason="treatment worse")
    return replace(base, decision=CONTINUE, reason="no significant difference yet")
