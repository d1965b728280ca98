"""The trainer's health endpoints on 127.0.0.1: `/healthz` (alive), `/readyz` (consuming,
Ray connected) and `/v1/models` (what the policy knows per model, for operators)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

__all__ = ["health_app"]


def health_app(ready: Callable[[], tuple[bool, str]], models: Callable[[], Any]) -> FastAPI:
    app = FastAPI(title="driftloop trainer", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ok, detail = ready()
        return JSONResponse({"ready": ok, "detail": detail}, status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def model_states() -> Any:
        return models()

    return app
