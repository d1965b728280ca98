"""`driftloop.v1.PredictionService` over the routing core."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from opentelemetry import trace

from driftloop.v1 import prediction_pb2 as pb
from driftloop.v1 import prediction_pb2_grpc as pb_grpc
from services.common.telemetry import extract_grpc_metadata
from services.router.errors import status_for
from services.router.routing import Router
from services.router.validation import BatchInput, InvalidRequest, batch_frame, single_frame

__all__ = ["PredictionServicer", "deadline_of", "request_span"]

_tracer = trace.get_tracer("driftloop.router")


@contextmanager
def request_span(name: str, context: grpc.aio.ServicerContext) -> Iterator[trace.Span]:
    """One trace per request, continued from the caller's W3C trace context (metadata);
    its context reaches the PredictionLog headers through the current context."""
    parent = extract_grpc_metadata(context.invocation_metadata())
    with _tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER) as span:
        yield span


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class PredictionServicer(pb_grpc.PredictionServiceServicer):
    def __init__(self, router: Router, max_batch_rows: int) -> None:
        self._router = router
        self._max_batch_rows = max_batch_rows

    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        with request_span("driftloop.v1.PredictionService/Predict", context):
            return await self._predict(request, context)

    async def _predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        try:
            if not request.model:
                raise InvalidRequest([("model", "required")])
            contract = self._router.contract(request.model)
            frame = single_frame(contract, request.numeric, request.categorical)
            out = await self._router.predict(
                contract, frame, [request.entity_key], [request.request_id], deadline_of(context)
            )
        except Exception as exc:
            status = status_for(exc)
            if status is None:
                raise
            await context.abort_with_status(status)
        return pb.PredictResponse(
            request_id=out.request_ids[0],
            score=float(out.scores[0]),
            model=request.model,
            version=str(out.versions[0]),
            variant=out.variants[0],
            latency_ms=out.latency_ms,
            experiment=out.experiment,
            bucket=out.buckets[0],
        )

    async def PredictBatch(
        self, request: pb.PredictBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictBatchResponse:
        with request_span("driftloop.v1.PredictionService/PredictBatch", context):
            return await self._predict_batch(request, context)

    async def _predict_batch(
        self, request: pb.PredictBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictBatchResponse:
        try:
            if not request.model:
                raise InvalidRequest([("model", "required")])
            contract = self._router.contract(request.model)
            batch = BatchInput(
                rows=request.rows,
                feature_names=request.feature_names,
                values=request.values,
                categorical_names=request.categorical_names,
                categorical_values=request.categorical_values,
                entity_keys=request.entity_keys,
                request_ids=request.request_ids,
            )
            frame = batch_frame(contract, batch, self._max_batch_rows)
            out = await self._router.predict(
                contract, frame, request.entity_keys, request.request_ids, deadline_of(context)
            )
        except Exception as exc:
            status = status_for(exc)
            if status is None:
                raise
            await context.abort_with_status(status)
        return pb.PredictBatchResponse(
            model=request.model,
            request_ids=out.request_ids,
            scores=out.scores.tolist(),
            versions=[str(v) for v in out.versions],
            variants=out.variants,
            experiment=out.experiment,
            buckets=out.buckets,
        )
