"""The online store's circuit breaker against a Redis that is unreachable, then back.

"Unreachable" is a closed port on 127.0.0.1; "back" is a proxy that starts listening on
that port and forwards to the stack's redis-server. Connection attempts are counted (no
timing): while the breaker is open a batch of writes makes none at all.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pyarrow as pa
import pytest
import redis
from structlog.testing import capture_logs

from services.common.circuit_breaker import BreakerState
from services.common.feature_store import FeatureKind, OnlineFeatureStore
from services.common.settings import Settings
from services.stack.processes import free_port

KINDS: dict[str, FeatureKind] = {"amount": "numeric"}


class _Proxy:
    """Listen on 127.0.0.1:`port` and pipe every connection to `target`."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self._target = target
        self._server = socket.create_server(("127.0.0.1", port))
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self._target)
            self._sockets += [conn, upstream]
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        self._server.shutdown(socket.SHUT_RDWR)  # wakes accept() up
        self._server.close()
        for s in self._sockets:
            s.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _counting_client(port: int) -> tuple[redis.Redis, list[int]]:
    """A client of 127.0.0.1:`port` with the ingest's timeouts; the list counts every
    TCP connection attempt (each retry of the client's own retry policy included)."""
    attempts = [0]

    class Counting(redis.Connection):
        def _connect(self) -> socket.socket:
            attempts[0] += 1
            sock: socket.socket = super()._connect()
            return sock

    pool = redis.ConnectionPool(
        connection_class=Counting,
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=1,
        socket_timeout=2,
    )
    return redis.Redis(connection_pool=pool), attempts


def _rows(batch: int, n: int = 50) -> pa.Table:
    return pa.table(
        {
            "event_id": [f"b{batch}-e{i}" for i in range(n)],
            "entity_key": [f"k{i}" for i in range(n)],
            "event_time_ms": pa.array([1_000 * batch + i for i in range(n)], pa.int64()),
            "amount": [float(batch)] * n,
        }
    )


@pytest.fixture
def good(stack: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis_url)
    yield client
    client.close()


@pytest.fixture
def dataset(good: redis.Redis) -> Iterator[str]:
    name = f"fs-breaker-{uuid.uuid4().hex[:8]}"
    yield name
    OnlineFeatureStore(good).delete_dataset(name)


@pytest.fixture
def down() -> Iterator[tuple[int, redis.Redis, list[int]]]:
    """A free port nothing listens on, and a counting client of it."""
    port = free_port()
    client, attempts = _counting_client(port)
    yield port, client, attempts
    client.close()


@pytest.fixture
def proxies() -> Iterator[list[_Proxy]]:
    started: list[_Proxy] = []
    yield started
    for proxy in started:
        proxy.close()


def test_an_unreachable_redis_costs_one_attempt_then_writes_resume(
    stack: Settings,
    good: redis.Redis,
    dataset: str,
    down: tuple[int, redis.Redis, list[int]],
    proxies: list[_Proxy],
) -> None:
    port, client, attempts = down
    now_s = [0.0]
    store = OnlineFeatureStore(client, retry_after_s=30, clock_s=lambda: now_s[0])
    with capture_logs() as logs:
        with pytest.raises(redis.ConnectionError):
            store.write_latest(dataset, _rows(1))  # Redis is down: the breaker opens
        per_write = attempts[0]
        assert per_write >= 1 and store.breaker.state is BreakerState.OPEN
        # A batch of 20 writes while open: answered at once, not one more connection
        # attempt (without the breaker: 20 x per_write attempts, each up to the timeout).
        assert [store.write_latest(dataset, _rows(b)) for b in range(2, 22)] == [None] * 20
        assert attempts[0] == per_write
        assert (store.stats.skipped_writes, store.stats.skipped_keys) == (20, 20 * 50)

        # Redis is reachable again; until retry_after_s has passed, writes still skip.
        target = urlsplit(stack.redis_url)
        proxies.append(_Proxy(port, (target.hostname or "127.0.0.1", target.port or 6379)))
        assert store.write_latest(dataset, _rows(22)) is None and attempts[0] == per_write
        now_s[0] = 30.0
        assert store.write_latest(dataset, _rows(23)) == 50  # the trial write goes through
        assert store.breaker.state is BreakerState.CLOSED
        assert attempts[0] == per_write + 1
        assert store.write_latest(dataset, _rows(24)) == 50
    reader = OnlineFeatureStore(good)
    assert reader.get(dataset, ["k0", "k49"], kinds=KINDS) == [{"amount": 24.0}] * 2
    closed = [e for e in logs if e["event"] == "features.breaker_closed"]
    # What went unwritten (1 failed + 21 skipped batches of 50 keys): rebuild's job.
    assert [e["unwritten"] for e in closed] == [{dataset: 22 * 50}]
    assert store.stats.outage_keys == {}
