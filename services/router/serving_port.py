"""The router's port to the model servers: what it needs from `services.serving`'s
client, as a Protocol (tests under tests/unit use an in-memory stand-in) and the errors
it understands. `serving_adapter.py` is the one module that imports `services.serving`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

__all__ = [
    "Columns",
    "FeaturesRejected",
    "ScoredBatch",
    "ServingPort",
    "VariantNotServed",
    "VariantUnavailable",
]

Columns = Mapping[str, "Sequence[float] | Sequence[str | None] | np.ndarray"]


class ScoredBatch(Protocol):
    @property
    def scores(self) -> np.ndarray: ...
    @property
    def model(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def variant(self) -> str: ...


class VariantUnavailable(RuntimeError):
    """The variant's replicas did not answer (down, overloaded, timed out)."""


class VariantNotServed(LookupError):
    def __init__(self, model: str, variant: str) -> None:
        super().__init__(f"model {model!r} has no served variant {variant!r}")
        self.model, self.variant = model, variant


class FeaturesRejected(ValueError):
    def __init__(self, details: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {p}" for f, p in details))
        self.details = list(details)


class ServingPort(Protocol):
    async def predict(self, model: str, variant: str, columns: Columns) -> ScoredBatch:
        """Scores one per row; raises VariantUnavailable, VariantNotServed or
        FeaturesRejected."""
        ...

    def variants(self, model: str) -> list[str]: ...

    async def close(self) -> None: ...
