"""One local Ray instance for the trainer's integration tests, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.common.ray_runtime import ensure_ray, ray_address, shutdown_ray


@pytest.fixture(scope="session")
def ray_local() -> Iterator[str]:
    """A local Ray instance (2 CPUs, loopback only); yields its GCS address."""
    ensure_ray(num_cpus=2)
    try:
        yield ray_address()
    finally:
        shutdown_ray()
