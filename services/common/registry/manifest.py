"""What a registered model version is: its manifest, the lineage and reference data with it.

A manifest is immutable JSON, written once as the commit point of a registration. The
reference profile is what the monitor compares live traffic against (PSI/KS on the
numeric bins, chi-squared/JS on category counts, prediction drift on the score histogram).
Its histograms are `services.common.datasets.profile.Histogram`, the one binning code
that dataset versions' profiles use too.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from services.common.datasets.profile import Histogram

__all__ = [
    "FORMAT_FRAMEWORK",
    "ArtifactFormat",
    "ArtifactRef",
    "CategoricalProfile",
    "FeatureSpec",
    "Framework",
    "Histogram",
    "InvalidNameError",
    "ManifestError",
    "ModelManifest",
    "NumericProfile",
    "ReferenceProfile",
    "RegistrationInfo",
    "validate_name",
]

Framework = Literal["xgboost", "torch"]
ArtifactFormat = Literal["xgboost-ubj", "xgboost-json", "torch-state-dict", "safetensors"]
FORMAT_FRAMEWORK: dict[str, Framework] = {
    "xgboost-ubj": "xgboost",
    "xgboost-json": "xgboost",
    "torch-state-dict": "torch",
    "safetensors": "torch",
}
# Model and alias names become path segments and Redis key parts, so keep them plain.
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class InvalidNameError(ValueError):
    """A model or alias name that does not match [a-z][a-z0-9_-]* (at most 64 characters)."""


class ManifestError(ValueError):
    """A manifest that does not parse or validate; the message lists each bad field."""


def validate_name(value: str, what: str = "model name") -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidNameError(
            f"invalid {what} {value!r}: use a lowercase letter followed by lowercase letters, "
            "digits, '_' or '-' (at most 64 characters)"
        )
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FeatureSpec(_Frozen):
    name: str = Field(min_length=1, max_length=200)
    dtype: Literal["float", "category"]


class ArtifactRef(_Frozen):
    path: str = Field(min_length=1)
    format: ArtifactFormat
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class NumericProfile(Histogram):
    null_count: int = Field(default=0, ge=0)


class CategoricalProfile(_Frozen):
    counts: dict[str, int]
    null_count: int = Field(default=0, ge=0)

    def frequencies(self) -> dict[str, float]:
        total = sum(self.counts.values())
        return {k: (v / total if total else 0.0) for k, v in self.counts.items()}


class ReferenceProfile(_Frozen):
    row_count: int = Field(ge=0)
    numeric: dict[str, NumericProfile] = Field(default_factory=dict)
    categorical: dict[str, CategoricalProfile] = Field(default_factory=dict)
    prediction: Histogram
    base_rate: float | None = Field(default=None, ge=0.0, le=1.0)


class RegistrationInfo(_Frozen):
    """What the caller of `register` supplies; the registry adds identity and the artifact."""

    features: list[FeatureSpec] = Field(min_length=1)
    reference_profile: ReferenceProfile
    code_version: str = Field(min_length=1, description="git commit of the training code")
    training_datasets: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, JsonValue] = Field(default_factory=dict)
    library_versions: dict[str, str] = Field(default_factory=dict)
    gate_report: dict[str, JsonValue] | None = None
    seed: int | None = None

    @model_validator(mode="after")
    def _check_profile(self) -> RegistrationInfo:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {duplicates}")
        wanted = {
            "float": {f.name for f in self.features if f.dtype == "float"},
            "category": {f.name for f in self.features if f.dtype == "category"},
        }
        profile = self.reference_profile
        for dtype, have in (("float", profile.numeric), ("category", profile.categorical)):
            missing, extra = wanted[dtype] - have.keys(), have.keys() - wanted[dtype]
            if missing or extra:
                raise ValueError(
                    f"reference profile does not match the {dtype} features: "
                    f"missing {sorted(missing)}, not in the schema {sorted(extra)}"
                )
        return self


class ModelManifest(RegistrationInfo):
    schema_version: Literal[1] = 1
    name: str
    version: int = Field(ge=1)
    framework: Framework
    artifact: ArtifactRef
    created_at_ms: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return validate_name(value)

    @model_validator(mode="after")
    def _check_framework(self) -> ModelManifest:
        if FORMAT_FRAMEWORK[self.artifact.format] != self.framework:
            raise ValueError(
                f"artifact format {self.artifact.format!r} is not a {self.framework} format"
            )
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "manifest") -> ModelManifest:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ManifestError(f"invalid {source}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<document>'}: {err['msg']}"
        for err in exc.errors()
    )
