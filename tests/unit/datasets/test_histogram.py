"""The one histogram type: the quantile bins of dataset profiles and model reference
profiles are the same code, and PSI works from values or from stored histograms alike."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from services.common.datasets.profile import (
    Histogram,
    feature_psi,
    histogram_psi,
    profile_column,
    psi,
)
from services.common.registry import Histogram as RegistryHistogram


def test_dataset_profiles_and_model_profiles_bin_alike() -> None:
    values = np.random.default_rng(1).lognormal(size=5_000)
    profile = profile_column("x", pa.array(values))
    hist = Histogram.from_values(values)
    assert RegistryHistogram is Histogram
    assert profile.histogram() == hist
    assert (profile.bin_edges, profile.bin_counts) == (hist.bin_edges, hist.counts)


def test_count_puts_outside_values_in_the_edge_bins() -> None:
    hist = Histogram(bin_edges=[0.0, 1.0, 2.0], counts=[1, 1])
    assert hist.count([-5.0, 0.5, 1.0, 1.5, 2.0, 9.0]).tolist() == [2, 4]


def test_rebin_keeps_the_mass_and_spreads_it_evenly_within_a_bin() -> None:
    hist = Histogram(bin_edges=[0.0, 2.0, 4.0], counts=[10, 30])
    assert hist.rebin([0.0, 2.0, 4.0]).tolist() == [10.0, 30.0]
    assert hist.rebin([0.0, 1.0, 3.0, 4.0]).tolist() == [5.0, 20.0, 15.0]
    # mass outside the target range falls into its first / last bin
    assert hist.rebin([1.0, 3.0]).tolist() == [40.0]


def test_histogram_psi_is_zero_on_itself_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(7)
    reference = Histogram.from_values(rng.normal(size=20_000))
    same = Histogram.from_values(rng.normal(size=20_000))
    shifted = Histogram.from_values(rng.normal(loc=1.0, size=20_000))
    assert histogram_psi(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert histogram_psi(reference, same) < 0.01
    assert histogram_psi(reference, shifted) > 0.2


def test_feature_psi_counts_new_values_on_the_reference_bins() -> None:
    rng = np.random.default_rng(3)
    reference = profile_column("x", pa.array(rng.normal(size=10_000)))
    new = rng.normal(loc=0.5, size=10_000)
    ref_hist = reference.histogram()
    assert ref_hist is not None
    expected = psi(ref_hist.counts, ref_hist.count(new))
    assert feature_psi(reference, pa.array(new)) == pytest.approx(expected)
    assert profile_column("c", pa.array(["a", "b"])).histogram() is None
