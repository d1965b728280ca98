"""The monitor's HTTP query API on 127.0.0.1 (the local chDB store has one process, so
readers — `driftloop report`, the dashboards' tests, operators — query through it).

- `GET /healthz`: the process is up. `GET /readyz`: the store is migrated and the sinks'
  consumer has joined (503 with what is missing otherwise).
- `POST /v1/query` `{"sql": "SELECT …"}` (or `GET /v1/query?sql=…`): one read-only
  statement (SELECT / WITH / SHOW / DESCRIBE / EXPLAIN), run with ClickHouse's
  `readonly=1` and a row limit; answers `{"columns", "types", "rows"}`. Anything else is
  a 400 with the reason; a query ClickHouse rejects is a 400 with its message.
- `GET /v1/tables`: the store's tables.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import sqlparse
from clickhouse_connect.driver.client import Client
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.monitor.config import MonitorSettings

__all__ = ["QueryRequest", "create_http_app", "read_only_statement"]

_READ_KEYWORDS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"}

Runner = Callable[[Callable[..., Any], Any], Awaitable[Any]]


class QueryRequest(BaseModel):
    sql: str = Field(min_length=1, max_length=200_000)


def read_only_statement(sql: str) -> str:
    """The one statement of `sql`, or ValueError saying why it is not a read-only query."""
    statements = [s for s in sqlparse.split(sql) if sqlparse.format(s, strip_comments=True).strip()]
    if len(statements) != 1:
        raise ValueError(f"send exactly one statement, got {len(statements)}")
    stmt = sqlparse.format(statements[0], strip_comments=True).strip().rstrip(";").strip()
    first = stmt.split(None, 1)[0].upper() if stmt else ""
    if first not in _READ_KEYWORDS:
        raise ValueError(
            f"only read-only queries are allowed ({', '.join(sorted(_READ_KEYWORDS))})"
        )
    return stmt


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


def create_http_app(
    settings: MonitorSettings, run_query: Runner, readiness: Callable[[], list[str]]
) -> FastAPI:
    """`run_query(fn, arg)` runs `fn(client, arg)` on the reader's store thread."""
    app = FastAPI(title="driftloop monitor", version="1")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        missing = readiness()
        if missing:
            return JSONResponse({"status": "starting", "waiting_for": missing}, status_code=503)
        return JSONResponse({"status": "ready"})

    def _query(client: Client, sql: str) -> dict[str, Any]:
        result = client.query(
            sql,
            settings={
                "readonly": 1,
                "max_result_rows": settings.query_max_rows,
                "result_overflow_mode": "throw",
                "max_execution_time": settings.query_timeout_s,
            },
        )
        return {
            "columns": list(result.column_names),
            "types": [t.name for t in result.column_types],
            "rows": [[_json_value(v) for v in row] for row in result.result_rows],
        }

    async def _answer(sql: str) -> dict[str, Any]:
        try:
            stmt = read_only_statement(sql)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        try:
            answer: dict[str, Any] = await run_query(_query, stmt)
            return answer
        except Exception as exc:  # ClickHouse's own message: a bad query, not a crash
            raise HTTPException(status_code=400, detail=f"query failed: {exc}") from None

    @app.post("/v1/query")
    async def query_post(body: QueryRequest) -> dict[str, Any]:
        return await _answer(body.sql)

    @app.get("/v1/query")
    async def query_get(sql: str) -> dict[str, Any]:
        return await _answer(sql)

    @app.get("/v1/tables")
    async def tables() -> dict[str, Any]:
        return await _answer(
            "SELECT name, total_rows FROM system.tables WHERE database = currentDatabase() "
            "ORDER BY name"
        )

    return app
