"""The dataset-version catalog: resolving ids, listing, and diffing sealed manifests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from driftloop.v1.events_pb2 import DataEvent
from services.common.artifacts import ArtifactStore
from services.common.datasets.catalog import (
    AmbiguousVersionError,
    CatalogError,
    DatasetCatalog,
    UnknownVersionError,
    diff_versions,
    order_versions,
    profile_psi,
    resolve_version,
    summarize_datasets,
)
from services.common.datasets.manifest import (
    OffsetRange,
    VersionManifest,
    build_manifest,
    version_paths,
)
from services.common.datasets.profile import (
    assess_against_reference,
    feature_psi,
    profile_column,
    profile_table,
)
from services.common.datasets.schema import DatasetSchema
from services.ingest.validation import validate_batch
from tests.unit.ingest.conftest import LOANS, NOW_MS, make_event


def _events(
    n: int, *, start: int = 0, age_shift: int = 0, region: str | None = None
) -> list[DataEvent]:
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        categorical = {
            "region": region or ("north" if rng.random() < 0.7 else "south"),
            "merchant": f"m{i % 3}",
        }
        numeric = {
            "age": int(rng.integers(20, 60)) + age_shift,
            "income": float(rng.normal(5e4, 1e4)),
            "score": float(rng.random()),
        }
        out.append(
            make_event(i, numeric=numeric, categorical=categorical, event_time_ms=NOW_MS - i)
        )
    return out


def _table(schema: DatasetSchema, events: Sequence[DataEvent]) -> pa.Table:
    result = validate_batch(events, {schema.name: schema}, NOW_MS)
    assert result.rejected_count == 0, result.rejected[:3]
    return result.accepted[schema.name].table


def _manifest(
    schema: DatasetSchema,
    events: Sequence[DataEvent],
    created_at_ms: int = NOW_MS,
    parent: VersionManifest | None = None,
) -> VersionManifest:
    table = _table(schema, events)
    return build_manifest(
        schema,
        table,
        parent_version_id=parent.version_id if parent else None,
        profile=profile_table(table),
        assessment=assess_against_reference(parent.profile() if parent else None, table),
        source_offsets=[
            OffsetRange(topic="data.events", partition=0, first_offset=0, last_offset=9)
        ],
        created_at_ms=created_at_ms,
    )


def test_resolve_version_by_full_id_or_unique_prefix() -> None:
    ids = ["ab12" + "0" * 28, "ab34" + "0" * 28, "cd56" + "0" * 28]
    assert resolve_version(ids[0], ids) == ids[0]
    assert resolve_version("cd", ids) == ids[2]
    assert resolve_version("  AB1 ", ids) == ids[0]  # case and blanks do not matter
    with pytest.raises(AmbiguousVersionError, match="ambiguous: 2 versions match") as info:
        resolve_version("ab", ids)
    assert info.value.matches == ids[:2]
    with pytest.raises(UnknownVersionError, match="no version matches 'ef'"):
        resolve_version("ef", ids)
    with pytest.raises(UnknownVersionError, match="not a version id"):
        resolve_version("xyz!", ids)
    with pytest.raises(UnknownVersionError, match="not a version id"):
        resolve_version("", ids)


def test_listing_orders_versions_and_summarises_datasets(loans: DatasetSchema) -> None:
    first = _manifest(loans, _events(50), created_at_ms=NOW_MS)
    second = _manifest(loans, _events(30, start=50), created_at_ms=NOW_MS + 10, parent=first)
    assert [m.version_id for m in order_versions([second, first])] == [
        first.version_id,
        second.version_id,
    ]
    summaries = summarize_datasets(["loans", "empty"], {"loans": [second, first], "old": [first]})
    by_name = {s.name: s for s in summaries}
    assert [s.name for s in summaries] == ["empty", "loans", "old"]
    assert by_name["loans"].version_count == 2 and by_name["loans"].total_rows == 80
    assert by_name["loans"].latest_version_id == second.version_id
    assert by_name["loans"].latest_created_at_ms == NOW_MS + 10
    assert by_name["empty"].version_count == 0 and by_name["empty"].latest_version_id is None
    assert by_name["old"].declared is False and by_name["loans"].declared is True


def test_diff_of_a_version_with_itself_shows_no_change(loans: DatasetSchema) -> None:
    manifest = _manifest(loans, _events(300))
    diff = diff_versions(manifest, manifest)
    assert diff.row_delta == 0 and not diff.schema_changed
    assert [f.name for f in diff.features] == [
        "age",
        "income",
        "label",
        "merchant",
        "region",
        "score",
    ]
    for feature in diff.features:
        assert feature.a == feature.b
        assert feature.psi == pytest.approx(0.0, abs=1e-9)


def test_diff_flags_the_shifted_feature_with_a_large_psi(loans: DatasetSchema) -> None:
    base = _manifest(loans, _events(1000))
    shifted = _manifest(loans, _events(800, start=1000, age_shift=25), parent=base)
    diff = diff_versions(base, shifted)
    psi = {f.name: f.psi for f in diff.features}
    assert diff.row_delta == -200
    assert psi["age"] is not None and psi["age"] > 1.0  # most of b is beyond a's last edge
    assert psi["income"] is not None and psi["income"] < 0.1  # same distribution
    assert psi["region"] is not None and psi["region"] < 0.1
    age = next(f for f in diff.features if f.name == "age")
    assert age.a is not None and age.b is not None
    assert age.a.mean is not None and age.b.mean is not None
    assert age.b.mean == pytest.approx(age.a.mean + 25, abs=1.5)
    assert shifted.status == "suspect"  # the pipeline's own check agrees


def test_categorical_psi_is_exact_over_the_union_of_categories(loans: DatasetSchema) -> None:
    a = _manifest(loans, _events(400))
    b = _manifest(loans, _events(200, start=400, region="south"))
    region = next(f for f in diff_versions(a, b).features if f.name == "region")
    counts = a.profile().features["region"].category_counts
    expected_a = np.array([counts.get("north", 0), counts.get("south", 0)]) / 400
    expected_b = np.array([1e-4, 1.0])  # no "north" in b: floored at PSI_EPSILON
    expected = float(np.sum((expected_b - expected_a) * np.log(expected_b / expected_a)))
    assert region.psi == pytest.approx(expected)
    assert region.b is not None and region.b.top_categories == {"south": 200}
    assert region.b.distinct == 1 and region.b.kind == "categorical"


@pytest.mark.parametrize(("shift", "scale"), [(0.0, 1.0), (0.3, 1.0), (1.0, 1.5), (0.0, 2.0)])
def test_psi_from_stored_histograms_tracks_psi_from_raw_values(shift: float, scale: float) -> None:
    rng = np.random.default_rng(7)
    reference = profile_column("x", pa.array(rng.normal(0, 1, 20_000)))
    new_values = pa.array(rng.normal(shift, scale, 20_000))
    from_rows = feature_psi(reference, new_values)
    from_histograms = profile_psi(reference, profile_column("x", new_values))
    assert from_rows is not None and from_histograms is not None
    # Re-binning assumes values spread evenly within bins: close, not equal.
    assert from_histograms == pytest.approx(from_rows, rel=0.25, abs=0.02)


def test_psi_from_stored_histograms_is_large_for_a_large_shift() -> None:
    rng = np.random.default_rng(8)
    reference = profile_column("x", pa.array(rng.normal(0, 1, 20_000)))
    moved = profile_column("x", pa.array(rng.normal(3, 1, 20_000)))
    from_histograms = profile_psi(reference, moved)
    # Far in the tails the epsilon floor dominates both estimates; both are far past 0.2.
    assert from_histograms is not None and from_histograms > 2.0


def test_psi_is_none_when_not_comparable() -> None:
    numbers = profile_column("x", pa.array([1.0, 2.0, 3.0]))
    words = profile_column("x", pa.array(["a", "b"]))
    empty = profile_column("x", pa.array([None, None], pa.float64()))
    assert profile_psi(numbers, words) is None
    assert profile_psi(numbers, empty) is None and profile_psi(empty, numbers) is None


def test_diff_across_schemas_lists_added_and_removed_features(loans: DatasetSchema) -> None:
    doc: dict[str, Any] = {**LOANS, "numeric": {**LOANS["numeric"]}}
    del doc["numeric"]["score"]
    doc["numeric"]["tenure"] = {"dtype": "int"}
    changed = DatasetSchema.model_validate(doc)
    a = _manifest(loans, _events(100))
    events = _events(100, start=100)
    for event in events:
        del event.numeric["score"]
        event.numeric["tenure"] = 3
    b = _manifest(changed, events)
    diff = diff_versions(a, b)
    features = {f.name: f for f in diff.features}
    assert diff.schema_changed
    assert features["score"].b is None and features["score"].psi is None
    assert features["tenure"].a is None and features["tenure"].b is not None
    assert features["age"].psi is not None


def _store_version(store: ArtifactStore, manifest: VersionManifest) -> None:
    paths = version_paths(manifest.dataset, manifest.version_id)
    store.put_bytes(paths.data, b"parquet bytes are not read by the catalog")
    store.put_bytes(paths.manifest, manifest.canonical_json().encode())


def test_store_reader_lists_finds_and_reports_unreadable_manifests(
    loans: DatasetSchema, tmp_path: Path
) -> None:
    store = ArtifactStore(f"file://{tmp_path}")
    catalog = DatasetCatalog(store)
    assert catalog.dataset_names() == [] and catalog.versions("loans") == []
    first = _manifest(loans, _events(20), created_at_ms=NOW_MS + 5)
    second = _manifest(loans, _events(20, start=20), created_at_ms=NOW_MS + 1)
    for manifest in (first, second):
        _store_version(store, manifest)
    # Data without a manifest is not sealed; a manifest in the wrong place is refused.
    store.put_bytes(version_paths("loans", "f" * 32).data, b"half-written")
    misplaced = version_paths("loans", "e" * 32).manifest
    store.put_bytes(misplaced, first.canonical_json().encode())

    assert catalog.dataset_names() == ["loans"]
    scan = catalog.scan("loans")
    assert [m.version_id for m in scan.versions] == [second.version_id, first.version_id]
    assert len(scan.problems) == 1 and "not the version its path names" in scan.problems[0]
    assert catalog.find(first.version_id[:10]) == first
    assert catalog.find(second.version_id, dataset="loans") == second
    with pytest.raises(UnknownVersionError, match="in dataset 'other'"):
        catalog.find(first.version_id, dataset="other")
    with pytest.raises(CatalogError, match="not the version its path names"):
        catalog.find("e" * 32)
    assert catalog.versions("../etc") == []  # not a dataset name: nothing, not an error

    # A manifest whose bytes no longer match their recorded sha256 is reported, not trusted.
    path = tmp_path / version_paths("loans", first.version_id).manifest
    path.write_bytes(path.read_bytes().replace(b'"ok"', b'"OK"'))
    assert [m.version_id for m in catalog.versions("loans")] == [second.version_id]
    with pytest.raises(CatalogError, match="sha256"):
        catalog.find(first.version_id)
