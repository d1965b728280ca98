"""A replica's trace, without Ray: one `serving.batch` span per batch that has traced
calls, a child of the first traced call's span and linked to each; a batch of untraced
calls makes no span; every call is answered either way."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from services.common.settings import Settings, load_settings
from services.common.telemetry import Telemetry, TraceCarrier, build_telemetry
from services.serving import deployment
from services.serving.deployment import REPLICA_SERVICE_NAME, VariantServer
from services.serving.servable import Scored
from tests.integration.serving.models import request_columns, train_tiny


def caller(trace_id: int, span_id: int) -> tuple[SpanContext, TraceCarrier]:
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1))
    return context, {"traceparent": f"00-{trace_id:032x}-{span_id:016x}-01"}


@pytest.fixture
async def replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[VariantServer, Telemetry]:
    built: list[Telemetry] = []

    def fresh(settings: Settings) -> Telemetry:  # not the process globals: a unit test
        built.append(build_telemetry(settings))
        return built[-1]

    monkeypatch.setattr(deployment, "setup_telemetry", fresh)
    # `@serve.batch` reads the replica's max_ongoing_requests from Serve's replica context
    from ray import serve

    config = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=128))
    monkeypatch.setattr(serve, "get_replica_context", lambda: config)
    settings = load_settings(home=tmp_path, telemetry_exporter="memory")
    from services.common.registry import ModelRegistry

    train_tiny("xgboost", rows=400).register(ModelRegistry.from_settings(settings), "tiny")
    server = VariantServer(settings, "tiny", "champion")
    await server.reconfigure({"version": 1, "warmup_rounds": 1, "batching": {}})
    (telemetry,) = built
    assert telemetry.service_name == REPLICA_SERVICE_NAME  # generic settings: serving's name
    return server, telemetry


async def test_a_batch_span_is_a_child_of_its_first_traced_call_linked_to_each(
    replica: tuple[VariantServer, Telemetry],
) -> None:
    server, telemetry = replica
    assert telemetry.span_exporter is not None
    first, first_carrier = caller(0xA1, 0xB1)
    second, second_carrier = caller(0xA2, 0xB2)
    replies = await asyncio.gather(
        server.predict(request_columns(2, seed=1)),  # untraced, in the same batch
        server.predict(request_columns(3, seed=2), first_carrier),
        server.predict(request_columns(4, seed=3), second_carrier),
    )
    assert [len(r.scores) for r in replies if isinstance(r, Scored)] == [2, 3, 4]
    (span,) = telemetry.span_exporter.get_finished_spans()
    assert span.name == "serving.batch" and span.kind is SpanKind.SERVER
    assert span.parent is not None and span.parent.span_id == first.span_id
    assert span.context.trace_id == first.trace_id
    assert [link.context for link in span.links] == [first, second]
    assert span.attributes is not None
    assert dict(span.attributes) == {
        "driftloop.model": "tiny",
        "driftloop.variant": "champion",
        "driftloop.version": 1,
        "driftloop.requests": 3,
        "driftloop.rows": 9,
    }
    assert span.resource.attributes["service.name"] == REPLICA_SERVICE_NAME

    # untraced calls only: answered, no span
    await asyncio.gather(*(server.predict(request_columns(1, seed=s)) for s in range(3)))
    assert len(telemetry.span_exporter.get_finished_spans()) == 1
