"""Hyper-parameters as JSON values: a kind's defaults with overrides, read back typed.

Both model kinds (`models` for XGBoost, `mlp` for torch) use these; keeping them here
lets `models` import `mlp` without `mlp` importing `models` back.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import JsonValue

__all__ = ["param_float", "param_int", "resolve_params"]


def resolve_params(
    defaults: Mapping[str, JsonValue], params: Mapping[str, JsonValue], kind: str
) -> dict[str, JsonValue]:
    """`defaults` with `params` applied; a key the kind does not know is a mistake."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {kind} params {unknown}; known: {sorted(defaults)}")
    return {**defaults, **params}


def param_int(params: Mapping[str, JsonValue], key: str) -> int:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"param {key!r} must be an integer, got {value!r}")
    return int(value)


def param_float(params: Mapping[str, JsonValue], key: str) -> float:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"param {key!r} must be a number, got {value!r}")
    return float(value)
