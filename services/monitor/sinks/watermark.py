"""Event-time watermarks: up to which prediction time the store holds every prediction of a
model, so the analysis judges only complete windows (pure). The labels of labels.feedback
get the same (by label time), for label drift.

The newest stored prediction is not a watermark. The sink reads the partitions of
`predictions.log` at different speeds (a backlog after a restart or a replay, one slow
partition), so while one partition is written up to 10:30 another may still be at 10:05;
a window judged on what has arrived holds a fraction of its rows (noisier metrics, false
alarms) and row-count chunks would be cut differently from one run to the next.

After each write the sink records, per partition, the newest prediction time it wrote per
model and whether it has read the partition to its end (position at the last stable
offset). Then, for a model m, a partition

- read to its end holds nothing more of m and does not hold m back;
- still behind holds m back to the newest prediction of m written from it (per model: a
  backlog may carry one model's history and then another's, so a partition's newest time
  over all models says nothing about m; within a model, later records are at most the
  configured lateness older);
- still behind that has given no prediction of m yet holds m back completely while its
  first backlog is read (m's rows may be anywhere in it), and only to its newest time over
  all models once it has been read to its end (live traffic is logged in time order).

The watermark of m is the minimum over the partitions (`HOLD` when one holds m back
completely); None when nothing holds it back: every prediction produced so far is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["HOLD", "Watermarks"]

HOLD = -(2**62)  # nothing of the model is known to be complete


@dataclass
class _Partition:
    newest: dict[str, int] = field(default_factory=dict)  # model -> newest time written
    newest_any: int = HOLD
    behind: bool = True
    read_to_end_once: bool = False

    def bound(self, model: str) -> int | None:
        if not self.behind:
            return None
        if model in self.newest:
            return self.newest[model]
        return self.newest_any if self.read_to_end_once else HOLD


class Watermarks:
    """Per partition of predictions.log: what was written, and whether it is read to its end."""

    def __init__(self) -> None:
        self._partitions: dict[int, _Partition] = {}

    def written(self, times: Mapping[tuple[int, str], int]) -> None:
        """The newest prediction time written per (partition, model) by one write."""
        for (partition, model), time_ms in times.items():
            part = self._partitions.setdefault(partition, _Partition())
            part.newest[model] = max(time_ms, part.newest.get(model, HOLD))
            part.newest_any = max(time_ms, part.newest_any)

    def positions(self, behind: Mapping[int, bool]) -> None:
        """Which assigned partitions are still behind their end; a partition no longer
        assigned is forgotten (its new owner's writes are not ours to vouch for)."""
        for partition in list(self._partitions):
            if partition not in behind:
                del self._partitions[partition]
        for partition, is_behind in behind.items():
            part = self._partitions.setdefault(partition, _Partition())
            part.behind = is_behind
            part.read_to_end_once = part.read_to_end_once or not is_behind

    def snapshot(self) -> Callable[[str], int | None]:
        """`of(model)` over a copy of today's state (for the analysis thread)."""
        parts = [
            _Partition(dict(p.newest), p.newest_any, p.behind, p.read_to_end_once)
            for p in self._partitions.values()
        ]
        if not parts:  # nothing assigned or read yet: nothing is known to be complete
            return lambda _model: HOLD
        return lambda model: _minimum(p.bound(model) for p in parts)

    def of(self, model: str) -> int | None:
        return self.snapshot()(model)


def _minimum(bounds: Iterable[int | None]) -> int | None:
    found = [b for b in bounds if b is not None]
    return min(found) if found else None
