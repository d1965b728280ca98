"""Manifests, reference profiles, names, and the alias-log fold: pure, no I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from services.common.registry import (
    AliasChange,
    AliasLogError,
    AliasState,
    CategoricalProfile,
    Histogram,
    InvalidNameError,
    ManifestError,
    ModelManifest,
    NumericProfile,
    ReferenceProfile,
    RegistrationInfo,
    fold_aliases,
    validate_alias,
    validate_name,
)


def _profile() -> ReferenceProfile:
    return ReferenceProfile(
        row_count=1000,
        numeric={
            "amount": NumericProfile(
                bin_edges=[0.0, 0.1, 1 / 3, 2.5e-7 + 1, 1e300], counts=[1, 2, 3, 994], null_count=4
            )
        },
        categorical={"country": CategoricalProfile(counts={"de": 600, "fr": 300, "é": 100})},
        prediction=Histogram(bin_edges=[0.0, 0.5, 1.0], counts=[700, 300]),
        base_rate=0.3,
    )


def _manifest(**overrides: Any) -> ModelManifest:
    fields: dict[str, Any] = {
        "name": "churn-xgb",
        "version": 3,
        "framework": "xgboost",
        "artifact": {
            "path": "models/churn-xgb/versions/000003/model.ubj",
            "format": "xgboost-ubj",
            "sha256": "ab" * 32,
            "size": 4611,
        },
        "features": [
            {"name": "amount", "dtype": "float"},
            {"name": "country", "dtype": "category"},
        ],
        "reference_profile": _profile(),
        "code_version": "71decec",
        "training_datasets": ["ds-2024-01-01-abc", "ds-2024-01-02-def"],
        "metrics": {"auc": 0.8123456789012345, "logloss": 1e-12},
        "params": {"max_depth": 3, "eta": 0.1, "objective": "binary:logistic", "nested": [1, None]},
        "library_versions": {"xgboost": "3.2.0"},
        "created_at_ms": 1_700_000_000_123,
        "gate_report": {"passed": True, "delta_auc": {"low": 0.001, "high": 0.02}},
        "seed": 42,
    }
    fields.update(overrides)
    return ModelManifest.model_validate(fields)


def test_manifest_json_round_trips_exactly() -> None:
    manifest = _manifest()
    text = manifest.to_json()
    again = ModelManifest.from_json(text)
    assert again == manifest
    assert again.to_json() == text
    assert again.metrics["auc"] == 0.8123456789012345
    assert again.reference_profile.numeric["amount"].bin_edges[2] == 1 / 3
    assert isinstance(again.params["max_depth"], int)
    assert again.feature_names == ["amount", "country"]


def test_manifest_from_json_names_every_bad_field() -> None:
    doc = json.loads(_manifest().to_json())
    doc["version"] = 0
    doc["artifact"]["sha256"] = "not-hex"
    with pytest.raises(ManifestError) as err:
        ModelManifest.from_json(json.dumps(doc), source="s3://bucket/m.json")
    message = str(err.value)
    assert "s3://bucket/m.json" in message
    assert "version" in message and "artifact.sha256" in message


def test_manifest_from_json_refuses_non_json() -> None:
    with pytest.raises(ManifestError, match="invalid manifest"):
        ModelManifest.from_json(b"{truncated")


def test_framework_must_match_the_artifact_format() -> None:
    with pytest.raises(ValidationError, match="not a torch format"):
        _manifest(framework="torch")


def test_pickle_is_not_an_artifact_format() -> None:
    doc = json.loads(_manifest().to_json())
    doc["artifact"]["format"] = "pickle"
    with pytest.raises(ManifestError, match=r"artifact\.format"):
        ModelManifest.from_json(json.dumps(doc))


def test_reference_profile_must_cover_the_feature_schema() -> None:
    with pytest.raises(ValidationError, match=r"missing \['extra'\]"):
        _manifest(
            features=[
                {"name": "amount", "dtype": "float"},
                {"name": "country", "dtype": "category"},
                {"name": "extra", "dtype": "float"},
            ]
        )
    with pytest.raises(ValidationError, match="category features"):
        _manifest(features=[{"name": "amount", "dtype": "float"}])


def test_duplicate_feature_names_are_refused() -> None:
    features = [{"name": "amount", "dtype": "float"}] * 2
    with pytest.raises(ValidationError, match="duplicate feature names"):
        _manifest(features=features)


@pytest.mark.parametrize(
    ("edges", "counts", "problem"),
    [
        ([0.0, 1.0], [1, 2], "need 1 counts"),
        ([0.0, 0.0, 1.0], [1, 2], "strictly increasing"),
        ([0.0, 1.0], [-1], "counts must be >= 0"),
        ([0.0, float("inf")], [1], "finite"),
    ],
)
def test_bad_histograms_are_refused(edges: list[float], counts: list[int], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Histogram(bin_edges=edges, counts=counts)


def test_histogram_from_values_uses_quantile_bins_and_counts_everything() -> None:
    values = [float(i) for i in range(100)] + [float("nan")]
    hist = Histogram.from_values(values, n_bins=4)
    assert hist.bin_edges == [0.0, 24.75, 49.5, 74.25, 99.0]
    assert sum(hist.counts) == 100
    constant = Histogram.from_values([2.0, 2.0, 2.0])
    assert constant.bin_edges == [1.5, 2.5] and constant.counts == [3]


def test_categorical_frequencies() -> None:
    freqs = CategoricalProfile(counts={"a": 3, "b": 1}).frequencies()
    assert freqs == {"a": 0.75, "b": 0.25}


def test_registration_info_is_the_manifest_minus_identity() -> None:
    manifest = _manifest()
    info = RegistrationInfo.model_validate(
        manifest.model_dump(include=set(RegistrationInfo.model_fields))
    )
    assert info.reference_profile == manifest.reference_profile


@pytest.mark.parametrize("good", ["champion", "canary", "a", "shadow-2", "x_y"])
def test_valid_alias_names(good: str) -> None:
    assert validate_alias(good) == good


@pytest.mark.parametrize("bad", ["", "Champion", "1st", "-x", "a b", "a/b", "a" * 65, "latest"])
def test_invalid_alias_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="alias name"):
        validate_alias(bad)


def test_model_names_are_validated_like_path_segments() -> None:
    assert validate_name("churn-xgb") == "churn-xgb"
    with pytest.raises(InvalidNameError, match=r"invalid model name '\.\./etc'"):
        validate_name("../etc")


def _change(seq: int, alias: str, version: int | None, previous: int | None) -> AliasChange:
    return AliasChange(
        seq=seq,
        model="m",
        alias=alias,
        version=version,
        previous=previous,
        actor="trainer",
        reason=f"step {seq}",
        at_ms=seq,
    )


def test_fold_applies_sets_and_removals_in_order() -> None:
    log = [
        _change(0, "champion", 1, None),
        _change(1, "challenger", 2, None),
        _change(2, "champion", 2, 1),
        _change(3, "challenger", None, 2),
    ]
    state = fold_aliases(log)
    assert state == AliasState(seq=3, aliases={"champion": 2})
    # Folding in two halves gives the same state as folding everything at once.
    assert fold_aliases(log[2:], fold_aliases(log[:2])) == state
    assert fold_aliases([]) == AliasState(seq=-1, aliases={})


def test_fold_refuses_a_gap_or_duplicate() -> None:
    with pytest.raises(AliasLogError, match="expected entry 1, found 2"):
        fold_aliases([_change(0, "champion", 1, None), _change(2, "champion", 2, 1)])
    with pytest.raises(AliasLogError, match="expected entry 1, found 0"):
        fold_aliases([_change(0, "champion", 1, None), _change(0, "champion", 1, None)])


def test_fold_refuses_an_entry_that_contradicts_the_log() -> None:
    with pytest.raises(AliasLogError, match="entry 1 says 'champion' was 7"):
        fold_aliases([_change(0, "champion", 1, None), _change(1, "champion", 2, 7)])


def test_alias_change_json_round_trips() -> None:
    change = _change(5, "canary", 3, None)
    assert AliasChange.model_validate_json(change.model_dump_json()) == change
