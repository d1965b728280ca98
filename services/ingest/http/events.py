"""`POST /v1/datasets/{name}/events`: validate a batch and publish it, all or nothing.

Every event of the body is checked (`parsing`) before any is sent; then all of them
go to `data.events`, keyed by entity key, and the answer waits for Kafka to acknowledge
each one (202), or says that it did not (503, safe to retry: ingest deduplicates by id).
"""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from driftloop.v1.events_pb2 import DataEvent
from services.common.kafka import ProtobufProducer
from services.common.logging import get_logger
from services.ingest.http.deps import (
    IngestDep,
    ProducerDep,
    SchemasDep,
    SettingsDep,
    dataset_or_404,
)
from services.ingest.http.errors import RequestError, error_responses
from services.ingest.http.models import AcceptedResponse, ErrorDetail, EventIn, RequestCode
from services.ingest.http.parsing import JSON_TYPES, PROTOBUF_TYPES, checked_events, read_body

__all__ = ["EVENTS_PATH", "router"]

_log = get_logger(__name__)
EVENTS_PATH = "/v1/datasets/{name}/events"
router = APIRouter()
_EVENTS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "minItems": 1, "items": EventIn.model_json_schema()}
            },
            "application/x-protobuf": {
                "schema": {"type": "string", "format": "binary"},
            },
        },
    }
}


async def _publish(
    producer: ProtobufProducer, topic: str, events: list[DataEvent], timeout_s: float
) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            futures = await producer.send_many(topic, ((e.entity_key, e) for e in events))
            await asyncio.gather(*futures)
    except (KafkaError, TimeoutError) as exc:
        _log.warning("publish failed", topic=topic, events=len(events), error=repr(exc))
        message = f"Kafka did not confirm delivery ({type(exc).__name__}); retry the request"
        raise RequestError(
            503,
            [ErrorDetail(code=RequestCode.UNAVAILABLE, message=message)],
            headers={"Retry-After": "1"},
        ) from None


@router.post(
    EVENTS_PATH,
    status_code=202,
    response_model=AcceptedResponse,
    responses=error_responses(400, 404, 413, 415, 422, 503),
    openapi_extra=_EVENTS_BODY,
    summary="Validate a batch of events and publish it to data.events (all or nothing)",
)
async def post_events(
    name: str,
    request: Request,
    settings: SettingsDep,
    ingest: IngestDep,
    schemas: SchemasDep,
    producer: ProducerDep,
) -> AcceptedResponse:
    schema = dataset_or_404(name, schemas)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in JSON_TYPES | PROTOBUF_TYPES:
        got = repr(media_type[:100]) if media_type else "none"
        message = f"Content-Type must be application/json or application/x-protobuf, got {got}"
        raise RequestError.one(415, RequestCode.UNSUPPORTED_MEDIA_TYPE, message)
    body = await read_body(request, ingest.http_max_body_bytes)
    events = await run_in_threadpool(
        checked_events, body, media_type, schema, ingest.http_max_events
    )
    if producer is None:
        raise RequestError.one(503, RequestCode.UNAVAILABLE, "the Kafka producer is not running")
    topic = settings.topics.data_events
    await _publish(producer, topic, events, settings.kafka_request_timeout_ms / 1000)
    _log.debug("events published", dataset=name, topic=topic, events=len(events))
    return AcceptedResponse(
        dataset=name, topic=topic, accepted=len(events), event_ids=[e.event_id for e in events]
    )
