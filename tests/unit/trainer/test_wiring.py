"""Pure parts of the trainer's wiring: model specs, event → trigger, state rebuild,
rollback targets, and the registry's fenced alias writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.v1 import events_pb2 as pb
from services.common.artifacts import ArtifactStore
from services.common.datasets.schema import load_schemas
from services.common.protogen import REPO_ROOT
from services.common.registry import (
    AliasChange,
    AliasKind,
    ModelRegistry,
    StaleFenceError,
    rollback_target,
)
from services.trainer.specs import ModelSpecError, load_model_specs
from services.trainer.triggers import triggers_for

SCHEMAS = load_schemas(REPO_ROOT / "deploy" / "datasets")


def test_shipped_specs_load_and_match_their_datasets() -> None:
    specs = load_model_specs(REPO_ROOT / "deploy" / "models", SCHEMAS)
    spec = specs["credit-default"]
    assert spec.dataset == "credit" and spec.task == "binary"
    assert spec.gate.fairness_group == "region"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("dataset: nope\n", "dataset 'nope' is not declared"),
        ("gate: {task: regression, primary_metric: rmse}\n", "binary label"),
        ("gate: {fairness_group: shoe_size}\n", "fairness_group 'shoe_size'"),
        ("windw: {last_versions: 3}\n", "windw"),
        ("name: Bad Name\n", "invalid model name"),
    ],
)
def test_a_bad_spec_names_the_file_and_the_field(tmp_path: Path, patch: str, message: str) -> None:
    base = {"name": "m1\n", "dataset": "credit\n"}
    key = patch.split(":")[0]
    base[key] = patch.split(":", 1)[1].lstrip()
    text = "".join(f"{k}: {v}" for k, v in base.items())
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(ModelSpecError) as err:
        load_model_specs(tmp_path, SCHEMAS)
    assert "m.yaml" in str(err.value) and message in str(err.value)


def test_a_spec_with_a_duplicate_key_is_refused_not_silently_overridden(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "name: m1\ndataset: credit\ngate: {min_primary: 0.9}\ngate: {min_primary: 0.1}\n"
    )
    with pytest.raises(ModelSpecError, match=r"m.yaml: line 4: key 'gate' appears more than once"):
        load_model_specs(tmp_path, SCHEMAS)


def test_a_spec_with_the_monitors_section_loads_for_the_trainer(tmp_path: Path) -> None:
    # one file configures both services (README: "a model spec's `monitor:` section")
    (tmp_path / "m.yaml").write_text(
        "name: m1\ndataset: credit\nmonitor: {reference_windows: 5, thresholds: {psi: 0.25}}\n"
    )
    assert load_model_specs(tmp_path, SCHEMAS)["m1"].dataset == "credit"


def test_events_become_triggers_for_the_models_they_concern() -> None:
    specs = load_model_specs(REPO_ROOT / "deploy" / "models", SCHEMAS).values()
    version = pb.DatasetVersion(
        dataset="credit", version_id="a" * 32, row_count=500, status="suspect", created_at_ms=5
    )
    [t] = triggers_for(version, specs, now_ms=9)
    assert (t.kind, t.model, t.rows, t.suspect, t.at_ms) == (
        "dataset_version",
        "credit-default",
        500,
        True,
        5,
    )
    drift = pb.DriftEvent(
        model="credit-default",
        metric="psi",
        feature="annual_income",
        value=0.4,
        threshold=0.2,
        severity=pb.SEVERITY_CRITICAL,
    )
    [t] = triggers_for(drift, specs, now_ms=9)
    assert (t.kind, t.severity, t.metric, t.at_ms) == ("drift", 3, "psi(annual_income)", 9)
    assert triggers_for(pb.DriftEvent(model="other"), specs, now_ms=9) == []
    assert triggers_for(pb.DatasetVersion(dataset="other"), specs, now_ms=9) == []
    assert triggers_for(pb.LabelEvent(), specs, now_ms=9) == []


def _change(
    seq: int, version: int | None, previous: int | None, kind: AliasKind, reason: str = "r"
) -> AliasChange:
    return AliasChange(
        seq=seq,
        model="m",
        alias="champion",
        version=version,
        previous=previous,
        actor="t",
        reason=reason,
        at_ms=0,
        kind=kind,
    )


def test_rollback_walks_the_champion_history_like_a_stack_by_kind() -> None:
    history = [
        _change(0, 1, None, "gate"),
        _change(1, 2, 1, "promote"),
        _change(2, 3, 2, "promote"),
    ]
    assert rollback_target(history) == 2
    # The kind decides, not the reason's words.
    history.append(_change(3, 2, 3, "rollback", reason="bad canary"))
    assert rollback_target(history) == 1  # not back to 3
    history.append(_change(4, 4, 2, "promote", reason="rollback: not one"))
    assert rollback_target(history) == 2
    assert rollback_target(history[:1]) is None


def test_alias_entries_from_before_typed_kinds_are_read_with_their_kind() -> None:
    base = {"model": "m", "alias": "champion", "actor": "t", "at_ms": 0}
    legacy_rollback = AliasChange.model_validate(
        base | {"seq": 3, "version": 2, "previous": 3, "reason": "rollback: x (from v3)"}
    )
    legacy_removal = AliasChange.model_validate(base | {"seq": 4, "previous": 2, "reason": "x"})
    legacy_set = AliasChange.model_validate(base | {"seq": 0, "version": 1, "reason": "first"})
    assert (legacy_rollback.kind, legacy_removal.kind, legacy_set.kind) == (
        "rollback",
        "remove",
        "set",
    )


def test_registry_refuses_an_alias_write_with_a_stale_fence(tmp_path: Path) -> None:
    registry = ModelRegistry(ArtifactStore(f"file://{tmp_path}"))
    store = registry.store
    for v in (1, 2):  # two committed versions, written the way the registry lays them out
        store.put_bytes(f"models/m/versions/{v:06d}/manifest.json", b"{}")
    registry.set_alias("m", "challenger", 1, actor="a", reason="r", fence=5)
    registry.set_alias("m", "challenger", 2, actor="b", reason="r", fence=7)
    with pytest.raises(StaleFenceError, match="token 5 is stale"):
        registry.set_alias("m", "champion", 1, actor="a", reason="late", fence=5)
    registry.set_alias("m", "champion", 2, actor="human", reason="no fence")  # unfenced ok
    assert registry.max_fence("m") == 7
    assert registry.aliases("m") == {"challenger": 2, "champion": 2}
