"""A secured cluster for real (issue 11): `driftloop stack up --secure` starts the broker
with a SASL_SSL listener only (SCRAM users, generated certificates); ingest, the trainer
and the CLI do their jobs over it with nothing but the settings the stack state gives
them; kcat (librdkafka) publishes over it with PLAIN; a wrong password and an untrusted
CA each fail fast with one line naming the cause; no plaintext client port is open; a
faust worker connects with the same settings (`faust_app_options`).

One secure stack (its own broker and redis-server) for the whole module."""

from __future__ import annotations

import asyncio
import random
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftloop.v1 import events_pb2 as pb
from services.common.artifacts import ArtifactStore
from services.common.datasets.store import VersionStore
from services.common.kafka import (
    KafkaUnavailableError,
    check_kafka,
    create_consumer,
    create_producer,
    ensure_topics,
)
from services.common.kafka_security import sasl_password
from services.common.settings import Settings, load_settings
from tests.conftest import run_cli
from tests.integration.harness import ServiceProcess, free_port
from tests.integration.ingest.events_gen import credit_event, read_topic
from tests.integration.kcat import kcat_produce
from tests.integration.test_faust_roundtrip import WORKER_TIMEOUT_S, EchoWorker
from tests.integration.trainer.loop_harness import get_json, write_spec


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("secure-stack")
    run_cli("stack", "up", "--secure", "--partitions", "1", home=home)
    try:
        yield load_settings(home=home)
    finally:
        run_cli("stack", "down", home=home, check=False)


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {"DRIFTLOOP_HOME": str(settings.home), **extra}


def _error_line(log: Path, name: str) -> str:
    """The one line services.common.failures.run_main prints for a known failure."""
    found = [x for x in log.read_text().splitlines() if x.startswith(f"{name}: error: ")]
    assert len(found) == 1, log.read_text()[-3000:]
    return found[0]


async def test_no_plaintext_port_and_bad_credentials_fail_fast_naming_the_cause(
    secure_stack: Settings, tmp_path: Path
) -> None:
    settings = secure_stack
    assert settings.kafka_security_protocol == "SASL_SSL"
    properties = (settings.home / "kafka-secure" / "server.properties").read_text()
    listeners = dict(line.split("=", 1) for line in properties.splitlines() if "listeners=" in line)
    names = {x.split("://")[0] for x in listeners["listeners"].split(",")}
    assert names == {"SASL_SSL", "CONTROLLER"}, listeners
    assert listeners["advertised.listeners"].startswith("SASL_SSL://")
    plaintext = load_settings(home=settings.home, kafka_security_protocol="PLAINTEXT")
    with pytest.raises(KafkaUnavailableError):
        await check_kafka(plaintext, timeout_s=5)

    untrusted = tmp_path / "other-ca.crt"
    proc = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=not the driftloop CA", "-keyout", str(tmp_path / "k"),
        "-out", str(untrusted), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await proc.wait() == 0
    cases = {
        "SASL authentication failed": {"DRIFTLOOP_KAFKA_SASL_PASSWORD": "not-the-password"},
        "TLS certificate is not trusted": {"DRIFTLOOP_KAFKA_SSL_CAFILE": str(untrusted)},
    }
    for cause, bad in cases.items():
        for name in ("ingest", "trainer"):
            log = tmp_path / f"{name}-{len(bad)}-{cause[:4]}.log"
            service = ServiceProcess(["-m", f"services.{name}"], _env(settings, **bad), log)
            assert service.start().wait(timeout_s=60) == 1, service.log_tail()
            assert cause in _error_line(log, name)
        cli = run_cli(
            "datasets", "publish-sample", "credit", "-n", "5", home=settings.home, env=bad,
            check=False,
        )  # fmt: skip
        assert cli.returncode == 1 and cause in cli.stderr, cli.stderr
        [line] = [x for x in cli.stderr.splitlines() if x.startswith("error:")]
        assert cause in line and "Unable connect" not in cli.stderr
        assert "Traceback" not in cli.stderr
        password = sasl_password(settings)
        assert password and password not in cli.stderr + cli.stdout


