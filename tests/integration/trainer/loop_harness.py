"""Harness for the trainer's loop tests: labelled credit events with a real signal, the
services as child processes (own process group, so a SIGKILL takes Ray down with them),
and readers for `models.events`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from driftloop.v1 import events_pb2 as pb
from services.common.settings import Settings, TopicNames, load_settings
from services.ingest.samples import credit_sample
from tests.integration.ingest.events_gen import Item, read_topic

__all__ = [
    "ServiceProcess",
    "labelled_stream",
    "loop_settings",
    "model_events",
    "write_spec",
]

REPO_ROOT = Path(__file__).resolve().parents[3]


def labelled_stream(n: int, seed: int, shift: float = 0.0) -> list[Item]:
    return [
        Item(e.entity_key, e.SerializeToString(), e.event_id, None)
        for e in credit_sample(n, seed=seed, shift=shift)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(port: int, path: str) -> tuple[int, Any]:
    """GET http://127.0.0.1:{port}{path}: (status, parsed body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def loop_settings(stack: Settings, tmp: Path) -> tuple[Settings, dict[str, str]]:
    """Unique topics, groups and artifact root for one test, and the env for its services."""
    uid = uuid.uuid4().hex[:10]
    names = (
        "data_events",
        "data_rejected",
        "datasets_versions",
        "drift_events",
        "experiments_events",
        "models_events",
    )
    topics = TopicNames(**{n: f"{n.replace('_', '.')}.{uid}" for n in names})
    root = f"file://{tmp / 'artifacts'}"
    settings = load_settings(home=stack.home, topics=topics, artifact_root=root)
    env = {
        "DRIFTLOOP_HOME": str(stack.home),
        "DRIFTLOOP_ARTIFACT_ROOT": root,
        **{f"DRIFTLOOP_TOPICS__{n.upper()}": getattr(topics, n) for n in names},
        "DRIFTLOOP_INGEST_GROUP_ID": f"ingest-{uid}",
        "DRIFTLOOP_TRAINER_GROUP_ID": f"trainer-{uid}",
        "DRIFTLOOP_TRAINER_MODELS_DIR": str(tmp / "models"),
        "DRIFTLOOP_TRAINER_RAY_NUM_CPUS": "2",
        "DRIFTLOOP_TRAINER_HEALTH_PORT": str(free_port()),
    }
    return settings, env


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


class ServiceProcess:
    """`python -m services.<name>` (or the CLI) in its own process group."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args, self.env, self.log_path = args, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args],
                cwd=REPO_ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60) -> None:
        """Signal the whole group; SIGKILL whatever is left after `timeout_s`."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=timeout_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def log_tail(self, n: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


async def model_events(settings: Settings, idle_s: float = 1.5) -> list[pb.ModelEvent]:
    rows = await read_topic(settings, settings.topics.models_events, pb.ModelEvent, idle_s=idle_s)
    events = [m for _, _, m in rows]
    assert all(isinstance(e, pb.ModelEvent) for e in events)
    return sorted(events, key=lambda e: e.created_at_ms)  # type: ignore[attr-defined]
