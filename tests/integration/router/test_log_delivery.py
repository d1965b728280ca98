"""PredictionLog delivery: the caller's trace reaches the record headers; a broker outage
spools the logs to disk and replays them, none lost or duplicated."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.settings import Settings
from services.router.serving_port import ServingPort
from services.stack import kafka_broker
from services.stack.config import StackConfig
from services.stack.processes import stop_process
from services.stack.state import read_state, write_state
from tests.integration.router.conftest import MODEL, RunningRouter, Served, running_router
from tests.integration.router.helpers import (
    complete_rows,
    predict_request,
    read_log_records,
    read_logs,
    wait_until,
)


async def test_the_callers_trace_reaches_the_prediction_log_headers(
    served: Served, router: RunningRouter
) -> None:
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    rid = f"trace-{uuid.uuid4().hex}"
    row = complete_rows(served.online, 1)[0]
    await router.stub.Predict(
        predict_request(MODEL, row, rid=rid), metadata=(("traceparent", traceparent),)
    )
    ((log, headers),) = await read_log_records(served.settings, [rid], want=1)
    assert log.request_id == rid
    carried = TraceContextTextMapPropagator().extract({k: v.decode() for k, v in headers.items()})
    from opentelemetry import trace

    assert f"{trace.get_current_span(carried).get_span_context().trace_id:032x}" == trace_id


def _broker_pid(home: Path) -> int:
    state = read_state(home)
    assert state is not None and state.parts["kafka"].pid is not None
    return state.parts["kafka"].pid


def _restart_broker(stack: Settings) -> None:
    """Start the stack's broker again on its own data and ports, as `stack up` did."""
    state = read_state(stack.home)
    assert state is not None
    part = state.parts["kafka"]
    config = StackConfig()
    kdir = stack.home / "kafka"
    log = Path(part.log or stack.home / "logs" / "kafka.log")
    offset = log.stat().st_size if log.is_file() else 0
    pid = kafka_broker.start(
        kafka_broker.libs_dir(config), kdir / "server.properties", log, kdir, config.kafka_heap_mb
    )
    part.pid = pid
    write_state(stack.home, state)
    kafka_broker.wait_ready(pid, stack.kafka_bootstrap, log, offset, config.ready_timeout_s)


async def test_broker_outage_spools_and_replays_without_loss_or_duplicates(
    served: Served, serving: ServingPort, stack: Settings, tmp_path: Path
) -> None:
    rows = complete_rows(served.online, 20)
    async with running_router(stack, serving, tmp_path, router_replica="outage") as r:
        before = [f"pre-{uuid.uuid4().hex}" for _ in range(20)]
        for row, rid in zip(rows, before, strict=True):
            await r.stub.Predict(predict_request(MODEL, row, rid=rid))
        await wait_until(lambda: r.app.logger.stats.sent >= 20, 30, "logs before the outage")
        pid = _broker_pid(stack.home)
        assert await asyncio.to_thread(stop_process, pid, 60.0), "the broker did not stop"
        during: list[str] = []
        for i in range(200):  # every request still answered while Kafka is gone
            rid = f"out-{uuid.uuid4().hex}"
            reply = await r.stub.Predict(predict_request(MODEL, rows[i % 20], rid=rid), timeout=15)
            assert reply.request_id == rid
            during.append(rid)
        await wait_until(lambda: r.app.logger.stats.spooled > 0, 60, "records to be spooled")
        await asyncio.to_thread(_restart_broker, stack)
        await wait_until(
            lambda: r.app.logger.stats.replayed + r.app.logger.stats.sent >= 220,
            120,
            "the spool to be replayed",
        )
        stats = r.app.logger.stats
        assert stats.dropped_queue_full == stats.dropped_spool_full == 0
    logs = await read_logs(stack, before + during, want=220, timeout_s=30)
    counts = Counter(m.request_id for m in logs)
    assert counts == Counter(before + during)  # each exactly once
