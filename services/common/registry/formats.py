"""Saving and loading model artifacts in safe formats only — nothing here unpickles.

XGBoost boosters go through their own UBJ/JSON serialisation; torch models are stored
as state dicts, read back with `torch.load(weights_only=True)` (a restricted unpickler
that only rebuilds tensors and plain containers) or as safetensors. torch and xgboost are
imported inside the functions: they take seconds to import and most callers need one.
"""

from __future__ import annotations

import io
import platform
from collections.abc import Mapping
from importlib import metadata
from typing import Any, cast

from services.common.registry.manifest import FORMAT_FRAMEWORK, ArtifactFormat

__all__ = [
    "FILE_EXTENSIONS",
    "ArtifactFormatError",
    "UnsupportedFormatError",
    "check_format",
    "library_versions",
    "load_artifact",
    "save_torch",
    "save_xgboost",
]

FILE_EXTENSIONS: dict[str, str] = {
    "xgboost-ubj": "ubj",
    "xgboost-json": "json",
    "torch-state-dict": "pt",
    "safetensors": "safetensors",
}
_LIBRARIES = {"xgboost": ("xgboost", "numpy"), "torch": ("torch", "safetensors", "numpy")}


class UnsupportedFormatError(ValueError):
    """A format name the registry does not know (or one that is not safe to load)."""


class ArtifactFormatError(ValueError):
    """Bytes that do not parse as the declared format."""


def check_format(fmt: str) -> ArtifactFormat:
    if fmt not in FORMAT_FRAMEWORK:
        raise UnsupportedFormatError(
            f"unsupported artifact format {fmt!r}; supported: {sorted(FORMAT_FRAMEWORK)} "
            "(pickle-based formats are refused on purpose)"
        )
    return cast(ArtifactFormat, fmt)


def library_versions(framework: str) -> dict[str, str]:
    """Versions of Python and of the libraries an artifact of `framework` depends on."""
    versions = {"python": platform.python_version()}
    for dist in _LIBRARIES.get(framework, ()):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def save_xgboost(booster: Any, fmt: str = "xgboost-ubj") -> bytes:
    import xgboost as xgb

    if FORMAT_FRAMEWORK.get(check_format(fmt)) != "xgboost":
        raise UnsupportedFormatError(f"{fmt!r} is not an XGBoost format")
    if isinstance(booster, xgb.XGBModel):  # sklearn wrapper: store the booster itself
        booster = booster.get_booster()
    if not isinstance(booster, xgb.Booster):
        raise TypeError(f"expected an xgboost.Booster, got {type(booster).__name__}")
    return bytes(booster.save_raw(raw_format="ubj" if fmt == "xgboost-ubj" else "json"))


def save_torch(state_dict: Any, fmt: str = "torch-state-dict") -> bytes:
    """Serialise a state dict (or a module's) of tensors; nothing but tensors is kept."""
    import torch

    if FORMAT_FRAMEWORK.get(check_format(fmt)) != "torch":
        raise UnsupportedFormatError(f"{fmt!r} is not a torch format")
    if isinstance(state_dict, torch.nn.Module):
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise TypeError("expected a state dict: a mapping of str to torch.Tensor")
    # Detached CPU copies: safetensors refuses tensors that share storage, and a saved
    # state dict must not drag autograd history or device placement along.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    if fmt == "safetensors":
        from safetensors.torch import save

        return bytes(save(tensors))
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def load_artifact(data: bytes, fmt: str) -> Any:
    """Parse verified artifact bytes: a Booster, or a `dict[str, Tensor]` state dict."""
    check_format(fmt)
    try:
        if fmt in ("xgboost-ubj", "xgboost-json"):
            return _load_xgboost(data)
        if fmt == "safetensors":
            from safetensors.torch import load

            return dict(load(data))
        return _load_torch_state_dict(data)
    except ArtifactFormatError:
        raise
    except Exception as exc:  # each library has its own error types; name the format
        raise ArtifactFormatError(
            f"artifact of {len(data)} bytes does not parse as {fmt}: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from exc


def _load_xgboost(data: bytes) -> Any:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    return booster


def _load_torch_state_dict(data: bytes) -> dict[str, Any]:
    import torch

    loaded = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise ArtifactFormatError(
            f"torch artifact holds a {type(loaded).__name__}, not a state dict of tensors"
        )
    return dict(loaded)
