"""The model loop against the real parts: ingest seals versions from Kafka, the trainer
service trains on Ray, gates, registers and announces on `models.events`; a drift event
retrains a challenger gated against the champion; two trainers never train one model at
once; a SIGKILL mid-training leaves no alias pointing at a missing artifact."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from driftloop.v1 import events_pb2 as pb
from services.common.artifacts import ArtifactStore
from services.common.datasets.schema import load_schemas
from services.common.datasets.store import VersionStore
from services.common.kafka import create_producer, ensure_topics
from services.common.redis_client import sync_redis
from services.common.registry import ModelRegistry
from services.common.settings import Settings
from services.trainer.lock import TrainingLock
from tests.integration.harness import REPO_ROOT, ServiceProcess, isolated_settings
from tests.integration.ingest.events_gen import publish
from tests.integration.trainer.loop_harness import (
    get_json,
    labelled_stream,
    model_events,
    until_model_events,
    write_spec,
)

T = pb.ModelEventType
INGEST_ENV = {"DRIFTLOOP_INGEST_SEAL_MAX_ROWS": "2000", "DRIFTLOOP_INGEST_SEAL_MAX_AGE_MS": "1500"}
SCHEMA = load_schemas(REPO_ROOT / "deploy" / "datasets")["credit"]


async def _topics(settings: Settings) -> None:
    t = settings.topics
    await ensure_topics(settings, [t.data_events], partitions=3)
    await ensure_topics(
        settings,
        [
            t.data_rejected,
            t.datasets_versions,
            t.drift_events,
            t.experiments_events,
            t.models_events,
        ],
        partitions=1,
    )


def _of(events: list[pb.ModelEvent], kind: int) -> list[pb.ModelEvent]:
    return [e for e in events if e.type == kind]


async def _seal(settings: Settings, env: dict[str, str], tmp: Path, n: int, seed: int) -> None:
    """Run the real ingest service until `n` labelled events are sealed, then stop it."""
    ingest = ServiceProcess(
        ["-m", "services.ingest"], {**env, **INGEST_ENV}, tmp / "ingest.log"
    ).start()
    storage = VersionStore(ArtifactStore(settings.artifact_root))
    try:
        await publish(settings, settings.topics.data_events, labelled_stream(n, seed=seed))
        deadline = time.monotonic() + 120
        while sum(m.row_count for m in storage.manifests("credit")) < n:
            assert ingest.alive() and time.monotonic() < deadline, ingest.log_tail()
            await asyncio.sleep(0.5)
    finally:
        ingest.stop()


async def test_ingest_then_trainer_registers_a_champion_and_a_drift_retrain_is_gated(
    stack: Settings, tmp_path: Path
) -> None:
    settings, env = isolated_settings(stack, tmp_path, static_ingest=False)
    write_spec(tmp_path, "credit-loop")
    await _topics(settings)
    ingest = ServiceProcess(
        ["-m", "services.ingest"], {**env, **INGEST_ENV}, tmp_path / "ingest.log"
    ).start()
    trainer = ServiceProcess(["-m", "services.trainer"], env, tmp_path / "trainer.log").start()
    try:
        # 2,000 rows are too few (min_new_rows 3,000); 3,000 more train.
        await publish(settings, settings.topics.data_events, labelled_stream(2000, seed=1))
        await until_model_events(
            settings,
            lambda ev: any(
                e.reason.startswith("skipped:not_enough_rows")
                for e in _of(ev, pb.MODEL_EVENT_TYPE_TRAINING_SKIPPED)
            ),
            120,
            ingest,
            trainer,
        )
        await publish(settings, settings.topics.data_events, labelled_stream(3000, seed=11))
        events = await until_model_events(
            settings,
            lambda ev: any(
                e.alias == "champion" for e in _of(ev, T.Value("MODEL_EVENT_TYPE_ALIAS_CHANGED"))
            ),
            300,
            ingest,
            trainer,
        )
        port = int(env["DRIFTLOOP_TRAINER_HEALTH_PORT"])
        assert get_json(port, "/healthz") == (200, {"status": "ok"})
        status, ready = get_json(port, "/readyz")
        assert status == 200 and ready["ready"], ready
        status, states = get_json(port, "/v1/models")
        assert status == 200 and states["credit-loop"]["last_started_ms"] is not None
        skipped = _of(events, pb.MODEL_EVENT_TYPE_TRAINING_SKIPPED)
        assert any(e.reason.startswith("skipped:not_enough_rows") for e in skipped), skipped
        [started] = _of(events, pb.MODEL_EVENT_TYPE_TRAINING_STARTED)
        assert started.attributes["trigger"] == "new_rows"
        [registered] = _of(events, pb.MODEL_EVENT_TYPE_REGISTERED)
        [passed] = _of(events, pb.MODEL_EVENT_TYPE_GATE_PASSED)
        assert registered.version == passed.version == "1"
        report = json.loads(passed.report_json)
        assert report["passed"] and not report["has_champion"]

        registry = ModelRegistry(ArtifactStore(settings.artifact_root))
        assert registry.aliases("credit-loop") == {"champion": 1}
        manifest = registry.manifest("credit-loop", "champion")
        sealed = {m.version_id for m in VersionStore(registry.store).manifests("credit")}
        assert manifest.training_datasets and set(manifest.training_datasets) <= sealed
        assert manifest.code_version and "xgboost" in manifest.library_versions
        assert manifest.gate_report is not None and manifest.gate_report["passed"]
        profile = manifest.reference_profile
        assert set(profile.numeric) == set(SCHEMA.numeric)
        assert set(profile.categorical) == set(SCHEMA.categorical)
        assert sum(profile.prediction.counts) == profile.row_count > 0
        assert profile.base_rate is not None and 0.05 < profile.base_rate < 0.95
        assert registry.load("credit-loop", "champion").model is not None  # sha256 verified

        # The monitor reports drift: the trainer retrains and gates against the champion.
        drift = pb.DriftEvent(
            event_id="d1",
            model="credit-loop",
            version="1",
            metric="psi",
            feature="debt_to_income",
            value=0.41,
            threshold=0.2,
            severity=pb.SEVERITY_CRITICAL,
            consecutive_windows=3,
            created_at_ms=int(time.time() * 1000),
        )
        async with create_producer(settings) as producer:
            await producer.send_and_wait(settings.topics.drift_events, drift, key="credit-loop")
        gate_kinds = (pb.MODEL_EVENT_TYPE_GATE_PASSED, pb.MODEL_EVENT_TYPE_GATE_FAILED)
        events = await until_model_events(
            settings,
            lambda ev: any(e.type in gate_kinds and e.version == "2" for e in ev),
            240,
            ingest,
            trainer,
        )
        retrain = [e for e in _of(events, pb.MODEL_EVENT_TYPE_TRAINING_STARTED)][-1]
        assert retrain.attributes["trigger"] == "drift"
        assert "psi(debt_to_income)" in retrain.reason
        [gate] = [e for e in events if e.type in gate_kinds and e.version == "2"]
        report = json.loads(gate.report_json)
        assert report["has_champion"] and report["champion"] and gate.previous_version == "1"
        assert report["difference_ci"] is not None
        aliases = registry.aliases("credit-loop")
        assert aliases["champion"] == 1, "a challenger never replaces the champion by itself"
        assert aliases.get("challenger") == (2 if report["passed"] else None)

        # The README's drift example: shifted data is sealed ok with its shift recorded
        # (the world moved; the feed is not broken), and its rows trigger a retrain.
        storage = VersionStore(registry.store)
        before = {m.version_id for m in storage.manifests("credit")}
        await publish(
            settings, settings.topics.data_events, labelled_stream(3000, seed=9, shift=0.5)
        )
        events = await until_model_events(
            settings,
            lambda ev: any(e.type in gate_kinds and e.version == "3" for e in ev),
            240,
            ingest,
            trainer,
        )
        shifted = [m for m in storage.manifests("credit") if m.version_id not in before]
        assert shifted and all(m.status == "ok" for m in shifted), [
            m.status_reasons for m in shifted
        ]
        big = [m for m in shifted if m.row_count >= 1000]
        assert big and all(m.shift["debt_to_income"] > 0.2 for m in big), [m.shift for m in big]
        retrain = _of(events, pb.MODEL_EVENT_TYPE_TRAINING_STARTED)[-1]
        assert retrain.attributes["trigger"] == "new_rows", retrain.reason
        trained_on = registry.manifest("credit-loop", 3).training_datasets
        assert {m.version_id for m in shifted} <= set(trained_on)
    finally:
        trainer.stop()
        ingest.stop()


@pytest.fixture()
async def sealed_credit(
    stack: Settings, tmp_path: Path
) -> AsyncIterator[tuple[Settings, dict[str, str], Path]]:
    settings, env = isolated_settings(stack, tmp_path, static_ingest=False)
    write_spec(tmp_path, "credit-loop")
    await _topics(settings)
    await _seal(settings, env, tmp_path, 5000, seed=2)
    yield settings, env, tmp_path


async def test_two_trainers_at_once_train_the_model_once(
    sealed_credit: tuple[Settings, dict[str, str], Path],
) -> None:
    settings, env, tmp = sealed_credit
    cli = ["-m", "services.cli", "train", "credit-loop", "--json"]
    # A Ray session root of each run's own, to find any Ray process it leaves behind.
    roots = [f"/tmp/dl-ray-orphans-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    runs = [
        ServiceProcess(cli, {**env, "DRIFTLOOP_RAY_TMPDIR": root}, tmp / f"train-{i}.log").start()
        for i, root in enumerate(roots)
    ]
    try:
        codes = [r.wait(timeout_s=300) for r in runs]
    finally:
        for r in runs:
            r.stop()
    logs = "\n---\n".join(r.log_tail() for r in runs)
    assert sorted(codes)[0] in (0, 3) and sorted(codes)[1] == 2, f"exit codes {codes}\n{logs}"
    # The run that trained showed its phases, and left no Ray process running.
    trained = runs[codes.index(sorted(codes)[0])]
    terminal = trained.log_path.read_text()
    for phase in ("loading dataset versions", "training xgboost on Ray", "registering"):
        assert f"✓ {phase}" in terminal, terminal
    assert not _processes_mentioning(*roots), _processes_mentioning(*roots)
    events = await model_events(settings)
    assert len(_of(events, pb.MODEL_EVENT_TYPE_TRAINING_STARTED)) == 1
    [skipped] = _of(events, pb.MODEL_EVENT_TYPE_TRAINING_SKIPPED)
    assert skipped.reason.startswith("skipped:in_flight")
    assert ModelRegistry(ArtifactStore(settings.artifact_root)).versions("credit-loop") == [1]


def _processes_mentioning(*needles: str) -> list[str]:
    """Command lines of live processes that mention any of `needles`."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmdline = entry.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmdline for n in needles):
            found.append(f"{entry.parent.name}: {cmdline[:200]}")
    return found


