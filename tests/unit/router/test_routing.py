"""The routing core over in-memory ports: live answer, fallback, shadow, deadline,
features, logging."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from driftloop.v1 import events_pb2 as ev
from services.common.experiments import ExperimentSpec, VariantSpec
from services.router.features import FeatureFrame
from services.router.routing import DeadlineExceeded, Router, Unavailable
from services.router.validation import InvalidRequest, NotFound, single_frame
from tests.unit.router.stand_ins import CONTRACT, FakeServing, MemorySink, Stores, build_router


def full(income: float = 1000.0) -> FeatureFrame:
    return single_frame(CONTRACT, {"income": income, "age": 30.0}, {"region": "north"})


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[Router, FakeServing, Stores, MemorySink]]:
    serving, stores, sink = FakeServing(), Stores(), MemorySink()
    router, logger, coalescer = build_router(tmp_path, serving, stores, sink, variant_timeout_s=0.5)
    logger.start()
    yield router, serving, stores, sink
    await router.close()
    await coalescer.close()
    await logger.close(timeout_s=1)


def logs(sink: MemorySink) -> list[ev.PredictionLog]:
    return [ev.PredictionLog.FromString(r.value) for r in sink.delivered]


async def wait_for(cond, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_live_prediction_is_answered_and_logged_once(parts) -> None:  # type: ignore[no-untyped-def]
    router, _, _, sink = parts
    out = await router.predict(CONTRACT, full(2000), ["u1"], ["r1"], None)
    assert out.scores[0] == pytest.approx(2.0)
    assert (out.variants, out.versions, out.request_ids) == (["champion"], [3], ["r1"])
    await wait_for(lambda: len(sink.delivered) == 1)
    (log,) = logs(sink)
    assert log.error == ""
    assert (log.request_id, log.variant, log.shadow, log.entity_key) == (
        "r1",
        "champion",
        False,
        "u1",
    )
    assert dict(log.numeric) == {"income": 2000.0, "age": 30.0}
    assert dict(log.categorical) == {"region": "north"}


async def test_failing_variant_falls_back_to_control(parts) -> None:  # type: ignore[no-untyped-def]
    router, serving, stores, sink = parts
    stores.experiment = ExperimentSpec(
        name="ab",
        model="credit",
        variants=[VariantSpec(name="champion"), VariantSpec(name="canary", weight=100)],
    )
    serving.failing.add("canary")
    out = await router.predict(CONTRACT, full(), ["u1"], [""], None)
    assert out.variants == ["champion"]
    assert ("canary", 1) in serving.calls
    # logged as the variant the caller was assigned, with its error (the error-rate
    # guardrail and the split counts see it), and the score the control gave
    await wait_for(lambda: len(sink.delivered) == 1)
    (log,) = logs(sink)
    assert log.variant == "canary" and log.error and log.score == pytest.approx(out.scores[0])


async def test_stalled_variant_falls_back_within_its_timeout(parts) -> None:  # type: ignore[no-untyped-def]
    router, serving, stores, _ = parts
    stores.experiment = ExperimentSpec(
        name="ab",
        model="credit",
        variants=[VariantSpec(name="champion"), VariantSpec(name="canary", weight=100)],
    )
    serving.stalled["canary"] = asyncio.Event()
    out = await router.predict(CONTRACT, full(), ["u1"], [""], None)
    assert out.variants == ["champion"]
    serving.stalled["canary"].set()


async def test_control_failing_is_unavailable(parts) -> None:  # type: ignore[no-untyped-def]
    router, serving, _, _ = parts
    serving.failing.add("champion")
    with pytest.raises(Unavailable):
        await router.predict(CONTRACT, full(), ["u1"], [""], None)


async def test_caller_deadline_is_honoured(parts) -> None:  # type: ignore[no-untyped-def]
    router, serving, _, _ = parts
    serving.stalled["champion"] = asyncio.Event()
    with pytest.raises(DeadlineExceeded):
        await router.predict(CONTRACT, full(), ["u1"], [""], time.monotonic() + 0.05)
    serving.stalled["champion"].set()


async def test_shadow_failure_and_stall_are_invisible(parts) -> None:  # type: ignore[no-untyped-def]
    router, serving, stores, sink = parts
    stores.experiment = ExperimentSpec(
        name="ab",
        model="credit",
        variants=[VariantSpec(name="champion")],
        shadows=[VariantSpec(name="shadow"), VariantSpec(name="broken")],
    )
    serving.stalled["shadow"] = asyncio.Event()  # never answers until released
    serving.failing.add("broken")
    out = await router.predict(CONTRACT, full(3000), ["u1"], ["r1"], None)
    assert out.variants == ["champion"] and out.scores[0] == pytest.approx(3.0)
    await wait_for(lambda: len(sink.delivered) == 1)
    serving.stalled["shadow"].set()
    await wait_for(lambda: len(sink.delivered) == 2)
    live, shadow = sorted(logs(sink), key=lambda m: m.shadow)
    assert (live.shadow, shadow.shadow, shadow.variant, shadow.request_id) == (
        False,
        True,
        "shadow",
        "r1",
    )


async def test_key_only_request_is_filled_from_the_online_store(parts) -> None:  # type: ignore[no-untyped-def]
    router, _, stores, sink = parts
    now = time.time() * 1000
    stores.online["u9"] = {
        "income": 5000.0,
        "age": 40.0,
        "region": "south",
        "__event_time_ms": now - 60_000,
    }
    frame = single_frame(CONTRACT, {"age": 41.0}, {})
    out = await router.predict(CONTRACT, frame, ["u9"], [""], None)
    assert out.scores[0] == pytest.approx(5.0)
    await wait_for(lambda: len(sink.delivered) == 1)
    (log,) = logs(sink)
    assert dict(log.numeric) == {"income": 5000.0, "age": 41.0}  # the request's age wins
    assert sorted(log.looked_up) == ["income", "region"]
    assert 60_000 <= log.feature_age_ms < 70_000


async def test_unknown_entity_is_not_found_and_keyless_is_invalid(parts) -> None:  # type: ignore[no-untyped-def]
    router, _, _, _ = parts
    with pytest.raises(NotFound) as nf:
        await router.predict(CONTRACT, single_frame(CONTRACT, {}, {}), ["ghost"], [""], None)
    assert nf.value.violations[0][0] == "entity_key" and "ghost" in nf.value.violations[0][1]
    with pytest.raises(InvalidRequest) as inv:
        await router.predict(CONTRACT, single_frame(CONTRACT, {}, {}), [""], [""], None)
    assert "no entity key" in inv.value.violations[0][1]


async def test_declared_defaults_fill_an_unknown_entity(tmp_path: Path) -> None:
    from dataclasses import replace

    serving, stores, sink = FakeServing(), Stores(), MemorySink()
    router, logger, coalescer = build_router(tmp_path, serving, stores, sink)
    contract = replace(CONTRACT, defaults={"age": 35.0, "region": "other"})
    logger.start()
    frame = single_frame(contract, {"income": 1000.0}, {})
    out = await router.predict(contract, frame, ["ghost"], [""], None)
    assert out.scores[0] == pytest.approx(1.0)
    await wait_for(lambda: len(sink.delivered) == 1)
    assert sorted(ev.PredictionLog.FromString(sink.delivered[0].value).defaulted) == [
        "age",
        "region",
    ]
    await coalescer.close()
    await logger.close(timeout_s=1)


async def test_concurrent_requests_are_coalesced_per_variant(parts) -> None:  # type: ignore[no-untyped-def]
    router, serving, _, sink = parts
    gate = serving.stalled["champion"] = asyncio.Event()
    first = asyncio.create_task(router.predict(CONTRACT, full(0), ["u0"], [""], None))
    await wait_for(lambda: len(serving.calls) == 1)  # one call in flight, held
    rest = [
        asyncio.create_task(router.predict(CONTRACT, full(i), [f"u{i}"], [""], None))
        for i in range(1, 100)
    ]
    await wait_for(lambda: len(serving.calls) == 2)  # the second worker takes the queue
    gate.set()
    results = await asyncio.gather(first, *rest)
    assert [r.scores[0] for r in results] == pytest.approx([i / 1000 for i in range(100)])
    assert serving.calls == [("champion", 1), ("champion", 99)]
    await wait_for(lambda: len(sink.delivered) == 100)


async def test_batch_rows_split_by_variant_and_reassembled(parts) -> None:  # type: ignore[no-untyped-def]
    router, _, stores, _ = parts
    stores.experiment = ExperimentSpec(
        name="ab",
        model="credit",
        variants=[VariantSpec(name="champion"), VariantSpec(name="canary", weight=50)],
    )
    n = 200
    frame = FeatureFrame.empty(CONTRACT, n)
    frame.numeric["income"] = np.arange(n, dtype=float) * 1000
    frame.numeric["age"] = np.full(n, 30.0)
    frame.categorical["region"] = ["north"] * n
    out = await router.predict(CONTRACT, frame, [f"k{i}" for i in range(n)], [], None)
    offsets = np.array([0.5 if v == "canary" else 0.0 for v in out.variants])
    assert out.scores == pytest.approx(np.arange(n) + offsets)
    assert 60 < out.variants.count("canary") < 140
