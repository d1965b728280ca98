"""One training run, start to finish: lease → data → Ray → gate → registry → aliases.

Every outcome is a `ModelEvent` with its reason, including "skipped" and "failed". The
order of the durable steps is what makes a crash harmless at any moment:

1. nothing is written until the challenger is trained and gated;
2. the registry writes the artifact, then the manifest (its commit point): a crash in
   between leaves no version, only an orphan file nobody lists;
3. only then is an alias moved, fenced by the lease token, so no alias ever points at a
   missing or half-written artifact, and a trainer whose lease expired cannot move one.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from driftloop.v1 import events_pb2 as pb
from services.common.artifacts import ArtifactError, ArtifactStore
from services.common.datasets.schema import DatasetSchema
from services.common.encoding import FeatureEncoder
from services.common.logging import get_logger
from services.common.protogen import REPO_ROOT
from services.common.ray_runtime import ensure_ray
from services.common.registry import (
    ModelManifest,
    ModelNotFoundError,
    ModelRegistry,
    RegistrationInfo,
    StaleFenceError,
)
from services.trainer.data import TrainingData, TrainingDataError, load_training_data
from services.trainer.distributed import fit_distributed
from services.trainer.events import model_event
from services.trainer.gate import GateReport, evaluate_gate
from services.trainer.lock import Lease, TrainingLock
from services.trainer.models import predictor_from_loaded
from services.trainer.profile import build_reference_profile
from services.trainer.specs import ModelSpec
from services.trainer.tuning import TrainingJob, train_on_ray

__all__ = ["RunResult", "TrainRequest", "Trainer", "code_version", "default_actor"]

_log = get_logger(__name__)

Emit = Callable[[pb.ModelEvent], None]
Progress = Callable[[str], None]


def default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def code_version() -> str:
    """The git commit of the training code (with "+dirty" for local edits), or "unknown"."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("DRIFTLOOP_CODE_VERSION", "unknown")
    return f"{head}+dirty" if dirty else head


@dataclass(frozen=True)
class TrainRequest:
    model: str
    reason: str  # the policy's reason code, e.g. "drift", "new_rows", "manual"
    detail: str = ""
    actor: str = "trainer"
    version_ids: tuple[str, ...] | None = None  # explicit versions instead of the window
    allow_suspect: bool = False  # explicit versions may include suspect ones


@dataclass
class RunResult:
    status: Literal["registered", "skipped", "failed"]
    model: str
    reason: str
    version: int | None = None
    alias: str | None = None
    report: GateReport | None = None
    events: list[pb.ModelEvent] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.report is not None and self.report.passed


