"""The router's core: assignment, feature filling, the live call with fallback, shadow
mirroring and prediction logging, over injected ports (no gRPC here).

The live answer never waits for a shadow: shadows are tasks started after the live rows
are submitted, bounded in number (`max_shadow_tasks`, beyond which a mirror is skipped
and counted), and their results or failures only reach the log and the metrics. A
variant that fails or times out is retried on the experiment's control (the champion),
within the caller's deadline; the control failing is the caller's error.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import trace

from driftloop.v1 import events_pb2 as ev
from services.common.experiments import ExperimentSpec
from services.common.kafka_serde import build_headers
from services.common.logging import get_logger
from services.router.assignment import Assignment, assign
from services.router.coalescing import Coalescer, VariantResult
from services.router.features import FeatureFrame, Fill, Lookup, ModelContract, fill_missing
from services.router.log_wire import categorical_entries, numeric_entries
from services.router.metrics import RouterMetrics
from services.router.prediction_log import PredictionLogger, Record
from services.router.serving_port import FeaturesRejected
from services.router.validation import InvalidRequest, NotFound, Violation

__all__ = ["DeadlineExceeded", "Outcome", "Router", "RoutingConfig", "Unavailable"]

_log = get_logger(__name__)
_tracer = trace.get_tracer("driftloop.router")


def _step(name: str) -> AbstractContextManager[trace.Span]:
    """A child span of the request's span, when that one is recorded; otherwise the
    current (non-recording) span, so an unsampled request pays for no child spans while
    its trace context still reaches the PredictionLog headers."""
    current = trace.get_current_span()
    if not current.is_recording():
        return nullcontext(current)
    return _tracer.start_as_current_span(name)


def _request_ids(given: Sequence[str], n: int) -> list[str]:
    """The caller's request ids, a random UUID4 (hex) where one is empty: all drawn in one
    `urandom` call, the version and variant bits set column-wise."""
    missing = n if not given else sum(1 for rid in given if not rid)
    if missing == 0:
        return list(given)
    raw = np.frombuffer(os.urandom(16 * missing), dtype=np.uint8).reshape(missing, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.tobytes().hex()
    fresh = iter([text[32 * j : 32 * j + 32] for j in range(missing)])
    if not given:
        return list(fresh)
    return [rid or next(fresh) for rid in given]


class Unavailable(RuntimeError):
    """No variant could answer (the control failed too)."""


class DeadlineExceeded(TimeoutError):
    """The caller's deadline passed before an answer."""


@dataclass(frozen=True)
class RoutingConfig:
    variant_timeout_s: float = 2.0  # a variant slower than this falls back to the control
    shadow_timeout_s: float = 10.0
    max_shadow_tasks: int = 64
    deadline_margin_s: float = 0.005


@dataclass
class Outcome:
    request_ids: list[str]
    scores: np.ndarray
    versions: list[int]
    variants: list[str]
    experiment: str
    buckets: list[int]
    latency_ms: float


@dataclass
class _Group:
    variant: str
    rows: np.ndarray
    result: VariantResult | None = None
    fell_back: bool = False
    error: str = ""  # why this variant failed, when the control answered instead
    meta: dict[str, str] = field(default_factory=dict)


