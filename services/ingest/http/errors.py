"""How every error of the ingest HTTP API becomes an `ErrorResponse`.

Handlers raise `RequestError` anywhere; Starlette's 404/405, FastAPI's parameter
validation and any unexpected exception (a JSON 500) are answered in the same shape.
`install_error_handling` wires all of it into an app.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.logging import get_logger
from services.ingest.http.models import ErrorDetail, ErrorResponse, RequestCode

__all__ = [
    "RequestError",
    "error_responses",
    "install_error_handling",
    "pydantic_error_code",
    "pydantic_errors",
]

_log = get_logger(__name__)
_PYDANTIC_CODES = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
}


class RequestError(Exception):
    """Answer the request with `status` and these errors (raised anywhere in a handler)."""

    def __init__(
        self, status: int, errors: Sequence[ErrorDetail], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status}: {errors[0].message if errors else ''}")
        self.status, self.errors, self.headers = status, list(errors), headers

    @classmethod
    def one(cls, status: int, code: str, message: str, field: str = "") -> RequestError:
        return cls(status, [ErrorDetail(code=code, message=message, field=field)])


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: these statuses answer with an `ErrorResponse`."""
    return {s: {"model": ErrorResponse} for s in statuses}


def pydantic_error_code(pydantic_type: str) -> str:
    if pydantic_type in _PYDANTIC_CODES:
        return _PYDANTIC_CODES[pydantic_type]
    return "wrong_type" if pydantic_type.endswith(("_type", "_parsing")) else RequestCode.INVALID


def pydantic_errors(exc: ValidationError) -> list[ErrorDetail]:
    """One `ErrorDetail` per pydantic error of a list of events (index = the event)."""
    out = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        index = loc.pop(0) if loc and isinstance(loc[0], int) else None
        assert index is None or isinstance(index, int)
        kind = err["type"]
        code = pydantic_error_code(kind)
        field = ".".join(str(p) for p in loc)[:200]
        message = "not valid UTF-8 text" if kind == "value_error" else err["msg"]
        out.append(ErrorDetail(index=index, field=field, code=code, message=message))
    return out


def _error_json(
    status: int, errors: list[ErrorDetail], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(ErrorResponse.of(errors).model_dump(), status_code=status, headers=headers)


async def _on_request_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    return _error_json(exc.status, exc.errors, exc.headers)


async def _on_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: RequestCode.NOT_FOUND, 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    detail = ErrorDetail(code=code, message=str(exc.detail))
    return _error_json(exc.status_code, [detail], exc.headers)


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        ErrorDetail(
            field=".".join(str(p) for p in e["loc"]),
            code=pydantic_error_code(e["type"]),
            message=e["msg"],
        )
        for e in exc.errors()
    ]
    return _error_json(422, errors)


class _InternalErrors:
    """Turn an unexpected exception into a JSON 500 (logged with its traceback), so one
    bad request never takes more than itself down. Inside Starlette's own error
    middleware, which would answer in plain text and re-raise into the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            _log.exception("unhandled error", method=scope.get("method"), path=scope.get("path"))
            if started:  # too late for another status line; the server closes the connection
                raise
            detail = ErrorDetail(
                code=RequestCode.INTERNAL, message="internal error; see the service log"
            )
            await _error_json(500, [detail])(scope, receive, send)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI documents a default 422 body on every route with parameters; ours are
    declared where they can happen (as `ErrorResponse`), so drop the defaults."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                default = operation.get("responses", {}).get("422", {})
                if "HTTPValidationError" in str(default):
                    del operation["responses"]["422"]
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def install_error_handling(app: FastAPI) -> None:
    """Every error answer is an `ErrorResponse`: ours, Starlette's 404/405, FastAPI's
    parameter validation, and any unexpected exception (a JSON 500)."""
    app.add_exception_handler(RequestError, _on_request_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_middleware(_InternalErrors)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
