"""The client the router (and any Python caller) scores through: Ray Serve handles, no HTTP.

    client = await ServingClient.connect(settings)
    prediction = await client.predict("credit-default", "champion", {"age": [41, 35], ...})
    prediction.scores, prediction.version

Calls go straight to the replicas through `DeploymentHandle`s, over Serve's gRPC transport
between handle and replica (`_by_reference=False`: 0.71-0.84x a plain gRPC server instead
of 0.53-0.57x with object references, notes/ray.md). A call whose replica dies or is
being replaced is retried, with a short backoff, within `retry_budget_s` (and the call's
own `timeout_s`): Serve routes the retry to a live replica, so callers see no failure
while Serve replaces the dead one. What is deployed is refreshed from Serve's controller
every `refresh_interval_s`, so `variants()` follows deployments and removals.

A call made under a sampled span carries that span's W3C trace context to the replica, as
a second argument (`trace_carrier`): the replica's batch span continues the trace. An
untraced call sends the columns alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.common.ray_runtime import ensure_ray
from services.common.settings import Settings
from services.common.telemetry import trace_carrier
from services.serving.config import ServingSettings
from services.serving.deployment import DEPLOYMENT_NAME, app_name, parse_app_name
from services.serving.errors import InvalidFeatures, ModelNotServed, ServingUnavailable
from services.serving.servable import Rejected, Scored
from services.serving.state import read_state

__all__ = ["Prediction", "ServingClient", "serving_ray_address"]

# Application states in which a handle call is answered (DEPLOYING covers an update in
# progress, during which the old replicas keep serving).
_LIVE_STATES = frozenset({"RUNNING", "DEPLOYING", "UNHEALTHY"})
_FIRST_BACKOFF_S = 0.02
_MAX_BACKOFF_S = 0.5
_CLOSE_WAIT_S = 10.0


@dataclass(frozen=True)
class Prediction:
    scores: np.ndarray  # float64, one per row
    model: str
    version: int
    variant: str


def serving_ray_address(settings: Settings, serving: ServingSettings) -> str:
    """The Ray cluster serving runs on: the setting, else the local service's state file."""
    if serving.ray_address:
        return serving.ray_address
    state = read_state(settings.home)
    if state is None:
        raise ServingUnavailable(
            f"serving is not running: no {settings.home / 'serving.json'} (start it with "
            "`python -m services.serving`, or set DRIFTLOOP_SERVING_RAY_ADDRESS)"
        )
    return state.ray_address


def _retryable_errors() -> tuple[type[BaseException], ...]:
    """Failures of one replica or of the transport to it: another attempt may succeed."""
    import grpc
    from ray import exceptions as ray_errors
    from ray.serve import exceptions as serve_errors

    return (
        ray_errors.RayActorError,  # ActorDiedError, ActorUnavailableError
        ray_errors.ObjectLostError,
        ray_errors.OwnerDiedError,
        ray_errors.WorkerCrashedError,
        ray_errors.RaySystemError,
        serve_errors.BackPressureError,
        serve_errors.RequestCancelledError,
        grpc.aio.AioRpcError,
        ConnectionError,
    )


