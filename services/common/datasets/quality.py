"""Is a sealed batch a broken feed? The data-quality check of ingest, against the newest
*ok* version with enough rows (the reference).

A batch is `suspect` only for signs that the feed broke, feature by feature:

- a null-rate jump: the share of nulls rose by more than `null_rate_jump` (absolute);
- a category explosion: more new categories (unseen in the reference) than
  `max(min_new_categories, new_category_factor x the reference's categories)`;
- a range explosion: more than `out_of_range_share` of the values lie beyond the
  reference's range widened by `range_margin` spans on either side;
- a feature gone constant: it varied in the reference, and now every value is the same;
- sentinels: more than `sentinel_share` of the values equal one of the `sentinels`
  (the codes a broken producer writes for "unknown", e.g. -999).

A distribution shift alone is the world moving, not bad data: it is measured (the PSI of
every comparable feature against the reference, the manifest's `shift`) but never makes
a batch suspect; the monitor and the trainer decide what drift means for a model.
Nothing is judged on fewer than `min_count` values, where chance moves a rate as easily
as a fault does. The thresholds are per dataset: the `quality:` block of its YAML.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from services.common.datasets.profile import (
    MIN_PROFILE_COUNT,
    DatasetProfile,
    FeatureProfile,
    feature_psi,
    profile_column,
)

__all__ = ["QualityConfig", "QualityReport", "assess_quality"]


class QualityConfig(BaseModel):
    """Thresholds of the broken-feed check (the `quality:` block of a dataset's YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    null_rate_jump: float = Field(default=0.1, gt=0, le=1)
    new_category_factor: float = Field(default=1.0, gt=0)
    min_new_categories: int = Field(default=5, ge=1)
    range_margin: float = Field(default=2.0, ge=0)
    out_of_range_share: float = Field(default=0.02, gt=0, le=1)
    sentinels: list[float] = Field(default_factory=lambda: [-999.0, -9999.0, 999999.0])
    sentinel_share: float = Field(default=0.05, gt=0, le=1)
    min_count: int = Field(default=MIN_PROFILE_COUNT, ge=1)


class QualityReport(NamedTuple):
    status: Literal["ok", "suspect"]
    reasons: list[str]  # e.g. "null_rate(income)=0.35>0.02+0.1", "constant(age)=42"
    shift: dict[str, float]  # PSI per feature against the reference (not a reason)


def _numeric(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    values = pc.drop_null(column).to_numpy(zero_copy_only=False).astype(np.float64)
    return values[np.isfinite(values)]


def _numeric_reasons(
    name: str, ref: FeatureProfile, values: np.ndarray, config: QualityConfig
) -> list[str]:
    reasons = []
    if ref.min is not None and ref.max is not None:
        span = max(ref.max - ref.min, abs(ref.max), abs(ref.min), 1.0)
        low, high = ref.min - config.range_margin * span, ref.max + config.range_margin * span
        outside = float(np.mean((values < low) | (values > high)))
        if outside > config.out_of_range_share:
            reasons.append(
                f"out_of_range({name})={outside:.2f}>{config.out_of_range_share:g} "
                f"(beyond [{low:.4g}, {high:.4g}])"
            )
    if (ref.std or 0.0) > 0 and values.min() == values.max():
        reasons.append(f"constant({name})={values[0]:.6g}")
    for sentinel in config.sentinels:
        share = float(np.mean(values == sentinel))
        if share > config.sentinel_share:
            reasons.append(
                f"sentinel({name})={sentinel:g} in {share:.2f}>{config.sentinel_share:g}"
            )
    return reasons


def _categorical_reasons(
    name: str, ref: FeatureProfile, column: pa.Array | pa.ChunkedArray, config: QualityConfig
) -> list[str]:
    counts = profile_column(name, column).category_counts
    reasons = []
    new = sorted(counts.keys() - ref.category_counts.keys())
    allowed = max(config.min_new_categories, config.new_category_factor * len(ref.category_counts))
    if len(new) > allowed:
        reasons.append(f"new_categories({name})={len(new)}>{allowed:g} (e.g. {', '.join(new[:3])})")
    if len(ref.category_counts) > 1 and len(counts) == 1:
        reasons.append(f"constant({name})={next(iter(counts))}")
    return reasons


def assess_quality(
    reference: DatasetProfile | None,
    new_table: pa.Table,
    config: QualityConfig | None = None,
    *,
    skip: Collection[str] = ("label",),
) -> QualityReport:
    """Judge a batch against the reference profile, feature by feature (in name order).

    No reference (the first version) is "ok" with no shift. The label is skipped by
    default: labels arriving late make its null rate move on purpose. Features missing
    on either side (a schema change) are not compared.
    """
    config = config or QualityConfig()
    if reference is None:
        return QualityReport("ok", [], {})
    reasons: list[str] = []
    shift: dict[str, float] = {}
    for name in sorted(reference.features):
        if name in skip or name not in new_table.column_names:
            continue
        ref, column = reference.features[name], new_table.column(name)
        value = feature_psi(ref, column, config.min_count)
        if value is not None:
            shift[name] = round(value, 4)
        if len(column) < config.min_count or ref.count + ref.null_count < config.min_count:
            continue
        rate = column.null_count / len(column)
        if rate - ref.null_rate > config.null_rate_jump:
            reasons.append(
                f"null_rate({name})={rate:.2f}>{ref.null_rate:.2f}+{config.null_rate_jump:g}"
            )
        if len(column) - column.null_count < config.min_count:
            continue
        if ref.kind == "numeric":
            values = _numeric(column)
            if values.size >= config.min_count:
                reasons.extend(_numeric_reasons(name, ref, values, config))
        else:
            reasons.extend(_categorical_reasons(name, ref, column, config))
    return QualityReport("suspect" if reasons else "ok", reasons, shift)
