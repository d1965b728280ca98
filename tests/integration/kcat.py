"""Publishing with librdkafka's `kcat`: a producer that is not Python (the Debian package,
installed by scripts/bootstrap.sh)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["kcat_produce", "kcat_tombstone"]


def _kcat() -> str:
    path = shutil.which("kcat")
    assert path, "kcat is not installed: run scripts/bootstrap.sh (apt-get install kcat)"
    return path


def kcat_produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    *,
    codec: str = "none",
    key: str | None = None,
    partition: int | None = None,
    extra: Sequence[str] = (),
) -> None:
    """Send each value as one record (`kcat -P FILE…`: one message per file), compressed
    with `codec`, all with `key` (None: a null key)."""
    with tempfile.TemporaryDirectory(prefix="kcat-") as tmp:
        files = []
        for i, value in enumerate(values):
            path = Path(tmp) / f"{i:05d}.bin"
            path.write_bytes(value)
            files.append(str(path))
        args = [_kcat(), "-b", bootstrap, "-P", "-t", topic, "-z", codec, *extra]
        args += ["-X", "linger.ms=50"]  # one batch per partition: a compressed batch
        if key is not None:
            args += ["-k", key]
        if partition is not None:
            args += ["-p", str(partition)]
        proc = subprocess.run([*args, *files], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"kcat failed ({proc.returncode}): {proc.stderr}"


def kcat_tombstone(bootstrap: str, topic: str, key: str, *, extra: Sequence[str] = ()) -> None:
    """A record with `key` and a null value (`-K` splits key from value, `-Z` sends an
    empty value as NULL)."""
    proc = subprocess.run(
        [_kcat(), "-b", bootstrap, "-P", "-t", topic, "-K", "|", "-Z", *extra],
        input=f"{key}|",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"kcat failed ({proc.returncode}): {proc.stderr}"
