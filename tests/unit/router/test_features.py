"""The frame's column-wise fast paths agree with their row-by-row definitions."""

from __future__ import annotations

import uuid

import numpy as np

from driftloop.v1 import events_pb2 as ev
from services.router.features import FeatureFrame
from services.router.log_wire import categorical_entries, numeric_entries
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


def _logged(frame: FeatureFrame) -> list[ev.PredictionLog]:
    """The messages the router's log records parse to (routing._log's assembly: a shared
    prefix, the row's own fields, its numeric and categorical map entries)."""
    numeric = numeric_entries(*frame.numeric_matrix())
    categorical = categorical_entries(frame.categorical, frame.rows)
    prefix = ev.PredictionLog(score=0.5).SerializeToString()
    return [
        ev.PredictionLog.FromString(
            prefix
            + ev.PredictionLog(request_id=f"r{i}").SerializeToString()
            + numeric[i]
            + categorical[i]
        )
        for i in range(frame.rows)
    ]


def _expected(frame: FeatureFrame) -> list[ev.PredictionLog]:
    out = []
    for i in range(frame.rows):
        num, cats = frame.row(i)
        out.append(ev.PredictionLog(request_id=f"r{i}", numeric=num, categorical=cats, score=0.5))
    return out


def test_logged_records_equal_row_by_row_messages() -> None:
    for seed in range(5):
        frame = random_frame(300, seed)
        assert _logged(frame) == _expected(frame)


def test_logged_records_of_a_frame_without_categorical_or_numeric_columns() -> None:
    frame = random_frame(7, 9)
    only_numeric = FeatureFrame(7, frame.numeric, {})
    only_categorical = FeatureFrame(7, {}, frame.categorical)
    for f in (only_numeric, only_categorical, FeatureFrame(0, frame.numeric, {})):
        assert _logged(f) == _expected(f)
    for rows in (1, 2, 5):  # a few rows go through protobuf, more through the byte matrix
        assert _logged(random_frame(rows, rows)) == _expected(random_frame(rows, rows))


def test_logged_categorical_values_of_any_length_and_script() -> None:
    names = ["plan", "région", "k" * 130]
    values = ["", "gold", "Zürich", "東京", "v" * 300, None]
    rng = np.random.default_rng(4)
    columns: dict[str, list[str | None]] = {
        n: [values[int(j)] for j in rng.integers(len(values), size=50)] for n in names
    }
    frame = FeatureFrame(50, {}, columns)
    assert _logged(frame) == _expected(frame)


def test_logged_numeric_values_keep_every_double_and_any_name() -> None:
    """Signed zeros, infinities, subnormals and extremes survive bit for bit; names of any
    length (a two-byte length prefix past 127 bytes) and in any script."""
    special = np.array([-0.0, 0.0, np.inf, -np.inf, 5e-324, -1.7e308, 1.7e308, 1 / 3])
    names = ["x", "n" * 200, "Größe_€", "é" * 70]
    matrix = np.stack([np.roll(special, k)[: len(names)] for k in range(len(special))])
    frame = FeatureFrame(len(matrix), {n: matrix[:, j] for j, n in enumerate(names)}, {})
    for got, row in zip(_logged(frame), matrix, strict=True):
        assert set(got.numeric) == set(names)
        values = np.array([got.numeric[n] for n in names])
        assert values.tobytes() == row.tobytes()


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
