"""Unit tests never touch the network: any socket connect fails loudly."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


class NetworkInUnitTestError(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(self: socket.socket, address: object) -> None:
        raise NetworkInUnitTestError(f"unit tests must not open connections (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield
