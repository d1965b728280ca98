"""Serving's health endpoints on 127.0.0.1: `/healthz` (alive), `/readyz` (variants
deployed, consuming models.events) and `/v1/variants` (what runs, what failed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

__all__ = ["health_app"]


def health_app(ready: Callable[[], tuple[bool, str]], variants: Callable[[], Any]) -> FastAPI:
    app = FastAPI(title="driftloop serving", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ok, detail = ready()
        return JSONResponse({"ready": ok, "detail": detail}, status_code=200 if ok else 503)

    @app.get("/v1/variants")
    async def deployed() -> Any:
        return variants()

    return app
