"""A driftloop process never starts a Ray instance by accident: a Ray API called while
not connected raises, instead of quietly starting a default local instance (with a
dashboard, without the loopback shim) that a later `ensure_ray()` would reuse as it is."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT

_SCRIPT = """
import services.common.ray_runtime  # sets Ray's environment before ray is imported
import ray
try:
    ray.put(1)
except Exception as exc:
    print("refused:", type(exc).__name__)
print("initialized:", ray.is_initialized())
"""


def test_a_ray_call_without_ensure_ray_does_not_start_an_instance() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused:" in proc.stdout and "initialized: False" in proc.stdout, proc.stdout
