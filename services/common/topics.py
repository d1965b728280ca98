"""Which protobuf message travels on which topic (DESIGN.md §2)."""

from __future__ import annotations

from google.protobuf.message import Message

from driftloop.v1 import events_pb2
from services.common.settings import TopicNames

__all__ = ["TOPIC_MESSAGES", "message_type_for"]

# Field of TopicNames -> message class carried on that topic.
TOPIC_MESSAGES: dict[str, type[Message]] = {
    "data_events": events_pb2.DataEvent,
    "data_rejected": events_pb2.RejectedEvent,
    "datasets_versions": events_pb2.DatasetVersion,
    "labels_feedback": events_pb2.LabelEvent,
    "predictions_log": events_pb2.PredictionLog,
    "drift_events": events_pb2.DriftEvent,
    "experiments_events": events_pb2.ExperimentEvent,
    "models_events": events_pb2.ModelEvent,
}


def message_type_for(topic: str, names: TopicNames) -> type[Message]:
    """The message class for a topic name, given the configured names."""
    for field, name in names.model_dump().items():
        if name == topic:
            return TOPIC_MESSAGES[field]
    raise KeyError(f"topic {topic!r} is not one of driftloop's topics ({', '.join(names.all())})")
