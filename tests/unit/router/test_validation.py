"""Request validation: every problem reported with its field."""

from __future__ import annotations

import math

import pytest

from services.router.open_inference import decode_bytes_tensor, encode_bytes_tensor
from services.router.validation import BatchInput, InvalidRequest, batch_frame, single_frame
from tests.unit.router.stand_ins import CONTRACT


def fields(exc: pytest.ExceptionInfo[InvalidRequest]) -> list[str]:
    return [f for f, _ in exc.value.violations]


def test_single_wrong_type_unknown_and_nan() -> None:
    with pytest.raises(InvalidRequest) as exc:
        single_frame(CONTRACT, {"income": math.nan, "region": 1.0, "colour": 2.0}, {"age": "x"})
    assert fields(exc) == [
        "numeric[income]",
        "numeric[region]",
        "numeric[colour]",
        "categorical[age]",
    ]
    assert "finite" in exc.value.violations[0][1]
    assert "categorical" in exc.value.violations[1][1]


def batch(**kw: object) -> BatchInput:
    base: dict[str, object] = dict(
        rows=2,
        feature_names=["income", "age"],
        values=[1.0, 2.0, 3.0, 4.0],
        categorical_names=["region"],
        categorical_values=["n", ""],
        entity_keys=["a", "b"],
        request_ids=[],
    )
    base.update(kw)
    return BatchInput(**base)  # type: ignore[arg-type]


def test_batch_ok_with_missing_markers() -> None:
    frame = batch_frame(CONTRACT, batch(values=[1.0, math.nan, 3.0, 4.0]), 100)
    assert frame.numeric["income"].tolist() == [1.0, 3.0]
    assert math.isnan(frame.numeric["age"][0])
    assert frame.categorical["region"] == ["n", None]
    assert frame.missing_rows().tolist() == [0, 1]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"values": [1.0, 2.0, 3.0]}, "values"),
        ({"categorical_values": ["n"]}, "categorical_values"),
        ({"entity_keys": ["a"]}, "entity_keys"),
        ({"feature_names": ["income", "income"]}, "feature_names[1]"),
        ({"feature_names": ["income", "region"]}, "feature_names[1]"),
        ({"feature_names": ["income", "zzz"]}, "feature_names[1]"),
        ({"rows": 0, "values": [], "categorical_values": [], "entity_keys": []}, "rows"),
        ({"values": [1.0, math.inf, 3.0, 4.0]}, "values[row 0]"),
    ],
)
def test_batch_problems_name_their_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        batch_frame(CONTRACT, batch(**change), 100)
    assert field in fields(exc)


def test_oversized_batch() -> None:
    with pytest.raises(InvalidRequest) as exc:
        batch_frame(CONTRACT, batch(), 1)
    assert fields(exc) == ["rows"] and "limit of 1" in exc.value.violations[0][1]


def test_triton_bytes_tensor_roundtrip() -> None:
    items = [b"north", b"", "süd".encode()]
    assert decode_bytes_tensor(encode_bytes_tensor(items)) == items
    with pytest.raises(ValueError, match="truncated"):
        decode_bytes_tensor(encode_bytes_tensor(items)[:-1])
