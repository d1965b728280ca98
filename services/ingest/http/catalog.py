"""Read-only routes over the sealed versions: datasets, versions, a manifest, a diff."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Query

from services.common.datasets.catalog import (
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
from services.common.datasets.manifest import VersionManifest
from services.common.datasets.schema import DatasetSchema
from services.ingest.http.deps import CatalogDep, SchemasDep, dataset_or_404
from services.ingest.http.errors import RequestError, error_responses
from services.ingest.http.models import RequestCode

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/datasets", response_model=list[DatasetSummary])
def list_datasets(schemas: SchemasDep, catalog: CatalogDep) -> list[DatasetSummary]:
    stored = {name: catalog.versions(name) for name in catalog.dataset_names()}
    return summarize_datasets(schemas, stored)


def _known(name: str, schemas: Mapping[str, DatasetSchema], catalog: DatasetCatalog) -> None:
    if name not in schemas and name not in catalog.dataset_names():
        dataset_or_404(name, schemas)


@router.get(
    "/v1/datasets/{name}/versions",
    response_model=list[VersionSummary],
    responses=error_responses(404),
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
    responses=error_responses(404, 409),
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
    responses=error_responses(404, 409, 422),
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
