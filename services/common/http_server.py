"""uvicorn inside a service's own event loop, without uvicorn's signal handling (the
service owns SIGTERM/SIGINT and stops the server itself)."""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any, Literal

import uvicorn

__all__ = ["QuietServer", "embedded_server"]


class QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


Lifespan = Literal["auto", "on", "off"]


def embedded_server(app: Any, host: str, port: int, lifespan: Lifespan = "off") -> QuietServer:
    """A server for `app` on host:port; `await server.serve()`, stop with `should_exit`."""
    # log_config=None: stdlib records go through configure_logging's handler
    return QuietServer(
        uvicorn.Config(app, host=host, port=port, log_config=None, lifespan=lifespan)
    )
