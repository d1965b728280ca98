"""The artifact store: immutable objects under one root URI, each with a recorded sha256.

One interface over fsspec: `file://` locally, `s3://` (or any fsspec URL) in production,
so callers never branch on the backend. Every object `<path>` has a sidecar
`<path>.sha256` holding its hex digest, so a reader can verify it without a manifest.

Writes never expose a partial object: data goes to a hidden temp name first and is then
renamed (or hard-linked, for exclusive creation) onto its final name. The digest is first
written to a hidden *pending* sidecar and promoted after the data is in place; a reader
that finds no sidecar (the writer is between its two renames, or crashed there) accepts
the object only if its digest matches a pending sidecar — which the writer computed from
exactly the bytes it wrote — so a crash cannot leave a complete object unreadable.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

if TYPE_CHECKING:
    from services.common.settings import Settings

__all__ = [
    "ArtifactError",
    "ArtifactIntegrityError",
    "ArtifactNotFoundError",
    "ArtifactStore",
    "InvalidArtifactPathError",
    "ObjectInfo",
    "sha256_hex",
]

SIDECAR_SUFFIX = ".sha256"
_PENDING_SUFFIX = ".pending"
_TMP_SUFFIX = ".tmp"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=+-]*$")


class ArtifactError(Exception):
    """Base class of artifact-store errors."""


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    """No object at that path."""


class ArtifactIntegrityError(ArtifactError):
    """An object's bytes do not match its recorded or expected sha256."""


class InvalidArtifactPathError(ArtifactError, ValueError):
    """A relative path that could escape the root or collide with the store's own files."""


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    path: str
    sha256: str
    size: int


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_relpath(relpath: str) -> str:
    segments = relpath.split("/")
    bad = (
        not relpath
        or relpath.startswith("/")
        or any(not _SEGMENT.match(s) or s in (".", "..") for s in segments)
        or relpath.endswith((SIDECAR_SUFFIX, _PENDING_SUFFIX, _TMP_SUFFIX))
    )
    if bad:
        raise InvalidArtifactPathError(
            f"invalid artifact path {relpath!r}: use '/'-separated segments of letters, digits "
            f"and _.=+- (not starting with '.'), not ending in {SIDECAR_SUFFIX}, "
            f"{_TMP_SUFFIX} or {_PENDING_SUFFIX}"
        )
    return relpath