async def test_sigkill_during_training_leaves_every_alias_loadable(
    sealed_credit: tuple[Settings, dict[str, str], Path],
) -> None:
    settings, env, tmp = sealed_credit
    # A short lease so the dead run's expires soon, but long enough that a renewal thread
    # starved for a few seconds on this 2-core machine does not lose it.
    env = {**env, "DRIFTLOOP_TRAINER_LOCK_TTL_S": "15", "DRIFTLOOP_TRAINER_LOCK_RENEW_S": "2"}
    cli = ["-m", "services.cli", "train", "credit-loop", "--json"]
    registry = ModelRegistry(ArtifactStore(settings.artifact_root))
    # First a champion, then a run killed (the whole process group, Ray included) mid-way.
    first = ServiceProcess(cli, env, tmp / "train-1.log").start()
    assert first.wait(timeout_s=300) in (0, 3), first.log_tail()
    victim = ServiceProcess(cli, env, tmp / "train-2.log").start()
    try:
        await until_model_events(
            settings,
            lambda ev: len(_of(ev, pb.MODEL_EVENT_TYPE_TRAINING_STARTED)) >= 2,
            120,
            victim,
        )
    finally:
        victim.stop(signal.SIGKILL)
    for alias, version in registry.aliases("credit-loop").items():
        loaded = registry.load("credit-loop", alias)  # verifies the artifact's sha256
        assert loaded.manifest.version == version
    for version in registry.versions("credit-loop"):
        registry.load("credit-loop", version)
    # The dead run's lease expires on its own; the next training goes ahead.
    lock = TrainingLock(sync_redis(settings), ttl_s=15)
    deadline = time.monotonic() + 60
    while lock.holder("credit-loop") is not None:
        assert time.monotonic() < deadline, "the dead trainer's lease never expired"
        await asyncio.sleep(0.5)
    again = ServiceProcess(cli, env, tmp / "train-3.log").start()
    assert again.wait(timeout_s=300) in (0, 3), again.log_tail()


async def test_a_bad_request_fails_cleanly_with_a_model_event_and_registers_nothing(
    sealed_credit: tuple[Settings, dict[str, str], Path],
) -> None:
    settings, env, tmp = sealed_credit
    missing = "0" * 32
    run = ServiceProcess(
        ["-m", "services.cli", "train", "credit-loop", "--json", "--version-id", missing],
        env,
        tmp / "train-bad.log",
    ).start()
    assert run.wait(timeout_s=300) == 1, run.log_tail()
    events = await model_events(settings)
    [failed] = _of(events, pb.MODEL_EVENT_TYPE_TRAINING_FAILED)
    assert failed.reason.startswith("data:version_missing") and missing in failed.reason
    registry = ModelRegistry(ArtifactStore(settings.artifact_root))
    assert registry.models() == [] and registry.aliases("credit-loop") == {}
    lock = TrainingLock(sync_redis(settings), ttl_s=15)
    assert lock.holder("credit-loop") is None, "a failed run releases its lease"
