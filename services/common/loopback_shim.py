"""The loopback bind shim for local Ray workers (native/loopback_bind.c), built on demand.

Every driftloop listener binds 127.0.0.1 on the local stack. Ray itself obeys (see
ray_runtime.py), but a library inside a worker may hard-code the wildcard address:
libxgboost's collective listens on 0.0.0.0 during a distributed fit, and no option
changes it. The shim, preloaded into the local Ray workers, turns a bind() to the
wildcard address into a bind() to loopback and passes every other bind() through.

It is compiled once per source version into the driftloop cache with the system C
compiler (`cc`, or `$CC`). Without a compiler the workers run without it, and that is
logged: a library that binds the wildcard address then listens on every interface.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from services.common.cache import default_cache_dir

__all__ = ["SOURCE", "loopback_preload"]

SOURCE = Path(__file__).with_name("native") / "loopback_bind.c"
_log = logging.getLogger(__name__)


def loopback_preload() -> str | None:
    """The path of the built shim (for LD_PRELOAD), or None when it cannot be built."""
    source = SOURCE.read_bytes()
    target = default_cache_dir() / f"loopback-bind-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if target.exists():
        return str(target)
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        _log.warning("no C compiler: local Ray workers run without the loopback bind shim")
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    built = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        _log.warning("cannot build the loopback bind shim: %s", built.stderr.strip()[-500:])
        partial.unlink(missing_ok=True)
        return None
    os.replace(partial, target)  # atomic: concurrent builders agree on one file
    return str(target)
