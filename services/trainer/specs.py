"""Model specs: what to train, on which dataset, and how it is judged (`deploy/models/`).

One YAML file per model, validated at start-up against the declared dataset schemas, so a
typo in a gate threshold or a fairness column that does not exist fails before any
training, with a message naming the file and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from services.common.datasets.schema import DatasetSchema
from services.common.registry import validate_name
from services.common.yaml_files import DuplicateKeyError, load_yaml
from services.trainer.data import SplitSpec, WindowSpec
from services.trainer.distributed import DistributedSpec
from services.trainer.gate import GateConfig
from services.trainer.policy import PolicyConfig

__all__ = ["ModelSpec", "ModelSpecError", "load_model_spec", "load_model_specs"]


class ModelSpecError(ValueError):
    """A model spec file that does not parse or validate; names the file and the field."""


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dataset: str = Field(min_length=1)
    kind: Literal["xgboost", "mlp"] = "xgboost"
    seed: int = Field(default=0, ge=0)
    params: dict[str, JsonValue] = Field(default_factory=dict)
    search_space: list[dict[str, JsonValue]] = Field(default_factory=list)
    window: WindowSpec = WindowSpec()
    split: SplitSpec = SplitSpec()
    policy: PolicyConfig = PolicyConfig()
    gate: GateConfig = GateConfig()
    # workers > 1: one data-parallel fit on that many Ray workers (distributed.py)
    distributed: DistributedSpec = DistributedSpec()
    # The monitor's section of the same file (services/monitor/specs.py validates it):
    # carried, not read, so one spec can configure both services as the README shows.
    monitor: dict[str, JsonValue] = Field(default_factory=dict)
    description: str = ""

    @model_validator(mode="after")
    def _check_name(self) -> Self:
        validate_name(self.name)
        return self

    @model_validator(mode="after")
    def _check_distributed(self) -> Self:
        if self.distributed.enabled and self.kind != "xgboost":
            raise ValueError(
                f"distributed.workers: a data-parallel fit supports kind 'xgboost' only, "
                f"not {self.kind!r} (use workers: 1)"
            )
        return self

    @property
    def task(self) -> Literal["binary", "regression"]:
        return self.gate.task

    def check_against(self, schema: DatasetSchema) -> None:
        """Refuse a spec that cannot train on `schema` (label kind, fairness column)."""
        if schema.label is None:
            raise ModelSpecError(f"model {self.name!r}: dataset {schema.name!r} declares no label")
        want = "binary" if schema.label.kind == "binary" else "regression"
        if self.gate.task != want:
            raise ModelSpecError(
                f"model {self.name!r}: gate.task is {self.gate.task!r} but dataset "
                f"{schema.name!r} has a {schema.label.kind} label (use task: {want})"
            )
        group = self.gate.fairness_group
        if group is not None and group not in schema.categorical:
            raise ModelSpecError(
                f"model {self.name!r}: gate.fairness_group {group!r} is not a categorical "
                f"column of {schema.name!r} (have {sorted(schema.categorical)})"
            )


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<document>"
        parts.append(f"{loc}: {re.sub(r'^(Value|Assertion) error, ', '', err['msg'])}")
    return "; ".join(parts)


def load_model_spec(path: str | Path) -> ModelSpec:
    try:
        doc: Any = load_yaml(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelSpecError(f"{path}: cannot read ({exc.strerror})") from None
    except DuplicateKeyError as exc:
        raise ModelSpecError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ModelSpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ModelSpecError(f"{path}: expected a mapping at the top level")
    try:
        return ModelSpec.model_validate(doc)
    except (ValidationError, ValueError) as exc:
        detail = _describe(exc) if isinstance(exc, ValidationError) else str(exc)
        raise ModelSpecError(f"{path}: {detail}") from None


def load_model_specs(
    directory: str | Path, schemas: dict[str, DatasetSchema]
) -> dict[str, ModelSpec]:
    """Every `*.yaml` spec in `directory`, checked against the dataset `schemas`."""
    root = Path(directory)
    if not root.is_dir():
        raise ModelSpecError(f"{directory}: model spec directory does not exist")
    specs: dict[str, ModelSpec] = {}
    for path in sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml")):
        spec = load_model_spec(path)
        if spec.name in specs:
            raise ModelSpecError(f"{path}: model {spec.name!r} is declared twice")
        if spec.dataset not in schemas:
            raise ModelSpecError(
                f"{path}: dataset {spec.dataset!r} is not declared (have {sorted(schemas)})"
            )
        try:
            spec.check_against(schemas[spec.dataset])
        except ModelSpecError as exc:
            raise ModelSpecError(f"{path}: {exc}") from None
        specs[spec.name] = spec
    return specs
