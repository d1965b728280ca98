"""An append-only on-disk spool of Kafka records, replayed in order.

Frames: `>III` (key, headers, value lengths), then the key, the headers (JSON list of
[name, latin-1 value]) and the value. `<path>.pos` holds the byte offset up to which the
frames were delivered; it is advanced only after Kafka confirmed a chunk, so a crash
replays at most the last chunk again (at-least-once; the monitor's sink is idempotent on
request id). When everything is delivered the file is truncated. Bounded by `max_bytes`:
a record that does not fit is refused (the caller counts and logs it).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Record", "Spool"]

_HEAD = struct.Struct(">III")


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def encode(self) -> bytes:
        hdr = json.dumps([[k, v.decode("latin-1")] for k, v in self.headers]).encode()
        return _HEAD.pack(len(self.key), len(hdr), len(self.value)) + self.key + hdr + self.value


class Spool:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self._pos_path = path.with_suffix(path.suffix + ".pos")
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - kept open for the spool's life
        self._pos = int(self._pos_path.read_text()) if self._pos_path.exists() else 0

    @property
    def pending_bytes(self) -> int:
        return self._file.tell() - self._pos

    def __bool__(self) -> bool:
        return self.pending_bytes > 0

    def append(self, records: Sequence[Record]) -> int:
        """Append as many of `records` as fit, in order; returns how many."""
        written = 0
        for r in records:
            frame = r.encode()
            if self.pending_bytes + len(frame) > self.max_bytes:
                break
            self._file.write(frame)
            written += 1
        self._file.flush()
        os.fsync(self._file.fileno())
        return written

    def read(self, max_records: int) -> tuple[list[Record], int]:
        """The next undelivered records (up to `max_records`) and the offset after them."""
        out: list[Record] = []
        pos = self._pos
        with open(self.path, "rb") as f:
            f.seek(pos)
            while len(out) < max_records:
                head = f.read(_HEAD.size)
                if len(head) < _HEAD.size:
                    break
                nk, nh, nv = _HEAD.unpack(head)
                body = f.read(nk + nh + nv)
                if len(body) < nk + nh + nv:
                    break  # a torn tail (crash mid-write): not a record
                headers = tuple((k, v.encode("latin-1")) for k, v in json.loads(body[nk : nk + nh]))
                out.append(Record(body[:nk], body[nk + nh :], headers))
                pos += _HEAD.size + nk + nh + nv
        return out, pos

    def commit(self, pos: int) -> None:
        """Mark everything before `pos` delivered; empty the file once all of it is."""
        self._pos = pos
        if pos >= self._file.tell():
            self._file.truncate(0)
            self._file.seek(0)
            self._pos = 0
        tmp = self._pos_path.with_suffix(".tmp")
        tmp.write_text(str(self._pos))
        tmp.replace(self._pos_path)

    def close(self) -> None:
        self._file.close()
