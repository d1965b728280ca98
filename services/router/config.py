"""The router's settings (prefix `DRIFTLOOP_ROUTER_`, on top of the common ones)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import Settings

__all__ = ["RouterSettings"]


class RouterSettings(Settings):
    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_", env_nested_delimiter="__", extra="ignore"
    )

    router_host: str = "127.0.0.1"
    router_port: int = Field(default=50051, ge=0, le=65535)
    router_auth_token: str = Field(default="", description="bearer token; empty = no auth")
    router_max_batch_rows: int = Field(default=4096, ge=1)
    router_coalesce_rows: int = Field(default=512, ge=1)
    router_calls_in_flight: int = Field(default=2, ge=1, description="per variant")
    router_variant_timeout_s: float = Field(default=2.0, gt=0)
    router_shadow_timeout_s: float = Field(default=10.0, gt=0)
    router_max_shadow_tasks: int = Field(default=64, ge=0)
    router_log_queue: int = Field(default=50_000, ge=1)
    router_spool_dir: Path | None = None  # default: <home>/router-spool
    router_spool_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    router_replica: str = Field(default="router-0", description="names this replica's spool")

    @property
    def spool_path(self) -> Path:
        base = self.router_spool_dir or (self.home / "router-spool")
        return base / f"{self.router_replica}.spool"
