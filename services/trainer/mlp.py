"""The torch model kind: a small MLP that carries its own input handling.

The network itself is defined in `services.common.predictors` (serving runs it too).
Standardisation and missing values live inside the module as buffers (per-feature mean
and scale learned on the training split, a missing-value indicator per feature, the
target's mean and scale for regression), so its state dict alone — loaded with
`weights_only=True` — plus the architecture in `params` reproduces it in serving.

Reproducible by construction: a seeded RNG fork (init, dropout), a seeded generator for
the batch order, `torch.use_deterministic_algorithms(True)` and a fixed thread count,
all restored afterwards so training never leaks global torch state into its caller.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np
from pydantic import JsonValue

from services.common.predictors import build_mlp_network, mlp_hidden_units
from services.common.registry import save_torch
from services.trainer.params import param_float, param_int

__all__ = ["MLP_DEFAULTS", "fit_mlp"]

MLP_DEFAULTS: dict[str, JsonValue] = {
    "hidden_units": [64, 32],
    "dropout": 0.0,
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
    "batch_size": 256,
    "max_epochs": 50,
    "patience": 5,  # epochs without a better validation loss before stopping
    "num_threads": 1,
}


@contextmanager
def _deterministic_torch(seed: int, num_threads: int) -> Iterator[None]:
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def _column_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column is allowed
        mean = np.nanmean(X.astype(np.float64), axis=0)
        scale = np.nanstd(X.astype(np.float64), axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def fit_mlp(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    hp: Mapping[str, JsonValue],
    seed: int,
    task: str,
) -> tuple[bytes, dict[str, JsonValue]]:
    """Train with Adam and early stopping on the validation loss; returns the best epoch's
    state dict (torch-state-dict bytes) and the resolved params to rebuild it.

    `hp` is `MLP_DEFAULTS` with the caller's overrides applied."""
    import torch

    hidden = mlp_hidden_units(hp)
    binary = task == "binary"
    with _deterministic_torch(seed, param_int(hp, "num_threads")):
        model = build_mlp_network(X_train.shape[1], hidden, param_float(hp, "dropout"))
        mean, scale = _column_stats(X_train)
        y_mean = 0.0 if binary else float(np.mean(y_train))
        y_scale = 1.0 if binary else float(np.std(y_train)) or 1.0
        with torch.no_grad():
            model.x_mean.copy_(torch.from_numpy(mean))
            model.x_scale.copy_(torch.from_numpy(scale))
            model.y_mean.fill_(y_mean)
            model.y_scale.fill_(y_scale)
        xt, xv = (torch.tensor(np.asarray(a, dtype=np.float32)) for a in (X_train, X_val))
        yt, yv = (
            torch.tensor((np.asarray(a, dtype=np.float64) - y_mean) / y_scale, dtype=torch.float32)
            for a in (y_train, y_val)
        )
        loss_fn = torch.nn.BCEWithLogitsLoss() if binary else torch.nn.MSELoss()
        optimiser = torch.optim.Adam(
            model.parameters(),
            lr=param_float(hp, "learning_rate"),
            weight_decay=param_float(hp, "weight_decay"),
        )
        order = torch.Generator().manual_seed(seed)
        batch, patience = param_int(hp, "batch_size"), param_int(hp, "patience")
        best_loss, best_epoch, best_state = float("inf"), -1, model.state_dict()
        for epoch in range(param_int(hp, "max_epochs")):
            model.train()
            perm = torch.randperm(len(xt), generator=order)
            for start in range(0, len(xt), batch):
                idx = perm[start : start + batch]
                optimiser.zero_grad()
                loss_fn(model.standardised(xt[idx]), yt[idx]).backward()
                optimiser.step()
            model.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(model.standardised(xv), yv))
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch - best_epoch >= patience:
                break
    resolved: dict[str, JsonValue] = {
        "kind": "mlp",
        "task": task,
        "seed": seed,
        **hp,
        "hidden_units": list(hidden),
        "n_features": int(X_train.shape[1]),
        "best_epoch": best_epoch,
    }
    return save_torch(best_state), resolved
