"""Small models of both kinds, trained with the trainer's own code and registered through
the registry as the trainer registers them (encoder in params, reference profile)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from services.common.encoding import FeatureEncoder
from services.common.registry import ModelManifest, ModelRegistry, RegistrationInfo
from services.trainer.models import FittedModel, ModelKindName, fit_model
from services.trainer.profile import build_reference_profile
from tests.integration.trainer.synthetic import credit_schema, credit_table

__all__ = ["TinyModel", "request_columns", "train_tiny"]

SMALL_PARAMS: dict[ModelKindName, dict[str, Any]] = {
    "xgboost": {"num_boost_round": 30, "max_depth": 4},
    "mlp": {"hidden_units": [16], "max_epochs": 5, "batch_size": 128, "learning_rate": 0.01},
}


@dataclass(frozen=True)
class TinyModel:
    kind: ModelKindName
    fitted: FittedModel
    encoder: FeatureEncoder
    train_table: pa.Table

    def predict_columns(self, columns: dict[str, list[Any]]) -> np.ndarray:
        """The in-process reference: the trainer's model on the same encoded rows."""
        return self.fitted.predict(self.encoder.transform_columns(columns))

    def register(self, registry: ModelRegistry, name: str) -> ModelManifest:
        scores = self.fitted.predict(self.encoder.transform(self.train_table))
        labels = np.asarray(self.train_table.column("label").to_numpy(zero_copy_only=False))
        info = RegistrationInfo(
            features=self.encoder.feature_specs(),
            reference_profile=build_reference_profile(
                self.encoder, self.train_table, scores, labels, "binary"
            ),
            code_version="test",
            params={**self.fitted.params, "encoder": self.encoder.to_params()},
            seed=7,
        )
        return registry.register(name, self.fitted.artifact, self.fitted.artifact_format, info)


def train_tiny(kind: ModelKindName, rows: int = 2_000, seed: int = 0) -> TinyModel:
    schema = credit_schema()
    table = credit_table(rows, seed=seed)
    encoder = FeatureEncoder.fit(schema, table)
    X = encoder.transform(table)
    y = np.asarray(table.column("label").to_numpy(zero_copy_only=False), dtype=np.float64)
    cut = int(rows * 0.8)
    fitted = fit_model(
        kind, X[:cut], y[:cut], X[cut:], y[cut:], SMALL_PARAMS[kind], seed=seed, task="binary"
    )
    return TinyModel(kind, fitted, encoder, table)


def request_columns(rows: int, seed: int = 1) -> dict[str, list[Any]]:
    """Request-shaped columns (feature -> values) of fresh rows, None where missing."""
    table = credit_table(rows, seed=seed)
    names = FeatureEncoder.fit(credit_schema(), table).feature_names
    return {name: table.column(name).to_pylist() for name in names}
