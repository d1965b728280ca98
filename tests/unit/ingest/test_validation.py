"""Each validation rule on small batches, and the bookkeeping of a mixed batch."""

from __future__ import annotations

import math
import random
from typing import Any

import pyarrow as pa
import pytest

from driftloop.v1.events_pb2 import DataEvent, RejectionReason
from services.common.datasets.schema import DatasetSchema
from services.ingest.validation import (
    Code,
    DatasetContext,
    Rejection,
    ValidationResult,
    decode_events,
    validate_batch,
)
from tests.unit.ingest.conftest import LOANS, NOW_MS, make_event


def _validate(schema: DatasetSchema, events: list[DataEvent], **kwargs: Any) -> ValidationResult:
    return validate_batch(events, {schema.name: schema}, NOW_MS, **kwargs)


def _only_rejection(result: ValidationResult) -> Rejection:
    assert result.rejected_count == 1, result.rejected
    return result.rejected[0]


def _reasons(rejection: Rejection) -> list[tuple[str, str]]:
    return [(str(r.code), r.field) for r in rejection.reasons]


def test_a_valid_event_becomes_one_row_in_the_canonical_layout(loans: DatasetSchema) -> None:
    result = _validate(loans, [make_event(3), make_event(4, label=None)])

    assert result.rejected == [] and result.accepted_count == 2
    rows = result.accepted["loans"]
    assert rows.table.schema.equals(loans.arrow_schema())
    assert rows.table.column_names == [
        "event_id", "entity_key", "event_time_ms",
        "age", "income", "merchant", "region", "score", "label",
    ]  # fmt: skip
    assert rows.table.schema.field("age").type == pa.int64()
    assert rows.table.to_pylist()[0] == {
        "event_id": "e3",
        "entity_key": "c3",
        "event_time_ms": NOW_MS - 3000,
        "age": 33,
        "income": 3000.0,
        "merchant": "m1",
        "region": "north",
        "score": 0.5,
        "label": 1.0,
    }
    assert rows.table.column("label").to_pylist() == [1.0, None]  # absent label is null
    assert rows.indices.tolist() == [0, 1]


def test_absent_nullable_features_are_nulls_not_zeros(loans: DatasetSchema) -> None:
    event = make_event(1, numeric={"age": 40}, categorical={"region": "north"})
    table = _validate(loans, [event]).accepted["loans"].table
    row = table.to_pylist()[0]
    assert row["income"] is None and row["score"] is None and row["merchant"] is None


def test_decode_error_keeps_the_index_of_the_bad_bytes(loans: DatasetSchema) -> None:
    payloads = [make_event(0).SerializeToString(), b"\xff\xff\xff\xff", None]
    result = _validate(loans, decode_events(payloads))  # type: ignore[arg-type]

    assert result.accepted_count == 1
    assert [r.index for r in result.rejected] == [1, 2]
    assert all(_reasons(r) == [("decode_error", "")] for r in result.rejected)


def test_unknown_dataset(loans: DatasetSchema) -> None:
    rejection = _only_rejection(_validate(loans, [make_event(0, dataset="nope")]))
    assert _reasons(rejection) == [("unknown_dataset", "dataset")]
    assert (rejection.dataset, rejection.event_id) == ("nope", "e0")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"event_id": ""}, "event_id"),
        ({"entity_key": ""}, "entity_key"),
        ({"event_time_ms": 0}, "event_time_ms"),
        ({"dataset": ""}, "dataset"),
        ({"numeric": {"income": 1.0}}, "age"),  # required numeric
        ({"categorical": {"merchant": "m1"}}, "region"),  # required categorical
    ],
)
def test_missing_field(loans: DatasetSchema, overrides: dict[str, Any], field: str) -> None:
    rejection = _only_rejection(_validate(loans, [make_event(0, **overrides)]))
    assert _reasons(rejection) == [("missing_field", field)]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"numeric": {"age": 30, "zzz": 1.0}}, "zzz"),
        ({"categorical": {"region": "north", "colour": "red"}}, "colour"),
    ],
)
def test_unknown_field(loans: DatasetSchema, overrides: dict[str, Any], field: str) -> None:
    rejection = _only_rejection(_validate(loans, [make_event(0, **overrides)]))
    assert _reasons(rejection) == [("unknown_field", field)]


