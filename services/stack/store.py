"""The analytics store (chDB locally): migrated and checked in a short-lived child process.

A chDB store can be opened by one process at a time, so neither the launcher nor its
caller may keep it open (a second opener fails with "Cannot lock file …/status").
"""

from __future__ import annotations

import json
import subprocess
import sys

from services.common.protogen import REPO_ROOT
from services.stack.errors import StackError

__all__ = ["migrate", "ping"]


def _run_store_cli(*args: str, timeout_s: float = 120) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "store", *args, "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip().splitlines()
        raise StackError(" ".join(message[-3:]) or f"`driftloop store {args[0]}` failed")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def migrate(dsn: str) -> dict[str, object]:
    return _run_store_cli("migrate", "--dsn", dsn)


def ping(dsn: str) -> dict[str, object]:
    return _run_store_cli("ping", "--dsn", dsn, timeout_s=60)
