"""A protobuf round trip through a real faust worker (a subprocess) on the stack's broker:
factory producer -> DataEvent topic -> faust agent (ProtobufCodec) -> PredictionLog topic ->
factory consumer."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftloop.v1 import events_pb2 as pb
from services.common.kafka import Envelope, create_consumer, create_producer, ensure_topics
from services.common.settings import Settings
from services.common.telemetry import build_telemetry

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_TIMEOUT_S = 120  # joining the group and assigning takes ~10-20 s on 2 busy cores


class EchoWorker:
    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        run = uuid.uuid4().hex[:10]
        self.source, self.sink = f"test.faust-in.{run}", f"test.faust-out.{run}"
        self.log_path = tmp_path / "faust-worker.log"
        self.env = {
            **os.environ,
            "DRIFTLOOP_HOME": str(settings.home),
            "DRIFTLOOP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "ECHO_APP_ID": f"test-faust-echo-{run}",
            "ECHO_IN_TOPIC": self.source,
            "ECHO_OUT_TOPIC": self.sink,
            "ECHO_DATADIR": str(tmp_path / "faust-data"),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "faust",
                    "-A",
                    "tests.integration.faust_echo_app",
                    "worker",
                    "--loglevel",
                    "info",
                ],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches every child
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # session leader: its pid is the group id
        if self.proc.poll() is None:
            os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # a stray child of the group, if any
            os.killpg(pgid, signal.SIGKILL)


@pytest.fixture()
def worker(stack: Settings, tmp_path: Path) -> Iterator[EchoWorker]:
    echo = EchoWorker(stack, tmp_path)
    yield echo
    echo.stop()
    pgid = echo.proc.pid if echo.proc else None
    if pgid is not None:
        with pytest.raises(ProcessLookupError):  # no process of the worker is left
            os.killpg(pgid, 0)


async def test_protobuf_round_trip_through_a_faust_agent(
    stack: Settings, worker: EchoWorker
) -> None:
    await ensure_topics(stack, [worker.source, worker.sink], partitions=1)
    worker.start()
    telemetry = build_telemetry(stack.model_copy(update={"telemetry_exporter": "memory"}))
    events = [
        pb.DataEvent(
            event_id=f"e-{i}",
            dataset="loans",
            entity_key=f"user-{i}",
            event_time_ms=1_700_000_000_000 + i,
            numeric={"income": 1000.0 * i, "age": 30.0 + i},
            categorical={"country": "DE"},
        )
        for i in range(3)
    ]
    async with create_producer(stack) as producer:
        # A malformed record first: the agent must report it clearly and carry on.
        await (await producer.send_raw(worker.source, b"\x0a\xff\xff", "user-x"))
        with telemetry.tracer("test").start_as_current_span("publish") as span:
            for event in events:
                await producer.send_and_wait(worker.source, event, event.entity_key)

    outputs: list[Envelope] = []
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    async with create_consumer(stack, worker.sink, group_id=f"test-{uuid.uuid4().hex}") as consumer:
        while len(outputs) < len(events):
            assert worker.proc is not None and worker.proc.poll() is None, (
                f"the faust worker exited with {worker.proc and worker.proc.returncode}:\n"
                f"{worker.log()[-3000:]}"
            )
            assert time.monotonic() < deadline, (
                f"{len(outputs)} of {len(events)} outputs after {WORKER_TIMEOUT_S} s; "
                f"worker log:\n{worker.log()[-3000:]}"
            )
            batch = await consumer.getmany(timeout_ms=1000)
            assert not batch.failures, batch.failures
            outputs += batch.envelopes
    telemetry.shutdown()

    trace_id = f"{span.get_span_context().trace_id:032x}".encode()
    for event, out in zip(events, sorted(outputs, key=lambda e: e.offset), strict=True):
        log = out.message
        assert isinstance(log, pb.PredictionLog)
        assert out.key == event.entity_key.encode() and out.headers["schema"] == (
            b"driftloop.v1.PredictionLog"
        )
        assert (log.request_id, log.entity_key, log.model) == (
            event.event_id,
            event.entity_key,
            "faust-echo",
        )
        assert dict(log.numeric) == dict(event.numeric) and log.score == sum(event.numeric.values())
        assert log.time_ms == event.event_time_ms and dict(log.categorical) == {"country": "DE"}
        # The agent continued the producer's trace on its output record.
        assert out.headers["traceparent"].split(b"-")[1] == trace_id
    assert "not a valid driftloop.v1.DataEvent" in worker.log()
