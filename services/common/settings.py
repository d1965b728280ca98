"""driftloop's settings: one pydantic-settings class, prefix `DRIFTLOOP_`.

Where each part of the local stack listens is recorded by the launcher in a state file,
`$DRIFTLOOP_HOME/stack.json`; environment variables override it, and explicit keyword
arguments override both. A production deployment sets the variables and has no state file.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = [
    "STATE_FILE_NAME",
    "Settings",
    "SettingsError",
    "TopicNames",
    "default_home",
    "get_settings",
    "load_settings",
    "masked_url",
    "state_file_path",
]

STATE_FILE_NAME = "stack.json"
# Keys of the state file that are settings (the rest is the launcher's own bookkeeping).
_STATE_KEYS = (
    "kafka_bootstrap",
    "redis_url",
    "clickhouse_dsn",
    "artifact_root",
    # a stack started with `--secure` records how to reach its SASL_SSL listener
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password_file",
    "kafka_ssl_cafile",
)


class SettingsError(ValueError):
    """Settings could not be built; the message names the setting and what to do."""


def masked_url(url: str) -> str:
    """`url` with its password replaced by `***`, for anything printed or logged
    (`rediss://:***@host:6380/0`, `https://user:***@host:8443`)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def default_home() -> Path:
    return Path.cwd() / ".driftloop"


def state_file_path(home: Path) -> Path:
    return home / STATE_FILE_NAME


class TopicNames(BaseModel):
    """Kafka topic names (DESIGN.md §2). Override e.g. `DRIFTLOOP_TOPICS__DATA_EVENTS=x`."""

    data_events: str = "data.events"
    data_rejected: str = "data.rejected"
    datasets_versions: str = "datasets.versions"
    labels_feedback: str = "labels.feedback"
    predictions_log: str = "predictions.log"
    drift_events: str = "drift.events"
    experiments_events: str = "experiments.events"
    models_events: str = "models.events"

    def all(self) -> list[str]:
        return list(self.model_dump().values())


class _StateFileSource(PydanticBaseSettingsSource):
    """Reads where the launcher started each part (lower priority than the environment)."""

    def __init__(self, settings_cls: type[BaseSettings], home: Path) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        path = state_file_path(home)
        if path.is_file():
            try:
                raw = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise SettingsError(
                    f"the stack state file {path} is unreadable ({exc}); "
                    "run `driftloop stack down` and `driftloop stack up` again"
                ) from exc
            self._data = {
                k: raw["settings"][k] for k in _STATE_KEYS if k in raw.get("settings", {})
            }

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(default_factory=default_home, description="local stack state, data, logs")
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    clickhouse_dsn: str = ""  # default: chdb://<home>/clickhouse
    artifact_root: str = ""  # default: file://<home>/artifacts
    topics: TopicNames = Field(default_factory=TopicNames)
    topic_partitions: int = Field(default=3, ge=1, le=1000)
    service_name: str = "driftloop"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    telemetry_exporter: Literal["none", "console", "memory", "otlp"] = "none"
    kafka_request_timeout_ms: int = Field(default=30_000, ge=1_000)
    # Consumers read only committed transactions by default: records of an aborted
    # transaction (Kafka Streams, Flink, any exactly-once producer that takes its writes
    # back) must never become training data. `read_uncommitted` is for debugging only.
    kafka_isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    # Secured clusters (applied by services.common.kafka_security to every client).
    # Secrets come from the environment or a file (`*_FILE`) and are never logged.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_cafile: Path | None = None  # CA bundle that signed the brokers' certificates
    kafka_ssl_certfile: Path | None = None  # client certificate (mTLS)
    kafka_ssl_keyfile: Path | None = None  # its private key
    kafka_ssl_key_password: SecretStr | None = None
    # Where a consumer records partitions it cannot read (see services.common.kafka_fetch)
    # and how often it tries such a partition again.
    kafka_stuck_retry_s: float = Field(default=60.0, gt=0)

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port…], got {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected redis://host:port/db, got {masked_url(value)!r}")
        return value

    @field_validator("clickhouse_dsn")
    @classmethod
    def _check_dsn(cls, value: str) -> str:
        if value and not value.startswith(("chdb://", "http://", "https://")):
            raise ValueError(
                f"expected chdb://PATH or http(s)://host:port, got {masked_url(value)!r}"
            )
        return value

    def model_post_init(self, _context: Any) -> None:
        self.home = self.home.expanduser().resolve()
        if not self.clickhouse_dsn:
            self.clickhouse_dsn = f"chdb://{self.home / 'clickhouse'}"
        if not self.artifact_root:
            self.artifact_root = f"file://{self.home / 'artifacts'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        home_raw = init_settings().get("home") or env_settings().get("home")
        home = Path(home_raw).expanduser() if home_raw else default_home()
        return (init_settings, env_settings, _StateFileSource(settings_cls, home))


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning a validation error into one clear message per bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"DRIFTLOOP_{'__'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, built once (override in tests with `load_settings`)."""
    return load_settings()
