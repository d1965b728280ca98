"""One model version scoring request columns, without Ray: batching keeps each request's
rows apart, a bad request is answered alone, warm-up runs the real path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.common.artifacts import ArtifactStore
from services.common.registry import ModelRegistry
from services.serving.servable import Rejected, Scored, Servable
from tests.integration.serving.models import TinyModel, request_columns, train_tiny


@pytest.fixture(scope="module")
def tiny() -> TinyModel:
    return train_tiny("xgboost", rows=600)


@pytest.fixture(scope="module")
def servable(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Servable:
    root: Path = tmp_path_factory.mktemp("registry")
    registry = ModelRegistry(ArtifactStore(f"file://{root}"))
    tiny.register(registry, "tiny")
    return Servable.load(registry, "tiny", 1)


def test_a_batch_scores_each_request_as_if_alone(tiny: TinyModel, servable: Servable) -> None:
    requests = [request_columns(n, seed=n) for n in (1, 7, 0, 30)]
    replies = servable.score(requests)
    assert len(replies) == 4
    for columns, reply in zip(requests, replies, strict=True):
        assert isinstance(reply, Scored) and reply.version == 1
        np.testing.assert_array_equal(reply.scores, tiny.predict_columns(columns))


def test_a_bad_request_is_rejected_alone(servable: Servable) -> None:
    good = request_columns(3, seed=2)
    replies = servable.score([good, {**good, "age": [1, "x", 3]}, good])
    assert isinstance(replies[0], Scored) and isinstance(replies[2], Scored)
    assert isinstance(replies[1], Rejected)
    assert [f for f, _ in replies[1].problems] == ["age"]


def test_warm_up_runs_the_scoring_path(servable: Servable) -> None:
    report = servable.warm_up(rounds=2, batch_rows=16)
    assert (report["rounds"], report["rows"]) == (2, 16)
    columns = servable.synthetic_columns(16)
    assert set(columns) == set(servable.encoder.feature_names)
    assert any(v is None for v in next(iter(columns.values())))  # the missing path too


def test_a_version_without_an_encoder_cannot_be_served(tiny: TinyModel, tmp_path: Path) -> None:
    from services.common.registry import RegistrationInfo
    from services.serving.servable import ServableError

    registry = ModelRegistry(ArtifactStore(f"file://{tmp_path}"))
    manifest = tiny.register(registry, "tiny")
    info = RegistrationInfo(
        **manifest.model_dump(include={"features", "reference_profile", "code_version", "seed"}),
        params={k: v for k, v in manifest.params.items() if k != "encoder"},
    )
    registry.register("bare", tiny.fitted.artifact, tiny.fitted.artifact_format, info)
    with pytest.raises(ServableError, match="no feature encoder"):
        Servable.load(registry, "bare", 1)
