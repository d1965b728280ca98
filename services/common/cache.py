"""Where driftloop caches what it builds or downloads outside the repository (the venv,
the Kafka jars, the loopback bind shim): `$DRIFTLOOP_CACHE`, else the XDG cache."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    explicit = os.environ.get("DRIFTLOOP_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "driftloop"
