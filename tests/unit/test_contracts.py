"""The committed generated contracts match proto/, and each topic has its message."""

from __future__ import annotations

from pathlib import Path

from driftloop.v1 import events_pb2, prediction_pb2, prediction_pb2_grpc
from services.common.protogen import REPO_ROOT, generate, generated_files
from services.common.settings import TopicNames
from services.common.topics import TOPIC_MESSAGES, message_type_for


def test_generated_modules_are_not_stale(tmp_path: Path) -> None:
    fresh = {p.name: p.read_bytes() for p in generate(tmp_path)}
    committed = {p.name: p.read_bytes() for p in generated_files(REPO_ROOT)}
    assert sorted(fresh) == sorted(committed), "generated file set differs: run driftloop proto gen"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated contracts {stale}: run `driftloop proto gen`"


def test_every_topic_has_a_message_type() -> None:
    names = TopicNames()
    assert set(TOPIC_MESSAGES) == set(names.model_dump())
    assert message_type_for("data.events", names) is events_pb2.DataEvent
    assert message_type_for("models.events", names) is events_pb2.ModelEvent


def test_prediction_service_has_both_rpcs() -> None:
    service = prediction_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    assert [m.name for m in service.methods] == ["Predict", "PredictBatch"]
    assert hasattr(prediction_pb2_grpc, "PredictionServiceServicer")


def test_batch_request_is_a_packed_matrix() -> None:
    request = prediction_pb2.PredictBatchRequest(
        model="m", feature_names=["a", "b"], values=[1, 2, 3, 4, 5, 6], rows=3
    )
    field = prediction_pb2.PredictBatchRequest.DESCRIPTOR.fields_by_name["values"]
    assert field.is_packed
    decoded = prediction_pb2.PredictBatchRequest.FromString(request.SerializeToString())
    assert list(decoded.values) == [1, 2, 3, 4, 5, 6] and decoded.rows == 3
