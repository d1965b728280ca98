"""`ModelEvent`s: every decision of the trainer and the CLI, with its reason (pure)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from driftloop.v1 import events_pb2 as pb

__all__ = ["ModelEventType", "model_event"]

ModelEventType = pb.ModelEventType


def model_event(
    kind: int,
    model: str,
    *,
    reason: str,
    actor: str,
    version: int | str | None = None,
    alias: str = "",
    previous_version: int | str | None = None,
    report: Mapping[str, Any] | None = None,
    attributes: Mapping[str, object] | None = None,
    traffic_percent: float = 0.0,
    now_ms: int | None = None,
) -> pb.ModelEvent:
    return pb.ModelEvent(
        event_id=uuid.uuid4().hex,
        model=model,
        version="" if version is None else str(version),
        type=kind,  # type: ignore[arg-type]
        alias=alias,
        previous_version="" if previous_version is None else str(previous_version),
        reason=reason,
        actor=actor,
        traffic_percent=traffic_percent,
        report_json=json.dumps(report, sort_keys=True) if report is not None else "",
        attributes={k: str(v) for k, v in (attributes or {}).items()},
        created_at_ms=int(time.time() * 1000) if now_ms is None else now_ms,
    )
