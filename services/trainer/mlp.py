"""The torch model kind: a small MLP that carries its own input handling.

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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import JsonValue

from services.common.registry import save_torch
from services.trainer.params import param_float, param_int

if TYPE_CHECKING:
    import torch

__all__ = ["MLP_DEFAULTS", "fit_mlp", "mlp_predictor"]

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
_PREDICT_BATCH_ROWS = 65_536


def _build(n_features: int, hidden_units: list[int], dropout: float) -> Any:
    """The network (an `nn.Module` subclass defined here, so importing this module does
    not import torch)."""
    import torch
    from torch import nn

    class MLPNet(nn.Module):
        x_mean: torch.Tensor
        x_scale: torch.Tensor
        y_mean: torch.Tensor
        y_scale: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("x_mean", torch.zeros(n_features))
            self.register_buffer("x_scale", torch.ones(n_features))
            self.register_buffer("y_mean", torch.zeros(()))
            self.register_buffer("y_scale", torch.ones(()))
            layers: list[nn.Module] = []
            width = 2 * n_features  # standardised values + missing indicators
            for units in hidden_units:
                layers += [nn.Linear(width, units), nn.ReLU()]
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
                width = units
            layers.append(nn.Linear(width, 1))
            self.net = nn.Sequential(*layers)

        def standardised(self, x: torch.Tensor) -> torch.Tensor:
            """The output in standardised target units (logits for a binary task)."""
            missing = torch.isnan(x)
            z = torch.where(missing, torch.zeros_like(x), (x - self.x_mean) / self.x_scale)
            return self.net(torch.cat([z, missing.to(z.dtype)], dim=1)).squeeze(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.standardised(x) * self.y_scale + self.y_mean

    return MLPNet()


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


def _hidden_units(params: Mapping[str, JsonValue]) -> list[int]:
    units = params["hidden_units"]
    if not isinstance(units, list) or not all(
        isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in units
    ):
        raise ValueError(f"param 'hidden_units' must be a list of positive integers, got {units!r}")
    return [int(u) for u in units if isinstance(u, int)]


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

    hidden = _hidden_units(hp)
    binary = task == "binary"
    with _deterministic_torch(seed, param_int(hp, "num_threads")):
        model = _build(X_train.shape[1], hidden, param_float(hp, "dropout"))
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


def mlp_predictor(
    state_dict: Mapping[str, Any], params: Mapping[str, Any]
) -> Callable[[np.ndarray], np.ndarray]:
    """Rebuild the MLP from its state dict and `params`; binary tasks get probabilities."""
    import torch

    model = _build(
        param_int(params, "n_features"), _hidden_units(params), param_float(params, "dropout")
    )
    model.load_state_dict(dict(state_dict), strict=True)
    model.eval()
    binary = params.get("task") == "binary"

    def predict(X: np.ndarray) -> np.ndarray:
        x = torch.tensor(np.asarray(X, dtype=np.float32))
        out = []
        with torch.no_grad():
            for start in range(0, len(x), _PREDICT_BATCH_ROWS):
                y = model(x[start : start + _PREDICT_BATCH_ROWS])
                out.append(torch.sigmoid(y) if binary else y)
        return torch.cat(out).double().numpy() if out else np.zeros(0)

    return predict
