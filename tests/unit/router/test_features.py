"""The frame's column-wise fast paths agree with their row-by-row definitions."""

from __future__ import annotations

import uuid

import numpy as np

from services.router.features import FeatureFrame
from services.router.routing import _request_ids


def random_frame(rows: int, seed: int) -> FeatureFrame:
    rng = np.random.default_rng(seed)
    numeric = {}
    for name in ("income", "age", "debt"):
        col = rng.normal(size=rows)
        col[rng.random(rows) < 0.2] = np.nan
        numeric[name] = col
    categorical: dict[str, list[str | None]] = {
        name: [None if rng.random() < 0.2 else f"v{rng.integers(5)}" for _ in range(rows)]
        for name in ("region", "plan")
    }
    return FeatureFrame(rows, numeric, categorical)


def test_records_equal_row_by_row() -> None:
    for seed in range(5):
        frame = random_frame(300, seed)
        assert frame.records() == [frame.row(i) for i in range(frame.rows)]


def test_records_of_a_frame_without_categorical_or_numeric_columns() -> None:
    frame = random_frame(7, 9)
    only_numeric = FeatureFrame(7, frame.numeric, {})
    only_categorical = FeatureFrame(7, {}, frame.categorical)
    for f in (only_numeric, only_categorical):
        assert f.records() == [f.row(i) for i in range(7)]


def test_missing_rows_marks_nan_and_none() -> None:
    frame = random_frame(200, 3)
    expected = [
        i
        for i in range(200)
        if any(np.isnan(c[i]) for c in frame.numeric.values())
        or any(c[i] is None for c in frame.categorical.values())
    ]
    assert frame.missing_rows().tolist() == expected


def test_request_ids_keep_given_ones_and_generate_uuid4_for_the_rest() -> None:
    ids = _request_ids(["a", "", "b", ""], 4)
    assert ids[0] == "a" and ids[2] == "b"
    generated = [*_request_ids([], 1000), ids[1], ids[3]]
    assert len(set(generated)) == len(generated)
    for rid in generated:
        parsed = uuid.UUID(hex=rid)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == rid
    assert _request_ids(["x", "y"], 2) == ["x", "y"]
