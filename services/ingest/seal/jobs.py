"""Sealing in the background: a dataset's pending rows become a version (Parquet,
profile, manifest, `DatasetVersion` announcement) in a worker thread while the loop
goes on consuming, instead of stalling it for the ~2 µs a row a seal costs.

Ordering and durability stay what `pipeline` argues: at most one seal per dataset is in
flight (the next one needs it as its parent), its rows keep holding the commit back and
keep counting as seen event ids until the loop *reaps* the finished seal, and only then
does the loop advance the watermarks and commit past them. A seal that fails raises from
`reap`, i.e. from the loop, as it did when sealing was inline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import NamedTuple

import pyarrow as pa

from services.common.datasets.manifest import VersionManifest
from services.common.datasets.schema import DatasetSchema
from services.common.kafka import ProtobufProducer
from services.ingest.pending import PendingRows
from services.ingest.seal.version import StoredVersion, VersionWriter, seal_version

__all__ = ["FinishedSeal", "SealJobs"]


class FinishedSeal(NamedTuple):
    dataset: str
    rows: PendingRows
    stored: StoredVersion


class SealJobs:
    def __init__(
        self,
        *,
        storage: VersionWriter,
        producer: ProtobufProducer,
        schemas: Mapping[str, DatasetSchema],
        versions_topic: str,
        thresholds: tuple[float, float],
        clock_ms: Callable[[], int],
    ) -> None:
        self._storage, self._producer, self._schemas = storage, producer, schemas
        self._topic, self._thresholds, self._clock_ms = versions_topic, thresholds, clock_ms
        self._jobs: dict[str, tuple[PendingRows, asyncio.Task[StoredVersion]]] = {}

    def __bool__(self) -> bool:
        """Some seal is in flight."""
        return bool(self._jobs)

    def busy(self, name: str) -> bool:
        """A seal of `name` is in flight (the next one must wait: it is its parent)."""
        return name in self._jobs

    def rows(self) -> list[tuple[str, PendingRows]]:
        """The rows of the seals in flight: not durable yet, they hold the commit back
        and keep their event ids claimed."""
        return [(name, rows) for name, (rows, _) in self._jobs.items()]

    def start(
        self,
        name: str,
        rows: PendingRows,
        parent: VersionManifest | None,
        reference: VersionManifest | None,
    ) -> None:
        """Seal `rows` as the next version of `name`, after `parent`, assessed against
        `reference` (none of its seals may be in flight)."""
        assert name not in self._jobs, f"{name} is already being sealed"
        task = asyncio.ensure_future(self._seal(name, rows, parent, reference))
        self._jobs[name] = (rows, task)

    async def _seal(
        self,
        name: str,
        rows: PendingRows,
        parent: VersionManifest | None,
        reference: VersionManifest | None,
    ) -> StoredVersion:
        stored = await asyncio.to_thread(
            seal_version,
            self._storage,
            self._schemas[name],
            pa.concat_tables(rows.tables),
            parent=parent,
            source_offsets=rows.tracker.ranges(),
            thresholds=self._thresholds,
            created_at_ms=self._clock_ms(),
            reference=reference,
        )
        await self.announce(stored.manifest)
        return stored

    async def announce(self, manifest: VersionManifest) -> None:
        storage_uri, manifest_uri = self._storage.uris(manifest)
        message = manifest.to_proto(storage_uri, manifest_uri)
        await self._producer.send_and_wait(self._topic, message, key=manifest.dataset)

    def reap(self) -> list[FinishedSeal]:
        """The seals that have finished (durable and announced), no longer in flight."""
        done = [name for name, (_, task) in self._jobs.items() if task.done()]
        return [self._take(name) for name in done]

    async def wait_for(self, name: str) -> list[FinishedSeal]:
        """Wait for the seal of `name` in flight, if any; then every finished one, reaped."""
        if name in self._jobs:
            await asyncio.wait([self._jobs[name][1]])
        return self.reap()

    async def wait(self) -> list[FinishedSeal]:
        """Wait for every seal in flight; all of them, reaped."""
        if self._jobs:
            await asyncio.wait([task for _, task in self._jobs.values()])
        return self.reap()

    def _take(self, name: str) -> FinishedSeal:
        rows, task = self._jobs.pop(name)
        return FinishedSeal(name, rows, task.result())
