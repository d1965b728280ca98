"""The two model kinds the trainer fits — XGBoost and a torch MLP — behind one interface.

Both are reproducible: the same inputs, params and seed give a byte-identical XGBoost
artifact (fixed `nthread`, fixed seed, `hist`) and torch predictions equal within float
rounding (fixed seed, deterministic algorithms, fixed thread count). Artifacts are safe
formats only, produced by the registry's `save_xgboost` / `save_torch`; `params` holds
everything needed to rebuild a predictor from them, so serving and the gate need no
training code state. torch and xgboost are imported inside the functions (slow imports).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import JsonValue

from services.common.predictors import Predictor, predictor_for, predictor_from_loaded
from services.common.registry import load_artifact, save_xgboost
from services.trainer import mlp
from services.trainer.params import param_float, param_int, resolve_params

__all__ = [
    "XGBOOST_DEFAULTS",
    "FittedModel",
    "ModelKindName",
    "Task",
    "fit_model",
    "metric_name",
    "predictor_from_loaded",
    "validation_loss",
    "xgboost_train_args",
]

ModelKindName = Literal["xgboost", "mlp"]
Task = Literal["binary", "regression"]

XGBOOST_DEFAULTS: dict[str, JsonValue] = {
    "num_boost_round": 200,
    "early_stopping_rounds": 20,
    "max_depth": 6,
    "eta": 0.1,
    "min_child_weight": 1.0,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
    "lambda": 1.0,
    "max_bin": 256,
    "nthread": 1,
}
_XGB_OBJECTIVE = {
    "binary": ("binary:logistic", "logloss"),
    "regression": ("reg:squarederror", "rmse"),
}
_XGB_FLOAT_PARAMS = ("eta", "min_child_weight", "subsample", "colsample_bytree", "lambda")
_ARTIFACT_FORMAT = {"xgboost": "xgboost-ubj", "mlp": "torch-state-dict"}


@dataclass(frozen=True)
class FittedModel:
    kind: ModelKindName
    artifact: bytes
    artifact_format: str
    params: dict[str, JsonValue]  # kind, task, seed, resolved hyper-params (+ encoder, arch)
    _cache: list[Predictor] = field(default_factory=list, init=False, repr=False, compare=False)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Binary: probability of class 1; regression: the predicted value (float64)."""
        if not self._cache:  # built once, from the artifact bytes like any other consumer
            model = load_artifact(self.artifact, self.artifact_format)
            self._cache.append(predictor_for(self.kind, model, self.params))
        return self._cache[0](X)

    def __getstate__(self) -> dict[str, Any]:
        # A cached Booster/module stays behind when the model travels to another process.
        return {**self.__dict__, "_cache": []}


def validation_loss(task: Task, y: np.ndarray, pred: np.ndarray) -> float:
    """Log-loss (binary, probabilities clipped to [1e-7, 1 - 1e-7]) or RMSE (regression)."""
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if task == "binary":
        p = np.clip(pred, 1e-7, 1 - 1e-7)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
    return float(np.sqrt(np.mean((y - pred) ** 2)))


def metric_name(task: Task) -> str:
    return _XGB_OBJECTIVE[task][1]


def fit_model(
    kind: ModelKindName,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    params: Mapping[str, JsonValue],
    seed: int,
    task: Task,
) -> FittedModel:
    """Train one model; `params` override the kind's defaults (unknown keys are refused)."""
    if task not in _XGB_OBJECTIVE:
        raise ValueError(f"unknown task {task!r}; expected 'binary' or 'regression'")
    if kind == "xgboost":
        return _fit_xgboost(X_train, y_train, X_val, y_val, params, seed, task)
    if kind == "mlp":
        hyper = resolve_params(mlp.MLP_DEFAULTS, params, "mlp")
        artifact, resolved = mlp.fit_mlp(X_train, y_train, X_val, y_val, hyper, seed, task)
        return FittedModel("mlp", artifact, _ARTIFACT_FORMAT["mlp"], resolved)
    raise ValueError(f"unknown model kind {kind!r}; expected 'xgboost' or 'mlp'")


def _fit_xgboost(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    params: Mapping[str, JsonValue],
    seed: int,
    task: Task,
) -> FittedModel:
    import xgboost as xgb

    hyper = resolve_params(XGBOOST_DEFAULTS, params, "xgboost")
    booster_params, rounds, patience = xgboost_train_args(hyper, seed, task)
    dtrain = xgb.DMatrix(X_train, label=y_train, missing=np.nan, nthread=booster_params["nthread"])
    dval = xgb.DMatrix(X_val, label=y_val, missing=np.nan, nthread=booster_params["nthread"])
    booster = xgb.train(
        booster_params,
        dtrain,
        num_boost_round=rounds,
        evals=[(dval, "validation")],
        early_stopping_rounds=patience,
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    # Keep only the trees up to the best round, so every consumer predicts the same thing.
    artifact = save_xgboost(booster[: best + 1], _ARTIFACT_FORMAT["xgboost"])
    resolved: dict[str, JsonValue] = {
        "kind": "xgboost",
        "task": task,
        "seed": seed,
        **hyper,
        "best_iteration": best,
        "n_features": int(X_train.shape[1]),
    }
    return FittedModel("xgboost", artifact, _ARTIFACT_FORMAT["xgboost"], resolved)


def xgboost_train_args(
    hyper: Mapping[str, JsonValue], seed: int, task: Task
) -> tuple[dict[str, Any], int, int]:
    """(booster params, num_boost_round, early_stopping_rounds) for `xgboost.train`: the
    exact arguments the trainer uses, so a benchmark can call xgboost the same way."""
    objective, metric = _XGB_OBJECTIVE[task]
    booster_params: dict[str, Any] = {
        "max_depth": param_int(hyper, "max_depth"),
        "max_bin": param_int(hyper, "max_bin"),
        "nthread": param_int(hyper, "nthread"),
        **{k: param_float(hyper, k) for k in _XGB_FLOAT_PARAMS},
        "objective": objective,
        "eval_metric": metric,
        "tree_method": "hist",
        "seed": seed,
        "verbosity": 0,
    }
    rounds = param_int(hyper, "num_boost_round")
    return booster_params, rounds, param_int(hyper, "early_stopping_rounds")
