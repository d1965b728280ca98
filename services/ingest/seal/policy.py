"""When a dataset's pending rows are sealed into a version: by size or by age."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["SealPolicy"]


@dataclass(frozen=True)
class SealPolicy:
    """Seal a dataset's pending rows when there are `max_rows` of them, or when the oldest
    has waited `max_age_ms`.

    Age is measured on the ingest clock from when the oldest pending record was
    *received*, not from its event time: event times may legitimately be hours old, and
    the point of the age limit is to bound how long accepted data waits to be durable.
    """

    max_rows: int = 50_000
    max_age_ms: int = 60_000

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_age_ms < 1:
            raise ValueError(f"max_rows and max_age_ms must be >= 1, got {self}")

    def seal_reason(
        self, pending_rows: int, oldest_pending_ms: int | None, now_ms: int
    ) -> Literal["size", "age"] | None:
        if pending_rows <= 0:
            return None  # nothing to seal, however long we have waited
        if pending_rows >= self.max_rows:
            return "size"
        if oldest_pending_ms is not None and now_ms - oldest_pending_ms >= self.max_age_ms:
            return "age"
        return None

    def should_seal(self, pending_rows: int, oldest_pending_ms: int | None, now_ms: int) -> bool:
        return self.seal_reason(pending_rows, oldest_pending_ms, now_ms) is not None

    def ms_until_due(self, oldest_pending_ms: int | None, now_ms: int) -> int | None:
        """How long the consumer may block in poll before the age limit fires (None: no
        pending rows, so no deadline)."""
        if oldest_pending_ms is None:
            return None
        return max(0, oldest_pending_ms + self.max_age_ms - now_ms)
