"""What the sealed versions say, as the ingest loop uses it: the sealed watermarks, each
dataset's head version, the reference version the next seal is assessed against, and the
categories already accepted. Rebuilt from the manifests alone (at start-up and on every
partition assignment), never from Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from services.common.datasets.manifest import OffsetRange, VersionManifest
from services.ingest.offsets import SealedWatermarks

__all__ = [
    "REFERENCE_MIN_ROWS",
    "SealedHistory",
    "head_versions",
    "known_categories",
    "rebuild_watermarks",
    "reference_versions",
]

# A version is the reference profile of later seals only with this many rows (a small one,
# sealed by age, would make PSI and null rates of the next one noise); without any, the
# parent is.
REFERENCE_MIN_ROWS = 1_000


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
class SealedHistory:
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
    def of(cls, manifests: Sequence[VersionManifest]) -> SealedHistory:
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
