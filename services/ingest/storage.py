"""Sealed dataset versions in the artifact store: write once, list, read back.

A version is two objects under `version_paths()`: the rows as Parquet (zstd) and the
manifest. The Parquet file is written first and the manifest last, with exclusive
creation: the manifest is the commit point, so a crash between the two leaves only an
orphan data file that no reader looks at (nothing lists data files without a manifest)
and that the next seal of the same rows overwrites. Because the version id is the
content address, sealing the same rows again after a crash finds the manifest already
there and writes nothing.

The manifests are also the durable memory of the ingest service: at start-up (and on
every partition assignment) the sealed watermarks and the head version of each dataset
are rebuilt from them, never from Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.common.artifacts import ArtifactStore
from services.ingest.profiling import assess_against_reference, profile_table
from services.ingest.schema import DatasetSchema
from services.ingest.sealing import OffsetRange, SealedWatermarks
from services.ingest.versioning import VersionManifest, build_manifest, version_paths

__all__ = [
    "DATASETS_PREFIX",
    "StoredVersion",
    "VersionStorage",
    "head_versions",
    "known_categories",
    "parquet_bytes",
    "rebuild_watermarks",
    "seal_version",
]

DATASETS_PREFIX = "datasets"
_MANIFEST_NAME = "manifest.json"


class StoredVersion(NamedTuple):
    manifest: VersionManifest  # the stored one (an earlier identical seal's, if it existed)
    created: bool  # False: the manifest was already there and nothing was written


def parquet_bytes(table: pa.Table) -> bytes:
    """The rows as Parquet (zstd), sorted by event id so equal content gives equal bytes."""
    ordered = table.take(pc.sort_indices(table, sort_keys=[("event_id", "ascending")]))
    sink = pa.BufferOutputStream()
    pq.write_table(ordered, sink, compression="zstd", use_dictionary=True)
    return bytes(sink.getvalue().to_pybytes())


class VersionStorage:
    """The dataset-version layout over an `ArtifactStore` (file:// or s3://)."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def write(self, manifest: VersionManifest, table: pa.Table) -> StoredVersion:
        """Store `table` as the version `manifest` describes, unless it is already sealed."""
        paths = version_paths(manifest.dataset, manifest.version_id)
        if self.store.exists(paths.manifest):
            return StoredVersion(self.read_manifest(paths.manifest), created=False)
        self.store.put_bytes(paths.data, parquet_bytes(table))  # atomic, replaces an orphan
        created = self.store.put_if_absent(paths.manifest, manifest.canonical_json().encode())
        if not created:  # another writer sealed the same content in between
            return StoredVersion(self.read_manifest(paths.manifest), created=False)
        return StoredVersion(manifest, created=True)

    def uris(self, manifest: VersionManifest) -> tuple[str, str]:
        """(storage_uri, manifest_uri) for the `DatasetVersion` announcement."""
        paths = version_paths(manifest.dataset, manifest.version_id)
        return self.store.uri(paths.data), self.store.uri(paths.manifest)

    def read_manifest(self, relpath: str) -> VersionManifest:
        return VersionManifest.from_json(self.store.get_bytes(relpath), source=relpath)

    def manifests(self, dataset: str | None = None) -> list[VersionManifest]:
        """Every sealed version (optionally of one dataset), oldest first.

        An unreadable manifest raises: skipping it would forget which offsets it covers
        and let a replay seal its rows a second time.
        """
        prefix = f"{DATASETS_PREFIX}/{dataset}" if dataset else DATASETS_PREFIX
        found = [
            self.read_manifest(path)
            for path in self.store.list(prefix)
            if path.rsplit("/", 1)[-1] == _MANIFEST_NAME
        ]
        return sorted(found, key=lambda m: (m.created_at_ms, m.version_id))

    def read_table(
        self, manifest: VersionManifest, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """A version's rows, verified against the stored sha256 before they are parsed."""
        data = self.store.get_bytes(manifest.storage_relpath)
        return pq.read_table(pa.BufferReader(data), columns=list(columns) if columns else None)

    def event_ids(self, dataset: str, since_ms: int = 0) -> list[str]:
        """Event ids of every version of `dataset` created at or after `since_ms`."""
        ids: list[str] = []
        for manifest in self.manifests(dataset):
            if manifest.created_at_ms >= since_ms:
                column = self.read_table(manifest, ["event_id"]).column("event_id")
                ids.extend(column.to_pylist())
        return ids


def seal_version(
    storage: VersionStorage,
    schema: DatasetSchema,
    table: pa.Table,
    *,
    parent: VersionManifest | None,
    source_offsets: Sequence[OffsetRange],
    thresholds: tuple[float, float],
    created_at_ms: int,
) -> StoredVersion:
    """Profile `table`, assess it against its parent's profile (PSI and null-rate
    thresholds), build its manifest and store it. CPU-bound: run it off the event loop."""
    psi_threshold, null_rate_jump = thresholds
    reference = parent.profile() if parent else None
    manifest = build_manifest(
        schema,
        table,
        parent_version_id=parent.version_id if parent else None,
        profile=profile_table(table),
        assessment=assess_against_reference(reference, table, psi_threshold, null_rate_jump),
        source_offsets=source_offsets,
        created_at_ms=created_at_ms,
    )
    return storage.write(manifest, table)


def rebuild_watermarks(manifests: Iterable[VersionManifest]) -> SealedWatermarks:
    """Highest sealed offset per (dataset, topic, partition), from the manifests alone."""
    marks = SealedWatermarks()
    for manifest in manifests:
        marks.update(manifest.dataset, manifest.source_offsets)
    return marks


def head_versions(manifests: Sequence[VersionManifest]) -> dict[str, VersionManifest]:
    """The latest version of each dataset: the one no other version names as its parent
    (the newest such, should a crash ever have forked the chain)."""
    parents = {m.parent_version_id for m in manifests if m.parent_version_id}
    heads: dict[str, VersionManifest] = {}
    for manifest in manifests:  # oldest first, so a later head replaces an earlier one
        if manifest.version_id not in parents:
            heads[manifest.dataset] = manifest
    return heads


def known_categories(manifests: Iterable[VersionManifest]) -> dict[str, dict[str, set[str]]]:
    """Per dataset and categorical feature, every value some version accepted: those do
    not count against `max_cardinality` again."""
    known: dict[str, dict[str, set[str]]] = {}
    for manifest in manifests:
        per_feature = known.setdefault(manifest.dataset, {})
        for feature in manifest.features:
            if feature.kind == "categorical":
                per_feature.setdefault(feature.name, set()).update(feature.category_counts)
    return known
