"""Trainer settings: prefix `DRIFTLOOP_TRAINER_`; where the stack is comes from `Settings`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.protogen import REPO_ROOT

__all__ = ["TrainerSettings"]


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_TRAINER_", extra="ignore")

    models_dir: Path = REPO_ROOT / "deploy" / "models"
    schemas_dir: Path = REPO_ROOT / "deploy" / "datasets"
    group_id: str = "driftloop-trainer"
    # Ray: None starts (or joins) a local instance on 127.0.0.1; "ray://…" / "auto" a cluster.
    ray_address: str | None = None
    ray_num_cpus: int | None = Field(default=None, ge=1)
    # single flight: a lease per model, renewed while training runs
    lock_ttl_s: float = Field(default=120.0, gt=1)
    lock_renew_s: float = Field(default=20.0, gt=0)
    # how often the service checks schedules and polls its topics
    tick_s: float = Field(default=5.0, gt=0)
    poll_timeout_ms: int = Field(default=500, ge=1)
    actor: str = "trainer"
    # health endpoints (/healthz, /readyz, /v1/models); port 0 picks a free one
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=8082, ge=0, le=65535)
