"""Request validation: a request against a model's contract -> a feature frame, or every
problem found, each as (field, description) for a google.rpc.BadRequest. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from services.router.features import FeatureFrame, ModelContract

__all__ = ["BatchInput", "InvalidRequest", "NotFound", "Violation", "batch_frame", "single_frame"]

Violation = tuple[str, str]


class InvalidRequest(ValueError):
    """INVALID_ARGUMENT: the request itself is wrong; `violations` say where."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        super().__init__("; ".join(f"{f}: {d}" for f, d in violations))
        self.violations = list(violations)


class NotFound(LookupError):
    """NOT_FOUND: a model or entity the request names does not exist."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        super().__init__("; ".join(f"{f}: {d}" for f, d in violations))
        self.violations = list(violations)


def single_frame(
    contract: ModelContract,
    numeric: Mapping[str, float],
    categorical: Mapping[str, str],
) -> FeatureFrame:
    """One Predict request's features (missing ones left to fill)."""
    problems: list[Violation] = []
    frame = FeatureFrame.empty(contract, 1)
    for name, value in numeric.items():
        if name in frame.numeric:
            if math.isnan(value) or math.isinf(value):
                problems.append((f"numeric[{name}]", f"must be a finite number, got {value}"))
            else:
                frame.numeric[name][0] = value
        elif name in frame.categorical:
            problems.append(
                (f"numeric[{name}]", "is a categorical feature: send it in categorical")
            )
        else:
            problems.append((f"numeric[{name}]", _unknown(contract, name)))
    for name, text in categorical.items():
        if name in frame.categorical:
            if text == "":
                problems.append((f"categorical[{name}]", "must not be empty (omit it instead)"))
            else:
                frame.categorical[name][0] = text
        elif name in frame.numeric:
            problems.append((f"categorical[{name}]", "is a numeric feature: send it in numeric"))
        else:
            problems.append((f"categorical[{name}]", _unknown(contract, name)))
    if problems:
        raise InvalidRequest(problems)
    return frame


@dataclass(frozen=True)
class BatchInput:
    rows: int
    feature_names: Sequence[str]
    values: Sequence[float]
    categorical_names: Sequence[str]
    categorical_values: Sequence[str]
    entity_keys: Sequence[str]
    request_ids: Sequence[str]


def batch_frame(contract: ModelContract, batch: BatchInput, max_rows: int) -> FeatureFrame:
    """A PredictBatch's matrix -> frame. NaN (numeric) and "" (categorical) mean missing."""
    problems: list[Violation] = []
    n = batch.rows
    if n <= 0:
        raise InvalidRequest([("rows", f"must be >= 1, got {n}")])
    if n > max_rows:
        raise InvalidRequest([("rows", f"{n} rows exceed the limit of {max_rows} per batch")])
    for what, names, vals in (
        ("values", batch.feature_names, batch.values),
        ("categorical_values", batch.categorical_names, batch.categorical_values),
    ):
        if len(vals) != n * len(names):
            problems.append(
                (
                    what,
                    f"has {len(vals)} entries; rows x names = {n} x {len(names)} = "
                    f"{n * len(names)}",
                )
            )
    for what, items in (("entity_keys", batch.entity_keys), ("request_ids", batch.request_ids)):
        if items and len(items) != n:
            problems.append(
                (what, f"has {len(items)} entries for {n} rows (give one per row or none)")
            )
    seen: set[str] = set()
    for what, names, kind in (
        ("feature_names", batch.feature_names, "numeric"),
        ("categorical_names", batch.categorical_names, "categorical"),
    ):
        for j, name in enumerate(names):
            field = f"{what}[{j}]"
            if name in seen:
                problems.append((field, f"{name!r} appears twice"))
            seen.add(name)
            if kind == "numeric" and name in contract.categorical:
                problems.append((field, f"{name!r} is categorical: send it in categorical_names"))
            elif kind == "categorical" and name in contract.numeric:
                problems.append((field, f"{name!r} is numeric: send it in feature_names"))
            elif name not in contract.numeric and name not in contract.categorical:
                problems.append((field, _unknown(contract, name)))
    if problems:
        raise InvalidRequest(problems)
    frame = FeatureFrame.empty(contract, n)
    if batch.feature_names:
        matrix = np.asarray(batch.values, dtype=np.float64).reshape(n, len(batch.feature_names))
        inf_rows = np.flatnonzero(np.isinf(matrix).any(axis=1))
        if inf_rows.size:
            raise InvalidRequest(
                [
                    (f"values[row {int(r)}]", "must be finite (NaN means missing)")
                    for r in inf_rows[:20]
                ]
            )
        for j, name in enumerate(batch.feature_names):
            frame.numeric[name] = matrix[:, j].copy()
    k = len(batch.categorical_names)
    for j, name in enumerate(batch.categorical_names):
        frame.categorical[name] = [v or None for v in batch.categorical_values[j::k]]
    return frame


def _unknown(contract: ModelContract, name: str) -> str:
    return f"model {contract.model!r} has no feature {name!r} (it takes {list(contract.names)})"
