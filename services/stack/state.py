"""The state file: where each part of the local stack listens, and what to stop on `down`."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from services.common.settings import state_file_path

__all__ = ["PartState", "StackState", "read_state", "remove_state", "write_state"]


class PartState(BaseModel):
    pid: int | None = None
    ports: dict[str, int] = Field(default_factory=dict)
    log: str = ""
    detail: dict[str, str] = Field(default_factory=dict)


class StackState(BaseModel):
    version: int = 1
    started_at_ms: int = 0
    # keys read by services.common.settings (kafka_bootstrap, redis_url, clickhouse_dsn, …)
    settings: dict[str, str] = Field(default_factory=dict)
    parts: dict[str, PartState] = Field(default_factory=dict)


def read_state(home: Path) -> StackState | None:
    path = state_file_path(home)
    if not path.is_file():
        return None
    return StackState.model_validate(json.loads(path.read_text()))


def write_state(home: Path, state: StackState) -> Path:
    """Write atomically, so a reader never sees half a file."""
    path = state_file_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".stack.", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        handle.write(state.model_dump_json(indent=2))
    os.replace(tmp, path)
    return path


def remove_state(home: Path) -> None:
    state_file_path(home).unlink(missing_ok=True)
