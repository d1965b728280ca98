"""Run the real serving service (`python -m services.serving`) for integration tests.

It starts its own local Ray (127.0.0.1) and Serve, deploys the registry's aliases of the
models it is told to serve, and records itself in `$DRIFTLOOP_HOME/serving.json`; a test
joins that Ray cluster through `ServingClient.connect`. Start it once per test package:
Ray + Serve cost ≈ 10 s and ≈ 1.3 GB (notes/ray.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import Settings
from services.serving.state import ServingState, read_state

__all__ = ["ServingProcess", "run_serving"]

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServingProcess:
    process: subprocess.Popen[bytes]
    settings: Settings
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def state(self) -> ServingState | None:
        state = read_state(self.settings.home)
        return state if state is not None and state.pid == self.pid else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, apps: Iterable[str], timeout_s: float = 180) -> ServingState:
        """Until the service is ready and serves (at least) `apps`."""
        wanted = set(apps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serving exited {self.process.returncode}:\n{self.log()}")
            state = self.state()
            if state is not None and state.ready and wanted <= state.apps.keys():
                return state
            time.sleep(0.2)
        raise AssertionError(
            f"serving did not deploy {sorted(wanted)} in {timeout_s} s:\n{self.log()}"
        )


@contextmanager
def run_serving(
    settings: Settings,
    models: Iterable[str],
    *,
    replicas: Mapping[str, int] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[ServingProcess]:
    """`python -m services.serving` serving `models`, stopped (SIGTERM) on exit."""
    log_path = settings.home / f"serving-{time.time_ns()}.log"
    env = {
        **os.environ,
        "DRIFTLOOP_HOME": str(settings.home),
        "DRIFTLOOP_SERVING_MODELS": json.dumps(list(models)),
        "DRIFTLOOP_SERVING_REPLICAS": json.dumps(dict(replicas or {})),
        "DRIFTLOOP_SERVING_HEALTH_PORT": "0",
        "DRIFTLOOP_SERVING_GROUP_ID": f"serving-test-{time.time_ns()}",
        "DRIFTLOOP_SERVING_RAY_NUM_CPUS": "2",
        "DRIFTLOOP_RAY_TMPDIR": os.environ.get("DRIFTLOOP_RAY_TMPDIR", "/tmp/dl-ray") + "-serving",
        **(extra_env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.serving"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    serving = ServingProcess(process, settings, log_path)
    try:
        yield serving
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
