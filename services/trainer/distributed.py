"""A data-parallel fit of one model across Ray workers (Ray Train's `XGBoostTrainer`).

`train_on_ray` (tuning.py) scales out *trials*: each trial is one model fitted in one
process. This module scales out *one fit*: the training rows are cut into `workers`
contiguous shards (rank r holds rows [r·n/w, (r+1)·n/w) of the canonical, time-ordered
window), each shard goes into the object store once and only its own worker fetches it,
and XGBoost's collective (Rabit; Ray Train starts its tracker on the node address,
127.0.0.1 locally) all-reduces the quantile sketches and gradient histograms, so every
worker grows the same trees. The
validation rows are sharded the same way; XGBoost all-reduces the evaluation metric, so
early stopping stops every worker at the same round. Rank 0 writes the booster (cut to
its best round, as a single-process fit is) to a Ray Train checkpoint, which the driver
reads back into a `FittedModel` that registers like any other.

Reproducibility, measured (tests/integration/trainer/test_distributed_fit.py): for a
fixed worker count, seed, params and data the artifact bytes are identical run to run —
the shard boundaries are a pure function of the row count and the worker count, and the
all-reduce sums in a fixed rank order. A different worker count gives a different model
(the quantile sketch and float summation order change with the shards): its holdout
metrics agree with the single-process fit within a tolerance, not its bytes.

Loopback: XGBoost 3.2's collective makes each worker listen on 0.0.0.0 (INADDR_ANY is
hard-coded in libxgboost, no option changes it). On the local stack the Ray workers
preload the loopback bind shim (services/common/loopback_shim.py), so those listeners are
on 127.0.0.1: tests/integration/trainer/test_distributed_fit.py samples every listener
of the process tree during the fit and fails on any other address (it does without the
shim). Against a cluster address nothing is preloaded: the pods' network policy applies.

Limits, honestly: the driver still loads the window and fits the feature encoder (the
split and encoder need all rows), so the driver must hold the encoded window once; the
workers hold only their shards. Only XGBoost is supported; the spec refuses
`distributed.workers > 1` with `kind: mlp`. `ray` is imported inside the functions,
after `services.common.ray_runtime` has set the loopback environment.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from services.common.encoding import FeatureEncoder
from services.common.ray_runtime import ensure_ray, ray_address
from services.trainer.data import TrainingData
from services.trainer.models import (
    XGBOOST_DEFAULTS,
    FittedModel,
    Task,
    metric_name,
    validation_loss,
    xgboost_train_args,
)
from services.trainer.params import resolve_params
from services.trainer.tuning import TrainingJob, TrainingOutcome, labels_of

__all__ = ["DistributedSpec", "fit_distributed", "shard_bounds"]

_ARTIFACT_FILE = "model.ubj"
_META_FILE = "fit.json"
_ARTIFACT_FORMAT = "xgboost-ubj"


class DistributedSpec(BaseModel):
    """`distributed:` in a model spec. `workers: 1` (the default) is the ordinary
    single-process fit; more asks for a data-parallel fit on that many Ray workers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int = Field(default=1, ge=1, le=1024)
    cpus_per_worker: int = Field(default=1, ge=1)

    @property
    def enabled(self) -> bool:
        return self.workers > 1


