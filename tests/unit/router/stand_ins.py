"""In-memory stand-ins for the router's own ports (unit tests only)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.common.experiments import ExperimentSpec
from services.common.feature_rows import EVENT_TIME_FIELD, FeatureValues
from services.router.coalescing import Coalescer, VariantResult
from services.router.features import FeatureFrame, ModelContract
from services.router.metrics import RouterMetrics
from services.router.prediction_log import PredictionLogger
from services.router.routing import Router, RoutingConfig
from services.router.spool import Record, Spool
from services.router.validation import NotFound

CONTRACT = ModelContract(
    model="credit",
    dataset="credit",
    numeric=("income", "age"),
    categorical=("region",),
    defaults={},
    version=3,
)


@dataclass
class FakeServing:
    """Scores = income / 1000 + the variant's offset; behaviour per variant is set by tests."""

    offsets: dict[str, float] = field(default_factory=lambda: {"champion": 0.0, "canary": 0.5})
    failing: set[str] = field(default_factory=set)
    stalled: dict[str, asyncio.Event] = field(default_factory=dict)
    calls: list[tuple[str, int]] = field(default_factory=list)

    async def __call__(self, model: str, variant: str, frame: FeatureFrame) -> VariantResult:
        self.calls.append((variant, frame.rows))
        if variant in self.stalled:
            await self.stalled[variant].wait()
        if variant in self.failing:
            raise RuntimeError(f"{variant} is down")
        scores = frame.numeric["income"] / 1000 + self.offsets.get(variant, 0.0)
        return VariantResult(
            np.asarray(scores, dtype=float), 3 if variant == "champion" else 4, variant
        )


@dataclass
class MemorySink:
    delivered: list[Record] = field(default_factory=list)
    down: bool = False

    async def __call__(self, records: Sequence[Record]) -> list[Record]:
        if self.down:
            raise ConnectionError("broker down")
        self.delivered.extend(records)
        return []


@dataclass
class Stores:
    online: dict[str, FeatureValues] = field(default_factory=dict)
    experiment: ExperimentSpec | None = None
    lookups: int = 0

    def contract(self, model: str) -> ModelContract:
        if model != "credit":
            raise NotFound([("model", f"unknown model {model!r}")])
        return CONTRACT

    async def lookup(
        self, contract: ModelContract, keys: Sequence[str], names: Sequence[str]
    ) -> list[FeatureValues | None]:
        """Like the Redis lookup: only the wanted features and the event time."""
        self.lookups += 1
        wanted = {*names, EVENT_TIME_FIELD}
        rows = [self.online.get(k) for k in keys]
        return [None if r is None else {n: v for n, v in r.items() if n in wanted} for r in rows]


def build_router(
    tmp_path: Path, serving: FakeServing, stores: Stores, sink: MemorySink, **config: float
) -> tuple[Router, PredictionLogger, Coalescer]:
    logger = PredictionLogger(sink, Spool(tmp_path / "spool", 1 << 20), retry_s=0.01)
    coalescer = Coalescer(serving, max_in_flight=2, max_rows=512)
    router = Router(
        coalescer,
        stores.contract,
        lambda model: stores.experiment,
        stores.lookup,
        logger,
        RouterMetrics.create(),
        RoutingConfig(**config),  # type: ignore[arg-type]
    )
    return router, logger, coalescer
