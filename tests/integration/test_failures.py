"""Every documented failure of the CLI and the services is one clear line on stderr, with
exit 2 for bad input and 1 for an unavailable dependency; `--debug` shows the traceback.

The processes run for real; the "unavailable" cases point at a port where nothing listens
(127.0.0.1:1), so they need no stack, and the Redis case uses the stack's real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.settings import Settings
from tests.conftest import REPO_ROOT

NOWHERE = {
    "DRIFTLOOP_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    "DRIFTLOOP_REDIS_URL": "redis://127.0.0.1:1/0",
}


def _run(args: list[str], env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env={**os.environ, "DRIFTLOOP_HOME": str(home), "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "error: " in lines[0] and all(w in lines[0] for w in words), lines[0]
    return lines[0]


def _bad_spec(tmp: Path, body: str) -> dict[str, str]:
    folder = tmp / "models"
    folder.mkdir(exist_ok=True)
    (folder / "bad.yaml").write_text(body)
    return {"DRIFTLOOP_TRAINER_MODELS_DIR": str(folder)}


CLI = ["-m", "services.cli"]
TRAINER = ["-m", "services.trainer"]
SPEC_ERRORS = [
    ("name: m\ndataset: credit\nsplit: {holdout_fraction: 1.5}\n", "split.holdout_fraction"),
    ("name: m\ndataset: credit\npolicy: [unclosed\n", "not valid YAML"),
    ("name: m\ndataset: credit\ngaet: {}\n", "gaet"),
]


@pytest.mark.parametrize(("body", "what"), SPEC_ERRORS)
def test_a_bad_model_spec_is_one_line_naming_the_file(tmp_path: Path, body: str, what: str) -> None:
    env = {**NOWHERE, **_bad_spec(tmp_path, body)}
    _one_line(_run([*CLI, "train", "m"], env, tmp_path), 2, "bad.yaml", what)


def test_the_trainer_service_reports_a_bad_spec_in_one_line(tmp_path: Path) -> None:
    env = {**NOWHERE, **_bad_spec(tmp_path, SPEC_ERRORS[0][0])}
    _one_line(_run(TRAINER, env, tmp_path), 2, "trainer: error", "bad.yaml", SPEC_ERRORS[0][1])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([*CLI, "train", "credit-default"], ("cannot reach Kafka at", "127.0.0.1:1")),
        ([*CLI, "datasets", "publish-sample", "credit", "-n", "10"], ("cannot reach Kafka",)),
        (TRAINER, ("trainer: error", "cannot reach Kafka at", "127.0.0.1:1")),
        (["-m", "services.ingest"], ("ingest: error", "127.0.0.1:1")),
    ],
)
def test_an_unreachable_broker_is_one_line_exit_1(
    tmp_path: Path, args: list[str], words: tuple[str, ...]
) -> None:
    _one_line(_run(args, NOWHERE, tmp_path), 1, *words)


def test_bad_arguments_are_one_line_exit_2(tmp_path: Path) -> None:
    env = {"DRIFTLOOP_ARTIFACT_ROOT": f"file://{tmp_path / 'artifacts'}"}
    _one_line(_run([*CLI, "train", "nosuch"], env, tmp_path), 2, "no model spec 'nosuch'")
    _one_line(
        _run([*CLI, "models", "list", "--model", "nosuch"], env, tmp_path),
        2,
        "no model named 'nosuch'",
    )
    _one_line(_run([*CLI, "models", "show", "1"], env, tmp_path), 2, "--model")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {**NOWHERE, **_bad_spec(tmp_path, SPEC_ERRORS[0][0])}
    proc = _run([*CLI, "--debug", "train", "m"], env, tmp_path)
    assert proc.returncode == 2 and "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    proc = _run(TRAINER, {**env, "DRIFTLOOP_DEBUG": "1"}, tmp_path)
    assert proc.returncode == 2 and "Traceback (most recent call last)" in proc.stderr


def test_an_unreachable_redis_is_one_line_exit_1(stack: Settings, tmp_path: Path) -> None:
    env = {"DRIFTLOOP_REDIS_URL": "redis://127.0.0.1:1/0"}
    _one_line(_run(TRAINER, env, stack.home), 1, "cannot reach Redis at redis://127.0.0.1:1/0")
