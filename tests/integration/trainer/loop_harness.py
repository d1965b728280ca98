"""Helpers for the trainer's loop tests: labelled credit events with a real signal, model
specs, readers for `models.events` and the health API (processes and settings:
`tests.integration.harness`; a service's own process group lets a SIGKILL take Ray down
with it)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftloop.v1 import events_pb2 as pb
from services.common.settings import Settings
from services.ingest.samples import credit_sample
from tests.integration.harness import ServiceProcess
from tests.integration.ingest.events_gen import Item, read_topic

__all__ = [
    "labelled_stream",
    "model_events",
    "until_model_events",
    "write_spec",
]


def labelled_stream(n: int, seed: int, shift: float = 0.0) -> list[Item]:
    return [
        Item(e.entity_key, e.SerializeToString(), e.event_id, None)
        for e in credit_sample(n, seed=seed, shift=shift)
    ]


def get_json(port: int, path: str) -> tuple[int, Any]:
    """GET http://127.0.0.1:{port}{path}: (status, parsed body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def write_spec(tmp: Path, name: str, **policy: object) -> None:
    """A small, fast spec for `credit`: trains on little data with no cooldown."""
    folder = tmp / "models"
    folder.mkdir(exist_ok=True)
    policy_yaml = "".join(
        f"  {k}: {v}\n" for k, v in {"cooldown_s": 0, "min_new_rows": 3000, **policy}.items()
    )
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\ndataset: credit\nkind: xgboost\nseed: 3\n"
        "params: {max_depth: 3, eta: 0.2, num_boost_round: 60, nthread: 1}\n"
        "search_space: [{max_depth: 2}, {max_depth: 4}]\n"
        "window: {last_versions: 20}\n"
        "split: {validation_fraction: 0.2, holdout_fraction: 0.25, min_rows: 1000}\n"
        f"policy:\n{policy_yaml}"
        "gate: {min_primary: 0.6, min_holdout_rows: 300, bootstrap_samples: 300,\n"
        "       max_calibration_error: 0.15, fairness_group: region, max_fairness_gap: 0.25,\n"
        "       min_group_rows: 30}\n"
    )


async def model_events(settings: Settings, idle_s: float = 1.5) -> list[pb.ModelEvent]:
    rows = await read_topic(settings, settings.topics.models_events, pb.ModelEvent, idle_s=idle_s)
    events = [m for _, _, m in rows]
    assert all(isinstance(e, pb.ModelEvent) for e in events)
    return sorted(events, key=lambda e: e.created_at_ms)  # type: ignore[attr-defined]


async def until_model_events(
    settings: Settings,
    done: Callable[[list[pb.ModelEvent]], bool],
    timeout_s: float,
    *procs: ServiceProcess,
) -> list[pb.ModelEvent]:
    """`models.events` once `done(events)` holds; fails with the logs if a service dies."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = await model_events(settings)
        if done(events):
            return events
        if any(not p.alive() for p in procs) or time.monotonic() > deadline:
            logs = "\n---\n".join(p.log_tail() for p in procs)
            seen = [(pb.ModelEventType.Name(e.type), e.version, e.reason[:100]) for e in events]
            raise AssertionError(f"timed out or a service died; events so far: {seen}\n{logs}")