def shard_bounds(rows: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) row ranges, one per rank, sizes differing by at most one."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if rows < workers:
        raise ValueError(f"{rows} rows cannot be split across {workers} workers")
    edges = [rows * r // workers for r in range(workers + 1)]
    return list(itertools.pairwise(edges))


def _train_worker(config: dict[str, Any]) -> None:
    """Runs in each Ray Train worker, inside the XGBoost collective Ray Train set up."""
    import ray
    import ray.train
    import xgboost as xgb

    from services.common.registry import save_xgboost

    rank = ray.train.get_context().get_world_rank()
    X_train, y_train, X_val, y_val = ray.get(config["shards"][rank])
    params, rounds, patience = config["booster_params"], config["rounds"], config["patience"]
    nthread = params["nthread"]
    dtrain = xgb.DMatrix(X_train, label=y_train, missing=np.nan, nthread=nthread)
    dval = xgb.DMatrix(X_val, label=y_val, missing=np.nan, nthread=nthread)
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=rounds,
        evals=[(dval, "validation")],
        early_stopping_rounds=patience,
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    if rank != 0:
        ray.train.report({"best_iteration": best})  # a barrier: every rank reports once
        return
    with tempfile.TemporaryDirectory() as out:
        Path(out, _ARTIFACT_FILE).write_bytes(save_xgboost(booster[: best + 1], _ARTIFACT_FORMAT))
        Path(out, _META_FILE).write_text(json.dumps({"best_iteration": best}))
        checkpoint = ray.train.Checkpoint.from_directory(out)
        ray.train.report({"best_iteration": best}, checkpoint=checkpoint)


def fit_distributed(
    job: TrainingJob,
    data: TrainingData,
    encoder: FeatureEncoder,
    spec: DistributedSpec,
    storage_dir: str | None = None,
) -> TrainingOutcome:
    """Fit every trial of `job` as one data-parallel fit on `spec.workers` Ray workers (the
    trials one after another); the best validation loss wins as in `train_on_ray`.

    Checkpoints go to a temporary directory under `storage_dir` (default: the system's
    temp dir), removed once the model is read back. Connects to Ray with `ensure_ray()`
    unless the caller has already connected.
    """
    if job.kind != "xgboost":
        raise ValueError(f"a distributed fit supports kind 'xgboost' only, not {job.kind!r}")
    ensure_ray()
    import ray

    arrays = (
        encoder.transform(data.train),
        labels_of(data.train),
        encoder.transform(data.validation),
        labels_of(data.validation),
    )
    train_bounds = shard_bounds(len(arrays[1]), spec.workers)
    val_bounds = shard_bounds(len(arrays[3]), spec.workers)
    # One object per rank: a worker on another node pulls its own shard only.
    shards = [
        ray.put((arrays[0][a:b], arrays[1][a:b], arrays[2][c:d], arrays[3][c:d]))
        for (a, b), (c, d) in zip(train_bounds, val_bounds, strict=True)
    ]
    n_features = int(arrays[0].shape[1])
    try:
        all_params = [
            {"nthread": spec.cpus_per_worker, **p}
            for p in ({k: v for k, v in tp.items() if k != "nthread"} for tp in job.trial_params())
        ]
        results = [
            _fit_one(params, job.seed, job.task, shards, n_features, spec, storage_dir)
            for params in all_params
        ]
    finally:
        del shards
    X_val, y_val = arrays[2], arrays[3]
    metric = metric_name(job.task)
    trials: list[dict[str, JsonValue]] = []
    losses: list[float] = []
    for i, (params, (fitted, fit_s)) in enumerate(zip(all_params, results, strict=True)):
        loss = validation_loss(job.task, y_val, fitted.predict(X_val))
        losses.append(loss if math.isfinite(loss) else math.inf)
        trials.append(
            {
                "trial": i,
                "params": dict(params),
                "metric": metric,
                "validation_loss": loss if math.isfinite(loss) else None,
                "best_iteration": fitted.params["best_iteration"],
                "workers": spec.workers,
                "fit_s": round(fit_s, 3),
            }
        )
    winner = min(range(len(results)), key=lambda i: (losses[i], i))
    best = results[winner][0]
    best = replace(best, params={**best.params, "encoder": encoder.to_params(), "trial": winner})
    return TrainingOutcome(best=best, trials=trials, ray_address=ray_address())


def _fit_one(
    params: Mapping[str, JsonValue],
    seed: int,
    task: Task,
    shards: list[Any],
    n_features: int,
    spec: DistributedSpec,
    storage_dir: str | None,
) -> tuple[FittedModel, float]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.xgboost import XGBoostTrainer

    hyper = resolve_params(XGBOOST_DEFAULTS, params, "xgboost")
    booster_params, rounds, patience = xgboost_train_args(hyper, seed, task)
    root = tempfile.mkdtemp(prefix="dl-distfit-", dir=storage_dir)
    started = time.perf_counter()
    try:
        trainer = XGBoostTrainer(
            _train_worker,
            train_loop_config={
                "shards": shards,
                "booster_params": booster_params,
                "rounds": rounds,
                "patience": patience,
            },
            scaling_config=ScalingConfig(
                num_workers=spec.workers,
                use_gpu=False,
                resources_per_worker={"CPU": spec.cpus_per_worker},
            ),
            run_config=RunConfig(name="fit", storage_path=root),
        )
        result = trainer.fit()
        fit_s = time.perf_counter() - started
        if result.checkpoint is None:
            raise RuntimeError("the distributed fit finished without a checkpoint from rank 0")
        with result.checkpoint.as_directory() as ckpt:
            artifact = Path(ckpt, _ARTIFACT_FILE).read_bytes()
            meta = json.loads(Path(ckpt, _META_FILE).read_text())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    resolved: dict[str, JsonValue] = {
        "kind": "xgboost",
        "task": task,
        "seed": seed,
        **hyper,
        "best_iteration": int(meta["best_iteration"]),
        "n_features": n_features,
        "distributed_workers": spec.workers,
    }
    return FittedModel("xgboost", artifact, _ARTIFACT_FORMAT, resolved), fit_s
