"""One serving service (its own local Ray + Serve) for this package, with small models of
both kinds registered as the trainer registers them, and one client joined to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from services.common.ray_runtime import shutdown_ray
from services.common.registry import ModelRegistry
from services.common.settings import Settings
from services.serving.client import ServingClient
from tests.integration.serving.models import TinyModel, train_tiny
from tests.integration.serving_harness import ServingProcess, run_serving

XGB, MLP = "serve-xgb", "serve-mlp"
AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 0.5,
    "downscale_delay_s": 1.0,
    "look_back_period_s": 2.0,
}


@dataclass(frozen=True)
class Served:
    process: ServingProcess
    settings: Settings
    registry: ModelRegistry
    models: dict[str, TinyModel]  # "serve-xgb" v1, "serve-xgb@2" v2 (unaliased), "serve-mlp"


@pytest.fixture(scope="package")
def served(stack: Settings) -> Iterator[Served]:
    registry = ModelRegistry.from_settings(stack)
    xgb_v1, xgb_v2, mlp = train_tiny("xgboost"), train_tiny("xgboost", seed=5), train_tiny("mlp")
    for name, model in ((XGB, xgb_v1), (XGB, xgb_v2), (MLP, mlp)):
        model.register(registry, name)
    registry.set_alias(XGB, "champion", 1, actor="test", reason="serving tests")
    registry.set_alias(MLP, "champion", 1, actor="test", reason="serving tests")
    # canary autoscales, quickly, for the autoscaling test (no other test uses canary)
    autoscaling = {"canary": AUTOSCALING}
    with run_serving(
        stack,
        [XGB, MLP],
        replicas={"champion": 2},
        extra_env={"DRIFTLOOP_SERVING_AUTOSCALING": json.dumps(autoscaling)},
    ) as process:
        process.wait_for([f"{XGB}.champion", f"{MLP}.champion"])
        yield Served(process, stack, registry, {XGB: xgb_v1, f"{XGB}@2": xgb_v2, MLP: mlp})


@pytest.fixture(scope="package")
async def client(served: Served) -> AsyncIterator[ServingClient]:
    client = await ServingClient.connect(served.settings)
    try:
        yield client
    finally:
        await client.close()
        shutdown_ray()  # leave serving's cluster: later packages start their own Ray
