"""The feature encoder: one matrix layout for training tables and serving records."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from services.common.encoding import EncodingError, FeatureEncoder
from tests.integration.trainer.synthetic import credit_schema, credit_table


@pytest.fixture(scope="module")
def train() -> pa.Table:
    return credit_table(500, seed=1)


@pytest.fixture(scope="module")
def encoder(train: pa.Table) -> FeatureEncoder:
    return FeatureEncoder.fit(credit_schema(), train)


def test_columns_are_the_schema_features_in_name_order(encoder: FeatureEncoder) -> None:
    schema = credit_schema()
    specs = encoder.feature_specs()
    assert [s.name for s in specs] == schema.feature_names
    assert {s.name for s in specs if s.dtype == "category"} == set(schema.categorical)
    assert {s.name for s in specs if s.dtype == "float"} == set(schema.numeric)


def test_vocabularies_are_sorted_values_of_the_training_split(
    encoder: FeatureEncoder, train: pa.Table
) -> None:
    region = next(f for f in encoder.features if f.name == "region")
    assert region.vocabulary == sorted(set(train.column("region").to_pylist()))
    employment = next(f for f in encoder.features if f.name == "employment_type")
    assert None not in employment.vocabulary
    assert employment.vocabulary == sorted(employment.vocabulary)


def test_transform_gives_float32_with_nan_for_missing(
    encoder: FeatureEncoder, train: pa.Table
) -> None:
    X = encoder.transform(train)
    assert X.dtype == np.float32
    assert X.shape == (train.num_rows, len(credit_schema().feature_names))
    names = encoder.feature_names
    income = X[:, names.index("annual_income")]
    assert np.isnan(income).sum() == train.column("annual_income").null_count > 0
    np.testing.assert_allclose(
        income[~np.isnan(income)],
        np.array(train.column("annual_income").drop_null().to_pylist(), dtype=np.float32),
    )
    region = X[:, names.index("region")]
    vocabulary = next(f for f in encoder.features if f.name == "region").vocabulary
    assert [vocabulary[int(c)] for c in region[:20]] == train.column("region").to_pylist()[:20]


def test_unknown_and_null_categories_are_missing(encoder: FeatureEncoder) -> None:
    table = credit_table(3, seed=9)
    region = table.schema.get_field_index("region")
    employment = table.schema.get_field_index("employment_type")
    table = table.set_column(
        region, table.schema.field("region"), pa.array(["north", "atlantis", "south"])
    ).set_column(
        employment,
        table.schema.field("employment_type"),
        pa.array([None, "salaried", "astronaut"], pa.string()),
    )
    X = encoder.transform(table)
    names = encoder.feature_names
    assert np.isnan(X[:, names.index("region")]).tolist() == [False, True, False]
    assert np.isnan(X[:, names.index("employment_type")]).tolist() == [True, False, True]


def test_records_encode_exactly_like_tables(encoder: FeatureEncoder) -> None:
    table = credit_table(200, seed=4)
    records = table.to_pylist()
    records[0].pop("annual_income")  # an absent key is a missing value
    records[1]["region"] = "atlantis"
    records[2]["loan_amount"] = np.float64(1234.5)
    expected = encoder.transform(table)
    expected[0, encoder.feature_names.index("annual_income")] = math.nan
    expected[1, encoder.feature_names.index("region")] = math.nan
    expected[2, encoder.feature_names.index("loan_amount")] = 1234.5
    got = encoder.transform_records(records)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    assert encoder.transform_records([]).shape == (0, encoder.n_features)


def test_bad_input_is_a_clear_error(encoder: FeatureEncoder) -> None:
    with pytest.raises(EncodingError, match="record 0: numeric feature 'age' got str"):
        encoder.transform_records([{"age": "forty"}])
    with pytest.raises(EncodingError, match=r"lacks feature column\(s\) \['age'\]"):
        encoder.transform(credit_table(5).drop_columns(["age"]))


def test_params_round_trip_through_json(encoder: FeatureEncoder, train: pa.Table) -> None:
    params = json.loads(json.dumps(encoder.to_params()))
    rebuilt = FeatureEncoder.from_params(params)
    assert rebuilt == encoder
    np.testing.assert_array_equal(rebuilt.transform(train), encoder.transform(train))
    broken = {**params, "features": [{"name": "x", "kind": "numeric", "vocabulary": ["a"]}]}
    with pytest.raises(ValueError, match="cannot have a vocabulary"):
        FeatureEncoder.from_params(broken)


def test_request_columns_encode_exactly_as_the_table(
    encoder: FeatureEncoder, train: pa.Table
) -> None:
    rows = credit_table(300, seed=9)  # nulls and categories the training split never saw
    as_lists = {name: rows.column(name).to_pylist() for name in encoder.feature_names}
    expected = encoder.transform(rows)
    np.testing.assert_array_equal(encoder.transform_columns(as_lists), expected)
    as_arrays = {
        name: np.asarray(values, dtype=np.float64 if f.kind == "numeric" else object)
        for (name, values), f in zip(as_lists.items(), encoder.features, strict=True)
    }
    as_arrays = {  # numeric None -> NaN in a float array, as numpy callers send it
        name: np.where(np.equal(values, None), np.nan, values).astype(np.float64)
        if f.kind == "numeric"
        else values
        for (name, values), f in zip(as_arrays.items(), encoder.features, strict=True)
    }
    np.testing.assert_array_equal(encoder.transform_columns(as_arrays), expected)


def test_an_absent_column_is_missing_for_every_row(encoder: FeatureEncoder) -> None:
    out = encoder.transform_columns({"age": [30, 40]})
    assert out.shape == (2, encoder.n_features)
    age = encoder.feature_names.index("age")
    assert out[:, age].tolist() == [30.0, 40.0]
    assert np.isnan(np.delete(out, age, axis=1)).all()


@pytest.mark.parametrize(
    ("columns", "field", "problem"),
    [
        ({"shoe_size": [42]}, "shoe_size", "not a feature"),
        ({"age": [30, 40], "region": ["north"]}, "region", "has 1 values"),
        ({"age": [30, "forty"]}, "age", "row 1: expected a number, got str"),
        ({"age": [True]}, "age", "expected a number, got bool"),
        ({"age": np.array([True])}, "age", "booleans"),
        ({"age": [math.inf]}, "age", "infinity"),
        ({"region": [3]}, "region", "row 0: expected a string category, got int"),
        ({"age": 30}, "age", "expected a sequence"),
    ],
)
def test_bad_request_columns_name_the_field_and_the_problem(
    encoder: FeatureEncoder, columns: dict[str, object], field: str, problem: str
) -> None:
    with pytest.raises(EncodingError) as caught:
        encoder.transform_columns(columns)  # type: ignore[arg-type]
    assert [f for f, _ in caught.value.problems] == [field]
    assert problem in caught.value.problems[0][1]
