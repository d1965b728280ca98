"""Feature statistics of accepted rows, the one histogram type, PSI, and the upstream-drift
check of a sealed batch.

A version's profile is stored in its manifest and announced as `FeatureStats`; the
previous version's profile is the reference the next batch is compared with. A batch
whose distribution (PSI) or null rate jumps is marked `suspect`, still stored, so an
upstream break is visible before a model trains on it. A model's reference profile
(`services.common.registry`) bins its features and scores with the same `Histogram`.

PSI over bins i with reference proportions e_i and new proportions a_i:

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

with every proportion floored at `PSI_EPSILON`, so an empty bin adds a large but finite
term. Numeric bins are the reference's quantile edges; new values outside them count in
the first or last bin (the convention of the model registry's reference histograms).
Categorical bins are the union of the categories seen on either side.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from typing import Literal, NamedTuple, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from driftloop.v1.events_pb2 import FeatureStats

__all__ = [
    "DEFAULT_BINS",
    "MIN_PER_BIN",
    "MIN_PROFILE_COUNT",
    "PSI_EPSILON",
    "Assessment",
    "DatasetProfile",
    "FeatureProfile",
    "Histogram",
    "assess_against_reference",
    "feature_psi",
    "histogram_psi",
    "profile_column",
    "profile_table",
    "psi",
]

PSI_EPSILON = 1e-4
DEFAULT_BINS = 10
MIN_PROFILE_COUNT = 100  # fewer values than this are not compared (chance dominates)
# PSI is compared only with this many values per bin or reference category on both
# sides: below it PSI's sampling noise alone, about (bins - 1) / n, nears the threshold
# (64 categories and 300 rows: ~0.2 for two samples of one distribution).
MIN_PER_BIN = 20
# Identity and time columns are not features: profiling them would only add noise.
_NOT_PROFILED = frozenset({"event_id", "entity_key", "event_time_ms"})


class Histogram(BaseModel):
    """Counts over bins `[e0, e1), [e1, e2), …, [e_{n-1}, e_n]`.

    Edges are finite (JSON has no infinity): a value below e0 or above e_n is counted in
    the first or last bin, so quantiles of a reference sample make good edges.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    bin_edges: list[float] = Field(min_length=2)
    counts: list[int]

    @model_validator(mode="after")
    def _check_bins(self) -> Self:
        edges = self.bin_edges
        if len(self.counts) != len(edges) - 1:
            raise ValueError(
                f"{len(edges)} bin edges need {len(edges) - 1} counts, got {len(self.counts)}"
            )
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"bin edges must be strictly increasing, got {edges}")
        if any(c < 0 for c in self.counts):
            raise ValueError(f"counts must be >= 0, got {self.counts}")
        return self

    @classmethod
    def from_values(cls, values: Sequence[float] | np.ndarray, n_bins: int = DEFAULT_BINS) -> Self:
        """Quantile bins of the finite `values` (ties merged, so maybe fewer than n_bins;
        a constant sample gets one bin of width 1 around its value)."""
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            raise ValueError("cannot build a histogram from no finite values")
        edges = np.unique(np.quantile(arr, np.linspace(0.0, 1.0, n_bins + 1)))
        if edges.size < 2:
            edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
        return cls(bin_edges=edges.tolist(), counts=_bin_counts(arr, edges).tolist())

    def count(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """Counts of `values` on these bins (outside values in the first / last bin)."""
        return _bin_counts(np.asarray(values, dtype=np.float64), np.asarray(self.bin_edges))

    def rebin(self, onto: Sequence[float]) -> np.ndarray:
        """These counts on the bins `onto`, spread evenly within each of this histogram's
        bins; mass outside `onto` falls into its first / last bin."""
        cumulative = np.concatenate([[0.0], np.cumsum(np.asarray(self.counts, dtype=np.float64))])
        inner = np.interp(np.asarray(onto[1:-1], dtype=np.float64), self.bin_edges, cumulative)
        return np.diff(np.concatenate([[0.0], inner, [cumulative[-1]]]))


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return counts


class FeatureProfile(BaseModel):
    """Statistics of one column. `count` is non-null values; mean/std/min/max are None
    when there are none. std is the population std (ddof=0)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    kind: Literal["numeric", "categorical"]
    count: int = Field(ge=0)
    null_count: int = Field(ge=0)
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    bin_edges: list[float] = Field(default_factory=list)
    bin_counts: list[int] = Field(default_factory=list)
    category_counts: dict[str, int] = Field(default_factory=dict)

    @property
    def null_rate(self) -> float:
        total = self.count + self.null_count
        return self.null_count / total if total else 0.0

    def histogram(self) -> Histogram | None:
        """The numeric bins as a `Histogram` (None for categorical or empty columns)."""
        if self.kind != "numeric" or len(self.bin_edges) < 2:
            return None
        return Histogram(bin_edges=self.bin_edges, counts=self.bin_counts)

    def to_proto(self) -> FeatureStats:
        # proto3 doubles cannot be absent: an empty column reads back as count == 0.
        return FeatureStats(
            name=self.name,
            kind=self.kind,
            count=self.count,
            null_count=self.null_count,
            mean=self.mean or 0.0,
            std=self.std or 0.0,
            min=self.min or 0.0,
            max=self.max or 0.0,
            bin_edges=self.bin_edges,
            bin_counts=self.bin_counts,
            category_counts=self.category_counts,
        )

    @classmethod
    def from_proto(cls, stats: FeatureStats) -> FeatureProfile:
        has_values = stats.count > 0 and stats.kind == "numeric"
        return cls(
            name=stats.name,
            kind=stats.kind,  # type: ignore[arg-type]  # validated by pydantic
            count=stats.count,
            null_count=stats.null_count,
            mean=stats.mean if has_values else None,
            std=stats.std if has_values else None,
            min=stats.min if has_values else None,
            max=stats.max if has_values else None,
            bin_edges=list(stats.bin_edges),
            bin_counts=list(stats.bin_counts),
            category_counts=dict(sorted(stats.category_counts.items())),
        )


class DatasetProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    row_count: int = Field(ge=0)
    features: dict[str, FeatureProfile]

    def to_protos(self) -> list[FeatureStats]:
        return [self.features[name].to_proto() for name in sorted(self.features)]

    @classmethod
    def from_protos(cls, stats: Sequence[FeatureStats]) -> DatasetProfile:
        """From a `DatasetVersion.features` list (row count = count + nulls of a column)."""
        features = {s.name: FeatureProfile.from_proto(s) for s in stats}
        rows = max((f.count + f.null_count for f in features.values()), default=0)
        return cls(row_count=rows, features=features)


def _numeric_values(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Non-null values as float64; non-finite ones are dropped (accepted rows have none)."""
    values: np.ndarray = pc.drop_null(column).to_numpy(zero_copy_only=False).astype(np.float64)
    return values[np.isfinite(values)]


def _string_values(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if pa.types.is_dictionary(column.type):  # e.g. read back from Parquet
        return pc.cast(column, pa.string())
    return column


def profile_column(
    name: str, column: pa.Array | pa.ChunkedArray, n_bins: int = DEFAULT_BINS
) -> FeatureProfile:
    """Numeric (integer/float) columns get moments and quantile bins; string columns get
    category counts. Quantile edges are deduplicated, so a skewed column may get fewer
    than `n_bins` bins; a constant one gets one bin of width 1 around its value."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        values = _numeric_values(column)
        nulls = len(column) - values.size
        if not values.size:
            return FeatureProfile(name=name, kind="numeric", count=0, null_count=nulls)
        hist = Histogram.from_values(values, n_bins)
        return FeatureProfile(
            name=name,
            kind="numeric",
            count=int(values.size),
            null_count=int(nulls),
            mean=float(values.mean()),
            std=float(values.std()),
            min=float(values.min()),
            max=float(values.max()),
            bin_edges=hist.bin_edges,
            bin_counts=hist.counts,
        )
    strings = _string_values(column)
    if not (pa.types.is_string(strings.type) or pa.types.is_large_string(strings.type)):
        raise TypeError(f"cannot profile column {name!r} of type {column.type}")
    counted = pc.value_counts(pc.drop_null(strings)).flatten()
    categories = dict(zip(counted[0].to_pylist(), counted[1].to_pylist(), strict=True))
    return FeatureProfile(
        name=name,
        kind="categorical",
        count=len(strings) - strings.null_count,
        null_count=strings.null_count,
        category_counts=dict(sorted(categories.items())),
    )


def profile_table(table: pa.Table, n_bins: int = DEFAULT_BINS) -> DatasetProfile:
    """Profile every feature column (and the label) of an accepted table."""
    return DatasetProfile(
        row_count=table.num_rows,
        features={
            name: profile_column(name, table.column(name), n_bins)
            for name in table.column_names
            if name not in _NOT_PROFILED
        },
    )


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index of two histograms over the same bins (see module doc)."""
    e, a = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("psi needs two non-empty histograms over the same bins")
    e = np.maximum(e / e.sum(), PSI_EPSILON)
    a = np.maximum(a / a.sum(), PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def histogram_psi(reference: Histogram, other: Histogram) -> float:
    """PSI of `other` against `reference` when only their histograms are known: `other`
    is re-binned onto the reference's edges (`Histogram.rebin`)."""
    return psi(reference.counts, other.rebin(reference.bin_edges))


def feature_psi(
    reference: FeatureProfile,
    column: pa.Array | pa.ChunkedArray,
    min_count: int = MIN_PROFILE_COUNT,
) -> float | None:
    """PSI of `column` against the reference feature, or None when either side has fewer
    than `min_count` values or fewer than `MIN_PER_BIN` per bin (per reference category)
    (small samples swing PSI by chance), or there are no bins to compare."""
    if reference.kind == "numeric":
        values = _numeric_values(column)
        enough = max(min_count, MIN_PER_BIN * (len(reference.bin_edges) - 1))
        hist = reference.histogram()
        if min(values.size, reference.count) < enough or hist is None:
            return None
        return psi(hist.counts, hist.count(values))
    new = profile_column(reference.name, column).category_counts
    enough = max(min_count, MIN_PER_BIN * len(reference.category_counts))
    if min(sum(new.values()), reference.count) < enough:
        return None
    categories = sorted(reference.category_counts.keys() | new.keys())
    expected = [reference.category_counts.get(c, 0) for c in categories]
    return psi(expected, [new.get(c, 0) for c in categories])


class Assessment(NamedTuple):
    status: Literal["ok", "suspect"]
    reasons: list[str]  # e.g. "psi(age)=0.41>0.2", "null_rate(income)=0.35>0.02+0.1"


def assess_against_reference(
    reference: DatasetProfile | None,
    new_table: pa.Table,
    psi_threshold: float = 0.2,
    null_rate_jump: float = 0.1,
    *,
    min_count: int = MIN_PROFILE_COUNT,
    skip: Collection[str] = ("label",),
) -> Assessment:
    """Compare a batch with the reference profile, feature by feature (in name order).

    A feature is suspect when its null rate rose by more than `null_rate_jump` (absolute)
    or its PSI exceeds `psi_threshold`; neither is judged on fewer than `min_count` rows
    (a handful of rows moves a null rate by chance as easily as a histogram). No
    reference (the first version) is "ok". The label is skipped by default: labels
    arriving late make its null rate move on purpose. Features missing on either side (a
    schema change) are not compared.
    """
    if reference is None:
        return Assessment("ok", [])
    reasons: list[str] = []
    for name in sorted(reference.features):
        if name in skip or name not in new_table.column_names:
            continue
        ref, column = reference.features[name], new_table.column(name)
        if len(column) >= min_count and ref.count + ref.null_count >= min_count:
            rate = column.null_count / len(column)
            if rate - ref.null_rate > null_rate_jump:
                reasons.append(
                    f"null_rate({name})={rate:.2f}>{ref.null_rate:.2f}+{null_rate_jump:g}"
                )
        value = feature_psi(ref, column, min_count)
        if value is not None and value > psi_threshold:
            reasons.append(f"psi({name})={value:.2f}>{psi_threshold:g}")
    return Assessment("suspect" if reasons else "ok", reasons)
