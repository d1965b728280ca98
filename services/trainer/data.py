"""Training data: which sealed versions to train on, their labelled rows, a time split.

The rows of the chosen versions are concatenated, rows without a label dropped, and the
rest put in one canonical order, (event_time_ms, event_id), so the same versions give the
same arrays whatever order they were listed or sealed in. The split is by event time:
the oldest rows train, the next validate (early stopping, model selection) and the newest
are the holdout the gate compares challenger and champion on — the rows most like the
traffic the model will see next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.artifacts import ArtifactStore
from services.common.datasets.manifest import VersionManifest
from services.common.datasets.schema import DatasetSchema
from services.common.datasets.store import VersionStore

__all__ = [
    "SplitSpec",
    "TrainingData",
    "TrainingDataError",
    "TrainingDataReason",
    "WindowSpec",
    "load_training_data",
    "select_versions",
    "split_by_time",
]

TrainingDataReason = Literal[
    "too_few_rows", "version_missing", "no_versions", "bad_label", "non_finite", "schema_mismatch"
]


class TrainingDataError(ValueError):
    """Training data that cannot be used; `reason` is a short machine-readable code."""

    def __init__(self, reason: TrainingDataReason, message: str) -> None:
        super().__init__(message)
        self.reason: TrainingDataReason = reason


class WindowSpec(BaseModel):
    """Which versions to train on: the newest `last_versions` of those sealed (ingest
    clock, `created_at_ms`) at or after `since_ms`, skipping versions ingest flagged as
    suspect unless `include_suspect`. None disables a limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    last_versions: int | None = Field(default=20, ge=1)
    since_ms: int | None = Field(default=None, ge=0)
    include_suspect: bool = False


