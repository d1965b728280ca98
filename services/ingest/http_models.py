"""Bodies of the ingest HTTP API: request/response models, body -> `DataEvent`s, and
how every error becomes a response.

Every 4xx answer has one shape, `ErrorResponse`: a list of `{index, field, code,
message}` where `index` is the event's position in the request (null when the request
as a whole is wrong) and `field` a dotted path such as `numeric.age`. Codes are the
ingest rejection codes (`services.ingest.rules.Code`) for schema violations, plus the
request-level codes in `RequestCode`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.protobuf.message import DecodeError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from driftloop.v1.events_pb2 import DataEvent, DataEventBatch
from services.common.logging import get_logger
from services.ingest.schema import DatasetSchema
from services.ingest.validation import ValidationResult

__all__ = [
    "MAX_ERRORS",
    "AcceptedResponse",
    "ErrorDetail",
    "ErrorResponse",
    "EventIn",
    "HealthResponse",
    "ReadyResponse",
    "RequestCode",
    "RequestError",
    "install_error_handling",
    "parse_json_events",
    "parse_protobuf_events",
    "rejection_errors",
]

_log = get_logger(__name__)
MAX_ERRORS = 1000  # per response; `error_count` and `invalid_indices` stay complete


class RequestCode(StrEnum):
    INVALID_BODY = "invalid_body"  # 400: not JSON / not a DataEventBatch
    EMPTY = "empty"  # 422: no events
    TOO_LARGE = "too_large"  # 413: body bytes or event count over the limit
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415
    NOT_FOUND = "not_found"  # 404: no such route
    UNKNOWN_DATASET = "unknown_dataset"  # 404
    UNKNOWN_VERSION = "unknown_version"  # 404
    AMBIGUOUS = "ambiguous"  # 409: a version prefix that matches several versions
    DATASET_MISMATCH = "dataset_mismatch"  # 422: event names another dataset than the path
    INVALID = "invalid"  # 422: any other malformed value
    UNAVAILABLE = "unavailable"  # 503: Kafka did not confirm delivery; safe to retry
    INTERNAL = "internal"  # 500


class ErrorDetail(BaseModel):
    index: int | None = Field(default=None, description="event position; null: whole request")
    field: str = Field(default="", description="dotted path, e.g. numeric.age")
    code: str
    message: str


class ErrorResponse(BaseModel):
    errors: list[ErrorDetail] = Field(description=f"at most {MAX_ERRORS}, in event order")
    error_count: int = Field(description="all errors found, including any not listed")
    invalid_indices: list[int] = Field(
        default_factory=list, description="every event with at least one error"
    )

    @classmethod
    def of(cls, errors: Sequence[ErrorDetail]) -> ErrorResponse:
        invalid = sorted({e.index for e in errors if e.index is not None})
        return cls(
            errors=list(errors[:MAX_ERRORS]), error_count=len(errors), invalid_indices=invalid
        )


class RequestError(Exception):
    """Answer the request with `status` and these errors (raised anywhere in a handler)."""

    def __init__(
        self, status: int, errors: Sequence[ErrorDetail], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status}: {errors[0].message if errors else ''}")
        self.status, self.errors, self.headers = status, list(errors), headers

    @classmethod
    def one(cls, status: int, code: str, message: str, field: str = "") -> RequestError:
        return cls(status, [ErrorDetail(code=code, message=message, field=field)])


def _utf8(value: str) -> str:
    value.encode("utf-8")  # lone surrogates ("\ud800" in JSON) cannot become proto strings
    return value


Text = Annotated[str, AfterValidator(_utf8)]


class EventIn(BaseModel):
    """One data event in the JSON form; maps hold the features (absent key = null)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # wrong types are errors

    event_id: Text = Field(description="unique per dataset; the deduplication key")
    entity_key: Text = Field(description="the Kafka record key")
    event_time_ms: int = Field(ge=-(2**63), le=2**63 - 1, description="epoch milliseconds")
    numeric: dict[Text, float] = Field(default_factory=dict)
    categorical: dict[Text, Text] = Field(default_factory=dict)
    label: float | None = None
    source: Text = Field(default="", description="producing app, for lineage")
    dataset: Text | None = Field(default=None, description="optional; must equal the path's")


class AcceptedResponse(BaseModel):
    dataset: str
    topic: str
    accepted: int
    event_ids: list[str] = Field(description="in request order")


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    detail: str


_EVENTS = TypeAdapter(list[EventIn])
_PYDANTIC_CODES = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
}


def _error_code(pydantic_type: str) -> str:
    if pydantic_type in _PYDANTIC_CODES:
        return _PYDANTIC_CODES[pydantic_type]
    return "wrong_type" if pydantic_type.endswith(("_type", "_parsing")) else RequestCode.INVALID


def _pydantic_errors(exc: ValidationError) -> list[ErrorDetail]:
    out = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        index = loc.pop(0) if loc and isinstance(loc[0], int) else None
        assert index is None or isinstance(index, int)
        kind = err["type"]
        code = _error_code(kind)
        field = ".".join(str(p) for p in loc)[:200]
        message = "not valid UTF-8 text" if kind == "value_error" else err["msg"]
        out.append(ErrorDetail(index=index, field=field, code=code, message=message))
    return out


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
        raise RequestError(422, _pydantic_errors(exc)) from None
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


# -- how errors become responses ---------------------------------------------------


def _error_json(
    status: int, errors: list[ErrorDetail], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(ErrorResponse.of(errors).model_dump(), status_code=status, headers=headers)


async def _on_request_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    return _error_json(exc.status, exc.errors, exc.headers)


async def _on_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: RequestCode.NOT_FOUND, 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    detail = ErrorDetail(code=code, message=str(exc.detail))
    return _error_json(exc.status_code, [detail], exc.headers)


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        ErrorDetail(
            field=".".join(str(p) for p in e["loc"]), code=_error_code(e["type"]), message=e["msg"]
        )
        for e in exc.errors()
    ]
    return _error_json(422, errors)


class _InternalErrors:
    """Turn an unexpected exception into a JSON 500 (logged with its traceback), so one
    bad request never takes more than itself down. Inside Starlette's own error
    middleware, which would answer in plain text and re-raise into the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            _log.exception("unhandled error", method=scope.get("method"), path=scope.get("path"))
            if started:  # too late for another status line; the server closes the connection
                raise
            detail = ErrorDetail(
                code=RequestCode.INTERNAL, message="internal error; see the service log"
            )
            await _error_json(500, [detail])(scope, receive, send)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI documents a default 422 body on every route with parameters; ours are
    declared where they can happen (as `ErrorResponse`), so drop the defaults."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                default = operation.get("responses", {}).get("422", {})
                if "HTTPValidationError" in str(default):
                    del operation["responses"]["422"]
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def install_error_handling(app: FastAPI) -> None:
    """Every error answer is an `ErrorResponse`: ours, Starlette's 404/405, FastAPI's
    parameter validation, and any unexpected exception (a JSON 500)."""
    app.add_exception_handler(RequestError, _on_request_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_middleware(_InternalErrors)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
