"""The `monitor:` section of a model spec (deploy/models/<name>.yaml), with defaults.

The trainer reads the same files for training and its gate (services/trainer/specs.py);
services never import each other, so the monitor parses only its own section (and the
gate's `task`, which says which performance metrics apply). A model without a spec file is
monitored with the defaults of `MonitorSettings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.monitor.config import MonitorSettings

__all__ = ["ExperimentPolicy", "ModelMonitorSpec", "SpecError", "load_monitor_specs"]


class SpecError(ValueError):
    """A model spec whose `monitor:` section does not validate; the message says where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Guardrails(_Strict):
    max_error_rate_increase: float = Field(default=0.01, ge=0)  # absolute, treatment - control
    max_latency_p99_ratio: float = Field(default=1.5, gt=0)  # treatment / control
    # the declared business metric: the label outcome mean, may not drop by more than this
    business_metric: str = "outcome"
    max_business_metric_drop: float = Field(default=0.05, ge=0)  # relative to control


class ExperimentPolicy(_Strict):
    control: str = ""  # variant name; default: the variant with the largest expected share
    weights: dict[str, float] = Field(default_factory=dict)  # expected split; default: buckets
    min_samples_per_variant: int = Field(default=1_000, ge=1)
    min_labelled_per_variant: int = Field(default=200, ge=1)
    srm_alpha: float = Field(default=0.001, gt=0, lt=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    higher_is_better: bool = True
    guardrails: Guardrails = Field(default_factory=Guardrails)


class ModelMonitorSpec(_Strict):
    model: str
    task: Literal["binary", "regression"] = "binary"
    window_ms: int = Field(ge=1)
    window_rows: int = Field(default=0, ge=0)  # > 0: chunks of N predictions instead of time
    lateness_ms: int = Field(ge=0)
    reference_windows: int = Field(ge=2)
    fire_after: int = Field(ge=1)
    clear_after: int = Field(ge=1)
    thresholds: dict[str, float] = Field(default_factory=dict)  # metric -> fixed threshold
    segments: list[str] = Field(default_factory=list)  # categorical columns to slice by
    # drift per value of these categorical columns as well (slice "column=value"), for
    # the values with at least `drift_segment_min_rows` predictions in the reference
    drift_segments: list[str] = Field(default_factory=list)
    drift_segment_min_rows: int = Field(default=1_000, ge=1)
    multivariate: bool = True
    # realised performance (binary): a window is judged once it has this many labels; one
    # still without them after `label_wait_windows` newer closed windows is passed over
    min_labelled_per_window: int = Field(default=100, ge=1)
    label_wait_windows: int = Field(default=10, ge=1)
    experiments: ExperimentPolicy = Field(default_factory=ExperimentPolicy)


def _defaults(model: str, settings: MonitorSettings) -> dict[str, object]:
    return {
        "model": model,
        "window_ms": settings.window_ms,
        "lateness_ms": settings.lateness_ms,
        "reference_windows": settings.reference_windows,
        "fire_after": settings.fire_after,
        "clear_after": settings.clear_after,
    }


def default_spec(model: str, settings: MonitorSettings) -> ModelMonitorSpec:
    return ModelMonitorSpec.model_validate(_defaults(model, settings))


def load_monitor_specs(directory: Path, settings: MonitorSettings) -> dict[str, ModelMonitorSpec]:
    """Every `*.yaml` model spec's monitor section, by model name."""
    specs: dict[str, ModelMonitorSpec] = {}
    if not directory.is_dir():
        return specs
    for path in sorted(directory.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        name = str(raw.get("name") or path.stem)
        section = raw.get("monitor") or {}
        task = (raw.get("gate") or {}).get("task", "binary")
        try:
            specs[name] = ModelMonitorSpec.model_validate(
                {**_defaults(name, settings), "task": task, **section}
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"monitor.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise SpecError(f"{path}: {problems}") from None
    return specs
