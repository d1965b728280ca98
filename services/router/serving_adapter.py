"""The serving port over `services.serving.client.ServingClient` (the one place the
router imports the serving service: its client and errors)."""

from __future__ import annotations

from services.common.settings import Settings
from services.router.serving_port import (
    Columns,
    FeaturesRejected,
    ScoredBatch,
    VariantNotServed,
    VariantUnavailable,
)
from services.serving.client import ServingClient
from services.serving.errors import InvalidFeatures, ModelNotServed, ServingUnavailable

__all__ = ["ServingAdapter"]


class ServingAdapter:
    def __init__(self, client: ServingClient) -> None:
        self._client = client

    @classmethod
    async def connect(cls, settings: Settings) -> ServingAdapter:
        return cls(await ServingClient.connect(settings))

    async def predict(self, model: str, variant: str, columns: Columns) -> ScoredBatch:
        try:
            return await self._client.predict(model, variant, columns)
        except ModelNotServed as exc:
            raise VariantNotServed(model, variant) from exc
        except InvalidFeatures as exc:
            raise FeaturesRejected(list(exc.details)) from exc
        except ServingUnavailable as exc:
            raise VariantUnavailable(str(exc)) from exc

    def variants(self, model: str) -> list[str]:
        return self._client.variants(model)

    async def close(self) -> None:
        await self._client.close()