def _ready(port: int) -> int:
    try:
        return get_json(port, "/readyz")[0]
    except urllib.error.URLError:
        return 0


async def test_ingest_trainer_cli_and_kcat_end_to_end_over_sasl_ssl(
    secure_stack: Settings, tmp_path: Path
) -> None:
    settings = secure_stack
    write_spec(tmp_path, "credit-secure", min_new_rows=10**9)  # decisions, no training
    health = free_port()
    env = _env(
        settings,
        DRIFTLOOP_INGEST_SEAL_MAX_AGE_MS="500",
        DRIFTLOOP_TRAINER_MODELS_DIR=str(tmp_path / "models"),
        DRIFTLOOP_TRAINER_HEALTH_PORT=str(health),
        DRIFTLOOP_TRAINER_RAY_NUM_CPUS="1",
    )
    ingest = ServiceProcess(["-m", "services.ingest"], env, tmp_path / "ingest.log").start()
    trainer = ServiceProcess(["-m", "services.trainer"], env, tmp_path / "trainer.log").start()
    try:
        deadline = time.monotonic() + 180
        while await asyncio.to_thread(_ready, health) != 200:
            assert trainer.alive() and time.monotonic() < deadline, trainer.log_tail()
            await asyncio.sleep(0.5)
        # librdkafka 2.0 cannot do SCRAM against Kafka 4: kcat uses PLAIN on the same listener
        rng, now = random.Random(7), int(time.time() * 1000)
        outside = [credit_event(rng, f"kcat-secure-{i}", now) for i in range(10)]
        kcat_produce(
            settings.kafka_bootstrap,
            settings.topics.data_events,
            [e.SerializeToString() for e in outside],
            codec="zstd",
            extra=[
                "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=PLAIN",
                "-X", f"sasl.username={settings.kafka_sasl_username}",
                "-X", f"sasl.password={sasl_password(settings)}",
                "-X", f"ssl.ca.location={settings.kafka_ssl_cafile}",
            ],
        )  # fmt: skip
        published = run_cli(
            "datasets", "publish-sample", "credit", "-n", "300", "--wait", "--timeout-s", "120",
            home=settings.home,
        )  # fmt: skip
        assert published.returncode == 0
        storage = VersionStore(ArtifactStore(settings.artifact_root))
        deadline = time.monotonic() + 60
        while sum(m.row_count for m in storage.manifests("credit")) < 310:
            assert ingest.alive() and time.monotonic() < deadline, ingest.log_tail()
            await asyncio.sleep(0.3)
        versions = {m.version_id for m in storage.manifests("credit")}
        deadline = time.monotonic() + 60
        while True:
            rows = await read_topic(
                settings, settings.topics.models_events, pb.ModelEvent, idle_s=0.5
            )
            decided = {m.attributes.get("version_id") for _, _, m in rows}  # type: ignore[attr-defined]
            if versions <= decided:
                break
            assert trainer.alive() and time.monotonic() < deadline, trainer.log_tail()
        run_cli("stack", "status", home=settings.home)  # exit 0: Kafka up over SASL_SSL
    finally:
        trainer.stop()
        ingest.stop()


async def test_a_faust_worker_connects_through_the_same_factory(
    secure_stack: Settings, tmp_path: Path
) -> None:
    settings = secure_stack
    worker = EchoWorker(settings, tmp_path)
    await ensure_topics(settings, [worker.source, worker.sink], partitions=1)
    worker.start()
    try:
        event = pb.DataEvent(event_id="secure-1", dataset="loans", entity_key="k", numeric={"a": 2})
        async with create_producer(settings) as producer:
            await producer.send_and_wait(worker.source, event, event.entity_key)
        group = f"test-{random.randrange(1 << 30)}"
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        async with create_consumer(settings, worker.sink, group_id=group) as consumer:
            while not (batch := await consumer.getmany(timeout_ms=1000)).envelopes:
                assert worker.proc is not None and worker.proc.poll() is None, worker.log()[-3000:]
                assert time.monotonic() < deadline, worker.log()[-3000:]
        [out] = batch.envelopes
        assert out.message.request_id == "secure-1"  # type: ignore[attr-defined]
    finally:
        worker.stop()
