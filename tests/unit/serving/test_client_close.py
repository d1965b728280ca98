"""`ServingClient.close` returns only after a controller read in flight has finished: its
thread would otherwise still be inside `ray.get` when the caller shuts Ray down, and
block there for ever (and with it the process's exit)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from services.common.settings import load_settings
from services.serving import client as client_module
from services.serving.client import ServingClient
from services.serving.config import ServingSettings


async def test_close_waits_for_a_read_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads, started, release = [], threading.Event(), threading.Event()
    finished: list[float] = []

    def read() -> dict[str, str]:
        reads.append(1)
        if len(reads) > 1:  # the periodic refresh: still reading when the client closes
            started.set()
            release.wait(10)
            finished.append(time.monotonic())
        return {"credit.champion": "RUNNING"}

    monkeypatch.setattr(client_module, "ensure_ray", lambda *_: None)
    monkeypatch.setattr(client_module, "_application_states", read)
    client = await ServingClient.connect(
        load_settings(home=tmp_path),
        ServingSettings(ray_address="127.0.0.1:1", refresh_interval_s=0.01),
    )
    assert client.variants("credit") == ["champion"]
    await asyncio.to_thread(started.wait, 10)
    threading.Timer(0.2, release.set).start()
    await client.close()
    closed = time.monotonic()
    assert finished and finished[0] <= closed
