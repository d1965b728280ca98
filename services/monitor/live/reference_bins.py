"""The reference bins of a model version: the numeric features' training quantile edges
from its registered manifest, so PSI is computed on the bins the model was trained on.

A version that is not in the registry (predictions logged by a model registered
elsewhere, or a registry that is unreachable) falls back to the deciles of the version's
own reference windows (drift.py learns them); the miss is cached for `retry_s` so the
registry is not asked every tick. Manifests are immutable, so a hit is cached for good.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from services.common.logging import get_logger
from services.common.registry import ModelManifest

__all__ = ["ManifestSource", "ReferenceBins"]

_log = get_logger(__name__)


class ManifestSource(Protocol):
    def manifest(self, name: str, version_or_alias: int | str = "latest") -> ModelManifest: ...


class ReferenceBins:
    def __init__(
        self,
        registry: ManifestSource | None,
        retry_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._retry_s = retry_s
        self._clock = clock
        self._hits: dict[tuple[str, str], dict[str, list[float]]] = {}
        self._misses: dict[tuple[str, str], float] = {}

    def __call__(self, model: str, version: str) -> Mapping[str, Sequence[float]]:
        key = (model, version)
        if key in self._hits:
            return self._hits[key]
        if self._registry is None or not version.isdigit():
            return {}
        missed = self._misses.get(key)
        if missed is not None and self._clock() - missed < self._retry_s:
            return {}
        try:
            manifest = self._registry.manifest(model, int(version))
        except Exception as exc:  # not registered here, or the store is unreachable
            self._misses[key] = self._clock()
            _log.info("reference_bins.unavailable", model=model, version=version, error=str(exc))
            return {}
        bins = {
            name: list(profile.bin_edges)
            for name, profile in manifest.reference_profile.numeric.items()
            if len(profile.bin_edges) >= 2
        }
        self._hits[key] = bins
        return bins
