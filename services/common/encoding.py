"""Rows to a float32 feature matrix, the same way at training and at serving time.

Columns are the dataset's features in name order (the schema's canonical order). A
numeric feature is its value (NaN when missing: both model kinds handle missing values
themselves). A categorical feature is the position of its value in a sorted vocabulary
learned from the training split; a value not seen in training, or a null, is NaN, so a
new category is treated as missing rather than as some unrelated code.

The encoder is plain data (`to_params`/`from_params`), stored in the model manifest's
`params["encoder"]`, so serving rebuilds it without the training code's state. It lives
in `services.common` because the trainer (fit, transform a table) and serving (transform
request columns) both use it, and the two must never disagree on a single value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from services.common.registry import FeatureSpec

__all__ = ["EncodedFeature", "EncodingError", "FeatureEncoder", "FeatureProblem", "SchemaLike"]

ENCODER_FORMAT: Literal[1] = 1


FeatureProblem = tuple[str, str]  # (field, what is wrong with it)


class EncodingError(ValueError):
    """Input that cannot be encoded (a missing column, a non-number for a numeric feature).

    `problems` lists each bad field with what is wrong, for a field-level error reply.
    """

    def __init__(self, message: str, problems: Sequence[FeatureProblem] = ()) -> None:
        super().__init__(message)
        self.problems: list[FeatureProblem] = list(problems)


class SchemaLike(Protocol):
    """What `fit` needs of a dataset schema: its feature names and which are numeric."""

    @property
    def feature_names(self) -> list[str]: ...

    @property
    def numeric(self) -> Mapping[str, Any]: ...


class EncodedFeature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    kind: Literal["numeric", "categorical"]
    vocabulary: list[str] = Field(default_factory=list)  # sorted; categorical only

    @model_validator(mode="after")
    def _check_vocabulary(self) -> Self:
        if self.kind == "numeric" and self.vocabulary:
            raise ValueError(f"numeric feature {self.name!r} cannot have a vocabulary")
        if self.vocabulary != sorted(set(self.vocabulary)):
            raise ValueError(f"vocabulary of {self.name!r} must be sorted and unique")
        return self


class FeatureEncoder(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = ENCODER_FORMAT
    features: list[EncodedFeature] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = self.feature_names
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in {names}")
        return self

    @classmethod
    def fit(cls, schema: SchemaLike, table: pa.Table) -> FeatureEncoder:
        """Learn the categorical vocabularies from `table` (the training split)."""
        features = []
        for name in schema.feature_names:
            if name in schema.numeric:
                features.append(EncodedFeature(name=name, kind="numeric"))
                continue
            present = name in table.column_names
            values = pc.unique(table.column(name).drop_null()).to_pylist() if present else []
            features.append(
                EncodedFeature(name=name, kind="categorical", vocabulary=sorted(values))
            )
        return cls(features=features)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def n_features(self) -> int:
        return len(self.features)

    def feature_specs(self) -> list[FeatureSpec]:
        """The registry's view of the model inputs, in column order."""
        return [
            FeatureSpec(name=f.name, dtype="float" if f.kind == "numeric" else "category")
            for f in self.features
        ]

    def transform(self, table: pa.Table) -> np.ndarray:
        """(rows, features) float32, NaN for missing values and unknown categories."""
        missing = [name for name in self.feature_names if name not in table.column_names]
        if missing:
            raise EncodingError(f"table lacks feature column(s) {missing}")
        out = np.empty((table.num_rows, self.n_features), dtype=np.float32)
        for j, feature in enumerate(self.features):
            column = table.column(feature.name)
            if feature.kind == "numeric":
                if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
                    raise EncodingError(
                        f"{feature.name!r} is numeric but the column is {column.type}"
                    )
                values = pc.cast(column, pa.float64()).fill_null(math.nan)
            else:
                vocabulary = pa.array(feature.vocabulary, pa.string())
                codes = pc.index_in(pc.cast(column, pa.string()), value_set=vocabulary)
                values = pc.cast(codes, pa.float64()).fill_null(math.nan)
            out[:, j] = values.to_numpy()
        return out

    def transform_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Like `transform`, for request-shaped records (name -> value; absent is missing)."""
        out = np.full((len(records), self.n_features), np.nan, dtype=np.float32)
        lookups = [
            {v: float(i) for i, v in enumerate(f.vocabulary)} if f.kind == "categorical" else None
            for f in self.features
        ]
        for i, record in enumerate(records):
            for j, feature in enumerate(self.features):
                value = record.get(feature.name)
                if value is None:
                    continue
                lookup = lookups[j]
                if lookup is not None:
                    out[i, j] = lookup.get(str(value), math.nan)
                elif isinstance(value, bool) or not isinstance(value, int | float | np.number):
                    raise EncodingError(
                        f"record {i}: numeric feature {feature.name!r} got "
                        f"{type(value).__name__} {value!r}"
                    )
                else:
                    out[i, j] = float(value)
        return out

    def transform_columns(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> np.ndarray:
        """Request columns (feature name -> one value per row) to the (rows, features)
        float32 matrix `transform` would make of the same rows.

        Numeric columns take numbers (None/NaN are missing); categorical columns take
        strings (None is missing, an unseen value is NaN). A feature the request does not
        carry is missing for every row, as an absent field is in `transform_records`.
        Every problem is collected, then raised together as one `EncodingError`: an
        unknown column name, columns of different lengths, a non-number in a numeric
        column, a non-string in a categorical one, infinity.
        """
        problems: list[FeatureProblem] = []
        known = {f.name for f in self.features}
        problems += [(name, "not a feature of this model") for name in columns if name not in known]
        lengths: dict[str, int] = {}
        for name, values in columns.items():
            if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
                problems.append(
                    (name, f"expected a sequence of values, got {type(values).__name__}")
                )
            else:
                lengths[name] = len(values)
        rows = max(lengths.values(), default=0)
        if len(set(lengths.values())) > 1:
            problems += [
                (name, f"has {n} values where other columns have {rows}")
                for name, n in lengths.items()
                if n != rows
            ]
        if problems:
            raise EncodingError(_summary(problems), problems)
        out = np.full((rows, self.n_features), np.nan, dtype=np.float32)
        for j, feature in enumerate(self.features):
            column = columns.get(feature.name)
            if column is None:
                continue
            problem = (
                _encode_numeric(column, out[:, j])
                if feature.kind == "numeric"
                else _encode_categorical(column, feature.vocabulary, out[:, j])
            )
            if problem:
                problems.append((feature.name, problem))
        if problems:
            raise EncodingError(_summary(problems), problems)
        return out

    def to_params(self) -> dict[str, JsonValue]:
        return self.model_dump(mode="json")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FeatureEncoder:
        return cls.model_validate(dict(params))


def _summary(problems: Sequence[FeatureProblem]) -> str:
    return "; ".join(f"{name}: {problem}" for name, problem in problems)


# Exact types taken without a per-value check (bool is not among them: not a number here).
_PLAIN_NUMBERS = frozenset({int, float, type(None), np.float64, np.float32, np.int64, np.int32})


def _is_number(value: Any) -> bool:
    """A number or a missing value (None); a bool is not a number here."""
    if value is None:
        return True
    return not isinstance(value, bool | np.bool_) and isinstance(value, int | float | np.number)


def _encode_numeric(values: Sequence[Any] | np.ndarray, out: np.ndarray) -> str | None:
    """Fill `out` (one column) with the values as float32; a problem description or None."""
    array = values if isinstance(values, np.ndarray) else None
    if array is None and all(type(v) in _PLAIN_NUMBERS for v in values):
        array = np.array(values, dtype=np.float64)  # the common case; None becomes NaN
    if array is None or array.dtype.kind not in "biuf":
        try:  # other sequences; object arrays with None for missing values
            bad = next(((i, v) for i, v in enumerate(values) if not _is_number(v)), None)
        except TypeError:
            return f"expected a sequence of numbers, got {type(values).__name__}"
        if bad is not None:
            return f"row {bad[0]}: expected a number, got {type(bad[1]).__name__} {bad[1]!r}"
        array = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    elif array.dtype.kind == "b":
        return "expected numbers, got booleans"
    if array.ndim != 1:
        return f"expected one value per row, got an array of shape {array.shape}"
    as_float = array.astype(np.float64, copy=False)
    infinite = np.isinf(as_float)
    if infinite.any():
        return f"row {int(np.argmax(infinite))}: infinity is not a value (send null for missing)"
    out[:] = as_float
    return None


def _encode_categorical(
    values: Sequence[Any] | np.ndarray, vocabulary: Sequence[str], out: np.ndarray
) -> str | None:
    lookup = {v: float(i) for i, v in enumerate(vocabulary)}
    try:
        items = list(values)
    except TypeError:
        return f"expected a sequence of strings, got {type(values).__name__}"
    for i, value in enumerate(items):
        if value is None:
            continue
        if not isinstance(value, str | np.str_):
            return f"row {i}: expected a string category, got {type(value).__name__} {value!r}"
        out[i] = lookup.get(str(value), math.nan)
    return None
