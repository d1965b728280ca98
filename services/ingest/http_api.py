"""The ingest HTTP API: publish data events to `data.events`; browse sealed versions.

`POST /v1/datasets/{name}/events` takes a JSON array of events or an
`application/x-protobuf` `DataEventBatch` and is all-or-nothing: the body is checked
(shape, then every event against the declared schema with `validate_batch`, at the
ingest clock) and either every event is published to `data.events`, keyed by entity key,
and Kafka has acknowledged each one (202 with the ids), or none is (422 listing every
bad event, so the client fixes and retries the request as a unit). 202 means "durably on
`data.events`", not "in a version": checks that need history (an event id accepted by an
earlier request, a category over the cap given earlier data) stay with the consumer,
which dead-letters such records. A 503 (Kafka did not confirm) may leave part of the
request published; retrying it is safe because ingest deduplicates by event id.

The app owns one producer, started in its lifespan. Settings reach the handlers as
dependencies (`app_settings`, `app_ingest_settings`, `app_catalog`), so a test swaps them
with `app.dependency_overrides`; `app_from_env` builds the app from the cached,
environment-derived settings (`uvicorn --factory services.ingest.http_api:app_from_env`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from driftloop.v1.events_pb2 import DataEvent
from services.common.kafka import ProtobufProducer, create_producer
from services.common.logging import get_logger
from services.common.settings import Settings, get_settings
from services.common.telemetry import instrument_fastapi, setup_telemetry
from services.ingest.catalog import (
    AmbiguousVersionError,
    CatalogError,
    DatasetCatalog,
    DatasetSummary,
    UnknownVersionError,
    VersionDiff,
    VersionSummary,
    diff_versions,
    summarize_datasets,
    summarize_version,
)
from services.ingest.config import IngestSettings, get_ingest_settings
from services.ingest.http_models import (
    AcceptedResponse,
    ErrorDetail,
    ErrorResponse,
    EventIn,
    HealthResponse,
    ReadyResponse,
    RequestCode,
    RequestError,
    install_error_handling,
    parse_json_events,
    parse_protobuf_events,
    rejection_errors,
)
from services.ingest.schema import DatasetSchema, load_schemas
from services.ingest.validation import validate_batch
from services.ingest.versioning import VersionManifest

__all__ = [
    "app_catalog",
    "app_from_env",
    "app_ingest_settings",
    "app_schemas",
    "app_settings",
    "create_http_app",
]

_log = get_logger(__name__)
_JSON = frozenset({"application/json"})
_PROTOBUF = frozenset({"application/x-protobuf", "application/protobuf"})
_READY_TIMEOUT_S = 2.0


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def app_ingest_settings(request: Request) -> IngestSettings:
    ingest: IngestSettings = request.app.state.ingest
    return ingest


def app_schemas(request: Request) -> Mapping[str, DatasetSchema]:
    schemas: Mapping[str, DatasetSchema] = request.app.state.schemas
    return schemas


def app_catalog(settings: Annotated[Settings, Depends(app_settings)]) -> DatasetCatalog:
    return DatasetCatalog.from_settings(settings)


SettingsDep = Annotated[Settings, Depends(app_settings)]
IngestDep = Annotated[IngestSettings, Depends(app_ingest_settings)]
SchemasDep = Annotated[Mapping[str, DatasetSchema], Depends(app_schemas)]
CatalogDep = Annotated[DatasetCatalog, Depends(app_catalog)]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse} for s in statuses}


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


def _dataset_or_404(name: str, schemas: Mapping[str, DatasetSchema]) -> DatasetSchema:
    schema = schemas.get(name)
    if schema is None:
        message = f"no dataset named {name[:100]!r} is declared"
        raise RequestError.one(404, RequestCode.UNKNOWN_DATASET, message, field="name")
    return schema


async def _read_body(request: Request, limit: int) -> bytes:
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


def _checked_events(
    body: bytes, media_type: str, schema: DatasetSchema, max_events: int
) -> list[DataEvent]:
    parse = parse_protobuf_events if media_type in _PROTOBUF else parse_json_events
    events = parse(body, schema.name, max_events)
    result = validate_batch(events, {schema.name: schema}, time.time_ns() // 1_000_000)
    if result.rejected:
        raise RequestError(422, rejection_errors(result, events, schema))
    return events


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
    "/v1/datasets/{name}/events",
    status_code=202,
    response_model=AcceptedResponse,
    responses=_errors(400, 404, 413, 415, 422, 503),
    openapi_extra=_EVENTS_BODY,
    summary="Validate a batch of events and publish it to data.events (all or nothing)",
)
async def post_events(
    name: str, request: Request, settings: SettingsDep, ingest: IngestDep, schemas: SchemasDep
) -> AcceptedResponse:
    schema = _dataset_or_404(name, schemas)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in _JSON | _PROTOBUF:
        got = repr(media_type[:100]) if media_type else "none"
        message = f"Content-Type must be application/json or application/x-protobuf, got {got}"
        raise RequestError.one(415, RequestCode.UNSUPPORTED_MEDIA_TYPE, message)
    body = await _read_body(request, ingest.http_max_body_bytes)
    events = await run_in_threadpool(
        _checked_events, body, media_type, schema, ingest.http_max_events
    )
    producer: ProtobufProducer | None = request.app.state.producer
    if producer is None:
        raise RequestError.one(503, RequestCode.UNAVAILABLE, "the Kafka producer is not running")
    topic = settings.topics.data_events
    await _publish(producer, topic, events, settings.kafka_request_timeout_ms / 1000)
    _log.debug("events published", dataset=name, topic=topic, events=len(events))
    return AcceptedResponse(
        dataset=name, topic=topic, accepted=len(events), event_ids=[e.event_id for e in events]
    )


@router.get("/v1/datasets", response_model=list[DatasetSummary])
def list_datasets(schemas: SchemasDep, catalog: CatalogDep) -> list[DatasetSummary]:
    stored = {name: catalog.versions(name) for name in catalog.dataset_names()}
    return summarize_datasets(schemas, stored)


def _known(name: str, schemas: Mapping[str, DatasetSchema], catalog: DatasetCatalog) -> None:
    if name not in schemas and name not in catalog.dataset_names():
        _dataset_or_404(name, schemas)


@router.get(
    "/v1/datasets/{name}/versions",
    response_model=list[VersionSummary],
    responses=_errors(404),
    summary="Sealed versions of a dataset, oldest first",
)
def list_versions(name: str, schemas: SchemasDep, catalog: CatalogDep) -> list[VersionSummary]:
    _known(name, schemas, catalog)
    return [summarize_version(m) for m in catalog.versions(name)]


def _find(catalog: DatasetCatalog, name: str, ref: str, field: str) -> VersionManifest:
    try:
        return catalog.find(ref, dataset=name)
    except AmbiguousVersionError as exc:
        raise RequestError.one(409, RequestCode.AMBIGUOUS, str(exc), field=field) from None
    except UnknownVersionError as exc:
        message = str(exc)[:300]
        raise RequestError.one(404, RequestCode.UNKNOWN_VERSION, message, field=field) from None
    except CatalogError as exc:  # a manifest that is there but unreadable: not the caller's fault
        raise RuntimeError(str(exc)) from exc


@router.get(
    "/v1/datasets/{name}/versions/{version_id}",
    response_model=VersionManifest,
    responses=_errors(404, 409),
    summary="One version's manifest (full id or unique prefix)",
)
def get_version(
    name: str, version_id: str, schemas: SchemasDep, catalog: CatalogDep
) -> VersionManifest:
    _known(name, schemas, catalog)
    return _find(catalog, name, version_id, "version_id")


@router.get(
    "/v1/datasets/{name}/diff",
    response_model=VersionDiff,
    responses=_errors(404, 409, 422),
    summary="Rows, schema and per-feature statistics of two versions side by side, with PSI",
)
def get_diff(
    name: str,
    a: Annotated[str, Query(description="base version (id or unique prefix)")],
    b: Annotated[str, Query(description="compared version (id or unique prefix)")],
    schemas: SchemasDep,
    catalog: CatalogDep,
) -> VersionDiff:
    _known(name, schemas, catalog)
    return diff_versions(_find(catalog, name, a, "a"), _find(catalog, name, b, "b"))


@router.get("/healthz", response_model=HealthResponse, summary="Liveness")
async def healthz() -> HealthResponse:
    return HealthResponse()


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse}},
    summary="Readiness: the producer is connected to a Kafka broker",
)
async def readyz(request: Request) -> JSONResponse:
    producer: ProtobufProducer | None = request.app.state.producer
    ready, detail = False, "the Kafka producer is not running"
    if producer is not None:
        client = producer.raw.client
        try:
            async with asyncio.timeout(_READY_TIMEOUT_S):
                nodes = [b.nodeId for b in client.cluster.brokers()]
                ready = any([await client.ready(node) for node in nodes])
        except (KafkaError, OSError, TimeoutError) as exc:
            detail = f"no Kafka broker reachable ({type(exc).__name__})"
        else:
            detail = "connected to Kafka" if ready else "no Kafka broker reachable"
    body = ReadyResponse(ready=ready, detail=detail).model_dump()
    return JSONResponse(body, status_code=200 if ready else 503)


def create_http_app(settings: Settings, ingest: IngestSettings) -> FastAPI:
    """The ingest HTTP app. Schemas are loaded now (a bad schema file fails here); the
    Kafka producer is started by the app's lifespan and stopped at shutdown."""
    schemas = load_schemas(ingest.schemas_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = create_producer(settings, client_id=f"{settings.service_name}-ingest-http")
        await producer.start()  # fails fast with what to do when Kafka is unreachable
        app.state.producer = producer
        try:
            yield
        finally:
            app.state.producer = None
            await producer.stop()

    app = FastAPI(
        title="driftloop ingest",
        version="1",
        description=(__doc__ or "").split("\n\n")[1],
        lifespan=lifespan,
        responses=_errors(500),
    )
    app.state.settings, app.state.ingest, app.state.schemas = settings, ingest, schemas
    app.state.producer = None
    app.include_router(router)
    install_error_handling(app)
    _document_limits(app, ingest)
    instrument_fastapi(app, setup_telemetry(settings))
    return app


def _document_limits(app: FastAPI, ingest: IngestSettings) -> None:
    """Put this app's request limits into its OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # cached by `build`; edited in place once
        post = schema["paths"]["/v1/datasets/{name}/events"]["post"]
        post["requestBody"]["content"]["application/json"]["schema"]["maxItems"] = (
            ingest.http_max_events
        )
        post["description"] = (
            f"At most {ingest.http_max_events} events and {ingest.http_max_body_bytes} bytes "
            "per request (413 beyond). All or nothing: 202 when every event is valid and "
            "acknowledged by Kafka, else nothing is published."
        )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """The app built from the process's cached settings (environment / stack state)."""
    return create_http_app(get_settings(), get_ingest_settings())
