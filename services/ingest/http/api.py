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

The app owns one producer, started in its lifespan. Settings and the producer reach the
handlers as dependencies (`app_settings`, `app_ingest_settings`, `app_catalog`,
`app_producer`), so a test swaps them with `app.dependency_overrides`; `app_from_env`
builds the app from the cached, environment-derived settings
(`uvicorn --factory services.ingest.http.api:app_from_env`).

This module builds the app and serves health; the routes live in `events` (publish)
and `catalog` (browse), request decoding in `parsing`, the bodies in `models`, error
answers in `errors`, the dependencies in `deps`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from services.common.datasets.schema import load_schemas
from services.common.kafka import create_producer
from services.common.settings import Settings, get_settings
from services.common.telemetry import instrument_fastapi, setup_telemetry
from services.ingest.config import IngestSettings, get_ingest_settings
from services.ingest.http import catalog, events
from services.ingest.http.deps import (
    ProducerDep,
    app_catalog,
    app_ingest_settings,
    app_producer,
    app_schemas,
    app_settings,
)
from services.ingest.http.errors import error_responses, install_error_handling
from services.ingest.http.models import HealthResponse, ReadyResponse

__all__ = [
    "app_catalog",
    "app_from_env",
    "app_ingest_settings",
    "app_producer",
    "app_schemas",
    "app_settings",
    "create_http_app",
]

_READY_TIMEOUT_S = 2.0
health = APIRouter()


@health.get("/healthz", response_model=HealthResponse, summary="Liveness")
async def healthz() -> HealthResponse:
    return HealthResponse()


@health.get(
    "/readyz",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse}},
    summary="Readiness: the producer is connected to a Kafka broker",
)
async def readyz(producer: ProducerDep) -> JSONResponse:
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
        responses=error_responses(500),
    )
    app.state.settings, app.state.ingest, app.state.schemas = settings, ingest, schemas
    app.state.producer = None
    for router in (events.router, catalog.router, health):
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
        post = schema["paths"][events.EVENTS_PATH]["post"]
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
