"""`driftloop models promote | rollback | history | show | list` against the real store and
broker: the alias moves, the history records who, why and which kind of move, a ModelEvent
is published, and moves to a version that cannot serve are refused in one line."""

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
PASSED = {"passed": True, "checks": [{"name": "auc_min", "passed": True}]}
FAILED = {"passed": False, "checks": [{"name": "auc_vs_champion", "passed": False}]}


async def test_promote_and_rollback_move_champion_record_why_and_announce(
    stack: Settings, tmp_path: Path
) -> None:
    settings, env = isolated_settings(stack, tmp_path, static_ingest=False)
    await _topics(settings)
    registry = ModelRegistry(ArtifactStore(settings.artifact_root))
    for _ in range(3):
        registry.register(
            "m-cli", b"{}", "xgboost-json", INFO.model_copy(update={"gate_report": PASSED})
        )
    registry.set_alias("m-cli", "champion", 1, actor="trainer", reason="gate passed", kind="gate")
    registry.set_alias("m-cli", "challenger", 2, actor="trainer", reason="gate passed", kind="gate")

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
    assert failed.returncode == 2 and "no earlier champion" in failed.stderr
    assert failed.stderr.strip().count("\n") == 0  # one line, no traceback

    champion = [c for c in registry.alias_history("m-cli") if c.alias == "champion"]
    assert [(c.version, c.previous) for c in champion] == [
        (1, None),
        (2, 1),
        (3, 2),
        (2, 3),
        (1, 2),
    ]
    assert champion[1].actor.startswith("cli:") and champion[1].reason == "canary won"
    assert [c.kind for c in champion] == ["gate", "promote", "promote", "rollback", "rollback"]
    assert champion[3].reason == "guardrail breach (from v3)"
    history = cli("models", "history", "champion")
    assert "rollback" in history and "guardrail breach" in history and "challenger" not in history

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


def _refused(stack: Settings, env: dict[str, str], *args: str) -> str:
    """Run a CLI command that must be refused as bad input; its single line of stderr."""
    proc = run_cli(*args, home=stack.home, env=env, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


async def test_promotion_refuses_a_tampered_artifact_a_failed_gate_and_a_no_op(
    stack: Settings, tmp_path: Path
) -> None:
    settings, env = isolated_settings(stack, tmp_path, static_ingest=False)
    await _topics(settings)
    registry = ModelRegistry(ArtifactStore(settings.artifact_root))
    passed = INFO.model_copy(update={"gate_report": PASSED})
    registry.register("m-guard", b'{"v": 1}', "xgboost-json", passed)
    registry.register(
        "m-guard", b'{"v": 2}', "xgboost-json", INFO.model_copy(update={"gate_report": FAILED})
    )
    registry.register("m-guard", b'{"v": 3}', "xgboost-json", passed)
    registry.set_alias("m-guard", "champion", 1, actor="trainer", reason="gate passed", kind="gate")

    # Flip one byte of v3's artifact.
    path = Path(
        registry.store.uri(registry.manifest("m-guard", 3).artifact.path).removeprefix("file://")
    )
    data = bytearray(path.read_bytes())
    data[2] ^= 0x01
    path.write_bytes(bytes(data))

    line = _refused(stack, env, "models", "promote", "3", "-m", "m-guard")
    assert "sha256" in line and str(path) in line
    shown = run_cli("models", "show", "3", "-m", "m-guard", home=stack.home, env=env).stdout
    assert "artifact check failed" in shown and "sha256" in shown
    assert (
        "verified"
        in run_cli("models", "show", "1", "-m", "m-guard", home=stack.home, env=env).stdout
    )

    line = _refused(stack, env, "models", "promote", "2", "-m", "m-guard")
    assert "failed its gate" in line and "auc_vs_champion" in line and "--force" in line
    line = _refused(stack, env, "models", "promote", "1", "-m", "m-guard")
    assert "already v1" in line
    assert [c.seq for c in registry.alias_history("m-guard")] == [0]  # refusals change nothing

    forced = run_cli("models", "promote", "2", "-m", "m-guard", "--force", home=stack.home, env=env)
    assert "forced" in forced.stdout
    last = registry.alias_history("m-guard")[-1]
    assert (last.version, last.kind, last.forced) == (2, "promote", True)
    assert (
        "promote (forced)"
        in run_cli("models", "history", "-m", "m-guard", home=stack.home, env=env).stdout
    )

    # A missing artifact is refused like a tampered one, naming the path.
    path.unlink()
    line = _refused(stack, env, "models", "promote", "3", "-m", "m-guard")
    assert "missing" in line or "no artifact" in line
    assert str(path) in line
    line = _refused(stack, env, "models", "list", "--model", "nosuch")
    assert "no model named 'nosuch'" in line
