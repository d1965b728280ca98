"""Model contracts from the registry: the champion's manifest names the features (and
their kinds), the dataset whose online rows fill missing ones, and optional defaults
(`params.feature_defaults`). Cached per model for `ttl_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from services.common.feature_rows import EVENT_TIME_FIELD, FeatureKind, FeatureValues
from services.common.feature_store import OnlineFeatureReader
from services.common.registry import (
    InvalidNameError,
    ModelManifest,
    ModelNotFoundError,
    ModelRegistry,
)
from services.router.features import Lookup, ModelContract
from services.router.validation import NotFound

__all__ = ["ContractCache", "contract_from_manifest", "online_lookup"]


def contract_from_manifest(manifest: ModelManifest) -> ModelContract:
    params = manifest.params or {}
    raw_defaults = params.get("feature_defaults")
    defaults = raw_defaults if isinstance(raw_defaults, dict) else {}
    return ModelContract(
        model=manifest.name,
        dataset=str(params.get("dataset") or manifest.name),
        numeric=tuple(f.name for f in manifest.features if f.dtype == "float"),
        categorical=tuple(f.name for f in manifest.features if f.dtype == "category"),
        defaults={k: v for k, v in defaults.items() if isinstance(v, (int, float, str))},
        version=manifest.version,
    )


class ContractCache:
    def __init__(
        self,
        registry: ModelRegistry,
        ttl_s: float = 5.0,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._ttl_s = ttl_s
        self._clock_s = clock_s
        self._cache: dict[str, tuple[float, ModelContract]] = {}

    def __call__(self, model: str) -> ModelContract:
        hit = self._cache.get(model)
        now = self._clock_s()
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        try:
            try:
                manifest = self._registry.manifest(model, "champion")
            except ModelNotFoundError:
                manifest = self._registry.manifest(model, "latest")
        except (ModelNotFoundError, InvalidNameError) as exc:
            raise NotFound([("model", f"unknown model {model!r}: {exc}")]) from None
        contract = contract_from_manifest(manifest)
        self._cache[model] = (now, contract)
        return contract


def online_lookup(store: OnlineFeatureReader) -> Lookup:
    async def lookup(
        contract: ModelContract, keys: Sequence[str], names: Sequence[str]
    ) -> list[FeatureValues | None]:
        """Only the features the requests lack (and the row's event time) are read."""
        numeric = set(contract.numeric)
        kinds: dict[str, FeatureKind] = {
            n: "numeric" if n in numeric else "categorical" for n in names
        }
        kinds[EVENT_TIME_FIELD] = "numeric"
        return await store.get_fields(contract.dataset, keys, kinds)

    return lookup
