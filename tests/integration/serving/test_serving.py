"""The serving service for real: its own local Ray + Serve, models from the registry, a
client joined through `serving.json`, hot swaps driven by `models.events`."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftloop.v1 import events_pb2 as pb
from services.common.kafka import create_producer
from services.serving.client import ServingClient
from services.serving.errors import InvalidFeatures, ModelNotServed
from services.stack.processes import listening_sockets, process_tree
from services.trainer.events import model_event
from tests.integration.serving.conftest import MLP, XGB, Served
from tests.integration.serving.models import request_columns


async def _stats(model: str, variant: str, replicas: int = 1) -> list[dict[str, Any]]:
    """`stats()` of every replica of the variant (calls until `replicas` distinct ones)."""
    from ray import serve

    handle = serve.get_deployment_handle("variant", f"{model}.{variant}").options(
        method_name="stats"
    )
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 30
    while len(seen) < replicas and time.monotonic() < deadline:
        stats = await handle.remote()
        seen[stats["replica"]] = stats
    return list(seen.values())


async def _publish_alias_change(
    served: Served, model: str, alias: str, version: int | None
) -> None:
    """Move (or remove) an alias the way the CLI does: registry first, then the event."""
    registry = served.registry
    if version is None:
        change = registry.remove_alias(model, alias, actor="test", reason="test")
    else:
        change = registry.set_alias(model, alias, version, actor="test", reason="test")
    event = model_event(
        pb.MODEL_EVENT_TYPE_ALIAS_CHANGED,
        model,
        reason="test",
        actor="test",
        version=version,
        alias=alias,
        previous_version=change.previous,
    )
    async with create_producer(served.settings) as producer:
        await producer.send_and_wait(served.settings.topics.models_events, event, key=model)


@pytest.mark.parametrize("model", [XGB, MLP])
async def test_predict_equals_the_in_process_model(
    served: Served, client: ServingClient, model: str
) -> None:
    columns = request_columns(200, seed=3)
    prediction = await client.predict(model, "champion", columns)
    assert (prediction.model, prediction.variant, prediction.version) == (model, "champion", 1)
    assert prediction.scores.dtype == np.float64 and prediction.scores.shape == (200,)
    np.testing.assert_allclose(
        prediction.scores, served.models[model].predict_columns(columns), rtol=1e-6, atol=1e-7
    )


async def test_variants_lists_what_is_deployed(client: ServingClient) -> None:
    assert client.variants(XGB) == ["champion"]
    assert client.variants(MLP) == ["champion"]
    assert client.variants("no-such-model") == []


async def test_bad_input_gets_field_level_errors_and_spares_its_batch(
    served: Served, client: ServingClient
) -> None:
    good = request_columns(3, seed=4)
    bad_inputs = {
        "unknown column": ({**good, "shoe_size": [42, 43, 44]}, "shoe_size"),
        "lengths differ": ({**good, "age": [30, 40]}, "age"),
        "text in a number": ({**good, "age": [30, "forty", 50]}, "age"),
        "number as a category": ({**good, "region": [1, 2, 3]}, "region"),
    }
    # Concurrent with good requests, so they share batches: only the bad ones fail.
    results = await asyncio.gather(
        *(client.predict(XGB, "champion", columns) for columns, _ in bad_inputs.values()),
        *(client.predict(XGB, "champion", good) for _ in range(8)),
        return_exceptions=True,
    )
    for (case, (_, field)), result in zip(bad_inputs.items(), results, strict=False):
        assert isinstance(result, InvalidFeatures), (case, result)
        assert field in [f for f, _ in result.details], (case, result.details)
    expected = served.models[XGB].predict_columns(good)
    for result in results[len(bad_inputs) :]:
        assert not isinstance(result, BaseException), result
        np.testing.assert_array_equal(result.scores, expected)
    with pytest.raises(ModelNotServed) as not_served:
        await client.predict(XGB, "no-such-variant", good)
    assert not_served.value.served == ["champion"]
    with pytest.raises(ModelNotServed):
        await client.predict("no-such-model", "champion", good)


async def test_concurrent_requests_are_batched(client: ServingClient) -> None:
    before = await _stats(MLP, "champion", replicas=2)
    one_row = request_columns(1, seed=5)
    await asyncio.gather(*(client.predict(MLP, "champion", one_row) for _ in range(200)))
    after = await _stats(MLP, "champion", replicas=2)

    def batches(stats: list[dict[str, Any]]) -> dict[int, int]:
        total: dict[int, int] = {}
        for replica in stats:
            for size, count in replica["batch_sizes"].items():
                total[int(size)] = total.get(int(size), 0) + count
        return total

    new = {s: batches(after).get(s, 0) - batches(before).get(s, 0) for s in batches(after)}
    assert sum(s * n for s, n in new.items()) >= 200  # every request went through a batch
    assert max(s for s, n in new.items() if n > 0) > 1, new  # and some batches held several


async def test_replicas_warm_up_before_serving(served: Served, client: ServingClient) -> None:
    for model in (XGB, MLP):
        for replica in await _stats(model, "champion", replicas=2):
            warm = replica["warm_up"]
            assert warm["version"] == replica["version"], replica
            assert warm["rounds"] == 3 and warm["rows"] == 64, replica


async def test_hot_swap_under_load_has_zero_failures(served: Served, client: ServingClient) -> None:
    columns = request_columns(20, seed=6)
    v1, v2 = served.models[XGB], served.models[f"{XGB}@2"]
    before = {r["replica"] for r in await _stats(XGB, "champion", replicas=2)}
    versions: list[int] = []
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def caller() -> None:
        while not stop.is_set():
            try:
                prediction = await client.predict(XGB, "champion", columns)
            except Exception as exc:
                failures.append(exc)
                continue
            expected = (v1 if prediction.version == 1 else v2).predict_columns(columns)
            np.testing.assert_array_equal(prediction.scores, expected)
            versions.append(prediction.version)

    callers = [asyncio.create_task(caller()) for _ in range(8)]
    try:
        await _wait(lambda: len(versions) >= 50, "predictions before the swap")
        await _publish_alias_change(served, XGB, "champion", 2)
        await _wait(lambda: versions[-16:] == [2] * 16, "answers from version 2", timeout_s=120)
    finally:
        stop.set()
        await asyncio.gather(*callers)
    assert not failures, failures[:3]
    assert versions[0] == 1 and versions[-1] == 2
    swapped_at = versions.index(2)
    assert set(versions[swapped_at:]) <= {1, 2}
    after = await _stats(XGB, "champion", replicas=2)
    assert {r["replica"] for r in after} == before  # reconfigured in place, not replaced
    assert all(r["version"] == 2 and r["swaps"] == 2 for r in after), after

    def recorded_version() -> int | None:  # serving.json is rewritten once Serve reports done
        state = served.process.state()
        return state.apps[f"{XGB}.champion"].version if state else None

    await _wait(lambda: recorded_version() == 2, "serving.json to record version 2")


async def test_a_killed_replica_is_replaced_and_callers_see_no_failure(
    client: ServingClient,
) -> None:
    columns = request_columns(5, seed=7)
    replicas = _replica_actors(f"{XGB}.champion")
    assert len(replicas) == 2, replicas
    answered = 0
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def caller() -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                await client.predict(XGB, "champion", columns)
                answered += 1
            except Exception as exc:
                failures.append(exc)

    callers = [asyncio.create_task(caller()) for _ in range(8)]
    try:
        await _wait(lambda: answered >= 50, "predictions before the kill")
        import ray

        victim = replicas[0]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        killed_at = answered
        await _wait(
            lambda: len(_replica_actors(f"{XGB}.champion", exclude=victim)) == 2,
            "Serve to start a replacement replica",
            timeout_s=120,
        )
        await _wait(lambda: answered >= killed_at + 100, "predictions after the kill")
    finally:
        stop.set()
        await asyncio.gather(*callers)
    assert not failures, failures[:3]


def test_every_listener_of_the_ray_process_tree_is_on_loopback(served: Served) -> None:
    state = served.process.state()
    assert state is not None
    pids = process_tree(served.process.pid)
    listeners = listening_sockets(pids)
    gcs_port = int(state.ray_address.rsplit(":", 1)[1])
    assert gcs_port in {port for _, _, port in listeners}, listeners  # Ray's sockets are seen
    replica_pids = [p for p in pids if _comm(p).startswith("ray::ServeRepl")]
    assert replica_pids, "no Serve replica process found"
    assert {pid for pid, _, _ in listeners} & set(replica_pids)  # replicas' servers are seen
    exposed = [
        (pid, _comm(pid), address, port)
        for pid, address, port in listeners
        if not _is_loopback(address)
    ]
    assert not exposed, f"listening beyond loopback: {exposed}"


async def test_variants_follow_alias_changes(served: Served, client: ServingClient) -> None:
    await _publish_alias_change(served, MLP, "challenger", 1)
    await _wait_variants(client, MLP, ["challenger", "champion"])
    prediction = await client.predict(MLP, "challenger", request_columns(4, seed=8))
    assert (prediction.variant, prediction.version) == ("challenger", 1)
    await _publish_alias_change(served, MLP, "challenger", None)
    await _wait_variants(client, MLP, ["champion"])
    with pytest.raises(ModelNotServed):
        await client.predict(MLP, "challenger", request_columns(4, seed=8))


async def test_an_autoscaled_variant_scales_up_under_load_and_back_down_when_idle(
    served: Served, client: ServingClient
) -> None:
    """canary autoscales between 1 and 2 replicas (conftest.AUTOSCALING: a target of one
    ongoing request): 16 concurrent callers make Serve start the second replica, every
    call answered meanwhile; idle, the variant returns to one replica."""
    app = f"{MLP}.canary"
    await _publish_alias_change(served, MLP, "canary", 1)
    try:
        await _wait_variants(client, MLP, ["canary", "champion"])
        await _wait(lambda: _running_replicas(app) == 1, "one canary replica before any load")
        stop = asyncio.Event()
        answered = 0

        async def caller(seed: int) -> None:
            nonlocal answered
            columns = request_columns(8, seed=seed)
            while not stop.is_set():
                prediction = await client.predict(MLP, "canary", columns)
                assert (prediction.variant, prediction.version) == ("canary", 1)
                answered += 1

        callers = [asyncio.create_task(caller(seed)) for seed in range(16)]
        try:
            await _wait(
                lambda: _running_replicas(app) == 2 or any(t.done() for t in callers),
                "a second canary replica under load",
                timeout_s=90,
            )
        finally:
            stop.set()
            await asyncio.gather(*callers)  # re-raises a failed call
        assert _running_replicas(app) == 2 and answered > 0
        await _wait(lambda: _running_replicas(app) == 1, "one canary replica when idle", 90)
    finally:
        await _publish_alias_change(served, MLP, "canary", None)
        await _wait_variants(client, MLP, ["champion"])


# -- helpers --------------------------------------------------------------------------------


async def _wait(condition: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def _wait_variants(client: ServingClient, model: str, expected: list[str]) -> None:
    deadline = time.monotonic() + 120
    while True:
        await client.refresh()
        if client.variants(model) == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"variants of {model}: {client.variants(model)} != {expected}")
        await asyncio.sleep(0.2)


def _replica_actors(app: str, exclude: str | None = None) -> list[str]:
    """Names of the live replica actors of `app` (Serve names them SERVE_REPLICA::app#…)."""
    import ray

    names = [
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["name"].startswith(f"SERVE_REPLICA::{app}#")
    ]
    return sorted(n for n in names if n != exclude)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


async def test_a_version_that_fails_to_load_leaves_the_variant_serving(
    served: Served, client: ServingClient
) -> None:
    """A tampered artifact (sha256 mismatch) is refused by the replicas, which keep
    answering with the version they have; serving says so and records the old version."""
    manifest = served.models[MLP].register(served.registry, MLP)
    artifact = Path(served.registry.store.uri(manifest.artifact.path).removeprefix("file://"))
    artifact.write_bytes(artifact.read_bytes()[:-8] + b"tampered")
    columns = request_columns(6, seed=9)
    versions: list[int] = []
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def caller() -> None:
        while not stop.is_set():
            try:
                versions.append((await client.predict(MLP, "champion", columns)).version)
            except Exception as exc:
                failures.append(exc)

    callers = [asyncio.create_task(caller()) for _ in range(4)]
    try:
        await _wait(lambda: len(versions) >= 20, "predictions before the bad version")
        await _publish_alias_change(served, MLP, "champion", manifest.version)
        await _wait(
            lambda: (
                "serving.change_failed" in served.process.log()
                and f"{MLP}.champion" in served.process.log()
            ),
            "serving to report the refused version",
            timeout_s=120,
        )
        answered = len(versions)
        await _wait(lambda: len(versions) >= answered + 20, "predictions after it")
    finally:
        stop.set()
        await asyncio.gather(*callers)
        await _publish_alias_change(served, MLP, "champion", 1)
    assert not failures, failures[:3]
    assert set(versions) == {1}
    assert "sha256" in served.process.log()
    state = served.process.state()
    assert state is not None and state.apps[f"{MLP}.champion"].version == 1


def _running_replicas(app: str) -> int:
    """RUNNING replicas of `app`'s deployment, as Serve's controller reports them."""
    from ray import serve

    application = serve.status().applications.get(app)
    deployment = application.deployments.get("variant") if application else None
    return int(deployment.replica_states.get("RUNNING", 0)) if deployment else 0
