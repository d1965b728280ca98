"""The one place that starts or joins Ray: loopback-only locally, quiet, importable code.

Ray rewrites 127.0.0.1 to the machine's routable address unless
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` is in the environment when `ray` is *imported*
(`ray_constants` reads it once), and then the GCS, raylet and workers listen on every
interface (`ray.init(_node_ip_address="127.0.0.1")` alone does not prevent it). So this
module sets it on import, before anything here imports ray, and `ray` is imported inside
the functions only. Import this module (or call
`ensure_ray`) before anything else imports ray. A deployment that runs a real multi-node
cluster sets the variable to 1 itself; `setdefault` leaves an explicit value alone.

Locally, the workers also preload the loopback bind shim (loopback_shim.py): a library
in a worker that hard-codes the wildcard address (libxgboost's collective) listens on
127.0.0.1 too. Against a cluster address nothing is preloaded.

Workers must import `services.*` (trial functions, models): the repository root is put on
their `PYTHONPATH` through the job's `runtime_env`, which also works for a cluster
that already has the code installed (the extra path is then harmless).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from services.common.loopback_shim import loopback_preload

__all__ = ["RAY_ENV_DEFAULTS", "ensure_ray", "ray_address", "ray_temp_dir", "shutdown_ray"]

# Environment every Ray process of ours starts with (children inherit the driver's).
RAY_ENV_DEFAULTS: dict[str, str] = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep the node IP (and every listener) on loopback
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage report over the network
    # A Ray API called while not connected (a thread still reading after shutdown_ray)
    # raises instead of quietly starting a default local instance: one with a dashboard and
    # without the loopback shim, which a later ensure_ray() would then reuse as it is.
    "RAY_ENABLE_AUTO_CONNECT": "0",
}
for _name, _value in RAY_ENV_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

REPO_ROOT = Path(__file__).resolve().parents[2]
_log = logging.getLogger(__name__)


def ray_temp_dir() -> str:
    """A short per-user session root: Ray puts unix sockets under it (108-byte limit).

    `DRIFTLOOP_RAY_TMPDIR` overrides it, so that two checkouts testing side by side on one
    machine keep their Ray sessions apart.
    """
    return os.environ.get("DRIFTLOOP_RAY_TMPDIR") or f"/tmp/dl-ray-{os.getuid()}"


def _worker_pythonpath() -> str:
    existing = os.environ.get("PYTHONPATH", "")
    parts = [str(REPO_ROOT), *(p for p in existing.split(os.pathsep) if p)]
    return os.pathsep.join(dict.fromkeys(parts))  # repo root first, no duplicates


def _force_loopback(ray_module: Any) -> None:
    """If ray was imported before this module set the variable, its constant is stale."""
    if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
            _log.warning("ray was imported before services.common.ray_runtime; forcing loopback")
            vars(constants)["ENABLE_RAY_CLUSTER"] = False
    if os.environ.get("RAY_ENABLE_AUTO_CONNECT") == "0":
        hook = sys.modules.get("ray._private.auto_init_hook")
        if hook is not None and getattr(hook, "enable_auto_connect", False):
            vars(hook)["enable_auto_connect"] = False


def ensure_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    temp_dir: str | None = None,
    object_store_memory_bytes: int | None = None,
) -> None:
    """Connect this process to Ray once: to `address` if given (`host:port`, `auto` or a
    `ray://` client address), else start a local single-node instance on 127.0.0.1.

    A no-op when Ray is already initialised in this process. `num_cpus`, `temp_dir` and
    `object_store_memory_bytes` only apply to a local instance.
    """
    for name, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    import ray

    if ray.is_initialized():
        return
    _force_loopback(ray)
    options: dict[str, Any] = {
        "runtime_env": {"env_vars": {"PYTHONPATH": _worker_pythonpath()}},
        "ignore_reinit_error": True,
        "logging_level": logging.WARNING,
        "log_to_driver": False,  # task errors still arrive as exceptions with tracebacks
        "namespace": "driftloop",
    }
    if address:
        ray.init(address=address, **options)
        return
    root = temp_dir or ray_temp_dir()
    os.makedirs(root, exist_ok=True)
    shim = loopback_preload()  # a worker library that binds 0.0.0.0 gets 127.0.0.1
    if shim is not None:
        options["runtime_env"]["env_vars"]["LD_PRELOAD"] = shim
    ray.init(
        address="local",  # never attach to a stray cluster found in /tmp/ray
        num_cpus=num_cpus,
        object_store_memory=object_store_memory_bytes,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=root,
        **options,
    )


def ray_address() -> str:
    """The GCS address of the cluster this process is connected to."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialised: call ensure_ray() first")
    return str(ray.get_runtime_context().gcs_address)


def shutdown_ray(grace_s: float = 10.0) -> None:
    """Disconnect (and stop a local instance this process started). Safe to call twice.

    `ray.shutdown()` stops the GCS and the raylet, but the raylet's own children (the
    dashboard and runtime-env agents, idle workers) can outlive it as orphans. So the
    processes this one started are noted first, and whatever of them is still alive after
    the shutdown is sent SIGTERM, then SIGKILL after `grace_s`: no Ray process is left
    behind by a CLI command or a service that stopped.
    """
    if "ray" not in sys.modules:
        return
    import ray

    if ray.is_initialized():
        started = {pid for pid in _descendants(os.getpid()) if _is_ray_process(pid)}
        ray.shutdown()
        _stop_all(started, grace_s)
    # Serve caches its controller's handle per process and trusts it while the job id
    # matches; a new cluster numbers jobs from 01 again, so a process that joins another
    # cluster later (a router after serving restarted) would reuse a dead handle.
    serve_context = sys.modules.get("ray.serve.context")
    if serve_context is not None:
        serve_context._set_global_client(None)


def _descendants(root: int) -> set[int]:
    """Every live process below `root`, from /proc (Linux; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _is_ray_process(pid: int) -> bool:
    """Ray's own processes: raylet, GCS, agents (their code is under .../ray/), workers."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(
        arg.startswith(b"ray::") or b"/ray/" in arg or arg.endswith((b"raylet", b"gcs_server"))
        for arg in argv
    )


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"  # a zombie has exited


def _stop_all(pids: set[int], grace_s: float) -> None:
    import signal
    import time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = {p for p in pids if _alive(p)}
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(p) for p in left):
            time.sleep(0.05)
