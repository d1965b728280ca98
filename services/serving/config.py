"""Serving settings: prefix `DRIFTLOOP_SERVING_`; where the stack is comes from `Settings`.

Per-variant replica counts and autoscaling are maps keyed by variant name, e.g.
`DRIFTLOOP_SERVING_REPLICAS='{"champion": 2}'` or
`DRIFTLOOP_SERVING_AUTOSCALING='{"champion": {"min_replicas": 1, "max_replicas": 4}}'`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_VARIANTS", "AutoscalingSpec", "BatchingSpec", "ServingSettings"]

# The registry aliases served as variants (DESIGN.md: champion, challenger/canary, shadow).
DEFAULT_VARIANTS = ("champion", "challenger", "canary", "shadow")


class AutoscalingSpec(BaseModel):
    """Serve's autoscaling for one variant (see `ray.serve.config.AutoscalingConfig`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=2, ge=1)
    target_ongoing_requests: float = Field(default=32.0, gt=0)
    upscale_delay_s: float = Field(default=5.0, ge=0)
    downscale_delay_s: float = Field(default=60.0, ge=0)
    # the window Serve averages the replicas' ongoing requests over before deciding
    look_back_period_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _check_range(self) -> AutoscalingSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) < min_replicas ({self.min_replicas})"
            )
        return self


class BatchingSpec(BaseModel):
    """`@serve.batch` knobs, applied to live replicas through `reconfigure`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(default=64, ge=1, le=65_536)
    batch_wait_timeout_s: float = Field(default=0.002, ge=0, le=10)


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_SERVING_", env_nested_delimiter="__", extra="ignore"
    )

    # Which models to serve (empty: every model in the registry) and which aliases of
    # each become variants (deployed when the alias is set, removed when it is removed).
    models: list[str] = Field(default_factory=list)
    variants: list[str] = Field(default_factory=lambda: list(DEFAULT_VARIANTS))
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    # Serve's per-replica cap on requests in flight: it also caps a batch (notes/ray.md).
    max_ongoing_requests: int = Field(default=256, ge=1)
    replicas: dict[str, int] = Field(default_factory=dict)  # variant -> fixed count
    default_replicas: int = Field(default=1, ge=1)
    autoscaling: dict[str, AutoscalingSpec] = Field(default_factory=dict)  # wins over replicas
    # Ray resources one replica reserves (scheduling only; several variants share 2 cores).
    replica_num_cpus: float = Field(default=0.25, ge=0)
    # Warm-up: predict this many times on synthetic rows before a replica reports ready.
    warmup_rounds: int = Field(default=3, ge=0)
    # Ray: None starts a local instance on 127.0.0.1; "host:port" / "auto" joins a cluster.
    ray_address: str | None = None
    ray_num_cpus: int | None = Field(default=None, ge=1)
    group_id: str = "driftloop-serving"
    # Deployed state is reconciled with the registry on every models.events record and
    # on this period (a missed event is corrected within one period).
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    poll_timeout_ms: int = Field(default=500, ge=1)
    # Client side: retries of a call whose replica died, within this budget.
    retry_budget_s: float = Field(default=15.0, gt=0)
    # How often a client refreshes the list of deployed variants from Serve.
    refresh_interval_s: float = Field(default=1.0, gt=0)
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=8083, ge=0, le=65535)

    def replicas_for(self, variant: str) -> int:
        return self.replicas.get(variant, self.default_replicas)
