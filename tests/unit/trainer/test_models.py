"""Both model kinds: they learn, they reproduce, and the registry round trip predicts the same."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.common.artifacts import ArtifactStore
from services.common.encoding import FeatureEncoder
from services.common.registry import ModelRegistry, RegistrationInfo, load_artifact
from services.trainer.models import (
    FittedModel,
    ModelKindName,
    fit_model,
    predictor_from_loaded,
    validation_loss,
)
from services.trainer.profile import build_reference_profile
from tests.integration.trainer.synthetic import auc, credit_schema, credit_table

SMALL_MLP = {"hidden_units": [32, 16], "max_epochs": 10, "batch_size": 128, "learning_rate": 0.005}


class Split:
    def __init__(self, n: int = 6000, seed: int = 1, regression: bool = False) -> None:
        table = credit_table(n, seed=seed)
        train = table.slice(0, n * 7 // 10)
        val = table.slice(n * 7 // 10, n * 15 // 100)
        hold = table.slice(n * 85 // 100)
        self.encoder = FeatureEncoder.fit(credit_schema(), train)
        self.train_table = train
        self.X = [self.encoder.transform(t) for t in (train, val, hold)]
        if regression:  # a continuous target with real signal from two of the features
            rng = np.random.default_rng(seed)
            self.y = [
                0.5 * t.column("age").to_numpy()
                + 10 * np.log(t.column("loan_amount").to_numpy())
                + rng.normal(0, 5, t.num_rows)
                for t in (train, val, hold)
            ]
        else:
            self.y = [t.column("label").to_numpy() for t in (train, val, hold)]

    def fit(
        self,
        kind: ModelKindName,
        params: dict[str, Any] | None = None,
        seed: int = 7,
        task: str = "binary",
    ) -> FittedModel:
        return fit_model(kind, self.X[0], self.y[0], self.X[1], self.y[1], params or {}, seed, task)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data() -> Split:
    return Split()


def test_xgboost_learns_and_is_byte_identical_twice(data: Split) -> None:
    first, second = data.fit("xgboost"), data.fit("xgboost")
    assert first.artifact == second.artifact
    assert first.artifact_format == "xgboost-ubj"
    assert first.params["kind"] == "xgboost" and first.params["seed"] == 7
    assert first.params["nthread"] == 1 and first.params["task"] == "binary"
    scores = first.predict(data.X[2])
    assert scores.shape == (len(data.y[2]),) and ((scores > 0) & (scores < 1)).all()
    assert auc(data.y[2], scores) > 0.7
    assert data.fit("xgboost", {"max_depth": 3}).artifact != first.artifact


def test_xgboost_keeps_only_the_trees_up_to_the_best_round(data: Split) -> None:
    model = data.fit("xgboost", {"num_boost_round": 400, "early_stopping_rounds": 5, "eta": 0.3})
    booster = load_artifact(model.artifact, model.artifact_format)
    best = model.params["best_iteration"]
    assert isinstance(best, int) and best < 399
    assert booster.num_boosted_rounds() == best + 1


def test_mlp_learns_and_reproduces_its_predictions(data: Split) -> None:
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    first, second = data.fit("mlp", SMALL_MLP), data.fit("mlp", SMALL_MLP)
    assert first.artifact_format == "torch-state-dict"
    a, b = first.predict(data.X[2]), second.predict(data.X[2])
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert auc(data.y[2], a) > 0.7
    assert not np.isnan(a).any()  # missing values are handled inside the model
    # training leaves the caller's torch settings as they were
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


@pytest.mark.parametrize("kind", ["xgboost", "mlp"])
def test_regression(kind: ModelKindName) -> None:
    data = Split(regression=True)
    model = data.fit(kind, SMALL_MLP if kind == "mlp" else {}, task="regression")
    pred = model.predict(data.X[2])
    rmse = validation_loss("regression", data.y[2], pred)
    assert rmse < 0.75 * float(np.std(data.y[2]))  # clearly better than predicting the mean


@pytest.mark.parametrize("kind", ["xgboost", "mlp"])
def test_registry_round_trip_predicts_the_same(
    kind: ModelKindName, data: Split, tmp_path: Path
) -> None:
    model = data.fit(kind, SMALL_MLP if kind == "mlp" else {})
    params = {**model.params, "encoder": data.encoder.to_params()}
    scores = model.predict(data.X[0])
    registry = ModelRegistry(ArtifactStore(f"file://{tmp_path}"))
    info = RegistrationInfo(
        features=data.encoder.feature_specs(),
        reference_profile=build_reference_profile(
            data.encoder, data.train_table, scores, data.y[0], "binary"
        ),
        code_version="test",
        params=params,
        seed=7,
    )
    registry.register("credit-risk", model.artifact, model.artifact_format, info)
    loaded = registry.load("credit-risk", "latest")
    predict = predictor_from_loaded(loaded)
    np.testing.assert_array_equal(predict(data.X[2]), model.predict(data.X[2]))
    # serving's path: rebuild the encoder from the manifest, encode records, predict
    encoder = FeatureEncoder.from_params(loaded.manifest.params["encoder"])  # type: ignore[arg-type]
    records = credit_table(50, seed=11).to_pylist()
    np.testing.assert_array_equal(
        predict(encoder.transform_records(records)),
        model.predict(data.encoder.transform_records(records)),
    )


def test_fitted_models_travel_between_processes(data: Split) -> None:
    model = data.fit("xgboost", {"num_boost_round": 20})
    before = model.predict(data.X[2])  # caches a Booster, which must not be pickled along
    copy = pickle.loads(pickle.dumps(model))
    assert copy == model
    np.testing.assert_array_equal(copy.predict(data.X[2]), before)


def test_bad_requests_fail_clearly(data: Split) -> None:
    with pytest.raises(ValueError, match=r"unknown xgboost params \['depth'\]"):
        data.fit("xgboost", {"depth": 3})
    with pytest.raises(ValueError, match="'max_depth' must be an integer"):
        data.fit("xgboost", {"max_depth": "deep"})
    with pytest.raises(ValueError, match="'hidden_units' must be a list"):
        data.fit("mlp", {"hidden_units": 8})
    with pytest.raises(ValueError, match="unknown model kind 'forest'"):
        data.fit("forest")  # type: ignore[arg-type]
