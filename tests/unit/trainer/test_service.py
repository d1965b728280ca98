"""The trainer service's loop logic with in-memory stand-ins for its ports (the producer
and the trainer): deferred triggers are re-decided on the tick and when a run ends, and
the state rebuilt at start keeps rows that are already enough to train on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from driftloop.v1 import events_pb2 as pb
from services.common.datasets.schema import load_schemas
from services.common.protogen import REPO_ROOT
from services.common.settings import load_settings
from services.trainer.app import TrainerService
from services.trainer.config import TrainerSettings
from services.trainer.policy import ModelState, Trigger
from services.trainer.specs import load_model_specs
from services.trainer.state import initial_states

SPECS = load_model_specs(
    REPO_ROOT / "deploy" / "models", load_schemas(REPO_ROOT / "deploy" / "datasets")
)
SPEC = SPECS["credit-default"]


@dataclass
class _Producer:
    sent: list[Any] = field(default_factory=list)

    async def send_and_wait(self, topic: str, message: Any, key: str = "") -> None:
        self.sent.append(message)


@dataclass
class _Trainer:
    specs: dict[str, Any]


def _service(state: ModelState) -> tuple[TrainerService, _Producer]:
    producer = _Producer()
    service = TrainerService(
        load_settings(),
        TrainerSettings(),
        _Trainer(SPECS),  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        {SPEC.name: state},
    )
    return service, producer


def test_a_trigger_deferred_by_the_cooldown_is_queued_on_the_first_tick_after_it() -> None:
    cooldown_ms = int(SPEC.policy.cooldown_s * 1000)
    started_ms = 1_000_000
    service, producer = _service(ModelState(model=SPEC.name, last_started_ms=started_ms))
    drift = Trigger(
        kind="drift",
        model=SPEC.name,
        dataset=SPEC.dataset,
        at_ms=started_ms + 1000,
        severity=3,
        metric="psi(x)",
    )

    async def scenario() -> None:
        await service.handle(drift)
        assert producer.sent[-1].reason.startswith("skipped:cooldown")
        await service.retry_deferred(started_ms + cooldown_ms - 1)
        assert service.queue.empty()
        await service.retry_deferred(started_ms + cooldown_ms)
        request = service.queue.get_nowait()
        assert (request.model, request.reason) == (SPEC.name, "drift")
        assert request.detail.startswith("deferred, now retried")
        state = service.states[SPEC.name]
        assert state.in_flight and state.deferred is None
        assert len(producer.sent) == 1  # the retry trained; nothing more was skipped

    asyncio.run(scenario())


@dataclass(frozen=True)
class _Manifest:
    version_id: str
    created_at_ms: int
    row_count: int
    status: str = "ok"


def test_rows_sealed_since_the_last_start_are_deferred_at_start_up() -> None:
    enough = SPEC.policy.min_new_rows
    manifests = {
        SPEC.dataset: [
            _Manifest("old", 5, 99_999),  # before the last start: trained on already
            _Manifest("a", 20, enough // 2),
            _Manifest("b", 30, enough - enough // 2),
            _Manifest("bad", 40, 10_000, status="suspect"),
        ]
    }
    [state] = initial_states([SPEC], {SPEC.name: 10}, manifests).values()  # type: ignore[arg-type]
    assert state.rows_since_last == enough and state.versions_since_last == ("a", "b")
    assert state.deferred is not None and state.deferred.version_id == "b"
    fewer = {SPEC.dataset: manifests[SPEC.dataset][:2]}
    [state] = initial_states([SPEC], {SPEC.name: 10}, fewer).values()  # type: ignore[arg-type]
    assert state.deferred is None


def test_drift_raised_since_the_last_start_is_deferred_at_start_up_over_rows() -> None:
    manifests = {SPEC.dataset: [_Manifest("a", 20, SPEC.policy.min_new_rows)]}
    drift = pb.DriftEvent(
        model=SPEC.name, metric="psi", feature="f0", value=0.4, threshold=0.1,
        severity=pb.SEVERITY_CRITICAL, consecutive_windows=2, created_at_ms=30,
    )  # fmt: skip
    states = initial_states([SPEC], {SPEC.name: 10}, manifests, {SPEC.name: drift})  # type: ignore[arg-type]
    [state] = states.values()
    assert state.deferred is not None and state.deferred.kind == "drift"
    assert state.deferred.metric == "psi(f0)" and state.deferred.at_ms == 30
    assert state.rows_since_last == SPEC.policy.min_new_rows  # the rows are still counted
