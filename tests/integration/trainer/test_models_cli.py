"""`driftloop models promote | rollback` against the real store and broker: the alias
moves, the history records who and why, and a ModelEvent is published."""

from __future__ import annotations

import json
from pathlib import Path

from driftloop.v1 import events_pb2 as pb
from services.common.artifacts import ArtifactStore
from services.common.registry import (
    FeatureSpec,
    Histogram,
    ModelRegistry,
    NumericProfile,
    ReferenceProfile,
    RegistrationInfo,
)
from services.common.settings import Settings
from tests.conftest import run_cli
from tests.integration.harness import isolated_settings
from tests.integration.trainer.loop_harness import model_events
from tests.integration.trainer.test_trainer_loop import _topics

INFO = RegistrationInfo(
    features=[FeatureSpec(name="x", dtype="float")],
    reference_profile=ReferenceProfile(
        row_count=1,
        numeric={"x": NumericProfile(bin_edges=[0.0, 1.0], counts=[1])},
        prediction=Histogram(bin_edges=[0.0, 1.0], counts=[1]),
    ),
    code_version="test",
)


async def test_promote_and_rollback_move_champion_record_why_and_announce(
    stack: Settings, tmp_path: Path
) -> None:
    settings, env = isolated_settings(stack, tmp_path, static_ingest=False)
    await _topics(settings)
    registry = ModelRegistry(ArtifactStore(settings.artifact_root))
    for _ in range(3):
        registry.register("m-cli", b"{}", "xgboost-json", INFO)
    registry.set_alias("m-cli", "champion", 1, actor="trainer", reason="gate passed")
    registry.set_alias("m-cli", "challenger", 2, actor="trainer", reason="gate passed")

    def cli(*args: str) -> str:
        return run_cli(*args, home=stack.home, env=env).stdout

    assert "promoted m-cli v2 to champion (was v1)" in cli(
        "models", "promote", "challenger", "--reason", "canary won"
    )
    assert registry.aliases("m-cli") == {"champion": 2}  # the challenger alias is used up
    cli("models", "promote", "3", "-m", "m-cli", "--reason", "hotfix")
    assert "rolled back m-cli v2 to champion (was v3)" in cli(
        "models", "rollback", "--reason", "guardrail breach"
    )
    assert "rolled back m-cli v1 to champion (was v2)" in cli("models", "rollback")
    assert registry.get_alias("m-cli", "champion") == 1
    failed = run_cli("models", "rollback", home=stack.home, env=env, check=False)
    assert failed.returncode == 1 and "no earlier champion" in failed.stderr

    champion = [c for c in registry.alias_history("m-cli") if c.alias == "champion"]
    assert [(c.version, c.previous) for c in champion] == [
        (1, None),
        (2, 1),
        (3, 2),
        (2, 3),
        (1, 2),
    ]
    assert champion[1].actor.startswith("cli:") and champion[1].reason == "canary won"
    assert champion[3].reason.startswith("rollback: guardrail breach")

    events = await model_events(settings)
    kinds = [
        (pb.ModelEventType.Name(e.type), e.version, e.previous_version)
        for e in events
        if e.type != pb.MODEL_EVENT_TYPE_ALIAS_CHANGED
    ]
    assert kinds == [
        ("MODEL_EVENT_TYPE_PROMOTED", "2", "1"),
        ("MODEL_EVENT_TYPE_PROMOTED", "3", "2"),
        ("MODEL_EVENT_TYPE_ROLLED_BACK", "2", "3"),
        ("MODEL_EVENT_TYPE_ROLLED_BACK", "1", "2"),
    ]
    listing = json.loads(cli("models", "list", "--json"))
    assert [(r["version"], r["aliases"]) for r in listing] == [(1, ["champion"]), (2, []), (3, [])]
