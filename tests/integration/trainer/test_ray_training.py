"""Training on a real local Ray instance: parallel trials, determinism, loopback only."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import JsonValue

from services.common.artifacts import ArtifactStore
from services.common.encoding import FeatureEncoder
from services.stack.processes import listening_sockets, process_tree
from services.trainer.data import SplitSpec, TrainingData, WindowSpec, load_training_data
from services.trainer.models import FittedModel
from services.trainer.tuning import TrainingJob, labels_of, train_on_ray
from tests.integration.trainer.synthetic import auc, credit_schema, credit_table, seal_tables

DAY_MS = 86_400_000
GRID: list[dict[str, JsonValue]] = [
    {"max_depth": 2},
    {"max_depth": 4},
    {"max_depth": 6, "eta": 0.3},
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> TrainingData:
    store = ArtifactStore(f"file://{tmp_path_factory.mktemp('artifacts')}")
    schema = credit_schema()
    days = [
        credit_table(2500, seed=d, start_ms=1_700_000_000_000 + d * DAY_MS, span_ms=DAY_MS)
        for d in range(4)
    ]
    seal_tables(store, schema, days)
    return load_training_data(store, schema, WindowSpec(), SplitSpec())


@pytest.fixture(scope="module")
def encoder(data: TrainingData) -> FeatureEncoder:
    return FeatureEncoder.fit(data.schema, data.train)


def _holdout_auc(model: FittedModel, data: TrainingData, encoder: FeatureEncoder) -> float:
    return auc(labels_of(data.holdout), model.predict(encoder.transform(data.holdout)))


def test_trials_run_on_ray_and_the_best_validation_loss_wins(
    ray_local: str, data: TrainingData, encoder: FeatureEncoder
) -> None:
    job = TrainingJob(
        kind="xgboost", task="binary", params={"num_boost_round": 150}, search_space=GRID, seed=11
    )
    outcome = train_on_ray(job, data, encoder)

    assert outcome.ray_address == ray_local
    assert [t["trial"] for t in outcome.trials] == [0, 1, 2]
    assert [t["params"] for t in outcome.trials] == [
        {"nthread": 1, "num_boost_round": 150, **g} for g in GRID
    ]
    losses = [t["validation_loss"] for t in outcome.trials]
    assert all(isinstance(v, float) and 0 < v < 0.69 for v in losses)  # beats a coin flip
    winner = outcome.best.params["trial"]
    assert losses[winner] == min(losses)  # type: ignore[index, type-var]
    assert outcome.best.params["max_depth"] == GRID[winner]["max_depth"]  # type: ignore[index]
    assert FeatureEncoder.from_params(outcome.best.params["encoder"]) == encoder  # type: ignore[arg-type]
    assert _holdout_auc(outcome.best, data, encoder) > 0.72

    again = train_on_ray(job, data, encoder)
    assert again.best.artifact == outcome.best.artifact  # same inputs, same bytes

    def timeless(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in t.items() if k != "fit_s"} for t in trials]

    assert timeless(again.trials) == timeless(outcome.trials)
    assert all(isinstance(t["fit_s"], float) and t["fit_s"] > 0 for t in outcome.trials)


def test_mlp_trials_on_ray(ray_local: str, data: TrainingData, encoder: FeatureEncoder) -> None:
    job = TrainingJob(
        kind="mlp",
        task="binary",
        params={"max_epochs": 8, "batch_size": 256, "learning_rate": 0.005},
        search_space=[{"hidden_units": [16]}, {"hidden_units": [32, 16]}],
        seed=3,
    )
    first, second = train_on_ray(job, data, encoder), train_on_ray(job, data, encoder)
    assert first.best.artifact_format == "torch-state-dict"
    assert first.best.params["trial"] == second.best.params["trial"]
    X = encoder.transform(data.holdout)
    np.testing.assert_allclose(first.best.predict(X), second.best.predict(X), rtol=0, atol=1e-6)
    assert _holdout_auc(first.best, data, encoder) > 0.72


def test_a_failing_trial_fails_the_job_with_its_error(
    ray_local: str, data: TrainingData, encoder: FeatureEncoder
) -> None:
    job = TrainingJob(kind="xgboost", task="binary", search_space=[{}, {"depth": 3}])
    with pytest.raises(ValueError, match=r"unknown xgboost params \['depth'\]"):
        train_on_ray(job, data, encoder)


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_every_ray_listener_is_on_loopback(ray_local: str) -> None:
    """The GCS, raylet, agents, workers and this driver listen on 127.0.0.1 only."""
    listeners = listening_sockets(process_tree(os.getpid()))
    gcs_port = int(ray_local.rsplit(":", 1)[1])
    assert gcs_port in {port for _, _, port in listeners}, listeners  # we see Ray's sockets
    exposed = [
        (pid, Path(f"/proc/{pid}/comm").read_text().strip(), address, port)
        for pid, address, port in listeners
        if not _is_loopback(address)
    ]
    assert not exposed, f"Ray processes listening beyond loopback: {exposed}"
