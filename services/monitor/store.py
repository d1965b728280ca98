"""The analytics store, owned by one thread per role.

chDB runs one query at a time per handle and its client is synchronous (no async client,
notes/clickhouse-chdb.md), so the monitor keeps one client per thread: the writer (sinks,
metric rows) and the reader (the HTTP query API, which must never wait behind an insert).
Each `StoreThread` creates its client inside its own single worker thread and runs every
call there; the event loop awaits the result.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client

from services.common.clickhouse import connect

__all__ = ["INSERT_SETTINGS", "StoreThread"]

T = TypeVar("T")

# chDB defaults async_insert=1; the sinks commit offsets after an insert, so an insert
# must be durable when it returns.
INSERT_SETTINGS: dict[str, Any] = {"async_insert": 0, "wait_for_async_insert": 1}


class StoreThread:
    """One ClickHouse client living in one worker thread; `await store.run(fn, *args)`
    calls `fn(client, *args)` there."""

    def __init__(self, dsn: str, name: str) -> None:
        self._dsn = dsn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store-{name}")
        self._client: Client | None = None

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._client is None:
            self._client = connect(self._dsn)
        return fn(self._client, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._call, fn, *args))

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return self._executor.submit(self._call, fn, *args).result()

    def close(self) -> None:
        def _close() -> None:
            if self._client is not None:
                self._client.close()
                self._client = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)
