"""Training on Ray: each trial of a small explicit search is a Ray task.

The encoded arrays go into the object store once (`ray.put`) and every trial reads them
from there (zero-copy for numpy), so adding trials costs no extra copies of the data.
Trials run in parallel as far as the cluster's CPUs allow; each is pinned to
`num_cpus_per_trial` CPUs and, unless its params say otherwise, uses that many threads —
a thread count is part of what makes XGBoost's bytes reproducible, so it is recorded.
The winner is the lowest validation loss (log-loss for binary, RMSE for regression),
ties going to the lower trial index: the same inputs always pick the same model.

`ray` is imported inside the functions, after `services.common.ray_runtime` has set the
loopback environment (see that module).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import JsonValue

from services.common.encoding import FeatureEncoder
from services.common.ray_runtime import ensure_ray, ray_address
from services.trainer.data import TrainingData
from services.trainer.models import (
    FittedModel,
    ModelKindName,
    Task,
    fit_model,
    metric_name,
    validation_loss,
)

__all__ = ["TrainingJob", "TrainingOutcome", "labels_of", "train_on_ray"]


@dataclass(frozen=True)
class TrainingJob:
    kind: ModelKindName
    task: Task
    params: Mapping[str, JsonValue] = field(default_factory=dict)  # base params of every trial
    # One trial per entry: overrides applied on top of `params`. [{}] is a single trial.
    search_space: Sequence[Mapping[str, JsonValue]] = field(default_factory=lambda: [{}])
    seed: int = 0
    num_cpus_per_trial: int = 1

    def __post_init__(self) -> None:
        if self.num_cpus_per_trial < 1:
            raise ValueError(f"num_cpus_per_trial must be >= 1, got {self.num_cpus_per_trial}")
        if not self.search_space:
            raise ValueError("search_space needs at least one trial ([{}] for the base params)")

    def trial_params(self) -> list[dict[str, JsonValue]]:
        threads_key = "nthread" if self.kind == "xgboost" else "num_threads"
        return [
            {threads_key: self.num_cpus_per_trial, **self.params, **overrides}
            for overrides in self.search_space
        ]


@dataclass(frozen=True)
class TrainingOutcome:
    best: FittedModel  # params include "encoder" and "trial"
    # Per trial: trial (index), params, metric, validation_loss, best_iteration/best_epoch, fit_s.
    trials: list[dict[str, JsonValue]]
    ray_address: str


def labels_of(table: pa.Table) -> np.ndarray:
    """The label column as float32 (the split tables have no null labels)."""
    return np.asarray(table.column("label").to_numpy(), dtype=np.float32)


def _run_trial(
    kind: ModelKindName,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    params: dict[str, JsonValue],
    seed: int,
    task: Task,
) -> tuple[FittedModel, float, float]:
    """(model, validation loss, seconds spent fitting) of one trial, in a Ray worker."""
    started = time.perf_counter()
    fitted = fit_model(kind, X_train, y_train, X_val, y_val, params, seed, task)
    fit_s = time.perf_counter() - started
    loss = validation_loss(task, y_val, fitted.predict(X_val))
    return fitted, loss if math.isfinite(loss) else math.inf, fit_s


def train_on_ray(job: TrainingJob, data: TrainingData, encoder: FeatureEncoder) -> TrainingOutcome:
    """Run every trial of `job` on Ray and return the best model with all trial results.

    Connects to Ray with `ensure_ray()` (a local instance) unless the caller has already
    connected, which is how a service points the trainer at its cluster.
    """
    ensure_ray()
    import ray

    arrays = (
        encoder.transform(data.train),
        labels_of(data.train),
        encoder.transform(data.validation),
        labels_of(data.validation),
    )
    refs = [ray.put(a) for a in arrays]  # once; every trial reads the same objects
    remote: Any = ray.remote(_run_trial).options(num_cpus=job.num_cpus_per_trial, max_retries=0)
    all_params = job.trial_params()
    pending = [remote.remote(job.kind, *refs, p, job.seed, job.task) for p in all_params]
    try:
        results: list[tuple[FittedModel, float, float]] = ray.get(pending)
    finally:
        del refs  # release the arrays in the object store as soon as the trials are done
    metric = metric_name(job.task)
    trials: list[dict[str, JsonValue]] = [
        {
            "trial": i,
            "params": dict(p),
            "metric": metric,
            "validation_loss": loss if math.isfinite(loss) else None,
            **_stopping(fitted),
            "fit_s": round(fit_s, 3),  # wall time; the only field that varies between runs
        }
        for i, (p, (fitted, loss, fit_s)) in enumerate(zip(all_params, results, strict=True))
    ]
    winner = min(range(len(results)), key=lambda i: (results[i][1], i))
    best = results[winner][0]
    best = replace(best, params={**best.params, "encoder": encoder.to_params(), "trial": winner})
    return TrainingOutcome(best=best, trials=trials, ray_address=ray_address())


def _stopping(fitted: FittedModel) -> dict[str, JsonValue]:
    return {k: fitted.params[k] for k in ("best_iteration", "best_epoch") if k in fitted.params}
