"""Content-addressed dataset versions: the content hash, the version id, the manifest and
where a version lives in the artifact store (`version_paths`).

The version id depends only on what the rows are (dataset, schema hash, content hash),
never on when or in which order they arrived, so replaying the same records after a
crash reproduces the same id and writing the version again is a no-op.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Literal, NamedTuple, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from driftloop.v1.events_pb2 import DatasetVersion
from driftloop.v1.events_pb2 import OffsetRange as OffsetRangeProto
from services.common.datasets.profile import Assessment, DatasetProfile, FeatureProfile
from services.common.datasets.schema import DatasetSchema, schema_hash

__all__ = [
    "DATASETS_PREFIX",
    "MANIFEST_NAME",
    "ManifestError",
    "OffsetRange",
    "VersionManifest",
    "VersionPaths",
    "build_manifest",
    "content_hash",
    "version_id_for",
    "version_paths",
]

DATASETS_PREFIX = "datasets"  # in the artifact store
MANIFEST_NAME = "manifest.json"
_CONTENT_DOMAIN = b"driftloop.dataset.content.v1\0"
_VERSION_DOMAIN = "driftloop.dataset.version.v1"
_HEX32, _HEX64 = r"^[0-9a-f]{32}$", r"^[0-9a-f]{64}$"


def _normalise(column: pa.ChunkedArray) -> tuple[str, pa.Array]:
    """One physical form per logical type, in one chunk, so the hash sees values only."""
    array = column.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string", array.cast(pa.large_string())
    if pa.types.is_integer(kind):
        return "int64", array.cast(pa.int64())
    if pa.types.is_floating(kind):
        return "float64", array.cast(pa.float64())
    if pa.types.is_boolean(kind):
        return "bool", array
    raise TypeError(f"content_hash does not support columns of type {kind}")


def _column_parts(kind: str, array: pa.Array) -> list[bytes]:
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    parts = [np.packbits(valid, bitorder="little").tobytes()]
    if kind == "string":
        filled = array.fill_null("")
        _, offsets_buf, data_buf = filled.buffers()
        offsets = np.frombuffer(offsets_buf, dtype="<i8")[
            filled.offset : filled.offset + len(filled) + 1
        ]
        data = data_buf.to_pybytes()[offsets[0] : offsets[-1]] if len(filled) else b""
        return [*parts, np.diff(offsets).astype("<i8").tobytes(), data]
    if kind == "float64":
        values = array.fill_null(0.0).to_numpy(zero_copy_only=False) + 0.0  # -0.0 -> 0.0
        values[np.isnan(values)] = np.nan  # one NaN bit pattern
        return [*parts, values.astype("<f8").tobytes()]
    if kind == "bool":
        return [
            *parts,
            array.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8).tobytes(),
        ]
    return [*parts, array.fill_null(0).to_numpy(zero_copy_only=False).astype("<i8").tobytes()]


def _strictly_increasing(ids: pa.Array) -> bool:
    """Already in the order `content_hash` sorts to (rows sealed by ingest are: they
    come sorted by their unique event ids), so the sort can be skipped."""
    if ids.null_count or len(ids) < 2:
        return ids.null_count == 0
    return bool(pc.all(pc.less(ids.slice(0, len(ids) - 1), ids.slice(1))).as_py())


def content_hash(table: pa.Table) -> str:
    """sha256 hex of the rows, independent of row order, chunking and column order.

    Rows are sorted by event_id (then by every other column, so even duplicate ids give
    one order); each column, in name order, is hashed as its name and logical type, a
    validity bitmap and its values in a fixed little-endian layout, every part
    length-prefixed so no two tables share a byte stream.
    """
    names = sorted(table.column_names)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate column names in {table.column_names}")
    columns = {name: _normalise(table.column(name)) for name in names}
    keys = ["event_id", *(n for n in names if n != "event_id")] if "event_id" in columns else names
    order: pa.Array | None = None
    if not ("event_id" in columns and _strictly_increasing(columns["event_id"][1])):
        sortable = pa.table({name: columns[name][1] for name in keys})
        # Nulls sort last (the default); ties on event_id fall through to the other columns.
        order = pc.sort_indices(sortable, sort_keys=[(n, "ascending") for n in keys])
    digest = hashlib.sha256(_CONTENT_DOMAIN)
    digest.update(table.num_rows.to_bytes(8, "little"))
    for name in names:
        kind, array = columns[name]
        header = json.dumps([name, kind]).encode()
        for part in (header, *_column_parts(kind, array if order is None else array.take(order))):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
    return digest.hexdigest()


def version_id_for(dataset: str, schema_hash_hex: str, content_hash_hex: str) -> str:
    """First 32 hex chars (128 bits) of sha256 over dataset, schema hash and content hash."""
    text = json.dumps([_VERSION_DOMAIN, dataset, schema_hash_hex, content_hash_hex])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class OffsetRange(BaseModel):
    """Inclusive range of source offsets on one topic partition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field(min_length=1)
    partition: int = Field(ge=0)
    first_offset: int = Field(ge=0)
    last_offset: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.first_offset > self.last_offset:
            raise ValueError(f"first_offset {self.first_offset} > last_offset {self.last_offset}")
        return self

    def to_proto(self) -> OffsetRangeProto:
        return OffsetRangeProto(
            topic=self.topic,
            partition=self.partition,
            first_offset=self.first_offset,
            last_offset=self.last_offset,
        )


