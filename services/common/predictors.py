"""A predict function for a registered model version, for every consumer alike.

The trainer scores champions in its gate and serving scores requests: both rebuild the
model the same way from the registry's verified artifact and the manifest's `params`,
so a served score is the score the gate measured. The torch MLP's network is defined
here for that reason (the trainer fits it, serving only runs it). torch and xgboost are
imported inside the functions (slow imports; a process needs at most one of them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from services.common.registry import LoadedModel

__all__ = [
    "Predictor",
    "build_mlp_network",
    "mlp_hidden_units",
    "predictor_for",
    "predictor_from_loaded",
]

Predictor = Callable[[np.ndarray], np.ndarray]
_MLP_PREDICT_BATCH_ROWS = 65_536


def _int_param(params: Mapping[str, Any], key: str) -> int:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"param {key!r} must be an integer, got {value!r}")
    return int(value)


def _float_param(params: Mapping[str, Any], key: str) -> float:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"param {key!r} must be a number, got {value!r}")
    return float(value)


def mlp_hidden_units(params: Mapping[str, Any]) -> list[int]:
    units = params["hidden_units"]
    if not isinstance(units, list) or not all(
        isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in units
    ):
        raise ValueError(f"param 'hidden_units' must be a list of positive integers, got {units!r}")
    return [int(u) for u in units if isinstance(u, int)]


def build_mlp_network(n_features: int, hidden_units: list[int], dropout: float) -> Any:
    """The MLP network: standardisation and missing-value indicators as buffers, so its
    state dict alone (loaded with `weights_only=True`) reproduces it. An `nn.Module`
    subclass defined inside the function, so importing this module does not import torch.
    """
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


def _mlp_predictor(state_dict: Mapping[str, Any], params: Mapping[str, Any]) -> Predictor:
    """Rebuild the MLP from its state dict and `params`; binary tasks get probabilities."""
    import torch

    model = build_mlp_network(
        _int_param(params, "n_features"), mlp_hidden_units(params), _float_param(params, "dropout")
    )
    model.load_state_dict(dict(state_dict), strict=True)
    model.eval()
    binary = params.get("task") == "binary"

    def predict(X: np.ndarray) -> np.ndarray:
        x = torch.tensor(np.asarray(X, dtype=np.float32))
        out = []
        with torch.no_grad():
            for start in range(0, len(x), _MLP_PREDICT_BATCH_ROWS):
                y = model(x[start : start + _MLP_PREDICT_BATCH_ROWS])
                out.append(torch.sigmoid(y) if binary else y)
        return torch.cat(out).double().numpy() if out else np.zeros(0)

    return predict


def _xgboost_predictor(booster: Any, params: Mapping[str, Any]) -> Predictor:
    import xgboost as xgb

    nthread = int(params.get("nthread", 1))
    booster.set_param({"nthread": nthread})

    def predict(X: np.ndarray) -> np.ndarray:
        matrix = xgb.DMatrix(np.asarray(X, dtype=np.float32), missing=np.nan, nthread=nthread)
        return np.asarray(booster.predict(matrix), dtype=np.float64)

    return predict


def predictor_for(framework_or_kind: str, model: Any, params: Mapping[str, Any]) -> Predictor:
    """Binary: probability of class 1; regression: the predicted value (float64)."""
    if framework_or_kind == "xgboost":
        return _xgboost_predictor(model, params)
    if framework_or_kind in ("mlp", "torch"):
        return _mlp_predictor(model, params)
    raise ValueError(f"no predictor for model kind/framework {framework_or_kind!r}")


def predictor_from_loaded(loaded: LoadedModel) -> Predictor:
    """A predict function for a registry model (champion scoring, serving)."""
    manifest = loaded.manifest
    return predictor_for(manifest.framework, loaded.model, manifest.params)
