"""Reading sealed dataset versions from the artifact store (file:// or s3://).

A version is two objects under `version_paths()`: the rows as Parquet and the manifest,
written last as the commit point (ingest's `VersionWriter`). Readers therefore list
manifests only: a data file without one is an orphan of a crashed seal and is never read.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from services.common.artifacts import ArtifactStore
from services.common.datasets.manifest import (
    DATASETS_PREFIX,
    MANIFEST_NAME,
    VersionManifest,
    version_paths,
)

__all__ = ["VersionStore"]


class VersionStore:
    """The dataset-version layout over an `ArtifactStore`, read side."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

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
            if path.rsplit("/", 1)[-1] == MANIFEST_NAME
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
