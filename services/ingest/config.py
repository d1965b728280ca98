"""Ingest settings: prefix `DRIFTLOOP_INGEST_`; where the stack is comes from `Settings`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.protogen import REPO_ROOT

__all__ = ["IngestSettings", "get_ingest_settings"]


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_INGEST_", extra="ignore")

    schemas_dir: Path = REPO_ROOT / "deploy" / "datasets"
    group_id: str = "driftloop-ingest"
    # Kafka static membership (e.g. the pod name): a restarted member takes its partitions
    # back at once instead of after a rebalance; unique per replica when set.
    group_instance_id: str | None = None
    # consume
    poll_max_records: int = Field(default=5_000, ge=1)
    poll_timeout_ms: int = Field(default=500, ge=1)
    # seal a dataset's pending rows by size or by age (received time of the oldest row)
    seal_max_rows: int = Field(default=50_000, ge=1)
    seal_max_age_ms: int = Field(default=30_000, ge=1)
    # the broken-feed check's thresholds are per dataset: the `quality:` block of its YAML
    # dedup fast path in Redis (correctness never depends on it)
    dedup_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    # HTTP API
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8081, ge=0, le=65535)
    http_max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    http_max_events: int = Field(default=10_000, ge=1)


@lru_cache(maxsize=1)
def get_ingest_settings() -> IngestSettings:
    return IngestSettings()
