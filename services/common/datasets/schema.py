"""Declared dataset schemas: the data contract each `DataEvent` is validated against.

One YAML file per dataset under `deploy/datasets/`, validated with pydantic when loaded so
a bad file fails at start with a message naming the file and the field. The schema also
fixes the canonical column layout of accepted rows (`arrow_schema`), which is what
dataset versions store and what their content hash covers.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import pyarrow as pa
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "RESERVED_COLUMNS",
    "CategoricalFeature",
    "DatasetSchema",
    "EventTimeSpec",
    "LabelSpec",
    "NumericFeature",
    "SchemaError",
    "load_schema",
    "load_schemas",
    "schema_hash",
]

# Columns every accepted table has besides the declared features; a feature may not shadow
# them ("dataset" is implied by which table the row lands in, so it is reserved too).
RESERVED_COLUMNS = frozenset({"event_id", "entity_key", "event_time_ms", "label", "dataset"})
# Feature names become Parquet and ClickHouse column names: keep them identifier-like.
FeatureName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
# Dataset names become artifact path segments and Kafka header values.
DatasetName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]


class SchemaError(ValueError):
    """A schema file that cannot be read or does not validate; names the file and field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class EventTimeSpec(_Frozen):
    """Freshness limits relative to the ingest clock (`now_ms` given to validation)."""

    max_future_skew_s: int = Field(default=300, ge=0)
    max_age_s: int = Field(gt=0)

    @property
    def max_future_skew_ms(self) -> int:
        return self.max_future_skew_s * 1000

    @property
    def max_age_ms(self) -> int:
        return self.max_age_s * 1000


class NumericFeature(_Frozen):
    dtype: Literal["float", "int"] = "float"
    nullable: bool = True
    min: float | None = None  # inclusive
    max: float | None = None  # inclusive
    description: str = ""

    # A field validator (not a model one) so the error names `<feature>.max` precisely.
    @field_validator("max")
    @classmethod
    def _check_max(cls, value: float | None, info: ValidationInfo) -> float | None:
        return _max_not_below_min(value, info)


