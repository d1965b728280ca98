"""Monitor settings: prefix `DRIFTLOOP_MONITOR_`; where the stack is comes from `Settings`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.protogen import REPO_ROOT

__all__ = ["MonitorSettings", "get_monitor_settings"]


class MonitorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_MONITOR_", extra="ignore")

    group_id: str = "driftloop-monitor"
    models_dir: Path = REPO_ROOT / "deploy" / "models"  # model specs (`monitor:` section)
    # sinks: a buffer is written at this many records or when its oldest is this old
    poll_max_records: int = Field(default=10_000, ge=1)
    poll_timeout_ms: int = Field(default=200, ge=1)
    sink_max_rows: int = Field(default=20_000, ge=1)
    sink_max_age_ms: int = Field(default=1_000, ge=1)
    # analysis timer (defaults; a model spec's `monitor:` section overrides per model)
    tick_s: float = Field(default=5.0, gt=0)
    window_ms: int = Field(default=60_000, ge=1)
    lateness_ms: int = Field(default=5_000, ge=0)
    reference_windows: int = Field(default=10, ge=2)
    fire_after: int = Field(default=2, ge=1)
    clear_after: int = Field(default=3, ge=1)
    max_windows_per_tick: int = Field(default=50, ge=1)
    performance_lookback_windows: int = Field(default=30, ge=1)
    # HTTP query API
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8084, ge=0, le=65535)
    query_max_rows: int = Field(default=100_000, ge=1)
    query_timeout_s: int = Field(default=30, ge=1)


@lru_cache(maxsize=1)
def get_monitor_settings() -> MonitorSettings:
    return MonitorSettings()
