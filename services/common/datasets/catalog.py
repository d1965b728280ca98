"""Read-only catalog of sealed dataset versions: list, show, resolve and diff them.

A version is sealed once its `manifest.json` exists (the pipeline writes it after the
Parquet data, as the commit point), so the catalog only ever reads manifests, laid out
as `version_paths()` puts them. Everything but `DatasetCatalog` is a pure function over
`VersionManifest`s. Versions are addressed by full id or by a unique prefix of it.

PSI between two versions compares their stored histograms, not raw rows: numeric bins
are the older side's (`a`) quantile edges, and `b`'s histogram is re-binned onto them
assuming values are spread evenly within each of its own bins (values outside `a`'s
range count in its first or last bin, as in `profile.feature_psi`). Categorical PSI
is exact over the union of categories.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from services.common.artifacts import ArtifactError, ArtifactStore
from services.common.datasets.manifest import (
    DATASETS_PREFIX,
    MANIFEST_NAME,
    ManifestError,
    VersionManifest,
    version_paths,
)
from services.common.datasets.profile import FeatureProfile, histogram_psi, psi
from services.common.settings import Settings

__all__ = [
    "AmbiguousVersionError",
    "CatalogError",
    "CatalogScan",
    "DatasetCatalog",
    "DatasetSummary",
    "FeatureDiff",
    "FeatureSummary",
    "UnknownVersionError",
    "VersionDiff",
    "VersionSummary",
    "diff_versions",
    "order_versions",
    "profile_psi",
    "resolve_version",
    "summarize_datasets",
    "summarize_feature",
    "summarize_version",
]

_DATASET = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")  # as schema.DatasetName
_VERSION_REF = re.compile(r"^[0-9a-f]{1,32}$")
_TOP_CATEGORIES = 5


class CatalogError(LookupError):
    """A version or dataset that cannot be found or read; the message says which."""


class UnknownVersionError(CatalogError):
    pass


class AmbiguousVersionError(CatalogError):
    def __init__(self, ref: str, matches: Sequence[str]) -> None:
        shown = ", ".join(matches[:5]) + (", …" if len(matches) > 5 else "")
        super().__init__(f"version {ref!r} is ambiguous: {len(matches)} versions match ({shown})")
        self.matches = list(matches)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VersionSummary(_Frozen):
    dataset: str
    version_id: str
    parent_version_id: str | None
    created_at_ms: int
    row_count: int
    status: Literal["ok", "suspect"]
    status_reasons: list[str]
    schema_hash: str
    min_event_time_ms: int
    max_event_time_ms: int


class DatasetSummary(_Frozen):
    name: str
    declared: bool  # a schema for it is loaded (a stored dataset may no longer be declared)
    version_count: int
    total_rows: int
    suspect_count: int
    latest_version_id: str | None
    latest_created_at_ms: int | None


class FeatureSummary(_Frozen):
    kind: Literal["numeric", "categorical"]
    count: int
    null_count: int
    null_rate: float
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    distinct: int | None = None  # categorical only
    top_categories: dict[str, int] | None = None  # categorical only, most frequent first


class FeatureDiff(_Frozen):
    name: str
    a: FeatureSummary | None  # None: the feature is absent from that version
    b: FeatureSummary | None
    psi: float | None  # b against a; None when not comparable (absent, kind change, empty)


class VersionDiff(_Frozen):
    a: VersionSummary
    b: VersionSummary
    row_delta: int  # b - a
    schema_changed: bool
    features: list[FeatureDiff]  # by name


def summarize_version(manifest: VersionManifest) -> VersionSummary:
    return VersionSummary(**manifest.model_dump(include=set(VersionSummary.model_fields)))


def order_versions(manifests: Iterable[VersionManifest]) -> list[VersionManifest]:
    """Oldest first by creation time (ties by id, so the order is total and stable)."""
    return sorted(manifests, key=lambda m: (m.created_at_ms, m.version_id))


def summarize_datasets(
    declared: Iterable[str], versions: Mapping[str, Sequence[VersionManifest]]
) -> list[DatasetSummary]:
    """One row per dataset that is declared or has stored versions, by name."""
    names = set(declared)
    out = []
    for name in sorted(names | versions.keys()):
        ordered = order_versions(versions.get(name, ()))
        latest = ordered[-1] if ordered else None
        out.append(
            DatasetSummary(
                name=name,
                declared=name in names,
                version_count=len(ordered),
                total_rows=sum(m.row_count for m in ordered),
                suspect_count=sum(m.status == "suspect" for m in ordered),
                latest_version_id=latest.version_id if latest else None,
                latest_created_at_ms=latest.created_at_ms if latest else None,
            )
        )
    return out


def resolve_version(ref: str, candidates: Iterable[str]) -> str:
    """The one candidate id equal to, or else starting with, `ref` (case-insensitive)."""
    wanted = ref.strip().lower()
    if not _VERSION_REF.match(wanted):
        raise UnknownVersionError(f"{ref!r} is not a version id (1-32 hex digits)")
    ids = sorted(set(candidates))
    if wanted in ids:
        return wanted
    matches = [v for v in ids if v.startswith(wanted)]
    if not matches:
        raise UnknownVersionError(f"no version matches {ref!r}")
    if len(matches) > 1:
        raise AmbiguousVersionError(ref, matches)
    return matches[0]


def summarize_feature(profile: FeatureProfile) -> FeatureSummary:
    if profile.kind == "numeric":
        stats = profile.model_dump(include={"count", "null_count", "mean", "std", "min", "max"})
        return FeatureSummary(kind="numeric", null_rate=profile.null_rate, **stats)
    top = sorted(profile.category_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return FeatureSummary(
        kind="categorical",
        count=profile.count,
        null_count=profile.null_count,
        null_rate=profile.null_rate,
        distinct=len(profile.category_counts),
        top_categories=dict(top[:_TOP_CATEGORIES]),
    )


def profile_psi(a: FeatureProfile, b: FeatureProfile) -> float | None:
    """PSI of `b` against reference `a` from their stored profiles (see module doc)."""
    if a.kind != b.kind or not a.count or not b.count:
        return None
    if a.kind == "categorical":
        categories = sorted(a.category_counts.keys() | b.category_counts.keys())
        return psi(
            [a.category_counts.get(c, 0) for c in categories],
            [b.category_counts.get(c, 0) for c in categories],
        )
    ha, hb = a.histogram(), b.histogram()
    if ha is None or hb is None or not sum(hb.counts):
        return None
    return histogram_psi(ha, hb)


def diff_versions(a: VersionManifest, b: VersionManifest) -> VersionDiff:
    """Rows, schema and per-feature statistics of `a` and `b` side by side."""
    fa = {f.name: f for f in a.features}
    fb = {f.name: f for f in b.features}
    features = []
    for name in sorted(fa.keys() | fb.keys()):
        pa_, pb_ = fa.get(name), fb.get(name)
        features.append(
            FeatureDiff(
                name=name,
                a=summarize_feature(pa_) if pa_ else None,
                b=summarize_feature(pb_) if pb_ else None,
                psi=profile_psi(pa_, pb_) if pa_ and pb_ else None,
            )
        )
    return VersionDiff(
        a=summarize_version(a),
        b=summarize_version(b),
        row_delta=b.row_count - a.row_count,
        schema_changed=a.schema_hash != b.schema_hash,
        features=features,
    )


@dataclass
class CatalogScan:
    """Readable versions of one dataset, oldest first, and what could not be read."""

    versions: list[VersionManifest] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class DatasetCatalog:
    """The thin reader: finds sealed versions in the artifact store and reads manifests."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    @classmethod
    def from_settings(cls, settings: Settings) -> DatasetCatalog:
        return cls(ArtifactStore.from_settings(settings))

    def _sealed(self, dataset: str | None = None) -> dict[str, list[str]]:
        """Version ids with a manifest, per dataset (from paths only; nothing is read)."""
        if dataset is not None and not _DATASET.match(dataset):
            return {}
        prefix = DATASETS_PREFIX if dataset is None else f"{DATASETS_PREFIX}/{dataset}/versions"
        found: dict[str, list[str]] = {}
        for path in self.store.list(prefix):
            parts = path.split("/")
            if len(parts) == 5 and parts[2] == "versions" and parts[4] == MANIFEST_NAME:
                found.setdefault(parts[1], []).append(parts[3])
        return found

    def dataset_names(self) -> list[str]:
        return sorted(self._sealed())

    def read(self, dataset: str, version_id: str) -> VersionManifest:
        path = version_paths(dataset, version_id).manifest
        try:
            manifest = VersionManifest.from_json(self.store.get_bytes(path), source=path)
        except (ArtifactError, ManifestError) as exc:
            raise CatalogError(f"cannot read version {version_id} of {dataset!r}: {exc}") from None
        if (manifest.dataset, manifest.version_id) != (dataset, version_id):
            raise CatalogError(
                f"{path} describes {manifest.dataset!r} version {manifest.version_id}, "
                "not the version its path names"
            )
        return manifest

    def scan(self, dataset: str) -> CatalogScan:
        scan = CatalogScan()
        for version_id in self._sealed(dataset).get(dataset, []):
            try:
                scan.versions.append(self.read(dataset, version_id))
            except CatalogError as exc:
                scan.problems.append(str(exc))
        scan.versions = order_versions(scan.versions)
        return scan

    def versions(self, dataset: str) -> list[VersionManifest]:
        return self.scan(dataset).versions

    def find(self, ref: str, dataset: str | None = None) -> VersionManifest:
        """The version `ref` (full id or unique prefix), in `dataset` or in any dataset."""
        sealed = self._sealed(dataset)
        owner = {vid: name for name, ids in sealed.items() for vid in ids}
        scope = f" in dataset {dataset!r}" if dataset is not None else ""
        try:
            version_id = resolve_version(ref, owner)
        except UnknownVersionError as exc:
            raise UnknownVersionError(f"{exc}{scope}") from None
        return self.read(owner[version_id], version_id)