class Router:
    def __init__(
        self,
        coalescer: Coalescer,
        contracts: Callable[[str], ModelContract],
        experiments: Callable[[str], ExperimentSpec | None],
        lookup: Lookup,
        logger: PredictionLogger,
        metrics: RouterMetrics,
        config: RoutingConfig | None = None,
        topic: str = "predictions.log",
    ) -> None:
        self._coalescer = coalescer
        self._contracts = contracts
        self._experiments = experiments
        self._lookup = lookup
        self._logger = logger
        self._metrics = metrics
        self._config = config or RoutingConfig()
        self._topic = topic
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self.shadow_skipped = 0

    def contract(self, model: str) -> ModelContract:
        """The model's contract; NotFound for a model the registry does not know."""
        return self._contracts(model)

    async def predict(
        self,
        contract: ModelContract,
        frame: FeatureFrame,
        entity_keys: Sequence[str],
        request_ids: Sequence[str],
        deadline: float | None,
    ) -> Outcome:
        """Score `frame`'s rows. `deadline` is a time.monotonic() instant or None."""
        started = time.perf_counter()
        model = contract.model
        n = frame.rows
        keys = list(entity_keys) if entity_keys else [""] * n
        ids = _request_ids(request_ids, n)
        fill = await self._fill(contract, frame, keys)
        spec = self._experiments(model)
        with _step("router.assign") as span:
            if spec is None:  # no experiment: the same (champion) assignment for every row
                assignments = [assign(None, "")] * n
            else:
                assignments = [assign(spec, key or rid) for key, rid in zip(keys, ids, strict=True)]
            span.set_attribute("driftloop.experiment", spec.name if spec else "")
        groups: dict[str, list[int]] = {}
        if spec is None:
            groups[assignments[0].variant] = list(range(n))
        else:
            for i, a in enumerate(assignments):
                groups.setdefault(a.variant, []).append(i)
        control = assignments[0].control
        plan = [_Group(v, np.asarray(rows)) for v, rows in groups.items()]
        for g in plan:
            self._metrics.requests.add(len(g.rows), {"model": model, "variant": g.variant})
        await asyncio.gather(*(self._live(model, control, frame, g, deadline) for g in plan))
        latency_ms = (time.perf_counter() - started) * 1000
        scores = np.empty(n)
        versions = [0] * n
        variants = [""] * n
        for g in plan:
            assert g.result is not None
            scores[g.rows] = g.result.scores
            if len(plan) == 1:
                versions, variants = [g.result.version] * n, [g.result.variant] * n
            else:
                for i in g.rows.tolist():
                    versions[i], variants[i] = g.result.version, g.result.variant
            self._metrics.latency_ms.record(latency_ms, {"model": model, "variant": g.variant})
        # A variant that failed is logged as the variant the caller was assigned, with its
        # error (the error-rate guardrail and the split counts see it), and the score the
        # control answered with; the caller is told which variant answered.
        logged, errors = variants, [""] * n
        failed = [g for g in plan if g.fell_back]
        if failed:
            logged = list(variants)
            for g in failed:
                for i in g.rows.tolist():
                    logged[i], errors[i] = g.variant, g.error
        with _step("router.log"):
            self._log(
                contract,
                frame,
                keys,
                ids,
                assignments,
                scores,
                versions,
                logged,
                latency_ms,
                fill,
                shadow=False,
                errors=errors,
            )
        if spec is not None and spec.shadows:
            self._mirror(contract, frame, keys, ids, assignments, spec, fill)
        return Outcome(
            ids,
            scores,
            versions,
            variants,
            spec.name if spec else "",
            [a.bucket for a in assignments],
            latency_ms,
        )

    async def _fill(self, contract: ModelContract, frame: FeatureFrame, keys: list[str]) -> Fill:
        if frame.missing_rows().size == 0:
            return Fill()
        with _step("router.features") as span:
            now_ms = int(time.time() * 1000)
            fill = await fill_missing(frame, keys, contract, self._lookup, now_ms)
            span.set_attribute("driftloop.looked_up_rows", len(fill.looked_up))
        if fill.still_missing:
            not_found: list[Violation] = []
            invalid: list[Violation] = []
            for i, names in sorted(fill.still_missing.items())[:50]:
                where = f"entity_keys[{i}]" if frame.rows > 1 else "entity_key"
                if not keys[i]:
                    invalid.append(
                        (
                            where,
                            f"required: features {names} are missing and there "
                            "is no entity key to look them up",
                        )
                    )
                else:  # a key with no stored row (fill_missing's only other case)
                    not_found.append(
                        (
                            where,
                            f"no online features stored for entity "
                            f"{keys[i]!r} (dataset {contract.dataset!r}); send "
                            f"{names} in the request",
                        )
                    )
            if invalid:
                raise InvalidRequest(invalid + not_found)
            raise NotFound(not_found)
        return fill

    async def _live(
        self, model: str, control: str, frame: FeatureFrame, g: _Group, deadline: float | None
    ) -> None:
        sub = frame.take(g.rows) if len(g.rows) != frame.rows else frame
        with _step("router.serve") as span:
            span.set_attribute("driftloop.variant", g.variant)
            span.set_attribute("driftloop.rows", len(g.rows))
            try:
                g.result = await self._call(
                    model, g.variant, sub, deadline, fallback=g.variant == control
                )
                return
            except (FeaturesRejected, DeadlineExceeded):
                raise
            except Exception as exc:
                self._metrics.errors.add(
                    1, {"model": model, "variant": g.variant, "kind": type(exc).__name__}
                )
                if g.variant == control:
                    raise Unavailable(
                        f"model {model!r}: variant {g.variant!r} failed: {exc}"
                    ) from exc
                g.error = f"{type(exc).__name__}: {exc}"[:500]
                _log.warning(
                    "router.fallback", model=model, variant=g.variant, control=control,
                    error=g.error,
                )  # fmt: skip
                self._metrics.fallbacks.add(1, {"model": model, "variant": g.variant})
            span.set_attribute("driftloop.fallback", True)
            try:
                g.result = await self._call(model, control, sub, deadline, fallback=True)
            except (FeaturesRejected, DeadlineExceeded):
                raise
            except Exception as exc:
                self._metrics.errors.add(
                    1, {"model": model, "variant": control, "kind": type(exc).__name__}
                )
                raise Unavailable(f"model {model!r}: no variant answered: {exc}") from exc
            g.fell_back = True

    async def _call(
        self,
        model: str,
        variant: str,
        frame: FeatureFrame,
        deadline: float | None,
        *,
        fallback: bool,
    ) -> VariantResult:
        # The control (and a fallback to it) waits as long as the caller does; another
        # variant gets `variant_timeout_s`, then the control answers instead.
        timeout = None if fallback else self._config.variant_timeout_s
        if deadline is not None:
            left = deadline - time.monotonic() - self._config.deadline_margin_s
            if left <= 0:
                raise DeadlineExceeded("the caller's deadline passed")
            if timeout is None or left < timeout:
                timeout = left
                try:
                    return await asyncio.wait_for(
                        self._coalescer.submit(model, variant, frame), timeout
                    )
                except TimeoutError:
                    raise DeadlineExceeded("the caller's deadline passed") from None
        return await asyncio.wait_for(self._coalescer.submit(model, variant, frame), timeout)

    def _mirror(
        self,
        contract: ModelContract,
        frame: FeatureFrame,
        keys: list[str],
        ids: list[str],
        assignments: list[Assignment],
        spec: ExperimentSpec,
        fill: Fill,
    ) -> None:
        for shadow in spec.shadows:
            if len(self._shadow_tasks) >= self._config.max_shadow_tasks:
                self.shadow_skipped += 1
                self._metrics.errors.add(
                    1, {"model": contract.model, "variant": shadow.name, "kind": "ShadowSkipped"}
                )
                continue
            task = asyncio.create_task(
                self._shadow(contract, frame, keys, ids, assignments, shadow.name, fill)
            )
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(
        self,
        contract: ModelContract,
        frame: FeatureFrame,
        keys: list[str],
        ids: list[str],
        assignments: list[Assignment],
        variant: str,
        fill: Fill,
    ) -> None:
        started = time.perf_counter()
        model = contract.model
        try:
            result = await asyncio.wait_for(
                self._coalescer.submit(model, variant, frame), self._config.shadow_timeout_s
            )
        except Exception as exc:
            self._metrics.errors.add(
                1, {"model": model, "variant": variant, "kind": f"shadow:{type(exc).__name__}"}
            )
            _log.info(
                "router.shadow_failed",
                model=model,
                variant=variant,
                error=f"{type(exc).__name__}: {exc}",
            )
            return
        latency_ms = (time.perf_counter() - started) * 1000
        n = frame.rows
        self._log(
            contract,
            frame,
            keys,
            ids,
            assignments,
            result.scores,
            [result.version] * n,
            [result.variant] * n,
            latency_ms,
            fill,
            shadow=True,
        )

    def _log(
        self,
        contract: ModelContract,
        frame: FeatureFrame,
        keys: list[str],
        ids: list[str],
        assignments: list[Assignment],
        scores: np.ndarray,
        versions: list[int],
        variants: list[str],
        latency_ms: float,
        fill: Fill,
        *,
        shadow: bool,
        errors: Sequence[str] = (),
    ) -> None:
        headers = tuple(build_headers(ev.PredictionLog))
        now_ms = int(time.time() * 1000)
        model = contract.model
        score_list = np.asarray(scores, dtype=np.float64).tolist()
        version_text = {v: str(v) for v in set(versions)}
        looked_up, age_ms, defaulted = fill.looked_up, fill.age_ms, fill.defaulted
        records = []
        numeric = numeric_entries(*frame.numeric_matrix())
        categorical = categorical_entries(frame.categorical, frame.rows)
        # the fields every row shares, serialised once (a record is this prefix, the row's
        # own fields and its feature maps: protobuf merges concatenated messages)
        prefix = ev.PredictionLog(
            time_ms=now_ms, model=model, shadow=shadow, latency_ms=latency_ms
        ).SerializeToString()
        for i in range(frame.rows):
            a = assignments[i]
            msg = ev.PredictionLog(
                request_id=ids[i],
                version=version_text[versions[i]],
                variant=variants[i],
                entity_key=keys[i],
                score=score_list[i],
                experiment=a.experiment,
                bucket=a.bucket,
                looked_up=looked_up.get(i, ()),
                feature_age_ms=age_ms.get(i, 0),
                defaulted=defaulted.get(i, ()),
                error=errors[i] if errors else "",
            )
            value = prefix + msg.SerializeToString() + numeric[i] + categorical[i]
            key = keys[i] or ids[i]
            records.append(Record(key.encode(), value, headers))
        self._logger.submit(records)

    async def close(self) -> None:
        for t in list(self._shadow_tasks):
            t.cancel()
        await asyncio.gather(*self._shadow_tasks, return_exceptions=True)