class ArtifactStore:
    """Objects under `root_uri`; paths given to methods are relative, '/'-separated."""

    def __init__(self, root_uri: str, **storage_options: Any) -> None:
        self._fs, root = url_to_fs(root_uri, **storage_options)
        self._root = root.rstrip("/")
        self._local = isinstance(self._fs, LocalFileSystem)
        self.root_uri = self._fs.unstrip_protocol(self._root)

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        return cls(settings.artifact_root)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root_uri!r})"

    def uri(self, relpath: str) -> str:
        return str(self._fs.unstrip_protocol(self._abs(relpath)))

    # -- writing -------------------------------------------------------------------------

    def put_bytes(self, relpath: str, data: bytes) -> ObjectInfo:
        """Write (or replace) an object atomically and record its sha256.

        Objects are meant to be immutable: replacing one is atomic for the data, but a
        concurrent reader may briefly see the new data with the old digest and refuse it.
        """
        path = self._abs(relpath)
        digest = sha256_hex(data)
        pending = self._write_new(self._pending_path(path), f"{digest}\n".encode())
        tmp = self._temp_path(path)
        try:
            if self._local:
                os.replace(self._write_new(tmp, data), path)
            else:
                self._fs.pipe_file(path, data)
            self._promote(pending, path + SIDECAR_SUFFIX)
        except BaseException:
            for leftover in (tmp, pending):
                self._remove_quietly(leftover)
            raise
        return ObjectInfo(self.uri(relpath), relpath, digest, len(data))

    def put_if_absent(self, relpath: str, data: bytes) -> bool:
        """Create the object only if nothing is at `relpath`; True if this call created it.

        Locally the claim is a hard link of a complete temp file onto the final name, which
        fails atomically if the name exists, so exactly one of many racing writers wins and
        no reader ever sees a partial object. Other backends use fsspec's `open(mode="xb")`:
        exclusive only as far as the backend supports it (S3 needs conditional writes,
        s3fs >= 2024.12 with a bucket that honours If-None-Match; elsewhere it is a
        check-then-write that two writers can both pass).
        """
        path = self._abs(relpath)
        pending = self._write_new(self._pending_path(path), f"{sha256_hex(data)}\n".encode())
        try:
            created = self._create_exclusive(path, data)
            if created:
                self._promote(pending, path + SIDECAR_SUFFIX)
        finally:
            self._remove_quietly(pending)
        return created

    def put_file(self, relpath: str, local_path: str | Path) -> ObjectInfo:
        return self.put_bytes(relpath, Path(local_path).read_bytes())

    # -- reading -------------------------------------------------------------------------

    def get_bytes(self, relpath: str, expected_sha256: str | None = None) -> bytes:
        """Read an object, verified against `expected_sha256` or else its recorded digest."""
        path = self._abs(relpath)
        try:
            data = bytes(self._fs.cat_file(path))
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact at {self.uri(relpath)}") from None
        actual = sha256_hex(data)
        if expected_sha256 is not None:
            if actual != expected_sha256.lower():
                raise self._mismatch(relpath, expected_sha256.lower(), actual, len(data))
            return data
        recorded = self._read_sidecar(path)
        if recorded == actual or actual in self._pending_digests(path):
            return data
        # The writer may have promoted its pending digest between our two looks.
        recorded = self._read_sidecar(path)
        if recorded == actual:
            return data
        if recorded is None:
            raise ArtifactIntegrityError(
                f"artifact {self.uri(relpath)} has no recorded sha256 (missing "
                f"{posixpath.basename(path)}{SIDECAR_SUFFIX}); refusing to trust it "
                f"(actual sha256 {actual}, {len(data)} bytes)"
            )
        raise self._mismatch(relpath, recorded, actual, len(data))

    def get_file(
        self, relpath: str, local_path: str | Path, expected_sha256: str | None = None
    ) -> ObjectInfo:
        """Copy a verified object to a local file (written under a temp name, then renamed)."""
        data = self.get_bytes(relpath, expected_sha256)
        target = Path(local_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return ObjectInfo(self.uri(relpath), relpath, sha256_hex(data), len(data))

    def checksum(self, relpath: str) -> str:
        """The recorded sha256 of an object (no read of the data itself)."""
        path = self._abs(relpath)
        if not self._fs.isfile(path):
            raise ArtifactNotFoundError(f"no artifact at {self.uri(relpath)}")
        recorded = self._read_sidecar(path)
        if recorded is None:
            raise ArtifactIntegrityError(f"artifact {self.uri(relpath)} has no recorded sha256")
        return recorded

    def exists(self, relpath: str) -> bool:
        return bool(self._fs.isfile(self._abs(relpath)))

    def list(self, prefix: str = "") -> list[str]:
        """Relative paths of the objects under `prefix` (a directory), sorted."""
        base = self._abs(prefix.strip("/")) if prefix.strip("/") else self._root
        try:
            found = self._fs.find(base)
        except FileNotFoundError:
            return []
        out = []
        for full in found:
            rel = posixpath.relpath(full, self._root)
            name = posixpath.basename(rel)
            if not name.startswith(".") and not name.endswith(SIDECAR_SUFFIX):
                out.append(rel)
        return sorted(out)

    # -- internals -----------------------------------------------------------------------

    def _abs(self, relpath: str) -> str:
        return f"{self._root}/{_check_relpath(relpath)}"

    @staticmethod
    def _pending_path(path: str) -> str:
        head, name = posixpath.split(path)
        return f"{head}/.{name}{SIDECAR_SUFFIX}.{uuid.uuid4().hex}{_PENDING_SUFFIX}"

    @staticmethod
    def _temp_path(path: str) -> str:
        head, name = posixpath.split(path)
        return f"{head}/.{name}.{uuid.uuid4().hex}{_TMP_SUFFIX}"

    def _write_new(self, path: str, data: bytes) -> str:
        """Write `data` completely to `path`, a fresh unique name; returns `path`."""
        if not self._local:
            self._fs.pipe_file(path, data)
            return path
        os.makedirs(posixpath.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)  # a rename must never publish a name whose bytes are not on disk
        finally:
            os.close(fd)
        return path

    def _create_exclusive(self, path: str, data: bytes) -> bool:
        if not self._local:
            try:
                with self._fs.open(path, "xb") as handle:
                    handle.write(data)
            except FileExistsError:
                return False
            return True
        tmp = self._write_new(self._temp_path(path), data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            # No hard links on this filesystem: O_EXCL still gives one winner, but a reader
            # may see the object while it is being written (and refuse it as corrupt).
            return self._create_exclusive_no_link(path, data)
        finally:
            self._remove_quietly(tmp)

    @staticmethod
    def _create_exclusive_no_link(path: str, data: bytes) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def _promote(self, pending: str, sidecar: str) -> None:
        if self._local:
            os.replace(pending, sidecar)
        else:
            self._fs.mv(pending, sidecar)

    def _remove_quietly(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self._local:
                os.unlink(path)
            else:
                self._fs.rm_file(path)

    def _read_sidecar(self, path: str) -> str | None:
        try:
            text = bytes(self._fs.cat_file(path + SIDECAR_SUFFIX)).decode("ascii", "replace")
        except FileNotFoundError:
            return None
        digest = text.strip().lower()
        return digest if _HEX64.match(digest) else f"<unreadable sidecar: {text[:80]!r}>"

    def _pending_digests(self, path: str) -> set[str]:
        head, name = posixpath.split(path)
        try:
            candidates = self._fs.glob(f"{head}/.{name}{SIDECAR_SUFFIX}.*{_PENDING_SUFFIX}")
        except FileNotFoundError:
            return set()
        digests = set()
        for candidate in candidates:
            with contextlib.suppress(FileNotFoundError):
                digests.add(bytes(self._fs.cat_file(candidate)).decode("ascii", "replace").strip())
        return digests

    def _mismatch(self, relpath: str, expected: str, actual: str, size: int) -> Exception:
        return ArtifactIntegrityError(
            f"artifact {self.uri(relpath)} failed its sha256 check: expected {expected}, "
            f"actual {actual} ({size} bytes); the object is corrupt, truncated or was "
            "modified after it was written"
        )
