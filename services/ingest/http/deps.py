"""Dependencies of the ingest HTTP routes: what each handler gets from the app.

Settings, schemas, the catalog and the Kafka producer reach the handlers through these
(`app.state` is set by `create_http_app` and its lifespan), so a test swaps any of them
with `app.dependency_overrides` — e.g. a producer that records what it is given, so the
request checks run without a broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request

from services.common.datasets.catalog import DatasetCatalog
from services.common.datasets.schema import DatasetSchema
from services.common.kafka import ProtobufProducer
from services.common.settings import Settings
from services.ingest.config import IngestSettings
from services.ingest.http.errors import RequestError
from services.ingest.http.models import RequestCode

__all__ = [
    "CatalogDep",
    "IngestDep",
    "ProducerDep",
    "SchemasDep",
    "SettingsDep",
    "app_catalog",
    "app_ingest_settings",
    "app_producer",
    "app_schemas",
    "app_settings",
    "dataset_or_404",
]


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def app_ingest_settings(request: Request) -> IngestSettings:
    ingest: IngestSettings = request.app.state.ingest
    return ingest


def app_schemas(request: Request) -> Mapping[str, DatasetSchema]:
    schemas: Mapping[str, DatasetSchema] = request.app.state.schemas
    return schemas


def app_producer(request: Request) -> ProtobufProducer | None:
    """The app's producer (None outside its lifespan: the handlers answer 503)."""
    producer: ProtobufProducer | None = request.app.state.producer
    return producer


def app_catalog(settings: Annotated[Settings, Depends(app_settings)]) -> DatasetCatalog:
    return DatasetCatalog.from_settings(settings)


SettingsDep = Annotated[Settings, Depends(app_settings)]
IngestDep = Annotated[IngestSettings, Depends(app_ingest_settings)]
SchemasDep = Annotated[Mapping[str, DatasetSchema], Depends(app_schemas)]
CatalogDep = Annotated[DatasetCatalog, Depends(app_catalog)]
ProducerDep = Annotated[ProtobufProducer | None, Depends(app_producer)]


def dataset_or_404(name: str, schemas: Mapping[str, DatasetSchema]) -> DatasetSchema:
    schema = schemas.get(name)
    if schema is None:
        message = f"no dataset named {name[:100]!r} is declared"
        raise RequestError.one(404, RequestCode.UNKNOWN_DATASET, message, field="name")
    return schema
