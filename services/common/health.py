"""A service's health endpoints on 127.0.0.1, one shape for every service: `/healthz`
(alive), `/readyz` (200 or 503 with the reason) and one read-only operator view (the
trainer's `/v1/models`, serving's `/v1/variants`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

__all__ = ["health_app"]


def health_app(
    service: str,
    ready: Callable[[], tuple[bool, str]],
    view_path: str,
    view: Callable[[], Any],
) -> FastAPI:
    app = FastAPI(title=f"driftloop {service}", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ok, detail = ready()
        return JSONResponse({"ready": ok, "detail": detail}, status_code=200 if ok else 503)

    @app.get(view_path)
    async def operator_view() -> Any:
        return view()

    return app
