"""Keep every listener of a Serve replica on loopback (called first in the replica's
constructor).

Ray Serve's replica starts its inter-deployment gRPC server on a hard-coded `[::]:0`
(`ray/serve/_private/replica.py`, Ray 2.60), i.e. on every interface, right after it has
constructed the user's class. The local stack must listen on 127.0.0.1 only, so the
constructor rebinds that one call (an actor-level `worker_process_setup_hook` is not
run for Serve replicas: measured); the integration test lists every listening socket
of the Ray process tree and fails on any that is not loopback, so a Ray upgrade that
moves the call is caught. On a real cluster (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`)
this leaves Ray alone:
replicas on other nodes must be reachable.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["bind_replicas_to_loopback"]

_WILDCARDS = ("[::]:", "0.0.0.0:")


def bind_replicas_to_loopback() -> None:
    if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0") != "0":
        return
    from ray.serve._private import replica

    original = replica.add_port_to_grpc_server
    if getattr(original, "_driftloop_loopback", False):
        return

    def add_port_on_loopback(server: Any, address: str) -> int:
        for wildcard in _WILDCARDS:
            if address.startswith(wildcard):
                address = "127.0.0.1:" + address[len(wildcard) :]
        return int(original(server, address))

    add_port_on_loopback._driftloop_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_port_on_loopback
