"""Synthetic labelled data for the trainer tests and benchmark.

`credit_table` draws rows of the `credit` dataset (deploy/datasets/credit.yaml) whose
default label follows a known logistic model, so a fitted model's AUC lands near 0.8.
`shift` in [0, 1] moves the world away from that: covariate drift (higher utilisation,
lower incomes) and concept drift (longer terms and contractors become riskier), so a
model trained at shift 0 degrades at shift 1 and a retrained one recovers.

`wide_table` is a plain many-feature numeric table for the benchmark. `seal_tables`
writes tables as real sealed versions with the ingest service's own writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy.stats import rankdata

from services.common.artifacts import ArtifactStore
from services.common.datasets.manifest import VersionManifest
from services.common.datasets.schema import DatasetSchema, load_schema
from services.ingest.seal.version import VersionWriter, seal_version

__all__ = [
    "CREDIT_SCHEMA_PATH",
    "START_MS",
    "auc",
    "credit_schema",
    "credit_table",
    "seal_tables",
    "wide_schema",
    "wide_table",
]

CREDIT_SCHEMA_PATH = Path(__file__).resolve().parents[3] / "deploy" / "datasets" / "credit.yaml"
START_MS = 1_700_000_000_000
REGIONS = ["north", "south", "east", "west", "central"]
REGION_EFFECT = [0.0, 0.2, -0.1, 0.1, 0.0]
EMPLOYMENT = ["salaried", "self_employed", "contractor", "unemployed", "retired", "student"]
EMPLOYMENT_P = [0.55, 0.12, 0.1, 0.08, 0.1, 0.05]
EMPLOYMENT_EFFECT = np.array([0.0, 0.3, 0.2, 1.0, -0.1, 0.5])
PURPOSES = [f"purpose_{i:02d}" for i in range(20)]


def credit_schema() -> DatasetSchema:
    return load_schema(CREDIT_SCHEMA_PATH)


def _nullable(values: np.ndarray, rng: np.random.Generator, rate: float) -> pa.Array:
    return pa.array(values, mask=rng.random(len(values)) < rate)


def credit_table(
    n: int,
    seed: int = 0,
    shift: float = 0.0,
    start_ms: int = START_MS,
    span_ms: int = 86_400_000,
    labelled_fraction: float = 1.0,
    id_prefix: str = "ev",
) -> pa.Table:
    """`n` credit rows with event times spread over [start_ms, start_ms + span_ms)."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    income = np.clip(rng.lognormal(10.5 - 0.3 * shift, 0.5, n), 0, 1e7)
    loan = np.clip(rng.lognormal(9.2, 0.7, n), 100, 1e6)
    term = rng.choice([12, 24, 36, 60], n)
    dti = np.clip(rng.gamma(2.0, 0.18, n), 0, 10)
    util = np.clip(rng.beta(2, 3, n) * 1.2 + 0.3 * shift, 0, 1.5)
    accounts = rng.poisson(5, n)
    delinquent = rng.random(n) < 0.4
    months_since = np.where(delinquent, rng.integers(0, 120, n), 0)
    region = rng.integers(0, len(REGIONS), n)
    employment = rng.choice(len(EMPLOYMENT), n, p=EMPLOYMENT_P)
    employment_effect = EMPLOYMENT_EFFECT + np.array([0, 1.0, 1.5, 0, 0, 0]) * shift
    logit = (
        -1.6
        + 3.0 * (dti - 0.36)
        + (2.5 - 2.0 * shift) * (util - 0.48)
        + np.where(delinquent, 0.4 + 0.9 * (months_since < 24), 0.0)
        - 0.02 * (age - 48)
        - 0.6 * np.log(income / 36_000)
        + 0.3 * np.log(loan / 10_000)
        + (0.01 + 0.05 * shift) * (term - 33)
        + np.asarray(REGION_EFFECT)[region]
        + employment_effect[employment]
    )
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    times = start_ms + np.sort(rng.integers(0, span_ms, n))
    columns = {
        "event_id": pa.array([f"{id_prefix}-{seed}-{i:07d}" for i in range(n)], pa.string()),
        "entity_key": pa.array([f"a{k}" for k in rng.integers(0, max(1, n // 3), n)]),
        "event_time_ms": pa.array(times, pa.int64()),
        "age": pa.array(age, pa.int64()),
        "annual_income": _nullable(income, rng, 0.1),
        "credit_utilization": _nullable(util, rng, 0.02),
        "debt_to_income": _nullable(dti, rng, 0.02),
        "employment_type": _nullable(np.array(EMPLOYMENT, dtype=object)[employment], rng, 0.05),
        "loan_amount": pa.array(loan, pa.float64()),
        "loan_purpose": _nullable(
            np.array(PURPOSES, dtype=object)[rng.integers(0, 20, n)], rng, 0.0
        ),
        "loan_term_months": pa.array(term, pa.int64()),
        "months_since_last_delinquency": pa.array(months_since, pa.int64(), mask=~delinquent),
        "num_open_accounts": _nullable(accounts, rng, 0.05),
        "region": pa.array(np.array(REGIONS, dtype=object)[region], pa.string()),
        "label": pa.array(label, mask=rng.random(n) >= labelled_fraction),
    }
    return pa.table(columns).cast(credit_schema().arrow_schema())


def wide_schema(n_features: int = 30, name: str = "wide") -> DatasetSchema:
    return DatasetSchema.model_validate(
        {
            "name": name,
            "entity_key": "id",
            "event_time": {"max_age_s": 86_400},
            "numeric": {f"f{j:02d}": {} for j in range(n_features)},
            "label": {"kind": "binary"},
        }
    )


def wide_table(n: int, n_features: int = 30, seed: int = 0) -> pa.Table:
    """`n` rows of `n_features` float features (2% missing) and a nonlinear binary label."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features))
    w = rng.standard_normal(n_features) / np.sqrt(n_features)
    logit = X @ w + 0.8 * X[:, 0] * X[:, 1] - 0.5 * np.abs(X[:, 2]) + 0.3
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    columns: dict[str, pa.Array] = {
        "event_id": pa.array([f"w{i:08d}" for i in range(n)], pa.string()),
        "entity_key": pa.array([f"k{i % 1000}" for i in range(n)], pa.string()),
        "event_time_ms": pa.array(START_MS + np.arange(n, dtype=np.int64), pa.int64()),
    }
    missing = rng.random((n, n_features)) < 0.02
    for j in range(n_features):
        columns[f"f{j:02d}"] = pa.array(X[:, j], mask=missing[:, j])
    columns["label"] = pa.array(label)
    return pa.table(columns).cast(wide_schema(n_features).arrow_schema())


def seal_tables(
    store: ArtifactStore,
    schema: DatasetSchema,
    tables: Sequence[pa.Table],
    first_created_at_ms: int = 1_000,
) -> list[VersionManifest]:
    """Seal each table as the next version (the chain ingest would build), oldest first."""
    storage = VersionWriter(store)
    parent: VersionManifest | None = None
    sealed = []
    for i, table in enumerate(tables):
        parent = seal_version(
            storage,
            schema,
            table,
            parent=parent,
            source_offsets=[],
            thresholds=(1e9, 1.0),  # never suspect: tests mark suspect versions themselves
            created_at_ms=first_created_at_ms + i,
        ).manifest
        sealed.append(parent)
    return sealed


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties averaged)."""
    y = np.asarray(labels) == 1
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    pos, neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))
