"""A restarted trainer remembers: the real service, stopped and started again inside a
cooldown, rebuilds its state from `models.events` and `drift.events` and keeps refusing
to train (and keeps the drift it deferred) instead of training at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from driftloop.v1 import events_pb2 as pb
from services.common.kafka import create_producer
from services.common.settings import Settings
from services.trainer.events import model_event
from tests.integration.harness import ServiceProcess, isolated_settings
from tests.integration.trainer.loop_harness import (
    get_json,
    model_events,
    until_model_events,
    write_spec,
)
from tests.integration.trainer.test_trainer_loop import _topics


def _drift(event_id: str) -> pb.DriftEvent:
    return pb.DriftEvent(
        event_id=event_id,
        model="credit-restart",
        version="1",
        metric="psi",
        feature="debt_to_income",
        value=0.5,
        threshold=0.2,
        severity=pb.SEVERITY_CRITICAL,
        consecutive_windows=3,
        created_at_ms=int(time.time() * 1000),
    )


def _cooldown_skips(events: list[pb.ModelEvent]) -> list[pb.ModelEvent]:
    return [
        e
        for e in events
        if e.type == pb.MODEL_EVENT_TYPE_TRAINING_SKIPPED
        and e.reason.startswith("skipped:cooldown")
    ]


async def _ready(port: int, proc: ServiceProcess, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status, _ = get_json(port, "/readyz")
        except OSError:
            status = 0
        if status == 200:
            return
        assert proc.alive() and time.monotonic() < deadline, proc.log_tail()
        await asyncio.sleep(0.3)


async def test_a_restart_inside_the_cooldown_keeps_the_cooldown_and_the_last_start(
    stack: Settings, tmp_path: Path
) -> None:
    settings, env = isolated_settings(stack, tmp_path, static_ingest=False)
    write_spec(tmp_path, "credit-restart", cooldown_s=600)
    await _topics(settings)
    port = int(env["DRIFTLOOP_TRAINER_HEALTH_PORT"])
    # A training started a minute ago (by an earlier trainer process).
    started_ms = int(time.time() * 1000) - 60_000
    earlier = model_event(
        pb.MODEL_EVENT_TYPE_TRAINING_STARTED,
        "credit-restart",
        reason="new_rows: an earlier run",
        actor="trainer",
        now_ms=started_ms,
    )
    async with create_producer(settings) as producer:
        await producer.send_and_wait(settings.topics.models_events, earlier, key="credit-restart")

    for round_, log in enumerate(("trainer-1.log", "trainer-2.log"), start=1):
        trainer = ServiceProcess(["-m", "services.trainer"], env, tmp_path / log).start()
        try:
            await _ready(port, trainer)
            status, states = get_json(port, "/v1/models")
            assert status == 200, states
            assert states["credit-restart"]["last_started_ms"] == started_ms, states
            if round_ == 2:  # the drift deferred before the restart is deferred again
                deferred = states["credit-restart"]["deferred"]
                assert deferred is not None and deferred["kind"] == "drift", states
                assert "raised since the last training" in deferred["detail"], deferred
            async with create_producer(settings) as producer:
                await producer.send_and_wait(
                    settings.topics.drift_events, _drift(f"d{round_}"), key="credit-restart"
                )
            events = await until_model_events(
                settings, lambda ev, n=round_: len(_cooldown_skips(ev)) >= n, 60, trainer
            )
            skip = _cooldown_skips(events)[-1]
            assert skip.attributes["trigger"] == "drift" and "s left of 600 s" in skip.reason
            status, states = get_json(port, "/v1/models")
            assert states["credit-restart"]["deferred"]["kind"] == "drift", states
        finally:
            trainer.stop()
    started = [
        e for e in await model_events(settings) if e.type == pb.MODEL_EVENT_TYPE_TRAINING_STARTED
    ]
    assert [e.created_at_ms for e in started] == [started_ms], "no restart trained at once"
