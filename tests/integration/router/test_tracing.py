"""One trace per request across processes: callers send Predict with their own
`traceparent` to a router process (`python -m services.router`), which with serving's
replicas exports its spans over OTLP/gRPC to the receiver the test runs. Each caller's
trace holds the router's spans (request, assignment, feature lookup, Serve call, logging)
and reaches a `serving.batch` span of a replica, through its parent or its links."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from driftloop.v1 import prediction_pb2 as pb
from driftloop.v1 import prediction_pb2_grpc as pb_grpc
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.integration.router.conftest import MODEL, REPO_ROOT, Served, otlp_env

# every request's own spans (a merged Serve call's span is in its first request's trace,
# and linked from the others)
ROUTER_SPANS = {
    "driftloop.v1.PredictionService/Predict",
    "router.features",
    "router.assign",
    "router.serve",
    "router.log",
}


@pytest.fixture
def router_process(served: Served, otlp: OtlpReceiver, tmp_path: Path) -> Iterator[str]:
    """`python -m services.router` on a free port, exporting to `otlp`; its address."""
    log_path = tmp_path / "router.log"
    env = {
        **os.environ,
        "DRIFTLOOP_HOME": str(served.settings.home),
        "DRIFTLOOP_SERVICE_NAME": "driftloop-router",
        "DRIFTLOOP_LOG_FORMAT": "json",
        "DRIFTLOOP_ROUTER_PORT": "0",
        "DRIFTLOOP_ROUTER_SPOOL_DIR": str(tmp_path / "spool"),
        "DRIFTLOOP_ROUTER_REPLICA": "traced",
        **otlp_env(otlp),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.router"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        address = ""
        while not address:
            text = log_path.read_text(errors="replace")
            assert process.poll() is None, f"router exited {process.returncode}:\n{text}"
            assert time.monotonic() < deadline, f"router did not start:\n{text}"
            for line in text.splitlines():
                if '"router.started"' in line:
                    address = json.loads(line)["address"]
            time.sleep(0.2)
        yield address
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def traces_reached(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> set[str]:
    """The traces `span` belongs to or reaches through its parent and links, followed
    through the spans received (a replica's batch -> the router's Serve calls -> their
    requests)."""
    reached, todo, seen = set(), [span], set()
    while todo:
        s = todo.pop()
        if s.span_id in seen:
            continue
        seen.add(s.span_id)
        reached.add(s.trace_id)
        for trace_id, span_id in ((s.trace_id, s.parent_span_id), *s.links):
            reached.add(trace_id)
            if span_id in by_id:
                todo.append(by_id[span_id])
    return reached


async def test_each_callers_trace_spans_the_router_and_a_serving_replica(
    served: Served, otlp: OtlpReceiver, router_process: str
) -> None:
    keys = sorted(set(served.online.column("entity_key").to_pylist()))[:8]
    callers = {uuid.uuid4().hex: uuid.uuid4().hex[:16] for _ in keys}  # trace -> span id
    async with grpc.aio.insecure_channel(router_process) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        # Key-only requests (features looked up), sent at once: the router may merge them
        # into shared Serve calls, and a replica its calls into shared batches.
        replies = await asyncio.gather(
            *(
                stub.Predict(
                    pb.PredictRequest(model=MODEL, entity_key=key),
                    metadata=(("traceparent", f"00-{trace_id}-{span_id}-01"),),
                    timeout=30,
                )
                for key, (trace_id, span_id) in zip(keys, callers.items(), strict=True)
            )
        )
    assert all(r.model == MODEL and r.version for r in replies)

    def complete() -> bool:
        spans = otlp.spans()
        by_id = {s.span_id: s for s in spans}
        batches = [s for s in spans if s.name == "serving.batch"]
        reached = set().union(*(traces_reached(b, by_id) for b in batches))
        names = {t: {s.name for s in spans if s.trace_id == t} for t in callers}
        return callers.keys() <= reached and all(names[t] >= ROUTER_SPANS for t in callers)

    deadline = time.monotonic() + 30
    while not complete():
        assert time.monotonic() < deadline, "spans did not arrive:\n" + "\n".join(
            f"{s.service} {s.name} {s.trace_id}" for s in otlp.spans()
        )
        await asyncio.sleep(0.1)

    spans = otlp.spans()
    by_id = {s.span_id: s for s in spans}
    for trace_id, caller_span in callers.items():
        mine = [s for s in spans if s.trace_id == trace_id]
        (request,) = [s for s in mine if s.name == "driftloop.v1.PredictionService/Predict"]
        assert request.parent_span_id == caller_span  # continued from the caller's metadata
        assert {s.service for s in mine if s.name in ROUTER_SPANS} == {"driftloop-router"}
    calls = {s.span_id: s for s in spans if s.name == "router.serve_call"}
    for trace_id in callers:  # each request is in one Serve call: its parent or a link
        assert any(trace_id in {t for t, _ in c.links} for c in calls.values())
    for call in calls.values():  # a call is a child of its first request's serve step
        assert by_id[call.parent_span_id].name == "router.serve"
        assert call.links[0] == (call.trace_id, call.parent_span_id)
    batches = [
        s for s in spans if s.name == "serving.batch" and callers.keys() & traces_reached(s, by_id)
    ]
    assert batches
    for batch in batches:
        assert batch.service == "driftloop-serving"
        # across processes: a child of one Serve call, linked to each call it merged
        assert batch.parent_span_id in calls
        assert all(span_id in calls for _, span_id in batch.links)
        assert batch.attributes["driftloop.model"] == MODEL
        assert batch.attributes["driftloop.variant"] in {"champion", "canary", "shadow"}
        assert batch.attributes["driftloop.requests"] >= 1
        assert batch.attributes["driftloop.rows"] >= 1
        assert batch.attributes["driftloop.version"] >= 1
