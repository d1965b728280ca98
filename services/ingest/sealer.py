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
from services.ingest.storage import StoredVersion, VersionWriter, seal_version

__all__ = ["Sealed", "Sealer"]


class Sealed(NamedTuple):
    dataset: str
    rows: PendingRows
    stored: StoredVersion


class Sealer:
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
        self.in_flight: dict[str, tuple[PendingRows, asyncio.Task[StoredVersion]]] = {}

    def start(
        self,
        name: str,
        rows: PendingRows,
        parent: VersionManifest | None,
        reference: VersionManifest | None,
    ) -> None:
        """Seal `rows` as the next version of `name`, after `parent`, assessed against
        `reference` (none of its seals may be in flight)."""
        assert name not in self.in_flight, f"{name} is already being sealed"
        task = asyncio.ensure_future(self._seal(name, rows, parent, reference))
        self.in_flight[name] = (rows, task)

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

    def reap(self) -> list[Sealed]:
        """The seals that have finished (durable and announced), no longer in flight."""
        done = [name for name, (_, task) in self.in_flight.items() if task.done()]
        return [self._take(name) for name in done]

    async def wait_for(self, name: str) -> list[Sealed]:
        """Wait for the seal of `name` in flight, if any; then every finished one, reaped."""
        if name in self.in_flight:
            await asyncio.wait([self.in_flight[name][1]])
        return self.reap()

    async def wait(self) -> list[Sealed]:
        """Wait for every seal in flight; all of them, reaped."""
        if self.in_flight:
            await asyncio.wait([task for _, task in self.in_flight.values()])
        return self.reap()

    def _take(self, name: str) -> Sealed:
        rows, task = self.in_flight.pop(name)
        return Sealed(name, rows, task.result())
