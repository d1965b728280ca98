"""The coalescer's trace: one `router.serve_call` span per Serve call, a child of the first
traced request's span and linked to every traced request's, current while the call runs
(so the serving client carries it to the replica); untraced calls make no span and carry
nothing, whatever request the lane's workers were created in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.settings import load_settings
from services.common.telemetry import Telemetry, TraceCarrier, build_telemetry, trace_carrier
from services.router.coalescing import Coalescer, VariantResult
from services.router.features import FeatureFrame


def frame(rows: int) -> FeatureFrame:
    return FeatureFrame(rows, {"income": np.arange(rows, dtype=np.float64)}, {})


class Serving:
    """Records each call's rows and the trace carrier the serving client would send;
    the first call waits for `release`, so later requests queue behind it."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, TraceCarrier | None]] = []
        self.release = asyncio.Event()

    async def __call__(self, model: str, variant: str, batch: FeatureFrame) -> VariantResult:
        self.calls.append((batch.rows, trace_carrier()))
        if len(self.calls) == 1:
            await self.release.wait()
        return VariantResult(np.zeros(batch.rows), 1, variant)


@pytest.fixture
async def memory() -> AsyncIterator[Telemetry]:
    telemetry = build_telemetry(
        load_settings(telemetry_exporter="memory", service_name="unit-coalescer")
    )
    yield telemetry
    telemetry.shutdown()


async def traced_request(
    coalescer: Coalescer, telemetry: Telemetry, name: str, rows: int
) -> SpanContext:
    """A request in a trace of its own (a root span), as a caller's would be."""
    with telemetry.tracer("unit").start_as_current_span(name) as span:
        await coalescer.submit("credit", "champion", frame(rows))
        return span.get_span_context()


def serve_calls(telemetry: Telemetry) -> list[ReadableSpan]:
    assert telemetry.span_exporter is not None
    spans = telemetry.span_exporter.get_finished_spans()
    return [s for s in spans if s.name == "router.serve_call"]


def carried(carrier: TraceCarrier | None) -> SpanContext:
    from opentelemetry import trace

    assert carrier is not None
    context = TraceContextTextMapPropagator().extract(carrier)
    return trace.get_current_span(context).get_span_context()


async def test_a_coalesced_call_is_a_child_of_its_first_request_linked_to_each(
    memory: Telemetry,
) -> None:
    serving = Serving()
    coalescer = Coalescer(serving, max_in_flight=1, tracer=memory.tracer("driftloop.router"))
    try:
        # The lane (and its worker) is created inside request a's span.
        a = asyncio.create_task(traced_request(coalescer, memory, "a", 1))
        while not serving.calls:
            await asyncio.sleep(0.001)
        b = asyncio.create_task(traced_request(coalescer, memory, "b", 2))
        c = asyncio.create_task(coalescer.submit("credit", "champion", frame(3)))  # untraced
        d = asyncio.create_task(traced_request(coalescer, memory, "d", 4))
        for _ in range(3):  # each submits and waits behind the stalled call
            await asyncio.sleep(0)
        serving.release.set()
        span_a, span_b, _, span_d = await asyncio.gather(a, b, c, d)
        assert [rows for rows, _ in serving.calls] == [1, 9]  # b, c, d: one call

        first, merged = serve_calls(memory)
        assert first.parent is not None and first.parent.span_id == span_a.span_id
        assert first.context.trace_id == span_a.trace_id
        assert [link.context for link in first.links] == [span_a]
        # the merged call: parented on its first traced request, linked to each traced one
        assert merged.parent is not None and merged.parent.span_id == span_b.span_id
        assert merged.context.trace_id == span_b.trace_id
        assert [link.context for link in merged.links] == [span_b, span_d]
        assert merged.kind is SpanKind.CLIENT
        assert merged.attributes is not None
        assert dict(merged.attributes) == {
            "driftloop.model": "credit",
            "driftloop.variant": "champion",
            "driftloop.requests": 3,
            "driftloop.rows": 9,
        }
        # what the serving client sends is the call's own span, not a request's
        assert carried(serving.calls[0][1]).span_id == first.context.span_id
        assert carried(serving.calls[1][1]).span_id == merged.context.span_id

        # An untraced request, later, on the worker created inside request a's span:
        # no span, nothing carried (the worker does not keep request a's context).
        await coalescer.submit("credit", "champion", frame(5))
        assert serving.calls[-1] == (5, None)
        assert len(serve_calls(memory)) == 2
    finally:
        await coalescer.close()


async def test_without_an_exporter_a_call_makes_no_span_and_carries_nothing() -> None:
    none = build_telemetry(load_settings(telemetry_exporter="none", service_name="unit-none"))
    serving = Serving()
    serving.release.set()
    coalescer = Coalescer(serving, tracer=none.tracer("driftloop.router"))
    try:
        # The request's span exists (its trace id reaches the log headers) but is not
        # sampled: the Serve call costs no span and no carrier.
        await traced_request(coalescer, none, "request", 2)
        assert serving.calls == [(2, None)]
    finally:
        await coalescer.close()
        none.shutdown()
