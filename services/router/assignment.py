"""Which variant serves a request key: buckets to variants, pure and stateless.

The bucket space [0, 10000) is laid out as

    [0, holdout)                      holdout: served the control, kept out of the comparison
    [holdout, 10000 - sum(challengers))  the control (champion)
    then the challengers, the LAST declared one adjacent to the control, the first one at
    the top: challenger i takes [10000 - sum(w_1..w_i), 10000 - sum(w_1..w_{i-1}))

so raising the weight of a single challenger (a canary ramp), or of the last declared
one, only moves buckets from the control to it: nobody else changes variant. Stickiness
needs no state: the bucket is a hash of (salt, key) (`hashing.bucket`), so every replica
and every restart agrees.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.experiments import ExperimentSpec
from services.router.hashing import BUCKETS, bucket

__all__ = ["Assignment", "assign", "variant_for_bucket"]

DEFAULT_VARIANT = "champion"


@dataclass(frozen=True, slots=True)
class Assignment:
    variant: str
    bucket: int  # -1 when no experiment runs on the model
    experiment: str = ""
    holdout: bool = False
    control: str = DEFAULT_VARIANT
    shadows: tuple[str, ...] = ()


def variant_for_bucket(spec: ExperimentSpec, b: int) -> tuple[str, bool]:
    """(variant, held out) for bucket `b` of `spec`."""
    if b < spec.holdout_buckets:
        return spec.control.name, True
    upper = BUCKETS
    for challenger in spec.variants[1:]:
        lower = upper - challenger.buckets
        if lower <= b < upper:
            return challenger.name, False
        upper = lower
    return spec.control.name, False


def assign(spec: ExperimentSpec | None, key: str) -> Assignment:
    """The assignment of request key `key` under `spec` (None: no experiment, champion)."""
    if spec is None:
        return Assignment(variant=DEFAULT_VARIANT, bucket=-1)
    b = bucket(spec.effective_salt, key)
    variant, held_out = variant_for_bucket(spec, b)
    return Assignment(
        variant=variant,
        bucket=b,
        experiment=spec.name,
        holdout=held_out,
        control=spec.control.name,
        shadows=tuple(s.name for s in spec.shadows),
    )
