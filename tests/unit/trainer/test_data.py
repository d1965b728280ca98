"""Window selection, loading and the time split over real sealed versions on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import ValidationError

from services.common.artifacts import ArtifactStore
from services.common.datasets.schema import DatasetSchema
from services.trainer.data import (
    SplitSpec,
    TrainingDataError,
    WindowSpec,
    load_training_data,
    select_versions,
)
from tests.integration.trainer.synthetic import credit_schema, credit_table, seal_tables

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def schema() -> DatasetSchema:
    return credit_schema()


def _store(tmp_path: Path, name: str = "artifacts") -> ArtifactStore:
    return ArtifactStore(f"file://{tmp_path / name}")


def _days(n_days: int, rows: int = 400, labelled: float = 1.0) -> list[pa.Table]:
    return [
        credit_table(
            rows,
            seed=d,
            start_ms=1_700_000_000_000 + d * DAY_MS,
            span_ms=DAY_MS,
            labelled_fraction=labelled,
        )
        for d in range(n_days)
    ]


def test_select_versions_orders_filters_and_keeps_the_newest(
    tmp_path: Path, schema: DatasetSchema
) -> None:
    sealed = seal_tables(_store(tmp_path), schema, _days(5, rows=50), first_created_at_ms=100)
    suspect = sealed[3].model_copy(update={"status": "suspect", "status_reasons": ["psi(age)"]})
    manifests = [sealed[4], suspect, sealed[0], sealed[2], sealed[1]]  # any input order

    assert select_versions(manifests, WindowSpec(last_versions=None)) == [
        sealed[0],
        sealed[1],
        sealed[2],
        sealed[4],
    ]
    assert select_versions(manifests, WindowSpec(last_versions=2)) == [sealed[2], sealed[4]]
    assert select_versions(manifests, WindowSpec(last_versions=2, include_suspect=True)) == [
        suspect,
        sealed[4],
    ]
    assert select_versions(manifests, WindowSpec(last_versions=None, since_ms=102)) == [
        sealed[2],
        sealed[4],
    ]
    assert select_versions([], WindowSpec()) == []


def test_rows_come_out_in_one_canonical_order_and_split_by_time(
    tmp_path: Path, schema: DatasetSchema
) -> None:
    days = _days(4, labelled=0.8)
    split = SplitSpec(min_rows=100)
    seal_tables(_store(tmp_path, "a"), schema, days)
    first = load_training_data(_store(tmp_path, "a"), schema, WindowSpec(), split)
    # The same rows, shuffled within each version and sealed in the reverse order.
    rng = np.random.default_rng(0)
    shuffled = [t.take(rng.permutation(t.num_rows)) for t in reversed(days)]
    seal_tables(_store(tmp_path, "b"), schema, shuffled)
    second = load_training_data(_store(tmp_path, "b"), schema, WindowSpec(), split)

    for a, b in (
        (first.train, second.train),
        (first.validation, second.validation),
        (first.holdout, second.holdout),
    ):
        assert a.equals(b)
    assert sorted(first.version_ids) == sorted(second.version_ids)
    assert len(first.version_ids) == 4

    labelled = sum(
        int(t.column("label").is_valid().to_numpy(zero_copy_only=False).sum()) for t in days
    )
    parts = (first.train, first.validation, first.holdout)
    assert sum(p.num_rows for p in parts) == labelled  # unlabelled rows are gone
    assert all(p.column("label").null_count == 0 for p in parts)
    assert first.holdout.num_rows == round(labelled * 0.15)
    assert first.validation.num_rows == round(labelled * 0.15)
    times = [p.column("event_time_ms") for p in parts]
    assert pc.max(times[0]).as_py() <= pc.min(times[1]).as_py()
    assert pc.max(times[1]).as_py() <= pc.min(times[2]).as_py()
    assert first.train.schema.equals(schema.arrow_schema())


def test_window_and_explicit_version_ids(tmp_path: Path, schema: DatasetSchema) -> None:
    store = _store(tmp_path)
    sealed = seal_tables(store, schema, _days(3))
    data = load_training_data(store, schema, WindowSpec(last_versions=2), SplitSpec(min_rows=100))
    assert data.version_ids == [sealed[1].version_id, sealed[2].version_id]
    assert data.dataset == "credit"

    picked = load_training_data(
        store,
        schema,
        WindowSpec(),
        SplitSpec(min_rows=100),
        version_ids=[sealed[2].version_id, sealed[0].version_id],
    )
    assert picked.version_ids == [sealed[0].version_id, sealed[2].version_id]

    with pytest.raises(TrainingDataError) as err:
        load_training_data(
            store, schema, WindowSpec(), SplitSpec(), version_ids=[sealed[0].version_id, "f" * 32]
        )
    assert err.value.reason == "version_missing"
    assert "f" * 32 in str(err.value)


def test_no_versions_in_the_window(tmp_path: Path, schema: DatasetSchema) -> None:
    store = _store(tmp_path)
    with pytest.raises(TrainingDataError) as err:
        load_training_data(store, schema, WindowSpec(), SplitSpec())
    assert err.value.reason == "no_versions"
    seal_tables(store, schema, _days(1), first_created_at_ms=5_000)
    with pytest.raises(TrainingDataError) as err:
        load_training_data(store, schema, WindowSpec(since_ms=9_000), SplitSpec())
    assert err.value.reason == "no_versions"
    assert "1 sealed" in str(err.value)


def test_duplicated_events_count_once(tmp_path: Path, schema: DatasetSchema) -> None:
    store = _store(tmp_path)
    day = _days(1)[0]
    seal_tables(store, schema, [day, pa.concat_tables([day.slice(0, 100), _days(2)[1]])])
    data = load_training_data(store, schema, WindowSpec(), SplitSpec(min_rows=100))
    rows = pa.concat_tables([data.train, data.validation, data.holdout])
    assert rows.num_rows == 800
    assert len(pc.unique(rows.column("event_id"))) == 800


def test_too_few_rows_reports_counts(tmp_path: Path, schema: DatasetSchema) -> None:
    store = _store(tmp_path)
    day = _days(1, rows=300, labelled=0.5)[0]
    seal_tables(store, schema, [day])
    with pytest.raises(TrainingDataError) as err:
        load_training_data(store, schema, WindowSpec(), SplitSpec(min_rows=500))
    assert err.value.reason == "too_few_rows"
    labelled = day.num_rows - day.column("label").null_count
    assert f"has {labelled} labelled rows; training needs 500" in str(err.value)


def test_a_split_without_both_classes_is_too_few_rows(
    tmp_path: Path, schema: DatasetSchema
) -> None:
    table = _days(1)[0]
    n = table.num_rows
    label = np.where(np.arange(n) < n - 80, table.column("label").to_numpy(), 0.0)
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(label))
    store = _store(tmp_path)
    seal_tables(store, schema, [table])
    with pytest.raises(TrainingDataError) as err:
        load_training_data(store, schema, WindowSpec(), SplitSpec(min_rows=100))
    assert err.value.reason == "too_few_rows"
    assert "holdout" in str(err.value) and "both classes" in str(err.value)


def _with_column(table: pa.Table, name: str, values: np.ndarray) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(name), pa.array(values))


def test_a_label_that_is_not_zero_or_one_is_refused(tmp_path: Path, schema: DatasetSchema) -> None:
    table = _days(1)[0]
    label = table.column("label").to_numpy().copy()
    label[7] = 2.0
    store = _store(tmp_path)
    seal_tables(store, schema, [_with_column(table, "label", label)])
    with pytest.raises(TrainingDataError) as err:
        load_training_data(store, schema, WindowSpec(), SplitSpec(min_rows=100))
    assert err.value.reason == "bad_label"
    assert "[2.0]" in str(err.value)


def test_nan_in_a_numeric_feature_is_refused_but_nulls_are_fine(
    tmp_path: Path, schema: DatasetSchema
) -> None:
    table = _days(1)[0]
    assert table.column("annual_income").null_count > 0  # nulls alone load fine
    values = table.column("loan_amount").to_numpy().copy()
    values[[3, 9]] = [np.nan, np.inf]
    store = _store(tmp_path)
    seal_tables(store, schema, [_with_column(table, "loan_amount", values)])
    with pytest.raises(TrainingDataError) as err:
        load_training_data(store, schema, WindowSpec(), SplitSpec(min_rows=100))
    assert err.value.reason == "non_finite"
    assert "'loan_amount': 2" in str(err.value)


def test_a_version_with_another_layout_is_a_schema_mismatch(
    tmp_path: Path, schema: DatasetSchema
) -> None:
    doc = schema.model_dump()
    doc["numeric"]["age"]["dtype"] = "float"
    older = DatasetSchema.model_validate(doc)
    table = _days(1)[0]
    table = table.set_column(
        table.schema.get_field_index("age"),
        pa.field("age", pa.float64(), nullable=False),
        pc.cast(table.column("age"), pa.float64()),
    )
    store = _store(tmp_path)
    seal_tables(store, older, [table])
    with pytest.raises(TrainingDataError) as err:
        load_training_data(store, schema, WindowSpec(), SplitSpec(min_rows=100))
    assert err.value.reason == "schema_mismatch"
    assert "age (double instead of int64)" in str(err.value)


def test_split_spec_leaves_rows_to_train_on() -> None:
    with pytest.raises(ValidationError):
        SplitSpec(validation_fraction=0.5, holdout_fraction=0.5)
    with pytest.raises(ValidationError):
        SplitSpec(validation_fraction=0.0)
    with pytest.raises(ValidationError):
        WindowSpec(last_versions=0)
