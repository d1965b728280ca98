"""Buckets -> variants: split, monotonic ramp, holdout, stickiness."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.common.experiments import ExperimentSpec, VariantSpec
from services.router.assignment import assign, variant_for_bucket

KEYS = [f"user-{i}" for i in range(20_000)]


def spec(*weights: float, holdout: float = 0.0, shadows: tuple[str, ...] = ()) -> ExperimentSpec:
    variants = [VariantSpec(name="champion")] + [
        VariantSpec(name=f"challenger{i}", weight=w) for i, w in enumerate(weights, 1)
    ]
    return ExperimentSpec(
        name="ab",
        model="credit",
        variants=variants,
        holdout=holdout,
        shadows=[VariantSpec(name=s) for s in shadows],
    )


def test_no_experiment_means_champion() -> None:
    a = assign(None, "anyone")
    assert (a.variant, a.bucket, a.experiment) == ("champion", -1, "")


def test_ninety_ten_split() -> None:
    s = spec(10)
    share = sum(assign(s, k).variant == "challenger1" for k in KEYS) / len(KEYS)
    assert 0.09 < share < 0.11


def test_same_key_same_variant() -> None:
    s = spec(30)
    assert [assign(s, k).variant for k in KEYS[:500]] == [assign(s, k).variant for k in KEYS[:500]]


@pytest.mark.parametrize("ramp", [[1, 5, 10, 25, 50, 100], [0, 50]])
def test_raising_a_canary_only_moves_users_to_it(ramp: list[float]) -> None:
    first = spec(ramp[0])
    before = {k: assign(first, k).variant for k in KEYS}
    for w in ramp[1:]:
        s = spec(w)
        after = {k: assign(s, k).variant for k in KEYS}
        moved = [k for k in KEYS if before[k] != after[k]]
        assert moved, "a larger weight must move someone"
        assert all(after[k] == "challenger1" for k in moved)
        before = after


def test_raising_the_last_declared_challenger_only_moves_users_to_it() -> None:
    s1, s2 = spec(10, 5), spec(10, 20)
    before = {k: assign(s1, k).variant for k in KEYS}
    after = {k: assign(s2, k).variant for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert moved and all(after[k] == "challenger2" for k in moved)
    assert all(before[k] == "champion" for k in moved)


def test_holdout_gets_the_control_and_is_marked() -> None:
    s = spec(50, holdout=10)
    held = [a for a in (assign(s, k) for k in KEYS) if a.holdout]
    assert 0.08 < len(held) / len(KEYS) < 0.12
    assert all(a.variant == "champion" and a.bucket < 1000 for a in held)
    # holdout buckets never reach a challenger, whatever its weight
    assert variant_for_bucket(spec(90, holdout=10), 999) == ("champion", True)


def test_shadows_are_listed_but_never_assigned() -> None:
    s = spec(20, shadows=("shadow",))
    assert {assign(s, k).variant for k in KEYS} == {"champion", "challenger1"}
    assert assign(s, "x").shadows == ("shadow",)


def test_weights_beyond_100_percent_are_refused() -> None:
    with pytest.raises(ValidationError, match="exceed 100%"):
        spec(60, 30, holdout=20)


def test_duplicate_variant_names_are_refused() -> None:
    with pytest.raises(ValidationError, match="unique"):
        ExperimentSpec(
            name="ab", model="m", variants=[VariantSpec(name="a"), VariantSpec(name="a", weight=5)]
        )