def test_a_label_on_a_dataset_without_one_is_an_unknown_field() -> None:
    schema = DatasetSchema.model_validate({**LOANS, "label": None})
    rejection = _only_rejection(_validate(schema, [make_event(0, label=1.0)]))
    assert _reasons(rejection) == [("unknown_field", "label")]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        # categorical sent as numeric: wrong_type only, not also missing_field
        ({"numeric": {"age": 30, "region": 1.0}, "categorical": {}}, "region"),
        ({"categorical": {"region": "north", "age": "30"}, "numeric": {}}, "age"),
        ({"numeric": {"age": 30.5}}, "age"),  # an int feature with a fraction
    ],
)
def test_wrong_type(loans: DatasetSchema, overrides: dict[str, Any], field: str) -> None:
    rejection = _only_rejection(_validate(loans, [make_event(0, **overrides)]))
    assert _reasons(rejection) == [("wrong_type", field)]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"numeric": {"age": 121}}, "age"),
        ({"numeric": {"age": 17}}, "age"),
        ({"numeric": {"age": 30, "income": -0.01}}, "income"),
        ({"label": 0.5}, "label"),  # binary label
    ],
)
def test_out_of_range(loans: DatasetSchema, overrides: dict[str, Any], field: str) -> None:
    rejection = _only_rejection(_validate(loans, [make_event(0, **overrides)]))
    assert _reasons(rejection) == [("out_of_range", field)]


def test_numeric_label_range_and_integer_precision_limit() -> None:
    schema = DatasetSchema.model_validate({**LOANS, "label": {"kind": "numeric", "min": 0}})
    events = [make_event(0, label=12.5), make_event(1, label=-1.0)]
    rejection = _only_rejection(_validate(schema, events))
    assert (rejection.index, _reasons(rejection)) == (1, [("out_of_range", "label")])
    # an int feature without bounds still cannot exceed what a double holds exactly
    huge = make_event(2, numeric={"age": 30, "score": 1.0})
    unbounded = DatasetSchema.model_validate(
        {**LOANS, "numeric": {**LOANS["numeric"], "score": {"dtype": "int"}}}
    )
    huge.numeric["score"] = 2.0**60
    rejection = _only_rejection(_validate(unbounded, [huge]))
    assert _reasons(rejection) == [("out_of_range", "score")]


def test_range_bounds_are_inclusive_and_messages_show_value_and_range(
    loans: DatasetSchema,
) -> None:
    edges = [make_event(i, numeric={"age": age}) for i, age in enumerate([18, 120])]
    assert _validate(loans, edges).accepted_count == 2
    rejection = _only_rejection(_validate(loans, [make_event(0, numeric={"age": 150})]))
    assert rejection.reasons[0].message == "150 is outside [18, 120]"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"numeric": {"age": 30, "score": math.nan}}, "score"),
        ({"numeric": {"age": 30, "income": math.inf}}, "income"),
        ({"numeric": {"age": 30, "score": -math.inf}}, "score"),
        ({"label": math.nan}, "label"),
    ],
)
def test_not_finite(loans: DatasetSchema, overrides: dict[str, Any], field: str) -> None:
    rejection = _only_rejection(_validate(loans, [make_event(0, **overrides)]))
    assert _reasons(rejection) == [("not_finite", field)]


def test_unknown_category(loans: DatasetSchema) -> None:
    event = make_event(0, categorical={"region": "mars"})
    rejection = _only_rejection(_validate(loans, [event]))
    assert _reasons(rejection) == [("unknown_category", "region")]
    assert "'mars'" in rejection.reasons[0].message


def _merchants(values: list[str]) -> list[DataEvent]:
    return [
        make_event(i, categorical={"region": "north", "merchant": v}) for i, v in enumerate(values)
    ]


def test_cardinality_cap_admits_the_most_frequent_new_values(loans: DatasetSchema) -> None:
    # cap 3: a (3 rows), b and c (2 rows) take the slots; d (1 row) exceeds the cap.
    values = ["a", "b", "a", "c", "d", "b", "c", "a"]
    result = _validate(loans, _merchants(values))

    rejection = _only_rejection(result)
    assert _reasons(rejection) == [("cardinality_exceeded", "merchant")]
    assert rejection.index == values.index("d")
    assert result.accepted_count == len(values) - 1


