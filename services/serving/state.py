"""`$DRIFTLOOP_HOME/serving.json`: where the local serving runs and what it deploys.

The serving service rewrites it (atomically) whenever its deployments change; clients on
the same machine read the Ray address from it. In production the address comes from
`DRIFTLOOP_SERVING_RAY_ADDRESS` instead and there is no state file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["STATE_FILE_NAME", "DeployedVariant", "ServingState", "read_state", "write_state"]

STATE_FILE_NAME = "serving.json"


class DeployedVariant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    variant: str
    version: int = Field(ge=1)


class ServingState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ray_address: str
    pid: int
    started_at_ms: int
    updated_at_ms: int
    ready: bool = False
    apps: dict[str, DeployedVariant] = Field(default_factory=dict)


def state_path(home: Path) -> Path:
    return home / STATE_FILE_NAME


def write_state(home: Path, state: ServingState) -> None:
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.replace(path)


def read_state(home: Path) -> ServingState | None:
    """The recorded state, or None when there is none (or it is unreadable)."""
    try:
        return ServingState.model_validate(json.loads(state_path(home).read_text()))
    except (OSError, ValueError, ValidationError):
        return None
