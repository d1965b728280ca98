"""Wiring of the trainer: triggers from Kafka → policy → one training at a time on Ray.

The consumer group reads `datasets.versions`, `drift.events` and `experiments.events`.
Every trigger is decided by the pure policy; a decision not to train is published as a
`TRAINING_SKIPPED` ModelEvent with its reason, a decision to train queues a run. Runs
execute one at a time in a worker thread (the loop keeps consuming meanwhile, so triggers
that arrive mid-run are answered "skipped:in_flight"); across replicas the Redis lease
makes sure only one trainer trains a model at once. Offsets are committed after each
batch's decisions are made and published.

A trigger held back by a run in flight or by the cooldown stays deferred in the model's
state and is re-decided (`policy.due`) when the run ends and on every tick, so rows or a
drift event that arrived at the wrong moment are trained on as soon as they may be. At
start the state is rebuilt from `models.events`, `drift.events` and the store
(services/trainer/state.py), so a restart neither trains at once nor loses what it deferred.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

from driftloop.v1 import events_pb2 as pb
from services.common.artifacts import ArtifactStore
from services.common.datasets.schema import load_schemas
from services.common.datasets.store import VersionStore
from services.common.health import health_app
from services.common.http_server import embedded_server
from services.common.kafka import (
    ProtobufConsumer,
    ProtobufProducer,
    check_kafka,
    create_consumer,
    create_producer,
)
from services.common.kafka_stuck import RedisStuckLedger, StuckPartition
from services.common.logging import configure_logging, get_logger
from services.common.redis_client import check_redis, sync_redis
from services.common.registry import ModelRegistry
from services.common.settings import Settings, load_settings
from services.trainer.config import TrainerSettings
from services.trainer.events import model_event
from services.trainer.lock import TrainingLock
from services.trainer.policy import (
    Decision,
    ModelState,
    Trigger,
    decide,
    due,
    finished,
    schedule_due,
    started,
)
from services.trainer.specs import ModelSpec, load_model_specs
from services.trainer.state import drift_since, initial_states, last_training_starts
from services.trainer.training import Trainer, TrainRequest
from services.trainer.triggers import triggers_for

__all__ = ["build_trainer", "main", "run"]

_log = get_logger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


def build_trainer(
    settings: Settings, trainer: TrainerSettings, emit: Any, **options: Any
) -> Trainer:
    schemas = load_schemas(trainer.schemas_dir)
    specs = load_model_specs(trainer.models_dir, schemas)
    store = ArtifactStore.from_settings(settings)
    client = sync_redis(settings)
    return Trainer(
        store=store,
        registry=ModelRegistry(store, client),
        lock=TrainingLock(client, trainer.lock_ttl_s),
        schemas=schemas,
        specs=specs,
        emit=emit,
        renew_every_s=trainer.lock_renew_s,
        ray_address=trainer.ray_address,
        ray_num_cpus=trainer.ray_num_cpus,
        **options,
    )


def threadsafe_emitter(
    producer: ProtobufProducer, topic: str, loop: asyncio.AbstractEventLoop
) -> Any:
    """A sync `emit` for code running in worker threads: waits for the broker's ack."""

    def emit(event: pb.ModelEvent) -> None:
        future = asyncio.run_coroutine_threadsafe(
            producer.send_and_wait(topic, event, key=event.model), loop
        )
        future.result(timeout=60)

    return emit


class TrainerService:
    def __init__(
        self,
        settings: Settings,
        config: TrainerSettings,
        trainer: Trainer,
        producer: ProtobufProducer,
        states: dict[str, ModelState],
    ) -> None:
        self.settings, self.config, self.trainer = settings, config, trainer
        self.producer, self.states = producer, states
        self.queue: asyncio.Queue[TrainRequest] = asyncio.Queue()
        self.ray_ready = False
        self.consuming = False
        self.stuck: Callable[[], list[StuckPartition]] = list

    def readiness(self) -> tuple[bool, str]:
        if stuck := self.stuck():  # a trigger topic's partition cannot be read
            return False, "; ".join(s.describe() for s in stuck)
        if not self.ray_ready:
            return False, "starting Ray"
        if not self.consuming:
            return False, "joining the consumer group"
        return True, f"consuming; {self.queue.qsize()} training(s) queued"

    def model_states(self) -> dict[str, Any]:
        return {name: state.model_dump(mode="json") for name, state in self.states.items()}

    @property
    def specs(self) -> dict[str, ModelSpec]:
        return self.trainer.specs

    async def handle(self, trigger: Trigger) -> None:
        spec = self.specs[trigger.model]
        await self._act(trigger, decide(spec.policy, self.states[trigger.model], trigger))

    async def retry_deferred(self, now_ms: int | None = None) -> None:
        """Re-decide every model's deferred trigger that nothing holds back any more."""
        now = _now_ms() if now_ms is None else now_ms
        for spec in self.specs.values():
            state = self.states[spec.name]
            decision = due(spec.policy, state, now)
            if decision is not None and state.deferred is not None:
                await self._act(state.deferred, decision)

    async def _act(self, trigger: Trigger, decision: Decision) -> None:
        self.states[trigger.model] = decision.state
        _log.info(
            "trigger.decided",
            model=trigger.model,
            kind=trigger.kind,
            train=decision.train,
            reason=decision.reason,
            detail=decision.detail,
        )
        if decision.train:
            self.states[trigger.model] = started(decision.state, _now_ms())
            await self.queue.put(
                TrainRequest(
                    model=trigger.model,
                    reason=decision.reason,
                    detail=decision.detail,
                    actor=self.config.actor,
                )
            )
            return
        event = model_event(
            pb.MODEL_EVENT_TYPE_TRAINING_SKIPPED,
            trigger.model,
            reason=f"{decision.reason}: {decision.detail}",
            actor=self.config.actor,
            attributes={
                "trigger": trigger.kind,
                "dataset": trigger.dataset,
                **({"version_id": trigger.version_id} if trigger.version_id else {}),
            },
        )
        await self.producer.send_and_wait(
            self.settings.topics.models_events, event, key=trigger.model
        )

    async def work(self) -> None:
        """Run queued trainings one at a time, in a thread (training is CPU-bound)."""
        while True:
            request = await self.queue.get()
            try:
                result = await asyncio.to_thread(self.trainer.run, request)
                _log.info(
                    "training.done",
                    model=request.model,
                    status=result.status,
                    reason=result.reason,
                    version=result.version,
                    alias=result.alias,
                )
            except Exception:
                _log.exception("training.crashed", model=request.model)
            finally:
                self.states[request.model] = finished(self.states[request.model])
                self.queue.task_done()
            try:
                await self.retry_deferred()
            except Exception:  # the next tick retries; the worker must keep running
                _log.exception("trigger.retry_failed", model=request.model)

    async def tick(self) -> None:
        now = _now_ms()
        await self.retry_deferred(now)
        for spec in self.specs.values():
            if schedule_due(spec.policy, self.states[spec.name], now):
                await self.handle(
                    Trigger(kind="schedule", model=spec.name, dataset=spec.dataset, at_ms=now)
                )