class VersionPaths(NamedTuple):
    data: str  # Parquet (zstd), relative to the artifact store root
    manifest: str


def version_paths(dataset: str, version_id: str) -> VersionPaths:
    base = f"{DATASETS_PREFIX}/{dataset}/versions/{version_id}"
    return VersionPaths(f"{base}/data.parquet", f"{base}/{MANIFEST_NAME}")


class ManifestError(ValueError):
    """A manifest that does not parse or validate."""


class VersionManifest(BaseModel):
    """What a sealed version is. Written once, after its data, as the commit point."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    format_version: Literal[1] = 1
    version_id: str = Field(pattern=_HEX32)
    dataset: str = Field(min_length=1)
    parent_version_id: str | None = Field(default=None, pattern=_HEX32)
    row_count: int = Field(ge=1)
    schema_hash: str = Field(pattern=_HEX64)
    content_hash: str = Field(pattern=_HEX64)
    features: list[FeatureProfile]
    source_offsets: list[OffsetRange]
    status: Literal["ok", "suspect"]
    status_reasons: list[str] = Field(default_factory=list)
    created_at_ms: int = Field(ge=0)
    min_event_time_ms: int
    max_event_time_ms: int
    storage_relpath: str = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        expected = version_id_for(self.dataset, self.schema_hash, self.content_hash)
        if self.version_id != expected:
            raise ValueError(f"version_id {self.version_id} is not the content address {expected}")
        if (self.status == "suspect") != bool(self.status_reasons):
            raise ValueError("status_reasons must be given exactly when status is 'suspect'")
        if self.min_event_time_ms > self.max_event_time_ms:
            raise ValueError("min_event_time_ms > max_event_time_ms")
        return self

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace: equal manifests are equal bytes."""
        doc = self.model_dump(mode="json")
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "manifest") -> VersionManifest:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<document>'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ManifestError(f"invalid {source}: {details}") from None

    def profile(self) -> DatasetProfile:
        """This version as the reference profile for the next batch."""
        return DatasetProfile(row_count=self.row_count, features={f.name: f for f in self.features})

    def to_proto(self, storage_uri: str, manifest_uri: str) -> DatasetVersion:
        """The `datasets.versions` announcement (URIs are the artifact store's)."""
        return DatasetVersion(
            dataset=self.dataset,
            version_id=self.version_id,
            parent_version_id=self.parent_version_id or "",
            row_count=self.row_count,
            schema_hash=self.schema_hash,
            features=[f.to_proto() for f in self.features],
            storage_uri=storage_uri,
            manifest_uri=manifest_uri,
            source_offsets=[r.to_proto() for r in self.source_offsets],
            status=self.status,
            status_reasons=self.status_reasons,
            min_event_time_ms=self.min_event_time_ms,
            max_event_time_ms=self.max_event_time_ms,
            created_at_ms=self.created_at_ms,
        )


def build_manifest(
    schema: DatasetSchema,
    table: pa.Table,
    *,
    parent_version_id: str | None,
    profile: DatasetProfile,
    assessment: Assessment,
    source_offsets: Sequence[OffsetRange],
    created_at_ms: int,
) -> VersionManifest:
    """The manifest of `table` (accepted rows in `schema.arrow_schema()` layout).

    `profile` is `profile_table(table)`; `assessment` is `assess_against_reference` of
    the parent's profile against `table`; `created_at_ms` is the ingest clock.
    """
    if not table.num_rows:
        raise ValueError("cannot seal an empty table")
    if not table.schema.equals(schema.arrow_schema()):
        raise ValueError(f"table layout does not match dataset {schema.name!r}: {table.schema}")
    s_hash, c_hash = schema_hash(schema), content_hash(table)
    version_id = version_id_for(schema.name, s_hash, c_hash)
    times = pc.min_max(table.column("event_time_ms"))
    return VersionManifest(
        version_id=version_id,
        dataset=schema.name,
        parent_version_id=parent_version_id,
        row_count=table.num_rows,
        schema_hash=s_hash,
        content_hash=c_hash,
        features=[profile.features[name] for name in sorted(profile.features)],
        source_offsets=sorted(source_offsets, key=lambda r: (r.topic, r.partition)),
        status=assessment.status,
        status_reasons=list(assessment.reasons),
        created_at_ms=created_at_ms,
        min_event_time_ms=times["min"].as_py(),
        max_event_time_ms=times["max"].as_py(),
        storage_relpath=version_paths(schema.name, version_id).data,
    )
