"""redis-server on 127.0.0.1, holding only state that can be rebuilt (no persistence)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import redis

from services.stack.errors import BrokerExitedError, ReadinessTimeoutError, ToolMissingError
from services.stack.processes import is_alive, start_detached, tail

__all__ = ["redis_command", "start", "wait_ready"]


def redis_command(port: int, data_dir: Path) -> list[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ToolMissingError(
            "redis-server",
            "for the local Redis (caches, locks, live routing tables)",
            "Install it with `apt-get install redis-server` (scripts/bootstrap.sh does this).",
        )
    return [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        # Redis holds only rebuildable state (DESIGN.md §4): no snapshots, no AOF
        "--save",
        "",
        "--appendonly",
        "no",
        # The ingest dedup index (services/ingest/dedup.py): an evicted bucket would
        # look like new ids, so never evict (Redis' default, stated); a whole bucket of
        # ids expires at once, so free it in the background
        "--maxmemory-policy",
        "noeviction",
        "--lazyfree-lazy-expire",
        "yes",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]


def start(port: int, data_dir: Path, log: Path) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    return start_detached(redis_command(port, data_dir), log, data_dir).pid


def wait_ready(pid: int, url: str, log: Path, timeout_s: float) -> float:
    started = time.monotonic()
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        while time.monotonic() - started < timeout_s:
            if not is_alive(pid):
                raise BrokerExitedError("redis-server", None, str(log), tail(log, 20))
            try:
                if client.ping():
                    return time.monotonic() - started
            except redis.RedisError:
                time.sleep(0.1)
    finally:
        client.close()
    raise ReadinessTimeoutError("redis-server", timeout_s, str(log), tail(log, 20))
