"""Rows to a float32 feature matrix, the same way at training and at serving time.

Columns are the dataset's features in name order (the schema's canonical order). A
numeric feature is its value (NaN when missing: both model kinds handle missing values
themselves). A categorical feature is the position of its value in a sorted vocabulary
learned from the training split; a value not seen in training, or a null, is NaN, so a
new category is treated as missing rather than as some unrelated code.

The encoder is plain data (`to_params`/`from_params`), stored in the model manifest's
`params["encoder"]`, so serving rebuilds it without the training code's state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from services.common.datasets.schema import DatasetSchema
from services.common.registry import FeatureSpec

__all__ = ["EncodedFeature", "EncodingError", "FeatureEncoder"]

ENCODER_FORMAT: Literal[1] = 1


class EncodingError(ValueError):
    """Input that cannot be encoded (a missing column, a non-number for a numeric feature)."""


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
    def fit(cls, schema: DatasetSchema, table: pa.Table) -> FeatureEncoder:
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

    def to_params(self) -> dict[str, JsonValue]:
        return self.model_dump(mode="json")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FeatureEncoder:
        return cls.model_validate(dict(params))
