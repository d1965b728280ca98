"""Launcher settings (prefix `DRIFTLOOP_STACK_`); where the parts end up is in the state file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.cache import default_cache_dir

__all__ = ["StackConfig", "default_cache_dir"]


class StackConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_STACK_", extra="ignore")

    # 0 = pick a free port on 127.0.0.1
    kafka_port: int = Field(default=0, ge=0, le=65535)
    kafka_controller_port: int = Field(default=0, ge=0, le=65535)
    redis_port: int = Field(default=0, ge=0, le=65535)
    kafka_heap_mb: int = Field(default=512, ge=128)
    kafka_version: str = "4.0.2"
    ready_timeout_s: float = Field(default=90.0, gt=0)
    stop_timeout_s: float = Field(default=20.0, gt=0)
    # how long `up`/`down` wait for another `up`/`down` on the same home to finish
    lock_timeout_s: float = Field(default=300.0, ge=0)
    cache_dir: Path = Field(default_factory=default_cache_dir)
