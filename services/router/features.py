"""The features a prediction uses: a column frame, the model's contract, and filling the
missing ones from the online store (pure; the Redis read is an injected coroutine).

A request may carry all, some or none of a model's features. Missing values (absent, or
NaN / "" in a batch) are taken from the entity's latest stored row; what was looked up and
how old it was is reported (`Fill`) and logged. Where nothing is stored, the model's
declared defaults apply (`params.feature_defaults` in its manifest); a feature still
missing after that is an error naming the row, the feature and why.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from services.common.feature_rows import EVENT_TIME_FIELD, FeatureValues

__all__ = ["FeatureFrame", "Fill", "ModelContract", "fill_missing"]

# (the model's contract, entity keys, the features wanted) -> the stored row of each key
# (at least the wanted features it holds, and its event time), None where absent
Lookup = Callable[
    ["ModelContract", Sequence[str], Sequence[str]], Awaitable[list[FeatureValues | None]]
]


@dataclass(frozen=True)
class ModelContract:
    """What a model takes, from its champion's manifest."""

    model: str
    dataset: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    defaults: Mapping[str, float | str] = field(default_factory=dict)
    version: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


@dataclass
class FeatureFrame:
    """Rows of features by column: numeric float64 (NaN = missing), categorical str
    (None = missing)."""

    rows: int
    numeric: dict[str, np.ndarray]
    categorical: dict[str, list[str | None]]

    @classmethod
    def empty(cls, contract: ModelContract, rows: int) -> FeatureFrame:
        return cls(
            rows,
            {n: np.full(rows, np.nan) for n in contract.numeric},
            {n: [None] * rows for n in contract.categorical},
        )

    @classmethod
    def concat(cls, frames: Sequence[FeatureFrame]) -> FeatureFrame:
        if len(frames) == 1:
            return frames[0]
        first = frames[0]
        return cls(
            sum(f.rows for f in frames),
            {n: np.concatenate([f.numeric[n] for f in frames]) for n in first.numeric},
            {n: [v for f in frames for v in f.categorical[n]] for n in first.categorical},
        )

    def take(self, index: np.ndarray) -> FeatureFrame:
        return FeatureFrame(
            len(index),
            {n: col[index] for n, col in self.numeric.items()},
            {n: [col[i] for i in index] for n, col in self.categorical.items()},
        )

    def missing_rows(self) -> np.ndarray:
        """Indices of rows with at least one missing value."""
        mask = np.zeros(self.rows, dtype=bool)
        for col in self.numeric.values():
            mask |= np.isnan(col)
        for cat in self.categorical.values():
            if None in cat:
                mask |= np.fromiter((v is None for v in cat), dtype=bool, count=self.rows)
        return np.flatnonzero(mask)

    def missing_columns(self, rows: np.ndarray) -> list[str]:
        """The features missing in at least one of `rows`."""
        names = [n for n, col in self.numeric.items() if np.isnan(col[rows]).any()]
        names += [n for n, cat in self.categorical.items() if any(cat[i] is None for i in rows)]
        return names

    def row(self, i: int) -> tuple[dict[str, float], dict[str, str]]:
        numeric = {n: float(c[i]) for n, c in self.numeric.items() if not math.isnan(c[i])}
        categorical = {n: v for n, c in self.categorical.items() if (v := c[i]) is not None}
        return numeric, categorical

    def numeric_matrix(self) -> tuple[list[str], np.ndarray]:
        """The numeric columns' names and their values as a rows x columns matrix."""
        names = list(self.numeric)
        if not names:
            return names, np.empty((self.rows, 0))
        return names, np.column_stack([self.numeric[n] for n in names])

    def columns(self) -> dict[str, np.ndarray | list[str | None]]:
        """The frame as the serving client takes it (NaN / None: null in the stored row)."""
        out: dict[str, np.ndarray | list[str | None]] = dict(self.numeric)
        out.update(self.categorical)  # None = missing
        return out


@dataclass
class Fill:
    """What the online store supplied: per row index, the features looked up and the age
    of the stored row (ms); rows with no stored row; features defaulted per row."""

    looked_up: dict[int, list[str]] = field(default_factory=dict)
    age_ms: dict[int, int] = field(default_factory=dict)
    unknown_entities: list[int] = field(default_factory=list)
    defaulted: dict[int, list[str]] = field(default_factory=dict)
    still_missing: dict[int, list[str]] = field(default_factory=dict)


async def fill_missing(
    frame: FeatureFrame,
    keys: Sequence[str],
    contract: ModelContract,
    lookup: Lookup,
    now_ms: int,
) -> Fill:
    """Fill `frame`'s missing values in place: online store first (one lookup for every
    row that needs it), then the declared defaults."""
    fill = Fill()
    rows = frame.missing_rows()
    if rows.size == 0:
        return fill
    keyed = [int(i) for i in rows if keys[i]]
    wanted = frame.missing_columns(rows)
    stored = await lookup(contract, [keys[i] for i in keyed], wanted) if keyed else []
    found = dict(zip(keyed, stored, strict=True))
    for i in (int(r) for r in rows):
        values = found.get(i)
        if values is None and keys[i]:
            fill.unknown_entities.append(i)
        took: list[str] = []
        defaulted: list[str] = []
        missing: list[str] = []
        for name, col in frame.numeric.items():
            if not math.isnan(col[i]):
                continue
            v = values.get(name) if values else None
            if isinstance(v, float) and math.isfinite(v):
                col[i] = v
                took.append(name)
            elif isinstance(contract.defaults.get(name), (int, float)):
                col[i] = float(contract.defaults[name])
                defaulted.append(name)
            else:
                missing.append(name)
        for name, cat in frame.categorical.items():
            if cat[i] is not None:
                continue
            v = values.get(name) if values else None
            if isinstance(v, str) and v:
                cat[i] = v
                took.append(name)
            elif isinstance(contract.defaults.get(name), str):
                cat[i] = str(contract.defaults[name])
                defaulted.append(name)
            else:
                missing.append(name)
        if took:
            fill.looked_up[i] = took
            event_ms = values.get(EVENT_TIME_FIELD) if values else None
            if isinstance(event_ms, (int, float)):
                fill.age_ms[i] = now_ms - int(event_ms)
        if defaulted:
            fill.defaulted[i] = defaulted
        if missing and values is None:
            # With a stored row, a feature it lacks was null at ingest: the model sees it
            # as missing, as it did in training. Without one there is nothing to go on.
            fill.still_missing[i] = missing
    return fill
