"""The reference profile registered with a model: what "normal" input and output look like.

The monitor compares live traffic against it: PSI/KS on each numeric feature's training
quantile bins, chi-squared/JS on category frequencies, prediction drift on the score
histogram. Keys match the model's `FeatureSpec`s exactly (float -> numeric, category ->
categorical), which `RegistrationInfo` checks at registration.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.common.datasets.schema import DatasetSchema
from services.common.encoding import FeatureEncoder
from services.common.registry import (
    CategoricalProfile,
    Histogram,
    NumericProfile,
    ReferenceProfile,
)
from services.trainer.models import Task

__all__ = ["BINARY_SCORE_EDGES", "N_BINS", "build_reference_profile"]

N_BINS = 10
# Probabilities always live in [0, 1]: fixed edges make score histograms of different
# model versions directly comparable.
BINARY_SCORE_EDGES = [i / N_BINS for i in range(N_BINS + 1)]


def _numeric(column: pa.ChunkedArray) -> NumericProfile:
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
    nulls = int(column.null_count)
    finite = values[np.isfinite(values)]
    if finite.size == 0:  # an all-missing column: one empty bin, all the weight in nulls
        return NumericProfile(bin_edges=[0.0, 1.0], counts=[0], null_count=nulls)
    hist = Histogram.from_values(finite, n_bins=N_BINS)
    return NumericProfile(bin_edges=hist.bin_edges, counts=hist.counts, null_count=nulls)


def _categorical(column: pa.ChunkedArray) -> CategoricalProfile:
    counted = pc.value_counts(pc.cast(column, pa.string()).drop_null())
    pairs = zip(
        counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
    )
    return CategoricalProfile(
        counts={str(v): int(c) for v, c in sorted(pairs)}, null_count=int(column.null_count)
    )


def _scores(scores: np.ndarray, task: Task) -> Histogram:
    values = np.asarray(scores, dtype=np.float64)
    values = values[np.isfinite(values)]
    if task != "binary":
        return Histogram.from_values(values, n_bins=N_BINS)
    counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=BINARY_SCORE_EDGES)
    return Histogram(bin_edges=list(BINARY_SCORE_EDGES), counts=[int(c) for c in counts])


def build_reference_profile(
    features: FeatureEncoder | DatasetSchema,
    train_table: pa.Table,
    scores: np.ndarray,
    labels: np.ndarray | None,
    task: Task,
) -> ReferenceProfile:
    """The profile of `train_table` (the rows the model learned from), the model's
    `scores` on some rows (usually the same ones) and, for binary tasks, the base rate
    of `labels` (None leaves it unset)."""
    if isinstance(features, FeatureEncoder):
        kinds = {f.name: f.kind for f in features.features}
    else:
        kinds = {
            n: "numeric" if n in features.numeric else "categorical" for n in features.feature_names
        }
    numeric = {n: _numeric(train_table.column(n)) for n, k in kinds.items() if k == "numeric"}
    categorical = {
        n: _categorical(train_table.column(n)) for n, k in kinds.items() if k == "categorical"
    }
    base_rate = None
    if task == "binary" and labels is not None and len(labels):
        base_rate = float(np.clip(np.mean(np.asarray(labels, dtype=np.float64)), 0.0, 1.0))
    return ReferenceProfile(
        row_count=train_table.num_rows,
        numeric=numeric,
        categorical=categorical,
        prediction=_scores(scores, task),
        base_rate=base_rate,
    )
