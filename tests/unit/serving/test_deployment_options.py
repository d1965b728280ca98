"""What a variant's Serve application is built with: replicas or autoscaling per variant,
the version and batching in `user_config` (what `reconfigure` receives), a pinned code
version (so a new `user_config` reconfigures live replicas instead of replacing them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.common.settings import load_settings
from services.serving.config import ServingSettings
from services.serving.deployment import build_variant_app, code_version


def _deployment(app: Any) -> Any:
    return app._bound_deployment  # Serve's Application wraps the bound deployment


def test_replicas_autoscaling_and_user_config_per_variant(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    serving = ServingSettings(
        replicas={"shadow": 3},
        autoscaling={"champion": {"min_replicas": 1, "max_replicas": 4}},
        batching={"max_batch_size": 32, "batch_wait_timeout_s": 0.005},
        max_ongoing_requests=100,
    )
    champion = _deployment(build_variant_app(settings, serving, "credit", "champion", 7))
    shadow = _deployment(build_variant_app(settings, serving, "credit", "shadow", 5))
    config = champion._deployment_config
    assert (config.autoscaling_config.min_replicas, config.autoscaling_config.max_replicas) == (
        1,
        4,
    )
    assert shadow._deployment_config.num_replicas == 3
    assert shadow._deployment_config.autoscaling_config is None
    assert config.user_config == {
        "version": 7,
        "batching": {"max_batch_size": 32, "batch_wait_timeout_s": 0.005},
        "warmup_rounds": 3,
    }
    assert config.max_ongoing_requests == 100
    assert champion.version == shadow.version == code_version()


def test_replicas_get_the_services_otel_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas export spans as the serving process is configured to: the exporter setting
    travels in the settings they are built with, the OTLP endpoint and batching in OTEL_*."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    settings = load_settings(home=tmp_path, telemetry_exporter="otlp")
    app = build_variant_app(settings, ServingSettings(), "credit", "champion", 1)
    deployment = _deployment(app)
    env = deployment.ray_actor_options["runtime_env"]["env_vars"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
    assert env["OTEL_BSP_SCHEDULE_DELAY"] == "200"
    assert not any(k.startswith("DRIFTLOOP_") for k in env)  # settings travel as an argument
    assert deployment.init_args[0].telemetry_exporter == "otlp"