class _Failed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class Trainer:
    """Runs trainings of the declared models; `emit` publishes each ModelEvent."""

    store: ArtifactStore
    registry: ModelRegistry
    lock: TrainingLock
    schemas: dict[str, DatasetSchema]
    specs: dict[str, ModelSpec]
    emit: Emit
    renew_every_s: float = 20.0
    ray_address: str | None = None  # None: a local instance on 127.0.0.1
    ray_num_cpus: int | None = None
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    progress: Progress = field(default=lambda _msg: None)

    def run(self, request: TrainRequest) -> RunResult:
        spec = self.specs.get(request.model)
        if spec is None:
            raise KeyError(f"no model spec named {request.model!r} (have {sorted(self.specs)})")
        result = RunResult(status="skipped", model=spec.name, reason="")
        lease = self.lock.acquire(spec.name, self.owner, floor=self.registry.max_fence(spec.name))
        if lease is None:
            holder = self.lock.holder(spec.name)
            result.reason = "skipped:in_flight"
            self._send(
                result,
                pb.MODEL_EVENT_TYPE_TRAINING_SKIPPED,
                spec,
                request,
                reason=f"skipped:in_flight: another trainer holds the lease ({holder})",
            )
            return result
        try:
            with self.lock.kept_alive(lease, self.renew_every_s) as lost:
                self._send(
                    result,
                    pb.MODEL_EVENT_TYPE_TRAINING_STARTED,
                    spec,
                    request,
                    reason=f"{request.reason}: {request.detail}".rstrip(": "),
                    attributes={"fence": lease.token, "owner": lease.owner},
                )
                try:
                    self._train(spec, request, lease, lost.is_set, result)
                except _Failed as exc:
                    result.status, result.reason = "failed", exc.reason
                    self._send(
                        result,
                        pb.MODEL_EVENT_TYPE_TRAINING_FAILED,
                        spec,
                        request,
                        reason=f"{exc.reason}: {exc}",
                        version=result.version,
                    )
        finally:
            self.lock.release(lease)
        return result

    # -- the steps -------------------------------------------------------------------------

    def _train(
        self,
        spec: ModelSpec,
        request: TrainRequest,
        lease: Lease,
        lost: Callable[[], bool],
        result: RunResult,
    ) -> None:
        schema = self.schemas[spec.dataset]
        self.progress("loading dataset versions")
        try:
            data = load_training_data(
                self.store,
                schema,
                spec.window,
                spec.split,
                request.version_ids,
                request.allow_suspect,
            )
        except TrainingDataError as exc:
            raise _Failed(f"data:{exc.reason}", str(exc)) from None
        except ArtifactError as exc:
            raise _Failed("data:unreadable", str(exc)) from None
        encoder = FeatureEncoder.fit(schema, data.train)
        self.progress(f"training {spec.kind} on Ray ({data.train.num_rows} rows)")
        job = TrainingJob(
            kind=spec.kind,
            task=spec.task,
            params=dict(spec.params),
            search_space=[dict(t) for t in spec.search_space] or [{}],
            seed=spec.seed,
        )
        try:
            ensure_ray(self.ray_address, self.ray_num_cpus)  # no-op once connected
            if spec.distributed.enabled:  # one data-parallel fit per trial, on Ray Train
                outcome = fit_distributed(job, data, encoder, spec.distributed)
            else:
                outcome = train_on_ray(job, data, encoder)
        except Exception as exc:  # a failed trial or Ray itself: say so, never half-register
            raise _Failed("training_error", f"{type(exc).__name__}: {exc}") from None
        self.progress("gating against the champion on the holdout")
        y_hold = _labels(data.holdout)
        challenger_scores = outcome.best.predict(encoder.transform(data.holdout))
        champion, champion_scores = self._champion_scores(spec.name, data.holdout)
        group = spec.gate.fairness_group
        groups = _strings(data.holdout, group) if group else None
        report = evaluate_gate(spec.gate, y_hold, challenger_scores, champion_scores, groups)
        result.report = report
        if lost():
            raise _Failed("lease_lost", "the training lease expired before registration")
        self.progress("registering")
        manifest = self._register(spec, data, encoder, outcome, report, lease, champion)
        result.version, result.status = manifest.version, "registered"
        result.reason = "gate_passed" if report.passed else "gate_failed"
        self._send(
            result,
            pb.MODEL_EVENT_TYPE_REGISTERED,
            spec,
            request,
            reason=f"trained on {len(data.version_ids)} dataset versions",
            version=manifest.version,
            attributes={"datasets": ",".join(data.version_ids), "fence": lease.token},
        )
        gate_kind = (
            pb.MODEL_EVENT_TYPE_GATE_PASSED if report.passed else pb.MODEL_EVENT_TYPE_GATE_FAILED
        )
        self._send(
            result,
            gate_kind,
            spec,
            request,
            reason=report.summary(),
            version=manifest.version,
            report=report.to_json_dict(),
            previous_version=champion.version if champion else None,
        )
        if report.passed:
            alias = "champion" if champion is None else "challenger"
            try:
                change = self.registry.set_alias(
                    spec.name,
                    alias,
                    manifest.version,
                    actor=request.actor,
                    reason=f"gate passed: {report.summary()}",
                    fence=lease.token,
                    kind="gate",
                )
            except StaleFenceError as exc:
                raise _Failed("lease_stale", str(exc)) from None
            result.alias = alias
            self._send(
                result,
                pb.MODEL_EVENT_TYPE_ALIAS_CHANGED,
                spec,
                request,
                reason=f"gate passed; {alias} -> v{manifest.version}",
                alias=alias,
                version=manifest.version,
                previous_version=change.previous,
            )

    def _champion_scores(
        self, name: str, holdout: pa.Table
    ) -> tuple[ModelManifest | None, np.ndarray | None]:
        """The champion scored on the same holdout with its own encoder, or (None, None)."""
        if not self.registry.versions(name) or self.registry.get_alias(name, "champion") is None:
            return None, None
        try:
            loaded = self.registry.load(name, "champion")
            params = loaded.manifest.params.get("encoder")
            if not isinstance(params, dict):
                raise ValueError(f"v{loaded.manifest.version} has no feature encoder in params")
            encoder = FeatureEncoder.from_params(params)
            scores = predictor_from_loaded(loaded)(encoder.transform(holdout))
        except (ArtifactError, ModelNotFoundError, KeyError, ValueError) as exc:
            raise _Failed("champion_unloadable", f"cannot score the champion: {exc}") from None
        return loaded.manifest, scores

    def _register(
        self,
        spec: ModelSpec,
        data: TrainingData,
        encoder: FeatureEncoder,
        outcome: Any,
        report: GateReport,
        lease: Lease,
        champion: ModelManifest | None,
    ) -> ModelManifest:
        best = outcome.best
        train_scores = best.predict(encoder.transform(data.train))
        profile = build_reference_profile(
            encoder, data.train, train_scores, _labels(data.train), spec.task
        )
        info = RegistrationInfo(
            features=encoder.feature_specs(),
            reference_profile=profile,
            code_version=code_version(),
            training_datasets=list(data.version_ids),
            metrics={f"holdout_{k}": float(v) for k, v in report.challenger.items()},
            params={
                **best.params,
                "dataset": spec.dataset,
                "task": spec.task,
                "trials": outcome.trials,
                "fence": lease.token,
                "champion_at_gate": champion.version if champion else None,
                "rows": {
                    "train": data.train.num_rows,
                    "validation": data.validation.num_rows,
                    "holdout": data.holdout.num_rows,
                },
            },
            gate_report=report.to_json_dict(),
            seed=spec.seed,
        )
        if not self.lock.holds(lease):
            raise _Failed("lease_lost", f"lease on {spec.name!r} (token {lease.token}) was lost")
        return self.registry.register(spec.name, best.artifact, best.artifact_format, info)

    def _send(
        self,
        result: RunResult,
        kind: int,
        spec: ModelSpec,
        request: TrainRequest,
        *,
        reason: str,
        **extra: Any,
    ) -> None:
        attributes = {
            "trigger": request.reason,
            "dataset": spec.dataset,
            **extra.pop("attributes", {}),
        }
        event = model_event(
            kind, spec.name, reason=reason, actor=request.actor, attributes=attributes, **extra
        )
        result.events.append(event)
        _log.info(
            "model_event",
            model=spec.name,
            type=pb.ModelEventType.Name(kind),
            version=event.version,
            reason=reason,
        )
        self.emit(event)


def _labels(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column("label").to_numpy(zero_copy_only=False), dtype=np.float64)


def _strings(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).to_pylist()
    return np.asarray(["<null>" if v is None else str(v) for v in values], dtype=object)