def test_cardinality_counts_known_categories_and_ignores_record_order(
    loans: DatasetSchema,
) -> None:
    values = ["a", "b", "a", "c", "x", "b", "c", "a"]
    context = {"loans": DatasetContext(known_categories={"merchant": {"x", "y"}})}
    rejected_ids = []
    for seed in range(3):
        events = _merchants(values)
        random.Random(seed).shuffle(events)
        result = _validate(loans, events, contexts=context)
        rejected_ids.append(sorted(r.event_id for r in result.rejected))
        # one slot left: "a" (most frequent) and the known "x" get in; b and c do not
        assert {r.codes[0] for r in result.rejected} == {"cardinality_exceeded"}
    expected = sorted(f"e{i}" for i, v in enumerate(values) if v in "bc")
    assert rejected_ids == [expected] * 3


def test_an_invalid_record_does_not_take_a_category_slot(loans: DatasetSchema) -> None:
    events = _merchants(["a", "b", "c"])
    events.append(
        make_event(9, numeric={"age": 5}, categorical={"region": "north", "merchant": "z"})
    )
    result = _validate(loans, events)
    assert [r.codes for r in result.rejected] == [["out_of_range"]]


def test_event_time_future_beyond_skew(loans: DatasetSchema) -> None:
    inside = make_event(0, event_time_ms=NOW_MS + 60_000)
    beyond = make_event(1, event_time_ms=NOW_MS + 60_001)
    rejection = _only_rejection(_validate(loans, [inside, beyond]))
    assert (rejection.index, _reasons(rejection)) == (1, [("event_time_future", "event_time_ms")])


def test_event_time_too_old(loans: DatasetSchema) -> None:
    inside = make_event(0, event_time_ms=NOW_MS - 3_600_000)
    beyond = make_event(1, event_time_ms=NOW_MS - 3_600_001)
    rejection = _only_rejection(_validate(loans, [inside, beyond]))
    assert (rejection.index, _reasons(rejection)) == (1, [("event_time_too_old", "event_time_ms")])


def test_duplicate_event_id_keeps_the_first_occurrence(loans: DatasetSchema) -> None:
    events = [make_event(0), make_event(1), make_event(2, event_id="e0")]
    result = _validate(loans, events)
    rejection = _only_rejection(result)
    assert (rejection.index, _reasons(rejection)) == (2, [("duplicate_event_id", "event_id")])
    table = result.accepted["loans"].table
    assert table.column("event_id").to_pylist() == ["e0", "e1"]
    assert table.column("event_time_ms")[0].as_py() == NOW_MS  # the first e0, not the third


def test_an_invalid_first_occurrence_does_not_shadow_a_valid_repeat(loans: DatasetSchema) -> None:
    events = [make_event(0, numeric={"age": 5}), make_event(1, event_id="e0")]
    result = _validate(loans, events)
    assert [(r.index, r.codes) for r in result.rejected] == [(0, ["out_of_range"])]
    assert result.accepted["loans"].indices.tolist() == [1]


def test_ids_accepted_in_earlier_batches_are_duplicates(loans: DatasetSchema) -> None:
    context = {"loans": DatasetContext(seen_event_ids={"e1"})}
    result = _validate(loans, [make_event(0), make_event(1)], contexts=context)
    rejection = _only_rejection(result)
    assert (rejection.event_id, _reasons(rejection)) == ("e1", [("duplicate_event_id", "event_id")])


def test_every_applicable_reason_is_reported_in_rule_order(loans: DatasetSchema) -> None:
    event = make_event(
        0,
        entity_key="",
        numeric={"age": 200, "income": math.nan, "zzz": 1.0},
        categorical={"region": "mars"},
        label=2.0,
    )
    rejection = _only_rejection(_validate(loans, [event]))
    assert _reasons(rejection) == [
        ("missing_field", "entity_key"),
        ("unknown_field", "zzz"),
        ("out_of_range", "age"),
        ("not_finite", "income"),
        ("unknown_category", "region"),
        ("out_of_range", "label"),
    ]
    as_proto = [r.to_proto() for r in rejection.reasons]
    assert as_proto[0] == RejectionReason(
        code="missing_field", field="entity_key", message="entity key is empty"
    )


