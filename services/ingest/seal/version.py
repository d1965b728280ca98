"""Sealing: pending rows become a version in the artifact store, written once (reading
is `services.common.datasets.store`).

A version is two objects under `version_paths()`: the rows as Parquet (zstd) and the
manifest. The Parquet file is written first and the manifest last, with exclusive
creation: the manifest is the commit point, so a crash between the two leaves only an
orphan data file that no reader looks at (nothing lists data files without a manifest)
and that the next seal of the same rows overwrites. Because the version id is the
content address, sealing the same rows again after a crash finds the manifest already
there and writes nothing. The manifests are also the durable memory of the ingest
service (`seal.history`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.common.datasets.manifest import (
    OffsetRange,
    VersionManifest,
    build_manifest,
    version_paths,
)
from services.common.datasets.profile import assess_against_reference, profile_table
from services.common.datasets.schema import DatasetSchema
from services.common.datasets.store import VersionStore

__all__ = ["StoredVersion", "VersionWriter", "by_event_id", "parquet_bytes", "seal_version"]


class StoredVersion(NamedTuple):
    manifest: VersionManifest  # the stored one (an earlier identical seal's, if it existed)
    created: bool  # False: the manifest was already there and nothing was written


def by_event_id(table: pa.Table) -> pa.Table:
    """The rows sorted by event id (stable), as the data file stores them."""
    ids = table.column("event_id")
    if len(ids) > 1 and not ids.null_count:
        ordered = pc.all(pc.less(ids.slice(0, len(ids) - 1), ids.slice(1))).as_py()
        if ordered:
            return table
    return table.take(pc.sort_indices(table, sort_keys=[("event_id", "ascending")]))


def parquet_bytes(table: pa.Table) -> bytes:
    """The rows as Parquet (zstd), sorted by event id so equal content gives equal bytes."""
    return _parquet(by_event_id(table))


def _parquet(ordered: pa.Table) -> bytes:
    # Only string columns other than the (unique) event id are dictionary-encoded: a
    # dictionary of unique ids or of continuous numbers only costs time and space.
    dictionary = [
        f.name for f in ordered.schema if pa.types.is_string(f.type) and f.name != "event_id"
    ]
    sink = pa.BufferOutputStream()
    pq.write_table(ordered, sink, compression="zstd", use_dictionary=dictionary)
    return bytes(sink.getvalue().to_pybytes())


class VersionWriter(VersionStore):
    """The dataset-version layout over an `ArtifactStore`, with the one write ingest does."""

    def write(
        self, manifest: VersionManifest, table: pa.Table, data: Future[bytes] | None = None
    ) -> StoredVersion:
        """Store `table` as the version `manifest` describes, unless it is already sealed
        (`data`: its `parquet_bytes`, if already being computed)."""
        paths = version_paths(manifest.dataset, manifest.version_id)
        if self.store.exists(paths.manifest):
            return StoredVersion(self.read_manifest(paths.manifest), created=False)
        parquet = data.result() if data is not None else parquet_bytes(table)
        self.store.put_bytes(paths.data, parquet)  # atomic, replaces an orphan
        created = self.store.put_if_absent(paths.manifest, manifest.canonical_json().encode())
        if not created:  # another writer sealed the same content in between
            return StoredVersion(self.read_manifest(paths.manifest), created=False)
        return StoredVersion(manifest, created=True)


def seal_version(
    storage: VersionWriter,
    schema: DatasetSchema,
    table: pa.Table,
    *,
    parent: VersionManifest | None,
    source_offsets: Sequence[OffsetRange],
    thresholds: tuple[float, float],
    created_at_ms: int,
    reference: VersionManifest | None = None,
) -> StoredVersion:
    """Profile `table`, assess it against the reference profile (PSI and null-rate
    thresholds), build its manifest and store it. CPU-bound: run it off the event loop.
    The reference is `reference`, else the parent: the pipeline passes the newest version
    with enough rows to profile (`SealedHistory.references`), so a small version sealed by
    age does not become the yardstick of the next one.

    The rows are sorted by event id once, for both the data file and the content hash,
    and the Parquet encoding (Arrow's, outside the GIL) runs on a second thread while
    this one profiles and hashes."""
    psi_threshold, null_rate_jump = thresholds
    baseline = reference or parent
    profile = baseline.profile() if baseline else None
    table = by_event_id(table)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet") as pool:
        data = pool.submit(_parquet, table)  # sorted just above
        manifest = build_manifest(
            schema,
            table,
            parent_version_id=parent.version_id if parent else None,
            profile=profile_table(table),
            assessment=assess_against_reference(profile, table, psi_threshold, null_rate_jump),
            source_offsets=source_offsets,
            created_at_ms=created_at_ms,
        )
        return storage.write(manifest, table, data)
