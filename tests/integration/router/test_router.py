"""The router end to end: real Serve, Redis, Kafka and registry."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Sequence

import grpc
import numpy as np
import pytest
import redis
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from driftloop.v1 import prediction_pb2 as pb
from services.common.experiments import ExperimentSpec, ExperimentStore, VariantSpec
from services.router.assignment import assign
from services.router.serving_port import Columns, ScoredBatch, ServingPort
from tests.integration.router.conftest import MODEL, RunningRouter, Served, running_router
from tests.integration.router.helpers import (
    batch_request,
    complete_rows,
    predict_request,
    read_logs,
    row_features,
    wait_until,
)


def champion_scores(served: Served, rows: list[dict]) -> np.ndarray:  # type: ignore[type-arg]
    columns = {n: [r[n] for r in rows] for n in rows[0]}
    return served.models[1].score(columns)


async def start_experiment(
    store: ExperimentStore, routers: Sequence[RunningRouter], spec: ExperimentSpec
) -> None:
    await asyncio.to_thread(store.start, spec, "test", "router test")
    for r in routers:
        await wait_until(
            lambda r=r: r.app.experiments.for_model(MODEL) == spec,
            10,
            "the experiment to reach the router",
        )


async def stop_experiment(
    store: ExperimentStore, routers: Sequence[RunningRouter], name: str
) -> None:
    await asyncio.to_thread(store.stop, name, "test", "router test done")
    for r in routers:
        await wait_until(lambda r=r: r.app.experiments.for_model(MODEL) is None, 10)


async def test_predict_and_batch_match_the_model_and_are_logged_once(
    served: Served, router: RunningRouter
) -> None:
    rows = complete_rows(served.online, 40)
    expected = champion_scores(served, rows)
    rids = [f"e2e-{uuid.uuid4().hex}" for _ in rows]
    singles = await asyncio.gather(
        *(
            router.stub.Predict(predict_request(MODEL, r, rid=rid))
            for r, rid in zip(rows[:20], rids[:20], strict=True)
        )
    )
    assert [s.score for s in singles] == pytest.approx(expected[:20].tolist(), rel=1e-5)
    assert {(s.variant, s.version) for s in singles} == {("champion", "1")}
    batch = await router.stub.PredictBatch(batch_request(MODEL, rows[20:], rids=rids[20:]))
    assert list(batch.scores) == pytest.approx(expected[20:].tolist(), rel=1e-5)
    assert list(batch.request_ids) == rids[20:]
    logs = await read_logs(served.settings, rids, want=40)
    assert Counter(m.request_id for m in logs) == Counter(rids)  # exactly one each
    by_id = {m.request_id: m for m in logs}
    assert by_id[rids[0]].score == pytest.approx(singles[0].score)
    assert not by_id[rids[0]].shadow and by_id[rids[0]].variant == "champion"


async def test_key_only_requests_are_filled_from_the_online_store(
    served: Served, router: RunningRouter
) -> None:
    keys = served.online.column("entity_key").to_pylist()
    times = served.online.column("event_time_ms").to_pylist()
    latest: dict[str, int] = {}
    for i, (k, t) in enumerate(zip(keys, times, strict=True)):
        if k not in latest or t >= times[latest[k]]:
            latest[k] = i
    chosen = sorted(latest)[:10]
    expected = champion_scores(served, [row_features(served.online, latest[k]) for k in chosen])
    rids = [f"key-{uuid.uuid4().hex}" for _ in chosen]
    out = await asyncio.gather(
        *(
            router.stub.Predict(pb.PredictRequest(model=MODEL, entity_key=k, request_id=rid))
            for k, rid in zip(chosen, rids, strict=True)
        )
    )
    assert [o.score for o in out] == pytest.approx(expected.tolist(), rel=1e-5)
    logs = await read_logs(served.settings, rids, want=len(rids))
    assert all(m.looked_up and m.feature_age_ms > 0 for m in logs)
    batch = await router.stub.PredictBatch(
        pb.PredictBatchRequest(model=MODEL, rows=len(chosen), entity_keys=chosen)
    )
    assert list(batch.scores) == pytest.approx(expected.tolist(), rel=1e-5)


async def test_ninety_ten_split_is_sticky_and_follows_the_hash(
    served: Served, router: RunningRouter, experiments: ExperimentStore
) -> None:
    spec = ExperimentSpec(
        name="rt-ninety-ten",
        model=MODEL,
        variants=[VariantSpec(name="champion"), VariantSpec(name="canary", weight=10)],
    )
    await start_experiment(experiments, [router], spec)
    try:
        row = complete_rows(served.online, 1)[0]
        keys = [f"user-{i}" for i in range(2_000)]
        rows = [row] * len(keys)
        first = await router.stub.PredictBatch(batch_request(MODEL, rows, keys=keys))
        again = await router.stub.PredictBatch(batch_request(MODEL, rows, keys=keys))
        assert list(first.variants) == list(again.variants)
        assert list(first.variants) == [assign(spec, k).variant for k in keys]
        share = list(first.variants).count("canary") / len(keys)
        assert 0.08 < share < 0.12
        assert {
            v for v, var in zip(first.versions, first.variants, strict=True) if var == "canary"
        } == {"2"}
        assert first.experiment == "rt-ninety-ten"
    finally:
        await stop_experiment(experiments, [router], spec.name)


class StallingServing:
    """Real Serve, with one variant held for `stall` (a stand-in for a slow replica)."""

    def __init__(self, inner: ServingPort, variant: str, release: asyncio.Event) -> None:
        self.inner, self.variant, self.release = inner, variant, release
        self.stalled = 0

    async def predict(self, model: str, variant: str, columns: Columns) -> ScoredBatch:
        if variant == self.variant:
            self.stalled += 1
            await self._stall()
        return await self.inner.predict(model, variant, columns)

    async def _stall(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), 2.0)  # a 2 s stall at most

    def variants(self, model: str) -> list[str]:
        return self.inner.variants(model)

    async def close(self) -> None:
        pass


async def test_shadow_is_mirrored_and_its_failure_or_stall_is_invisible(
    served: Served,
    serving: ServingPort,
    experiments: ExperimentStore,
    stack,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    release = asyncio.Event()
    stalling = StallingServing(serving, "shadow", release)
    async with running_router(stack, stalling, tmp_path, router_replica="shadow") as r:  # type: ignore[arg-type]
        spec = ExperimentSpec(
            name="rt-shadow",
            model=MODEL,
            variants=[VariantSpec(name="champion")],
            shadows=[VariantSpec(name="shadow"), VariantSpec(name="ghost")],
        )
        await start_experiment(experiments, [r], spec)
        try:
            rows = complete_rows(served.online, 30)
            rids = [f"shadow-{uuid.uuid4().hex}" for _ in rows]
            out = await asyncio.gather(
                *(
                    r.stub.Predict(predict_request(MODEL, row, rid=rid))
                    for row, rid in zip(rows, rids, strict=True)
                )
            )
            # every live answer came back while the shadow was still held
            assert stalling.stalled >= 1 and not release.is_set()
            assert all(o.variant == "champion" for o in out)
            assert [o.score for o in out] == pytest.approx(
                champion_scores(served, rows).tolist(), rel=1e-5
            )
            release.set()
            logs = await read_logs(served.settings, rids, want=60)
            kinds = Counter((m.request_id, m.shadow, m.variant) for m in logs)
            assert set(kinds.values()) == {1}
            assert {(s, v) for _, s, v in kinds} == {(False, "champion"), (True, "shadow")}
        finally:
            await stop_experiment(experiments, [r], spec.name)


async def test_a_failing_variant_falls_back_to_the_champion(
    served: Served, router: RunningRouter, experiments: ExperimentStore
) -> None:
    spec = ExperimentSpec(
        name="rt-fallback",
        model=MODEL,
        variants=[VariantSpec(name="champion"), VariantSpec(name="ghost", weight=100)],
    )
    await start_experiment(experiments, [router], spec)
    try:
        rows = complete_rows(served.online, 5)
        rids = [f"fb-{uuid.uuid4().hex}" for _ in rows]
        out = await router.stub.PredictBatch(
            batch_request(MODEL, rows, keys=[f"f{i}" for i in range(5)], rids=rids)
        )
        assert set(out.variants) == {"champion"}
        assert list(out.scores) == pytest.approx(champion_scores(served, rows).tolist(), rel=1e-5)
        # logged as the assigned variant with its error: the error-rate guardrail sees it
        logs = await read_logs(served.settings, rids, want=5)
        assert {(m.variant, bool(m.error)) for m in logs} == {("ghost", True)}, logs[0]
    finally:
        await stop_experiment(experiments, [router], spec.name)


async def test_two_replicas_see_a_change_and_routing_survives_flushall(
    served: Served,
    serving: ServingPort,
    experiments: ExperimentStore,
    router: RunningRouter,
    stack,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    async with running_router(stack, serving, tmp_path, router_replica="second") as second:
        spec = ExperimentSpec(
            name="rt-replicas",
            model=MODEL,
            variants=[VariantSpec(name="champion"), VariantSpec(name="canary", weight=30)],
        )
        await start_experiment(experiments, [router, second], spec)  # both, through pub/sub
        try:
            ramp = spec.model_copy(
                update={
                    "variants": [
                        VariantSpec(name="champion"),
                        VariantSpec(name="canary", weight=60),
                    ]
                }
            )
            await start_experiment(experiments, [router, second], ramp)
            row = complete_rows(served.online, 1)[0]
            keys = [f"r{i}" for i in range(300)]
            a = await router.stub.PredictBatch(batch_request(MODEL, [row] * 300, keys=keys))
            b = await second.stub.PredictBatch(batch_request(MODEL, [row] * 300, keys=keys))
            assert list(a.variants) == list(b.variants) == [assign(ramp, k).variant for k in keys]
            # Redis loses everything: the routers keep routing by the registry's record
            redis.Redis.from_url(stack.redis_url).flushall()
            for r in (router, second):
                await r.app.experiments.reload()  # what the periodic re-read does
                assert r.app.experiments.for_model(MODEL) == ramp
            c = await second.stub.PredictBatch(batch_request(MODEL, [row] * 300, keys=keys))
            assert list(c.variants) == list(a.variants)
            assert redis.Redis.from_url(stack.redis_url).exists("driftloop:experiments:running")
        finally:
            await stop_experiment(experiments, [router, second], spec.name)
            # the online rows went with the flush: put them back for the other tests
            from services.common.feature_store import OnlineFeatureStore
            from services.common.redis_client import sync_redis
            from tests.integration.trainer.synthetic import credit_schema

            OnlineFeatureStore(sync_redis(stack), schemas={"credit": credit_schema()}).write_latest(
                "credit", served.online
            )


def violations(exc: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailers"
    out = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        out += [(v.field, v.description) for v in bad.field_violations]
    return out


@pytest.mark.parametrize(
    ("request_factory", "code", "field"),
    [
        (
            lambda: pb.PredictRequest(model="no-such-model", entity_key="x"),
            grpc.StatusCode.NOT_FOUND,
            "model",
        ),
        (lambda: pb.PredictRequest(model=""), grpc.StatusCode.INVALID_ARGUMENT, "model"),
        (
            lambda: pb.PredictRequest(model=MODEL, numeric={"region": 1.0}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "numeric[region]",
        ),
        (
            lambda: pb.PredictRequest(model=MODEL, numeric={"age": float("nan")}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "numeric[age]",
        ),
        (
            lambda: pb.PredictRequest(model=MODEL, numeric={"age": 40.0}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "entity_key",
        ),
        (
            lambda: pb.PredictRequest(model=MODEL, entity_key="nobody-at-all"),
            grpc.StatusCode.NOT_FOUND,
            "entity_key",
        ),
        (
            lambda: pb.PredictBatchRequest(
                model=MODEL, rows=2, feature_names=["age"], values=[1.0]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "values",
        ),
        (
            lambda: pb.PredictBatchRequest(model=MODEL, rows=100_000, entity_keys=[]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "rows",
        ),
    ],
)
async def test_bad_input_gets_its_status_and_field_details(
    router: RunningRouter,
    request_factory,
    code,
    field,  # type: ignore[no-untyped-def]
) -> None:
    request = request_factory()
    call = (
        router.stub.Predict if isinstance(request, pb.PredictRequest) else router.stub.PredictBatch
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call(request)
    assert exc.value.code() == code
    assert field in [f for f, _ in violations(exc.value)]


async def test_bearer_token_is_required_when_configured(
    served: Served,
    serving: ServingPort,
    stack,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    async with running_router(
        stack, serving, tmp_path, router_replica="auth", router_auth_token="s3cret"
    ) as r:
        request = predict_request(MODEL, complete_rows(served.online, 1)[0])
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await r.stub.Predict(request)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await r.stub.Predict(request, metadata=(("authorization", "Bearer nope"),))
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = await r.stub.Predict(request, metadata=(("authorization", "Bearer s3cret"),))
        assert ok.variant == "champion"


async def test_reflection_and_health_list_the_services(router: RunningRouter) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(router.channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = set()
    async for response in responses:
        names |= {s.name for s in response.list_services_response.service}
    assert {
        "driftloop.v1.PredictionService",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    health = health_pb2_grpc.HealthStub(router.channel)
    reply = await health.Check(
        health_pb2.HealthCheckRequest(service="driftloop.v1.PredictionService")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
