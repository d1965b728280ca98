"""Sealed dataset versions in the artifact store: write once (reading is
`services.common.datasets.store`).

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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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
from services.ingest.sealing import SealedWatermarks

__all__ = [
    "REFERENCE_MIN_ROWS",
    "SealedState",
    "StoredVersion",
    "VersionWriter",
    "by_event_id",
    "head_versions",
    "known_categories",
    "parquet_bytes",
    "rebuild_watermarks",
    "reference_versions",
    "seal_version",
]

# A version is the reference profile of later seals only with this many rows (a small one,
# sealed by age, would make PSI and null rates of the next one noise); without any, the
# parent is.
REFERENCE_MIN_ROWS = 1_000


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
    with enough rows to profile (`SealedState.references`), so a small version sealed by
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


def reference_versions(
    manifests: Sequence[VersionManifest], min_rows: int = REFERENCE_MIN_ROWS
) -> dict[str, VersionManifest]:
    """Per dataset the newest version on its head's chain with at least `min_rows` rows:
    the reference profile of the next seal (whatever its status, so that after a real
    shift the following versions are compared with the shifted data, not flagged
    forever). Datasets with no such version have none (the parent is used)."""
    by_id = {m.version_id: m for m in manifests}
    references = {}
    for name, manifest in head_versions(manifests).items():
        current: VersionManifest | None = manifest
        while current is not None and current.row_count < min_rows:
            current = by_id.get(current.parent_version_id or "")
        if current is not None:
            references[name] = current
    return references


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


@dataclass
class SealedState:
    """What the manifests say, as the ingest loop uses it: the sealed watermarks, the
    highest of them per partition (records above it need no per-record check), each
    dataset's head version, its reference version (`reference_versions`) and the
    categories already accepted."""

    watermarks: SealedWatermarks = field(default_factory=SealedWatermarks)
    ceiling: dict[tuple[str, int], int] = field(default_factory=dict)
    heads: dict[str, VersionManifest] = field(default_factory=dict)
    references: dict[str, VersionManifest] = field(default_factory=dict)
    known: dict[str, dict[str, set[str]]] = field(default_factory=dict)

    @classmethod
    def of(cls, manifests: Sequence[VersionManifest]) -> SealedState:
        state = cls(
            watermarks=rebuild_watermarks(manifests),
            heads=head_versions(manifests),
            references=reference_versions(manifests),
            known=known_categories(manifests),
        )
        for manifest in manifests:
            state._raise_ceiling(manifest.source_offsets)
        return state

    def sealed(self, manifest: VersionManifest, rows: Sequence[OffsetRange]) -> None:
        """`manifest` is durable and announced; `rows`: the offsets of the rows it took
        (the same as its own unless it was already stored by an earlier seal)."""
        ranges = [*manifest.source_offsets, *rows]
        self.heads[manifest.dataset] = manifest
        if manifest.row_count >= REFERENCE_MIN_ROWS:
            self.references[manifest.dataset] = manifest
        self.watermarks.update(manifest.dataset, ranges)
        self._raise_ceiling(ranges)

    def _raise_ceiling(self, ranges: Iterable[OffsetRange]) -> None:
        for r in ranges:
            key = (r.topic, r.partition)
            self.ceiling[key] = max(self.ceiling.get(key, -1), r.last_offset)
