"""The one harness every integration test uses to run services: `ServiceProcess` (a
service or the CLI as a child process, so SIGKILL is real), `isolated_settings` (unique
topics, groups and artifact root per test, and the env for its services), `wait_for`
(poll observable state with a deadline, never a fixed sleep), `committed_vs_end` (a
group's committed offsets against the topic's end) and `free_port`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from signal import SIGKILL, SIGTERM, Signals

from aiokafka import TopicPartition

from services.common.kafka import create_consumer
from services.common.settings import Settings, TopicNames, load_settings
from services.stack.processes import free_port

__all__ = [
    "INGEST",
    "REPO_ROOT",
    "ServiceProcess",
    "committed_vs_end",
    "free_port",
    "isolated_settings",
    "wait_committed_to_end",
    "wait_for",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
INGEST = ["-m", "services.ingest"]  # ServiceProcess(INGEST, env, log)
_TOPICS = (
    "data_events",
    "data_rejected",
    "datasets_versions",
    "drift_events",
    "experiments_events",
    "models_events",
)


class ServiceProcess:
    """`python <args>` (e.g. `-m services.ingest`) in its own process group, its output
    appended to `log_path`."""

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

    def signal(self, sig: Signals, timeout_s: float = 30) -> int:
        """Send `sig` to the process itself and wait for it to exit: its exit code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout_s)

    def stop(self, sig: Signals = SIGTERM, timeout_s: float = 60) -> None:
        """Signal the whole group; SIGKILL whatever is left after `timeout_s`."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=timeout_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, SIGKILL)
        self.proc.wait(timeout=30)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])


def isolated_settings(
    stack: Settings, tmp: Path, *, static_ingest: bool = True
) -> tuple[Settings, dict[str, str]]:
    """Unique topics, consumer groups and artifact root for one test, and the env for its
    services (ingest, trainer). `static_ingest`: ingest uses static group membership, so
    a restarted member takes its partitions back at once."""
    uid = uuid.uuid4().hex[:10]
    topics = TopicNames(**{n: f"{n.replace('_', '.')}.{uid}" for n in _TOPICS})
    root = f"file://{tmp / 'artifacts'}"
    settings = load_settings(home=stack.home, topics=topics, artifact_root=root)
    env = {
        "DRIFTLOOP_HOME": str(stack.home),
        "DRIFTLOOP_ARTIFACT_ROOT": root,
        **{f"DRIFTLOOP_TOPICS__{n.upper()}": getattr(topics, n) for n in _TOPICS},
        "DRIFTLOOP_INGEST_GROUP_ID": f"ingest-{uid}",
        "DRIFTLOOP_TRAINER_GROUP_ID": f"trainer-{uid}",
        "DRIFTLOOP_TRAINER_MODELS_DIR": str(tmp / "models"),
        "DRIFTLOOP_TRAINER_RAY_NUM_CPUS": "2",
        "DRIFTLOOP_TRAINER_HEALTH_PORT": str(free_port()),
    }
    if static_ingest:
        env["DRIFTLOOP_INGEST_GROUP_INSTANCE_ID"] = f"ingest-{uid}-0"
    return settings, env


async def wait_for(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    proc: ServiceProcess | None = None,
) -> None:
    """Poll `condition` until it holds; fail with `proc`'s log if it exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.args} exited while waiting for {what}:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            tail = proc.log_tail() if proc else ""
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tail}")
        await asyncio.sleep(0.05)


async def committed_vs_end(
    settings: Settings, group_id: str, partitions: int = 3
) -> dict[int, tuple[int, int]]:
    """Per partition of `data.events`: (the group's committed offset, the end offset)."""
    consumer = create_consumer(settings, group_id=group_id)
    async with consumer:
        raw = consumer.raw
        tps = [TopicPartition(settings.topics.data_events, p) for p in range(partitions)]
        ends = await raw.end_offsets(tps)
        return {tp.partition: (await raw.committed(tp) or 0, ends[tp]) for tp in tps}


async def wait_committed_to_end(
    settings: Settings,
    group_id: str,
    proc: ServiceProcess | None = None,
    timeout_s: float = 60,
    *,
    partitions: int = 3,
    through: Mapping[int, int] | None = None,
) -> None:
    """Wait until the group has committed every partition of `data.events` to its end: every
    record read has been handled (ingest commits only after sealing or dead-lettering). With
    `through` ({partition: offset}), until it committed past those offsets instead: a
    transactional producer's commit marker follows its last record and is never
    committed past."""
    deadline = time.monotonic() + timeout_s

    def done(p: int, committed: int, end: int) -> bool:
        return committed == end if through is None else committed > through.get(p, -1)

    while lagging := {
        p: (committed, end)
        for p, (committed, end) in (await committed_vs_end(settings, group_id, partitions)).items()
        if not done(p, committed, end)
    }:
        tail = proc.log_tail() if proc is not None else ""
        assert proc is None or proc.alive(), tail
        assert time.monotonic() < deadline, f"committed < end: {lagging}\n{tail}"
        await asyncio.sleep(0.2)
