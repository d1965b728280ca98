"""Coalescing: concurrent requests for one (model, variant) merged into one Serve call.

A Ray Serve call costs milliseconds of CPU whatever its size (notes/ray.md), so one call
per request caps the router at a fraction of a plain gRPC server. Each (model, variant)
gets a queue and at most `max_in_flight` workers: a worker takes the first waiting
request and everything queued behind it (up to `max_rows` rows) as one call. With few
calls in flight, requests queue while a call runs, so batches grow with load; at low
load a request goes out at once, alone (no waiting window).

Tracing: a worker serves many requests, so it runs in an empty context of its own (a task
created inside a request would otherwise keep that request's span as its current one for
ever). Each request's span context is taken at `submit`; a call for traced requests runs
under one `router.serve_call` span, a child of the first request's span and linked to
every traced request's (services.common.telemetry.start_batch_span), and the serving
client passes that span on to the replica. A call for untraced requests makes no span.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind

from services.common.telemetry import start_batch_span
from services.router.features import FeatureFrame

__all__ = ["Coalescer", "VariantResult"]


@dataclass(frozen=True, slots=True)
class VariantResult:
    scores: np.ndarray
    version: int
    variant: str


Call = Callable[[str, str, FeatureFrame], Awaitable[VariantResult]]
BatchObserver = Callable[[str, str, int], None]


@dataclass
class _Pending:
    frame: FeatureFrame
    future: asyncio.Future[VariantResult]
    span_context: SpanContext  # the submitting request's (invalid when untraced)


@dataclass
class _Lane:
    queue: asyncio.Queue[_Pending] = field(default_factory=asyncio.Queue)
    workers: list[asyncio.Task[None]] = field(default_factory=list)


class Coalescer:
    """Owns one lane per (model, variant); `submit` returns the rows' result."""

    def __init__(
        self,
        call: Call,
        *,
        max_in_flight: int = 2,
        max_rows: int = 512,
        on_batch: BatchObserver | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._call = call
        self._tracer = tracer or trace.get_tracer("driftloop.router")
        self._max_in_flight = max_in_flight
        self._max_rows = max_rows
        self._on_batch = on_batch
        self._lanes: dict[tuple[str, str], _Lane] = {}

    async def submit(self, model: str, variant: str, frame: FeatureFrame) -> VariantResult:
        lane = self._lanes.get((model, variant))
        if lane is None:
            lane = self._lanes[(model, variant)] = _Lane()
            lane.workers = [
                asyncio.create_task(
                    self._work(model, variant, lane.queue), context=contextvars.Context()
                )
                for _ in range(self._max_in_flight)
            ]
        future: asyncio.Future[VariantResult] = asyncio.get_running_loop().create_future()
        span_context = trace.get_current_span().get_span_context()
        lane.queue.put_nowait(_Pending(frame, future, span_context))
        return await future

    async def _work(self, model: str, variant: str, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            first = await queue.get()
            batch, rows = [first], first.frame.rows
            while not queue.empty() and rows < self._max_rows:
                nxt = queue.get_nowait()
                batch.append(nxt)
                rows += nxt.frame.rows
            live = [p for p in batch if not p.future.done()]  # callers gone: skip them
            if not live:
                continue
            if self._on_batch is not None:
                self._on_batch(model, variant, rows)
            merged = FeatureFrame.concat([p.frame for p in live])
            try:
                with self._span(model, variant, live, merged.rows):
                    result = await self._call(model, variant, merged)
            except asyncio.CancelledError:
                for p in live:
                    if not p.future.done():
                        p.future.cancel()
                raise
            except Exception as exc:
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            start = 0
            for p in live:
                end = start + p.frame.rows
                if not p.future.done():
                    p.future.set_result(
                        VariantResult(result.scores[start:end], result.version, result.variant)
                    )
                start = end

    def _span(
        self, model: str, variant: str, live: list[_Pending], rows: int
    ) -> AbstractContextManager[object]:
        traced = [p.span_context for p in live if p.span_context.trace_flags.sampled]
        if not traced:
            return nullcontext()
        return start_batch_span(
            self._tracer,
            "router.serve_call",
            traced,
            kind=SpanKind.CLIENT,
            attributes={
                "driftloop.model": model,
                "driftloop.variant": variant,
                "driftloop.requests": len(live),
                "driftloop.rows": rows,
            },
        )

    async def close(self) -> None:
        tasks = [t for lane in self._lanes.values() for t in lane.workers]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._lanes.clear()