class SplitSpec(BaseModel):
    """Fractions of the labelled rows (by event time) for validation and holdout; the
    rest trains. `min_rows` is the least number of labelled rows worth training on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    validation_fraction: float = Field(default=0.15, gt=0.0, lt=1.0)
    holdout_fraction: float = Field(default=0.15, gt=0.0, lt=1.0)
    min_rows: int = Field(default=500, ge=3)

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> Self:
        if self.validation_fraction + self.holdout_fraction >= 1.0:
            raise ValueError("validation_fraction + holdout_fraction must be < 1")
        return self


@dataclass(frozen=True)
class TrainingData:
    dataset: str
    version_ids: list[str]  # oldest first, as sealed
    schema: DatasetSchema
    train: pa.Table  # schema.arrow_schema() layout, labelled rows only, in time order
    validation: pa.Table
    holdout: pa.Table


def _order_key(manifest: VersionManifest) -> tuple[int, str]:
    return manifest.created_at_ms, manifest.version_id


def select_versions(
    manifests: Sequence[VersionManifest], window: WindowSpec
) -> list[VersionManifest]:
    """The versions `window` picks, oldest first, ordered by (created_at_ms, version_id)."""
    chosen = sorted(
        (
            m
            for m in manifests
            if (window.include_suspect or m.status == "ok")
            and (window.since_ms is None or m.created_at_ms >= window.since_ms)
        ),
        key=_order_key,
    )
    if window.last_versions is not None:
        chosen = chosen[-window.last_versions :]
    return chosen


def _resolve(
    available: Sequence[VersionManifest],
    schema: DatasetSchema,
    window: WindowSpec,
    version_ids: Sequence[str] | None,
) -> list[VersionManifest]:
    if version_ids is not None:  # explicit ids bypass the window, suspect ones included
        by_id = {m.version_id: m for m in available}
        missing = [v for v in dict.fromkeys(version_ids) if v not in by_id]
        if missing:
            raise TrainingDataError(
                "version_missing",
                f"dataset {schema.name!r} has no sealed version(s) {missing} "
                f"({len(available)} version(s) exist)",
            )
        chosen = sorted(
            {by_id[v].version_id: by_id[v] for v in version_ids}.values(), key=_order_key
        )
    else:
        chosen = select_versions(available, window)
    if not chosen:
        suspect = sum(m.status == "suspect" for m in available)
        raise TrainingDataError(
            "no_versions",
            f"no version of dataset {schema.name!r} is in the window {window.model_dump()} "
            f"({len(available)} sealed, {suspect} of them suspect)",
        )
    return chosen


def _read(storage: VersionStore, schema: DatasetSchema, manifest: VersionManifest) -> pa.Table:
    expected = schema.arrow_schema()
    table = storage.read_table(manifest)
    found = {f.name: f.type for f in table.schema}
    wrong = [
        f"{f.name} ({found[f.name]} instead of {f.type})"
        if f.name in found
        else f"{f.name} (absent)"
        for f in expected
        if found.get(f.name) != f.type
    ]
    if wrong:
        raise TrainingDataError(
            "schema_mismatch",
            f"version {manifest.version_id} of {schema.name!r} does not match the declared "
            f"schema: {', '.join(wrong)}",
        )
    return pa.Table.from_arrays([table.column(f.name) for f in expected], schema=expected)


def _check_values(schema: DatasetSchema, table: pa.Table) -> None:
    assert schema.label is not None
    label = table.column("label").to_numpy()
    if not np.isfinite(label).all():
        raise TrainingDataError("bad_label", f"{schema.name!r}: labels must be finite numbers")
    if schema.label.kind == "binary":
        bad = np.unique(label[(label != 0.0) & (label != 1.0)])
        if bad.size:
            raise TrainingDataError(
                "bad_label",
                f"{schema.name!r} declares a binary label but has values {bad[:5].tolist()} "
                "(expected 0 or 1)",
            )
    broken = {}
    for name, spec in schema.numeric.items():
        if spec.dtype == "float":
            values = table.column(name).to_numpy(zero_copy_only=False)  # nulls read as NaN
            count = int((~np.isfinite(values)).sum()) - table.column(name).null_count
            if count:
                broken[name] = count
    if broken:
        raise TrainingDataError(
            "non_finite",
            f"{schema.name!r}: NaN or infinite values (nulls are fine) in {broken} (feature: rows)",
        )


def split_by_time(
    table: pa.Table, split: SplitSpec, binary: bool, dataset: str = "dataset"
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(train, validation, holdout) of `table`, which is already in time order."""
    n = table.num_rows
    if n < split.min_rows:
        raise TrainingDataError(
            "too_few_rows", f"{dataset!r} has {n} labelled rows; training needs {split.min_rows}"
        )
    n_holdout = max(1, round(n * split.holdout_fraction))
    n_validation = max(1, round(n * split.validation_fraction))
    n_train = max(0, n - n_holdout - n_validation)
    parts = (
        table.slice(0, n_train),
        table.slice(n_train, n_validation),
        table.slice(n_train + n_validation),
    )
    names = ("train", "validation", "holdout")
    positives = [int(pc.sum(p.column("label")).as_py() or 0) for p in parts]
    if binary:
        short = [
            k for k, p, pos in zip(names, parts, positives, strict=True) if pos in (0, p.num_rows)
        ]
    else:
        short = [k for k, p in zip(names, parts, strict=True) if p.num_rows == 0]
    if short:
        detail = ", ".join(
            f"{k}: {pos} positive of {p.num_rows}" if binary else f"{k}: {p.num_rows} rows"
            for k, p, pos in zip(names, parts, positives, strict=True)
        )
        need = "rows of both classes" if binary else "rows"
        raise TrainingDataError(
            "too_few_rows", f"{dataset!r}: split(s) {short} lack {need} ({detail})"
        )
    return parts


def load_training_data(
    store: ArtifactStore,
    schema: DatasetSchema,
    window: WindowSpec,
    split: SplitSpec,
    version_ids: Sequence[str] | None = None,
) -> TrainingData:
    """Labelled rows of the chosen versions of `schema`'s dataset, split by event time."""
    if schema.label is None:
        raise TrainingDataError("bad_label", f"dataset {schema.name!r} declares no label")
    storage = VersionStore(store)
    chosen = _resolve(storage.manifests(schema.name), schema, window, version_ids)
    table = pa.concat_tables([_read(storage, schema, m) for m in chosen])
    duplicated = pd.Series(table.column("event_id").to_numpy(zero_copy_only=False)).duplicated(
        keep="last"  # an event sealed twice: the newest version's copy wins
    )
    keep = pc.and_(pc.is_valid(table.column("label")), pa.array(~duplicated.to_numpy()))
    table = table.filter(keep)
    _check_values(schema, table)
    order = pc.sort_indices(
        table, sort_keys=[("event_time_ms", "ascending"), ("event_id", "ascending")]
    )
    table = table.take(order).combine_chunks()
    train, validation, holdout = split_by_time(
        table, split, schema.label.kind == "binary", schema.name
    )
    return TrainingData(
        dataset=schema.name,
        version_ids=[m.version_id for m in chosen],
        schema=schema,
        train=train,
        validation=validation,
        holdout=holdout,
    )