async def run(settings: Settings, config: TrainerSettings) -> None:
    """Run until SIGTERM/SIGINT; fails fast when Kafka, Redis or a spec is not right."""
    from services.common.ray_runtime import ensure_ray, shutdown_ray

    load_model_specs(config.models_dir, load_schemas(config.schemas_dir))  # bad input first
    await check_kafka(settings)
    await asyncio.to_thread(check_redis, settings)
    loop = asyncio.get_running_loop()
    producer = create_producer(settings, linger_ms=5)
    topics = settings.topics
    consumer = create_consumer(
        settings,
        topics.datasets_versions,
        topics.drift_events,
        topics.experiments_events,
        group_id=config.group_id,
        stuck_ledger=RedisStuckLedger(sync_redis(settings)),
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with producer:
        trainer = build_trainer(
            settings, config, threadsafe_emitter(producer, topics.models_events, loop)
        )
        starts = await last_training_starts(settings, trainer.specs)
        drift = await drift_since(settings, trainer.specs, starts)
        storage = VersionStore(trainer.store)
        manifests = {
            d: await asyncio.to_thread(storage.manifests, d)
            for d in {s.dataset for s in trainer.specs.values()}
        }
        service = TrainerService(
            settings,
            config,
            trainer,
            producer,
            initial_states(trainer.specs.values(), starts, manifests, drift),
        )
        service.stuck = lambda: consumer.fetcher.stuck
        server = embedded_server(
            health_app("trainer", service.readiness, "/v1/models", service.model_states),
            config.health_host,
            config.health_port,
        )
        serving = asyncio.create_task(server.serve())
        # Ray last: from here on, leave only through `finally`, which shuts it down.
        await asyncio.to_thread(ensure_ray, config.ray_address, config.ray_num_cpus)
        service.ray_ready = True
        worker = asyncio.create_task(service.work())
        try:
            _log.info(
                "trainer.started",
                models=sorted(trainer.specs),
                group_id=config.group_id,
                last_started=starts,
            )
            await _consume(service, consumer, stop)
        finally:
            server.should_exit = True
            worker.cancel()
            await asyncio.gather(worker, serving, return_exceptions=True)
            await asyncio.to_thread(shutdown_ray)
    _log.info("trainer.stopped")


async def _consume(
    service: TrainerService, consumer: ProtobufConsumer, stop: asyncio.Event
) -> None:
    next_tick = time.monotonic()
    specs = service.specs.values()
    async with consumer:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=service.config.poll_timeout_ms)
            service.consuming = True
            for failure in batch.failures:
                _log.warning(
                    "trigger.undecodable",
                    topic=failure.topic,
                    partition=failure.partition,
                    offset=failure.offset,
                    error=failure.error,
                )
            for env in batch.envelopes:
                for trigger in triggers_for(env.message, specs, _now_ms()):
                    await service.handle(trigger)
            await consumer.commit(batch)
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + service.config.tick_s
                await service.tick()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.trainer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="health: http://127.0.0.1:8082/healthz, /readyz and /v1/models (each model's "
        "policy state); DRIFTLOOP_TRAINER_HEALTH_HOST / _PORT move them. Settings: "
        "DRIFTLOOP_TRAINER_* (services/trainer/config.py).",
    )
    parser.parse_args(argv)
    name = os.environ.get("DRIFTLOOP_SERVICE_NAME", "driftloop-trainer")
    settings = load_settings(service_name=name)
    configure_logging(settings)
    # A known failure (no broker, wrong password, untrusted CA, no Redis, a bad setting)
    # propagates to services.common.failures.run_main in __main__: one line naming the
    # cause, exit 1 for an unavailable dependency and 2 for bad input.
    asyncio.run(run(settings, TrainerSettings()))
    return 0