class CategoricalFeature(_Frozen):
    """Either a closed `domain`, or an open domain bounded by `max_cardinality`."""

    nullable: bool = True
    domain: list[Annotated[str, StringConstraints(min_length=1)]] | None = None
    max_cardinality: int | None = Field(default=None, gt=0)
    description: str = ""

    @field_validator("domain")
    @classmethod
    def _check_domain(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("must list at least one value")
            dupes = sorted({v for v in value if value.count(v) > 1})
            if dupes:
                raise ValueError(f"lists {dupes} more than once")
        return value

    @model_validator(mode="after")
    def _one_kind_of_domain(self) -> Self:
        if (self.domain is None) == (self.max_cardinality is None):
            raise ValueError("declare exactly one of domain (closed) or max_cardinality (open)")
        return self


class LabelSpec(_Frozen):
    """The label is optional on every event (it may also arrive later as a LabelEvent)."""

    kind: Literal["binary", "numeric"]
    min: float | None = None  # numeric labels only, inclusive
    max: float | None = None
    description: str = ""

    @field_validator("min", "max")
    @classmethod
    def _numeric_only(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("kind") == "binary":
            raise ValueError("a binary label is 0 or 1: min/max apply to numeric labels only")
        return _max_not_below_min(value, info) if info.field_name == "max" else value


class DatasetSchema(_Frozen):
    name: DatasetName
    entity_key: FeatureName = Field(description="what the entity key identifies, e.g. customer_id")
    event_time: EventTimeSpec
    numeric: dict[FeatureName, NumericFeature] = Field(default_factory=dict)
    categorical: dict[FeatureName, CategoricalFeature] = Field(default_factory=dict)
    label: LabelSpec | None = None
    segments: list[FeatureName] = Field(default_factory=list)
    description: str = ""

    @field_validator("numeric", "categorical")
    @classmethod
    def _check_names(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        reserved = sorted(value.keys() & RESERVED_COLUMNS)
        if reserved:
            raise ValueError(f"{reserved} are reserved column names")
        both = sorted(value.keys() & info.data.get("numeric", {}).keys())
        if info.field_name == "categorical" and both:
            raise ValueError(f"{both} already declared as numeric")
        return value

    @field_validator("segments")
    @classmethod
    def _check_segments(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if "numeric" not in info.data or "categorical" not in info.data:
            return value  # their own errors are reported; do not pile a misleading one on
        declared = info.data["numeric"].keys() | info.data["categorical"].keys()
        undeclared = [s for s in value if s not in declared]
        if undeclared:
            raise ValueError(f"{undeclared} are not declared features")
        if len(set(value)) != len(value):
            raise ValueError("a segment column is listed more than once")
        return value

    @model_validator(mode="after")
    def _check_features(self) -> Self:
        if not self.numeric and not self.categorical:
            raise ValueError("declare at least one numeric or categorical feature")
        return self

    @property
    def feature_names(self) -> list[str]:
        """All declared features in name order: the canonical column order."""
        return sorted(self.numeric.keys() | self.categorical.keys())

    def arrow_schema(self) -> pa.Schema:
        """Canonical layout of accepted rows: ids, event time, features by name, label."""
        fields = [
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("entity_key", pa.string(), nullable=False),
            pa.field("event_time_ms", pa.int64(), nullable=False),
        ]
        for name in self.feature_names:
            if name in self.numeric:
                spec = self.numeric[name]
                dtype = pa.int64() if spec.dtype == "int" else pa.float64()
                fields.append(pa.field(name, dtype, nullable=spec.nullable))
            else:
                fields.append(pa.field(name, pa.string(), self.categorical[name].nullable))
        if self.label is not None:
            fields.append(pa.field("label", pa.float64(), nullable=True))
        return pa.schema(fields)

    def canonical_dict(self) -> dict[str, Any]:
        """What the schema hash covers: the contract, not the prose, and no list order
        that carries no meaning (domains and segments are sets)."""
        doc = self.model_dump(mode="json", exclude={"description"})
        for feature in (*doc["numeric"].values(), *doc["categorical"].values()):
            feature.pop("description")
        for feature in doc["categorical"].values():
            if feature["domain"] is not None:
                feature["domain"] = sorted(feature["domain"])
        if doc["label"] is not None:
            doc["label"].pop("description")
        doc["segments"] = sorted(doc["segments"])
        return doc


def _max_not_below_min(value: float | None, info: ValidationInfo) -> float | None:
    low = info.data.get("min")
    if value is not None and low is not None and low > value:
        raise ValueError(f"must be >= min (got min={low:g}, max={value:g})")
    return value


def schema_hash(schema: DatasetSchema) -> str:
    """sha256 hex of the canonical JSON form (sorted keys, no whitespace)."""
    text = json.dumps(
        schema.canonical_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a feature declared twice is a
    mistake the operator must hear about."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise SchemaError(f"line {line}: key {key!r} appears more than once")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "[key]") or "<document>"
        msg = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def load_schema(path: str | Path) -> DatasetSchema:
    """Read and validate one schema file; every failure is a `SchemaError` naming `path`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise SchemaError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise SchemaError(f"{path}: expected a mapping at the top level, got {type(doc).__name__}")
    try:
        return DatasetSchema.model_validate(doc)
    except ValidationError as exc:
        raise SchemaError(f"{path}: {_describe(exc)}") from None


def load_schemas(directory: str | Path) -> dict[str, DatasetSchema]:
    """All `*.yaml` / `*.yml` schemas in `directory` (not recursive), keyed by dataset name."""
    root = Path(directory)
    if not root.is_dir():
        raise SchemaError(f"{directory}: dataset schema directory does not exist")
    schemas: dict[str, DatasetSchema] = {}
    origin: dict[str, Path] = {}
    for path in sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml")):
        schema = load_schema(path)
        if schema.name in schemas:
            raise SchemaError(
                f"{path}: dataset {schema.name!r} is already declared in {origin[schema.name]}"
            )
        schemas[schema.name], origin[schema.name] = schema, path
    return schemas
