"""Feature profiles, PSI on known distributions, and suspect marking of a batch."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from services.common.datasets.profile import (
    MIN_PER_BIN,
    MIN_PROFILE_COUNT,
    PSI_EPSILON,
    DatasetProfile,
    FeatureProfile,
    assess_against_reference,
    feature_psi,
    profile_column,
    profile_table,
    psi,
)


def _batch(seed: int, n: int = 5000, shift: float = 0.0, null_rate: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    age = rng.normal(40.0 + shift, 10.0, n)
    income = rng.lognormal(10.0, 0.5, n)
    region = rng.choice(["north", "south", "east"], n, p=[0.5, 0.3, 0.2])
    return pa.table(
        {
            "event_id": [f"e{seed}-{i}" for i in range(n)],
            "event_time_ms": np.arange(n, dtype=np.int64),
            "age": pa.array(age, mask=rng.random(n) < null_rate),
            "income": income,
            "region": region,
            "label": pa.array(rng.integers(0, 2, n).astype(float), mask=rng.random(n) < 0.5),
        }
    )


def _numpy_psi(reference: np.ndarray, new: np.ndarray, edges: np.ndarray) -> float:
    """The documented formula, written out independently of the implementation."""
    e = np.histogram(np.clip(reference, edges[0], edges[-1]), edges)[0] / reference.size
    a = np.histogram(np.clip(new, edges[0], edges[-1]), edges)[0] / new.size
    e, a = np.where(e == 0, PSI_EPSILON, e), np.where(a == 0, PSI_EPSILON, a)
    return float(((a - e) * np.log(a / e)).sum())


def test_numeric_profile_matches_numpy() -> None:
    values = np.random.default_rng(1).normal(5.0, 2.0, 1000)
    column = pa.array(np.append(values, [np.nan]), mask=np.append(np.arange(1000) % 10 == 0, True))
    profile = profile_column("x", column)
    kept = values[np.arange(1000) % 10 != 0]

    assert profile.kind == "numeric"
    assert (profile.count, profile.null_count) == (900, 101)
    assert profile.mean == pytest.approx(kept.mean())
    assert profile.std == pytest.approx(kept.std())
    assert (profile.min, profile.max) == (kept.min(), kept.max())
    assert len(profile.bin_edges) == 11 and sum(profile.bin_counts) == 900
    assert all(b > a for a, b in itertools.pairwise(profile.bin_edges))
    assert max(profile.bin_counts) - min(profile.bin_counts) <= 2  # quantile bins: ~equal mass


def test_skewed_and_constant_columns_get_deduplicated_bins() -> None:
    skewed = profile_column("x", pa.array([0] * 95 + [1, 2, 3, 4, 5]))
    assert skewed.bin_edges[0] == 0 and len(skewed.bin_edges) < 11
    assert sum(skewed.bin_counts) == 100
    constant = profile_column("c", pa.array([7.0] * 10))
    assert (constant.bin_edges, constant.bin_counts) == ([6.5, 7.5], [10])
    empty = profile_column("n", pa.array([None, None], pa.float64()))
    assert (empty.count, empty.null_count, empty.mean, empty.bin_edges) == (0, 2, None, [])


def test_categorical_profile_and_proto_round_trip() -> None:
    column = pa.chunked_array([["a", "b", None], ["a", "a"]])
    profile = profile_column("cat", column)
    assert profile.kind == "categorical"
    assert profile.category_counts == {"a": 3, "b": 1}
    assert (profile.count, profile.null_count) == (4, 1)
    assert FeatureProfile.from_proto(profile.to_proto()) == profile
    dictionary = profile_column("cat", column.dictionary_encode())
    assert dictionary == profile


def test_dataset_profile_skips_ids_and_time_and_round_trips_through_protos() -> None:
    table = _batch(0, n=500)
    profile = profile_table(table)
    assert sorted(profile.features) == ["age", "income", "label", "region"]
    assert profile.row_count == 500
    again = DatasetProfile.from_protos(profile.to_protos())
    assert again == profile


def test_psi_of_a_batch_against_its_own_profile_is_zero() -> None:
    table = _batch(0)
    reference = profile_table(table)
    assert feature_psi(reference.features["age"], table.column("age")) == 0.0
    assert feature_psi(reference.features["region"], table.column("region")) == 0.0


def test_psi_of_a_fresh_sample_of_the_same_distribution_is_small() -> None:
    reference = profile_table(_batch(0))
    value = feature_psi(reference.features["age"], _batch(1).column("age"))
    assert value is not None and value < 0.02


def test_psi_of_a_clearly_shifted_normal_is_large_and_matches_the_formula() -> None:
    ref_table, new_table = _batch(0), _batch(1, shift=10.0)  # one standard deviation
    reference = profile_table(ref_table).features["age"]
    value = feature_psi(reference, new_table.column("age"))

    assert value is not None and value > 0.25
    direct = _numpy_psi(
        ref_table.column("age").to_numpy(),
        new_table.column("age").to_numpy(),
        np.asarray(reference.bin_edges),
    )
    assert value == pytest.approx(direct, rel=1e-12)


def test_psi_counts_new_values_outside_the_reference_range_in_the_end_bins() -> None:
    reference = profile_column("x", pa.array(np.linspace(0.0, 1.0, 1000)))
    far = pa.array(np.full(1000, 1000.0))
    value = feature_psi(reference, far)
    assert value == pytest.approx(psi(reference.bin_counts, [0] * 9 + [1000]))
    assert value is not None and value > 5


def test_psi_floors_empty_bins_at_epsilon() -> None:
    expected, actual = [50, 50], [100, 0]
    e, a = np.array([0.5, 0.5]), np.array([1.0, PSI_EPSILON])
    assert psi(expected, actual) == pytest.approx(float(((a - e) * np.log(a / e)).sum()))
    with pytest.raises(ValueError, match="non-empty"):
        psi([0, 0], [1, 1])


def test_categorical_psi_includes_categories_new_on_either_side() -> None:
    reference = profile_column("r", pa.array(["a"] * 500 + ["b"] * 500))
    new = pa.array(["a"] * 500 + ["c"] * 500)
    expected = psi([500, 500, 0], [500, 0, 500])  # bins a, b, c
    assert feature_psi(reference, new) == pytest.approx(expected)


def test_too_few_values_give_no_psi() -> None:
    reference = profile_table(_batch(0)).features["age"]
    assert feature_psi(reference, _batch(1, n=50).column("age"), min_count=100) is None


def test_no_reference_is_ok() -> None:
    assert assess_against_reference(None, _batch(0)) == ("ok", [])


def test_a_batch_like_the_reference_is_ok() -> None:
    reference = profile_table(_batch(0))
    status, reasons = assess_against_reference(reference, _batch(1), 0.2, 0.1)
    assert (status, reasons) == ("ok", [])


def test_a_shifted_feature_marks_the_batch_suspect() -> None:
    reference = profile_table(_batch(0))
    status, reasons = assess_against_reference(reference, _batch(1, shift=10.0), 0.2, 0.1)
    assert status == "suspect"
    assert len(reasons) == 1 and reasons[0].startswith("psi(age)=") and reasons[0].endswith(">0.2")


def test_a_null_rate_jump_marks_the_batch_suspect() -> None:
    reference = profile_table(_batch(0, null_rate=0.02))
    status, reasons = assess_against_reference(reference, _batch(1, null_rate=0.4), 0.2, 0.1)
    assert status == "suspect"
    assert any(r.startswith("null_rate(age)=0.4") and r.endswith(">0.02+0.1") for r in reasons)
    # a rise smaller than the allowed jump is fine
    calm = assess_against_reference(reference, _batch(2, null_rate=0.08), 0.2, 0.1)
    assert calm == ("ok", [])


def test_the_label_is_not_assessed_by_default() -> None:
    reference = profile_table(_batch(0))
    relabelled = _batch(1).set_column(
        5, "label", pa.array(np.ones(5000), mask=np.arange(5000) % 10 != 0)
    )
    assert assess_against_reference(reference, relabelled).status == "ok"
    assessed = assess_against_reference(reference, relabelled, skip=())
    assert assessed.status == "suspect" and any("(label)" in r for r in assessed.reasons)


def test_too_few_rows_are_not_judged() -> None:
    """A small version (say sealed by age) is not suspect by chance: below `min_count`
    rows neither its null rates nor its histograms are compared."""
    reference = profile_table(_batch(0, null_rate=0.02))
    few = _batch(1, n=MIN_PROFILE_COUNT - 1, shift=10.0, null_rate=0.4)
    assert assess_against_reference(reference, few, 0.2, 0.1) == ("ok", [])
    enough = assess_against_reference(reference, _batch(1, n=MIN_PROFILE_COUNT, null_rate=0.4))
    assert enough.status == "suspect" and any(
        r.startswith("null_rate(age)") for r in enough.reasons
    )
    small_reference = profile_table(_batch(0, n=MIN_PROFILE_COUNT - 1))
    assert assess_against_reference(small_reference, _batch(1, null_rate=0.4)) == ("ok", [])


def test_psi_needs_enough_values_per_category() -> None:
    """Two samples of one 64-category distribution: at 300 rows PSI's sampling noise
    alone is about the 0.2 threshold, so it is not computed; with MIN_PER_BIN per
    category it is, and small."""
    rng = np.random.default_rng(4)
    categories = [f"c{i:02d}" for i in range(64)]
    reference = profile_column("purpose", pa.array(rng.choice(categories, 20_000)))
    few = pa.array(rng.choice(categories, 300))
    assert feature_psi(reference, few) is None
    enough = pa.array(rng.choice(categories, MIN_PER_BIN * 64))
    value = feature_psi(reference, enough)
    assert value is not None and value < 0.1
    flood = pa.array([f"junk{i}" for i in range(MIN_PER_BIN * 64)])  # new categories count
    assert (feature_psi(reference, flood) or 0.0) > 1.0