class ServingClient:
    def __init__(self, settings: Settings, serving: ServingSettings) -> None:
        self._settings, self._serving = settings, serving
        self._variants: dict[str, list[str]] = {}
        self._handles: dict[tuple[str, str], Any] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._reading: asyncio.Future[dict[str, str]] | None = None  # the last controller read
        self._retryable = _retryable_errors()

    @classmethod
    async def connect(
        cls, settings: Settings, serving: ServingSettings | None = None
    ) -> ServingClient:
        """Join serving's Ray cluster and learn what it deploys (ServingUnavailable if not)."""
        serving = serving or ServingSettings()
        address = serving_ray_address(settings, serving)
        try:
            await asyncio.to_thread(ensure_ray, address)
        except Exception as exc:
            raise ServingUnavailable(
                f"cannot join serving's Ray cluster at {address}: {exc}"
            ) from exc
        client = cls(settings, serving)
        await client.refresh()
        client._refresher = asyncio.create_task(client._refresh_forever())
        return client

    def variants(self, model: str) -> list[str]:
        """The variants of `model` deployed now (as of the last refresh)."""
        return list(self._variants.get(model, []))

    def models(self) -> list[str]:
        return sorted(self._variants)

    async def refresh(self) -> None:
        """Re-read the deployed applications from Serve's controller."""
        reading = self._reading = asyncio.ensure_future(asyncio.to_thread(_application_states))
        reading.add_done_callback(_retrieve)
        try:
            # shielded: a cancelled refresh leaves the read to finish (see `close`)
            statuses = await asyncio.shield(reading)
        except Exception as exc:
            raise ServingUnavailable(f"cannot read Serve's applications: {exc}") from exc
        variants: dict[str, list[str]] = {}
        for name, status in statuses.items():
            parsed = parse_app_name(name)
            if parsed is not None and status in _LIVE_STATES:
                variants.setdefault(parsed[0], []).append(parsed[1])
        self._variants = {model: sorted(names) for model, names in variants.items()}
        for model, variant in list(self._handles):  # handles of removed variants go
            if variant not in self._variants.get(model, []):
                del self._handles[(model, variant)]

    async def predict(
        self,
        model: str,
        variant: str,
        columns: Mapping[str, Sequence[Any] | np.ndarray],
        *,
        timeout_s: float | None = None,
    ) -> Prediction:
        """Score the rows in `columns` (feature name -> one value per row) with `variant`.

        Raises ModelNotServed, InvalidFeatures (field-level details) or ServingUnavailable
        (no answer within the retry budget or `timeout_s`; TimeoutError is not raised).
        """
        if not isinstance(columns, Mapping):
            raise InvalidFeatures(
                [("columns", f"expected a mapping, got {type(columns).__name__}")]
            )
        handle = await self._handle(model, variant)
        loop = asyncio.get_running_loop()
        budget_s = min(self._serving.retry_budget_s, timeout_s if timeout_s else math.inf)
        deadline = loop.time() + budget_s
        backoff_s = _FIRST_BACKOFF_S
        carrier = trace_carrier()
        args = (columns,) if carrier is None else (columns, carrier)
        while True:
            remaining = deadline - loop.time()
            try:
                async with asyncio.timeout(remaining):
                    reply = await handle.remote(*args)
                break
            except TimeoutError:
                raise ServingUnavailable(
                    f"{model}.{variant} did not answer within {budget_s:.3g} s"
                ) from None
            except self._retryable as exc:
                if loop.time() + backoff_s >= deadline:
                    raise ServingUnavailable(
                        f"{model}.{variant} failed for {budget_s:.3g} s: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                await asyncio.sleep(backoff_s)
                backoff_s = min(2 * backoff_s, _MAX_BACKOFF_S)
                if variant not in self._variants.get(model, []):
                    raise ModelNotServed(model, variant, self.variants(model)) from exc
        if isinstance(reply, Rejected):
            raise InvalidFeatures(reply.problems)
        if not isinstance(reply, Scored):
            raise ServingUnavailable(f"{model}.{variant} answered {type(reply).__name__}")
        return Prediction(np.asarray(reply.scores, dtype=np.float64), model, reply.version, variant)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._reading is not None and not self._reading.done():
            # A cancel does not stop the thread reading Serve's controller: let it finish,
            # so the caller may shut Ray down (a thread left inside ray.get then blocks
            # for ever, and with it the process's exit).
            await asyncio.wait({self._reading}, timeout=_CLOSE_WAIT_S)
        self._handles.clear()

    async def _handle(self, model: str, variant: str) -> Any:
        handle = self._handles.get((model, variant))
        if handle is not None:
            return handle
        if variant not in self._variants.get(model, []):
            await self.refresh()  # deployed since the last refresh?
            if variant not in self._variants.get(model, []):
                raise ModelNotServed(model, variant, self.variants(model))
        from ray import serve

        handle = serve.get_deployment_handle(DEPLOYMENT_NAME, app_name(model, variant)).options(
            method_name="predict", _by_reference=False
        )
        self._handles[(model, variant)] = handle
        return handle

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._serving.refresh_interval_s)
            with contextlib.suppress(ServingUnavailable):  # keep the last known list
                await self.refresh()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a read nobody awaits any more must not log "never retrieved"


def _application_states() -> dict[str, str]:
    """Application name -> status, from the controller's plain details dict.

    `serve.status()` builds pydantic models from the same dict, cloudpickling each
    deployment's request-router class on the way: measured at about 10% of a busy
    router's CPU with a refresh a second. The dict holds the same statuses."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:  # Serve has not started yet
        return {}
    details = client.get_serve_details()
    states = {}
    for name, app in (details.get("applications") or {}).items():
        status = app.get("status", "")
        states[name] = str(getattr(status, "value", status))  # an enum or its value
    return states
