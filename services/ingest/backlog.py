"""The ingest loop's unsealed state, in one owner: each dataset's accepted rows not yet in
a version (`PendingRows`), the event ids of every row not yet durable, and the categories
accepted so far.

Validation reads it through `context` (ids already seen, categories already known);
`intake` changes it only through `accept` / `take_back` (a checked batch's ids and new
categories count at once, and are taken back if their claims fail) and `add` (claimed rows
become pending); the pipeline takes a dataset's rows to seal with `take` and forgets their
ids with `sealed` once the version is durable. No I/O here.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.common.datasets.schema import DatasetSchema
from services.ingest.dedup import Claims
from services.ingest.offsets import OffsetTracker
from services.ingest.pending import PendingRows, SourceBatch
from services.ingest.seal.policy import SealPolicy
from services.ingest.validation import DatasetContext

__all__ = ["Backlog", "Categories", "Known"]

Categories = dict[str, set[str]]  # feature -> values
Known = dict[str, Categories]  # dataset -> feature -> accepted values


class Backlog:
    def __init__(self, known: Known | None = None) -> None:
        """`known`: the categories of the sealed versions (`SealedHistory.known`)."""
        self._pending: dict[str, PendingRows] = {}
        self._unsealed: dict[str, set[str]] = {}  # pending, sealing, or in the checked batch
        self._known: Known = known if known is not None else {}

    # -- what validation sees ------------------------------------------------------------

    def context(self, name: str) -> DatasetContext:
        """Ids already accepted and categories already known, for validating `name`
        (live views: later `accept`s show through)."""
        return DatasetContext(self._unsealed.get(name, frozenset()), self._known.get(name, {}))

    def unsealed_ids(self, name: str) -> frozenset[str]:
        return frozenset(self._unsealed.get(name, ()))

    def known(self, name: str) -> Categories:
        return {f: set(v) for f, v in self._known.get(name, {}).items()}

    # -- a checked batch -----------------------------------------------------------------

    def accept(self, schema: DatasetSchema, table: pa.Table) -> tuple[list[str], Categories]:
        """Count the rows of `table` as seen and their categories as known; returns what
        was added (to `take_back` if their claims fail)."""
        ids = table.column("event_id").to_pylist()
        self._unsealed.setdefault(schema.name, set()).update(ids)
        known = self._known.setdefault(schema.name, {})
        added = {}
        for feature, values in categories_of(schema, table).items():
            have = known.setdefault(feature, set())
            added[feature] = values - have
            have |= added[feature]
        return ids, added

    def take_back(
        self, ids: Mapping[str, list[str]], categories: Mapping[str, Mapping[str, set[str]]]
    ) -> None:
        """Undo `accept` for these ids and categories (per dataset)."""
        for name, values in ids.items():
            self._unsealed.get(name, set()).difference_update(values)
        for name, per_feature in categories.items():
            for feature, added in per_feature.items():
                self._known.get(name, {}).get(feature, set()).difference_update(added)

    def add(
        self,
        name: str,
        table: pa.Table,
        owners: pa.Array,
        batch: SourceBatch,
        positions: np.ndarray,
        now_ms: int,
    ) -> None:
        """Claimed rows of `batch` (at `positions`, claimed by `owners`) become pending."""
        self._pending.setdefault(name, PendingRows(received_ms=now_ms)).add(
            table, owners, batch, positions
        )

    # -- sealing -------------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self._pending

    def __bool__(self) -> bool:
        return bool(self._pending)

    def datasets(self) -> list[str]:
        return list(self._pending)

    def rows(self) -> dict[str, int]:
        """Pending rows per dataset."""
        return {name: p.rows for name, p in self._pending.items()}

    def due(self, policy: SealPolicy, now_ms: int) -> list[str]:
        """Datasets whose pending rows are due to be sealed (size or age)."""
        pending = self._pending.items()
        return [n for n, p in pending if policy.should_seal(p.rows, p.received_ms, now_ms)]

    def ms_until_due(self, policy: SealPolicy, now_ms: int, skip: Container[str] = ()) -> list[int]:
        """Per dataset with pending rows (but those in `skip`), ms until it is due."""
        return [
            policy.ms_until_due(p.received_ms, now_ms) or 0
            for name, p in self._pending.items()
            if name not in skip
        ]

    def take(self, name: str) -> PendingRows:
        """All of `name`'s pending rows, to seal; their ids stay unsealed until `sealed`."""
        return self._pending.pop(name)

    def sealed(self, name: str, rows: PendingRows) -> None:
        """`rows` are in a durable version now: their ids are no longer this backlog's."""
        self._unsealed.get(name, set()).difference_update(rows.event_ids())

    def trackers(self) -> list[OffsetTracker]:
        """The offsets of the pending rows (they hold the commit back)."""
        return [p.tracker for p in self._pending.values()]

    def claims(self) -> Iterator[tuple[str, Claims]]:
        for name, rows in self._pending.items():
            yield name, rows.claims


def categories_of(schema: DatasetSchema, table: pa.Table) -> Categories:
    """The distinct values of each categorical feature of `table`."""
    return {
        feature: set(pc.unique(pc.drop_null(table.column(feature))).to_pylist())
        for feature in schema.categorical
    }
