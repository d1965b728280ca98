"""A request body of the ingest HTTP API -> checked `DataEvent`s, or a `RequestError`.

The body is read under a byte limit (413 as soon as it is known to exceed it), decoded
from JSON (a list of `EventIn`) or protobuf (`DataEventBatch`) under an event-count
limit, and every event is validated against the declared schema at the ingest clock
(`validate_batch`): one `ErrorDetail` per reason of every bad event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from google.protobuf.message import DecodeError
from pydantic import TypeAdapter, ValidationError

from driftloop.v1.events_pb2 import DataEvent, DataEventBatch
from services.common.datasets.schema import DatasetSchema
from services.ingest.http.errors import RequestError, pydantic_errors
from services.ingest.http.models import ErrorDetail, EventIn, RequestCode
from services.ingest.validation import ValidationResult, validate_batch

__all__ = [
    "JSON_TYPES",
    "PROTOBUF_TYPES",
    "checked_events",
    "parse_json_events",
    "parse_protobuf_events",
    "read_body",
    "rejection_errors",
]

JSON_TYPES = frozenset({"application/json"})
PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
_EVENTS = TypeAdapter(list[EventIn])


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    too_large = RequestError.one(
        413, RequestCode.TOO_LARGE, f"request body exceeds {limit} bytes", field="body"
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError.one(400, RequestCode.INVALID_BODY, "invalid Content-Length")
        if int(declared) > limit:
            raise too_large
    body = bytearray()
    async for chunk in request.stream():  # also enforced here: the header may lie or be absent
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def checked_events(
    body: bytes, media_type: str, schema: DatasetSchema, max_events: int
) -> list[DataEvent]:
    """Decode by media type and validate every event; all valid or a 4xx `RequestError`."""
    parse = parse_protobuf_events if media_type in PROTOBUF_TYPES else parse_json_events
    events = parse(body, schema.name, max_events)
    result = validate_batch(events, {schema.name: schema}, time.time_ns() // 1_000_000)
    if result.rejected:
        raise RequestError(422, rejection_errors(result, events, schema))
    return events


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _checked(events: list[DataEvent], dataset: str) -> list[DataEvent]:
    if not events:
        raise RequestError.one(422, RequestCode.EMPTY, "the request contains no events")
    errors = []
    for i, event in enumerate(events):
        if event.dataset and event.dataset != dataset:
            message = f"event is for dataset {event.dataset[:100]!r}, posted to {dataset!r}"
            code = RequestCode.DATASET_MISMATCH
            errors.append(ErrorDetail(index=i, field="dataset", code=code, message=message))
        event.dataset = dataset
        if not event.source:
            event.source = "ingest-http"
    if errors:
        raise RequestError(422, errors)
    return events


def _count_limit(n: int, max_events: int) -> None:
    if n > max_events:
        message = f"{n} events in one request; the limit is {max_events}"
        raise RequestError.one(413, RequestCode.TOO_LARGE, message)


def parse_json_events(body: bytes, dataset: str, max_events: int) -> list[DataEvent]:
    """A JSON array of `EventIn` objects -> events of `dataset` (or a `RequestError`)."""
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RequestError.one(400, RequestCode.INVALID_BODY, f"not valid JSON: {exc}") from None
    if not isinstance(doc, list):
        message = f"expected a JSON array of events, got {type(doc).__name__}"
        raise RequestError.one(422, "wrong_type", message)
    _count_limit(len(doc), max_events)
    try:
        parsed = _EVENTS.validate_python(doc)
    except ValidationError as exc:
        raise RequestError(422, pydantic_errors(exc)) from None
    events = [
        DataEvent(**e.model_dump(exclude={"dataset", "label"}), dataset=e.dataset or "")
        for e in parsed
    ]
    for event, model in zip(events, parsed, strict=True):
        if model.label is not None:
            event.label = model.label
    return _checked(events, dataset)


def parse_protobuf_events(body: bytes, dataset: str, max_events: int) -> list[DataEvent]:
    """A serialized `DataEventBatch` -> events of `dataset` (or a `RequestError`)."""
    batch = DataEventBatch()
    try:
        batch.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError) as exc:
        message = f"not a driftloop.v1.DataEventBatch: {exc or 'decode error'}"
        raise RequestError.one(400, RequestCode.INVALID_BODY, message) from None
    _count_limit(len(batch.events), max_events)
    return _checked(list(batch.events), dataset)


def _field_path(schema: DatasetSchema, event: DataEvent, name: str) -> str:
    """Where a rejected field sits in the request: features live in their maps."""
    if name in event.numeric:
        return f"numeric.{name}"
    if name in event.categorical:
        return f"categorical.{name}"
    if name in schema.numeric:
        return f"numeric.{name}"
    if name in schema.categorical:
        return f"categorical.{name}"
    return name


def rejection_errors(
    result: ValidationResult, events: Sequence[DataEvent], schema: DatasetSchema
) -> list[ErrorDetail]:
    """One `ErrorDetail` per reason of every rejected event, in event order."""
    return [
        ErrorDetail(
            index=rejection.index,
            field=_field_path(schema, events[rejection.index], reason.field)
            if reason.field
            else "",
            code=str(reason.code),
            message=reason.message,
        )
        for rejection in result.rejected
        for reason in rejection.reasons
    ]
