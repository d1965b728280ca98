"""The running experiments as this router replica sees them: loaded from the Redis cache
(rebuilt from the registry's store when the cache is gone, e.g. after FLUSHALL), updated
at once from the pub/sub channel on every change, and re-read every `refresh_s` in case
a message was missed (a dropped subscription, a flush). Replicas agree within a pub/sub
round trip; the periodic re-read bounds the worst case.
"""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis

from services.common.experiments import CHANNEL, ExperimentSpec, ExperimentStore, parse_running
from services.common.logging import get_logger

__all__ = ["ExperimentsView"]

_log = get_logger(__name__)


class ExperimentsView:
    def __init__(
        self, store: ExperimentStore, pubsub_redis: aioredis.Redis, refresh_s: float = 5.0
    ) -> None:
        self._store = store
        self._redis = pubsub_redis
        self._refresh_s = refresh_s
        self._by_model: dict[str, ExperimentSpec] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.updates = 0

    def for_model(self, model: str) -> ExperimentSpec | None:
        return self._by_model.get(model)

    def _set(self, running: list[ExperimentSpec]) -> None:
        by_model = {s.model: s for s in running}
        if by_model != self._by_model:
            _log.info(
                "router.experiments",
                running={m: s.name for m, s in sorted(by_model.items())},
            )
        self._by_model = by_model
        self.updates += 1

    async def reload(self) -> None:
        self._set(await asyncio.to_thread(self._store.load_running))

    async def start(self) -> None:
        await self.reload()
        self._tasks = [
            asyncio.create_task(self._listen(), name="experiments-listen"),
            asyncio.create_task(self._poll(), name="experiments-poll"),
        ]

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(CHANNEL)
                await self.reload()  # whatever changed while not subscribed
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._set(parse_running(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning(
                    "router.experiments_listen_failed", error=f"{type(exc).__name__}: {exc}"
                )
                await asyncio.sleep(1.0)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.reload()
            except Exception as exc:  # Redis or the store down: keep the last known
                _log.warning(
                    "router.experiments_reload_failed", error=f"{type(exc).__name__}: {exc}"
                )

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
