"""From consumed events to policy `Trigger`s, one per model the event concerns (pure)."""

from __future__ import annotations

from collections.abc import Iterable

from driftloop.v1 import events_pb2 as pb
from services.trainer.policy import Trigger
from services.trainer.specs import ModelSpec

__all__ = ["triggers_for"]


def triggers_for(message: object, specs: Iterable[ModelSpec], now_ms: int) -> list[Trigger]:
    """The triggers `message` raises: a dataset version for every model trained on its
    dataset; a drift or experiment event for the model it names. Others raise none."""
    out: list[Trigger] = []
    for spec in specs:
        if isinstance(message, pb.DatasetVersion) and message.dataset == spec.dataset:
            out.append(
                Trigger(
                    kind="dataset_version",
                    model=spec.name,
                    dataset=spec.dataset,
                    at_ms=message.created_at_ms or now_ms,
                    version_id=message.version_id,
                    rows=message.row_count,
                    suspect=message.status == "suspect",
                    detail=f"version {message.version_id[:12]} ({message.row_count} rows, "
                    f"{message.status or 'ok'})",
                )
            )
        elif isinstance(message, pb.DriftEvent) and message.model == spec.name:
            where = message.feature or "model"
            if message.slice:
                where += f"[{message.slice}]"
            out.append(
                Trigger(
                    kind="drift",
                    model=spec.name,
                    dataset=spec.dataset,
                    at_ms=message.created_at_ms or now_ms,
                    severity=int(message.severity),
                    metric=f"{message.metric}({where})",
                    detail=f"{message.metric}({where}) = {message.value:.4g} over "
                    f"{message.threshold:.4g} for {message.consecutive_windows} windows",
                )
            )
        elif isinstance(message, pb.ExperimentEvent) and message.model == spec.name:
            breaches = ", ".join(message.guardrail_breaches)
            out.append(
                Trigger(
                    kind="experiment",
                    model=spec.name,
                    dataset=spec.dataset,
                    at_ms=message.created_at_ms or now_ms,
                    detail=f"experiment {message.experiment}: "
                    f"{pb.ExperimentDecision.Name(message.decision)}"
                    + (f", guardrail breaches: {breaches}" if breaches else ""),
                )
            )
    return out
