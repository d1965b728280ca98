"""One model version ready to score request columns: encoder + predictor, no Ray in sight.

A replica holds one `Servable` at a time and swaps it whole on a hot swap, so every
batch is scored by exactly one version and reports that version. Requests are encoded
one by one (a bad request is answered with its own problems, never failing the others
in its batch), then the valid ones are stacked and predicted in a single call: the model's
fixed cost per call (≈ 200 µs for XGBoost, notes/ray.md) is paid once per batch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.common.encoding import EncodingError, FeatureEncoder
from services.common.predictors import Predictor, predictor_from_loaded
from services.common.registry import ModelManifest, ModelRegistry

__all__ = ["Columns", "Rejected", "Reply", "Scored", "Servable", "ServableError"]

Columns = Mapping[str, Sequence[Any] | np.ndarray]


class ServableError(RuntimeError):
    """A registered version that cannot be served (no encoder in its params, bad params)."""


@dataclass(frozen=True, slots=True)
class Scored:
    scores: np.ndarray  # float64, one per row
    version: int


@dataclass(frozen=True, slots=True)
class Rejected:
    problems: list[tuple[str, str]]  # (field, problem)


Reply = Scored | Rejected


@dataclass(frozen=True)
class Servable:
    model: str
    version: int
    encoder: FeatureEncoder
    predict_matrix: Predictor
    manifest: ModelManifest

    @classmethod
    def load(cls, registry: ModelRegistry, model: str, version: int) -> Servable:
        """Load `model` version `version` through the registry (sha256 verified)."""
        loaded = registry.load(model, version)
        params = loaded.manifest.params.get("encoder")
        if not isinstance(params, dict):
            raise ServableError(
                f"{model} v{version} has no feature encoder in its params; it cannot be "
                "served (register models with params['encoder'] = encoder.to_params())"
            )
        try:
            encoder = FeatureEncoder.from_params(params)
            predictor = predictor_from_loaded(loaded)
        except (ValueError, KeyError) as exc:
            raise ServableError(f"{model} v{version} cannot be served: {exc}") from exc
        return cls(model, loaded.manifest.version, encoder, predictor, loaded.manifest)

    def score(self, requests: Sequence[Columns]) -> list[Reply]:
        """One reply per request, in order; one predict call for all the valid rows."""
        replies: list[Reply | None] = [None] * len(requests)
        matrices: list[np.ndarray] = []
        owners: list[int] = []
        for i, columns in enumerate(requests):
            try:
                matrix = self.encoder.transform_columns(columns)
            except EncodingError as exc:
                replies[i] = Rejected(exc.problems or [("columns", str(exc))])
                continue
            except Exception as exc:  # a malformed request never fails its batch
                replies[i] = Rejected([("columns", f"{type(exc).__name__}: {exc}")])
                continue
            matrices.append(matrix)
            owners.append(i)
        if matrices:
            stacked = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
            scores = self.predict_matrix(stacked) if len(stacked) else np.zeros(0, dtype=np.float64)
            start = 0
            for i, matrix in zip(owners, matrices, strict=True):
                end = start + len(matrix)
                replies[i] = Scored(scores[start:end], self.version)
                start = end
        return [r for r in replies if r is not None]

    def warm_up(self, rounds: int, batch_rows: int) -> dict[str, Any]:
        """Run the whole scoring path on synthetic rows of batch sizes 1 and `batch_rows`,
        `rounds` times, so lazy initialisation (imports, allocator, xgboost's predictor
        caches, torch's kernels) happens before the replica reports ready."""
        rows = max(1, batch_rows)
        sample = self.synthetic_columns(rows)
        one = {name: values[:1] for name, values in sample.items()}
        started = time.perf_counter()
        for _ in range(rounds):
            for request in (one, sample):
                (reply,) = self.score([request])
                if not isinstance(reply, Scored) or not np.isfinite(reply.scores).all():
                    raise ServableError(
                        f"{self.model} v{self.version} failed its warm-up: {reply!r}"
                    )
        return {
            "rounds": rounds,
            "rows": rows,
            "seconds": round(time.perf_counter() - started, 4),
        }

    def synthetic_columns(self, rows: int) -> dict[str, list[Any]]:
        """Plausible rows from the reference profile: numeric bin edges and the training
        vocabulary, cycled; every 7th value missing so the missing-value path runs too."""
        profile = self.manifest.reference_profile
        columns: dict[str, list[Any]] = {}
        for feature in self.encoder.features:
            if feature.kind == "numeric":
                hist = profile.numeric.get(feature.name)
                pool: list[Any] = list(hist.bin_edges) if hist else [0.0, 1.0]
            else:
                pool = list(feature.vocabulary) or ["unseen"]
            columns[feature.name] = [
                None if i % 7 == 6 else pool[i % len(pool)] for i in range(rows)
            ]
        return columns
