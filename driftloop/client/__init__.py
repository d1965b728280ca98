"""driftloop's Python client for apps: predictions over gRPC, events to Kafka.

from driftloop.client import DriftloopClient
with DriftloopClient("127.0.0.1:50051") as dl:
    p = dl.predict("credit", entity_key="user-42")            # features from the store
    batch = dl.predict_batch("credit", dataframe)              # numpy / pandas columns
    dl.publish_data("credit", [{"entity_key": "user-42", "income": 5e4}])
"""

from driftloop.client.client import (
    BatchPrediction,
    DriftloopClient,
    DriftloopError,
    InvalidInput,
    NotFound,
    Prediction,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "BatchPrediction",
    "DriftloopClient",
    "DriftloopError",
    "InvalidInput",
    "NotFound",
    "Prediction",
    "Unauthenticated",
    "Unavailable",
]
