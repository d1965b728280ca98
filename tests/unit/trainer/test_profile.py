"""The reference profile registered with a model matches its features and its data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from services.common.encoding import FeatureEncoder
from services.common.registry import RegistrationInfo
from services.trainer.profile import BINARY_SCORE_EDGES, build_reference_profile
from tests.integration.trainer.synthetic import credit_schema, credit_table


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return credit_table(2000, seed=3)


@pytest.fixture(scope="module")
def encoder(table: pa.Table) -> FeatureEncoder:
    return FeatureEncoder.fit(credit_schema(), table)


def test_profile_matches_the_feature_specs(encoder: FeatureEncoder, table: pa.Table) -> None:
    scores = np.random.default_rng(0).random(table.num_rows)
    profile = build_reference_profile(encoder, table, scores, None, "binary")
    info = RegistrationInfo(  # validates profile keys against the float/category specs
        features=encoder.feature_specs(), reference_profile=profile, code_version="test"
    )
    assert set(info.reference_profile.numeric) == set(credit_schema().numeric)
    assert set(info.reference_profile.categorical) == set(credit_schema().categorical)
    from_schema = build_reference_profile(credit_schema(), table, scores, None, "binary")
    assert from_schema == profile


def test_numeric_bins_are_training_quantiles_with_nulls_counted(
    encoder: FeatureEncoder, table: pa.Table
) -> None:
    profile = build_reference_profile(encoder, table, np.zeros(table.num_rows), None, "binary")
    income = profile.numeric["annual_income"]
    column = table.column("annual_income")
    assert income.null_count == column.null_count > 0
    assert sum(income.counts) == table.num_rows - column.null_count
    assert len(income.counts) == 10
    values = np.array(column.drop_null().to_pylist())
    assert income.bin_edges[0] == values.min() and income.bin_edges[-1] == values.max()
    # quantile bins: roughly a tenth of the rows each
    assert max(income.counts) < 0.13 * sum(income.counts)
    term = profile.numeric["loan_term_months"]  # four distinct values: ties merge bins
    assert len(term.counts) < 10 and sum(term.counts) == table.num_rows


def test_category_counts_and_score_histogram(encoder: FeatureEncoder, table: pa.Table) -> None:
    scores = np.linspace(0, 1, table.num_rows)
    labels = table.column("label").to_numpy()
    profile = build_reference_profile(encoder, table, scores, labels, "binary")
    employment = profile.categorical["employment_type"]
    column = table.column("employment_type")
    assert employment.null_count == column.null_count
    assert employment.counts == {
        v: column.to_pylist().count(v) for v in sorted(set(column.drop_null().to_pylist()))
    }
    assert profile.prediction.bin_edges == BINARY_SCORE_EDGES
    assert profile.prediction.counts == [200] * 10
    assert profile.base_rate == pytest.approx(labels.mean())
    assert profile.row_count == table.num_rows


def test_regression_scores_get_quantile_bins_and_no_base_rate(
    encoder: FeatureEncoder, table: pa.Table
) -> None:
    scores = np.random.default_rng(1).normal(100, 20, table.num_rows)
    profile = build_reference_profile(encoder, table, scores, scores, "regression")
    assert profile.base_rate is None
    assert profile.prediction.bin_edges[0] == scores.min()
    assert sum(profile.prediction.counts) == table.num_rows


def test_a_column_with_only_nulls_still_profiles(encoder: FeatureEncoder) -> None:
    table = credit_table(50, seed=5)
    index = table.schema.get_field_index("annual_income")
    table = table.set_column(index, table.schema.field("annual_income"), pa.nulls(50, pa.float64()))
    profile = build_reference_profile(encoder, table, np.full(50, 0.5), None, "binary")
    assert profile.numeric["annual_income"].null_count == 50
    assert sum(profile.numeric["annual_income"].counts) == 0