def test_mixed_batch_counts_add_up_exactly(loans: DatasetSchema) -> None:
    rng = random.Random(7)
    good = [make_event(i) for i in range(300)]
    bad_events: list[tuple[DataEvent, str]] = [
        (make_event(1000, dataset="other"), "unknown_dataset"),
        (make_event(1001, event_id=""), "missing_field"),
        (make_event(1002, numeric={"income": 1.0}), "missing_field"),
        (make_event(1003, numeric={"age": 30, "x": 1.0}), "unknown_field"),
        (make_event(1004, numeric={"age": 30.25}), "wrong_type"),
        (make_event(1005, numeric={"age": 300}), "out_of_range"),
        (make_event(1006, numeric={"age": 30, "score": math.inf}), "not_finite"),
        (make_event(1007, categorical={"region": "east"}), "unknown_category"),
        (make_event(1008, event_time_ms=NOW_MS + 3_600_000), "event_time_future"),
        (make_event(1009, event_time_ms=NOW_MS - 86_400_000), "event_time_too_old"),
    ]
    bad = [(e.SerializeToString(), code) for e, code in bad_events]
    bad.append((b"\x0a\xff", "decode_error"))
    batch: list[tuple[bytes, str | None]] = [(e.SerializeToString(), None) for e in good]
    for item in bad:
        batch.insert(rng.randrange(len(batch) + 1), item)
    batch.append((make_event(5).SerializeToString(), "duplicate_event_id"))  # e5 came earlier
    payloads = [payload for payload, _ in batch]

    result = _validate(loans, decode_events(payloads))  # type: ignore[arg-type]

    assert result.total == len(payloads) == 312
    assert result.accepted_count == 300 and result.rejected_count == 12
    assert result.accepted_count + result.rejected_count == result.total
    # every bad record is rejected for exactly its own reason, at its own position
    assert [(r.index, r.codes) for r in result.rejected] == [
        (i, [code]) for i, (_, code) in enumerate(batch) if code is not None
    ]
    assert result.reason_counts == {
        "decode_error": 1, "duplicate_event_id": 1, "event_time_future": 1,
        "event_time_too_old": 1, "missing_field": 2, "not_finite": 1, "out_of_range": 1,
        "unknown_category": 1, "unknown_dataset": 1, "unknown_field": 1, "wrong_type": 1,
    }  # fmt: skip
    accepted = result.accepted["loans"]
    assert sorted(accepted.table.column("event_id").to_pylist()) == sorted(e.event_id for e in good)
    assert accepted.indices.tolist() == [i for i, (_, code) in enumerate(batch) if code is None]
    for position, event_id in zip(
        accepted.indices.tolist(), accepted.table.column("event_id").to_pylist(), strict=True
    ):
        assert DataEvent.FromString(payloads[position]).event_id == event_id


def test_datasets_in_one_batch_get_separate_tables(loans: DatasetSchema) -> None:
    other = DatasetSchema.model_validate({**LOANS, "name": "other", "label": None})
    events = [make_event(0), make_event(1, dataset="other", label=None), make_event(2)]
    result = validate_batch(events, {"loans": loans, "other": other}, NOW_MS)
    assert result.accepted["loans"].indices.tolist() == [0, 2]
    assert result.accepted["other"].indices.tolist() == [1]
    assert "label" not in result.accepted["other"].table.column_names


def test_an_empty_batch() -> None:
    result = validate_batch([], {}, NOW_MS)
    assert (result.total, result.accepted, result.rejected, result.reason_counts) == (0, {}, [], {})


def test_every_code_is_a_stable_string() -> None:
    assert {str(c) for c in Code} == {
        "decode_error", "unknown_dataset", "missing_field", "unknown_field", "wrong_type",
        "out_of_range", "not_finite", "unknown_category", "cardinality_exceeded",
        "event_time_future", "event_time_too_old", "duplicate_event_id",
    }  # fmt: skip
