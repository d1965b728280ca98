"""Session-wide fixtures: the real local stack, started once by driftloop's own launcher."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str,
    home: Path,
    timeout_s: float = 300,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `driftloop …` in a child process against the stack kept in `home`."""
    full_env = {**os.environ, "DRIFTLOOP_HOME": str(home), "COLUMNS": "200", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"driftloop {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def stack(stack_home: Path) -> Iterator[Settings]:
    """The real local stack (Kafka broker, redis-server, chDB store), up for the session.

    Yields settings pointing at it; `DRIFTLOOP_HOME` is exported so that code under test
    which builds its own `Settings()` finds the same stack.
    """
    run_cli("stack", "up", home=stack_home)
    previous = os.environ.get("DRIFTLOOP_HOME")
    os.environ["DRIFTLOOP_HOME"] = str(stack_home)
    try:
        yield load_settings(home=stack_home)
    finally:
        if previous is None:
            os.environ.pop("DRIFTLOOP_HOME", None)
        else:
            os.environ["DRIFTLOOP_HOME"] = previous
        run_cli("stack", "down", home=stack_home, check=False)
