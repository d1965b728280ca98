"""`DriftloopClient`: a synchronous client for apps (see the package docstring).

gRPC errors become typed exceptions carrying the router's field-level details
(google.rpc.BadRequest): `InvalidInput`, `NotFound`, `Unauthenticated`, `Unavailable`,
`DriftloopError` for the rest. Events go to Kafka with the headers driftloop's consumers
expect (content-type, schema), keyed by entity key so one entity stays on one partition.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from driftloop.v1 import events_pb2 as ev
from driftloop.v1 import prediction_pb2 as pb
from driftloop.v1 import prediction_pb2_grpc as pb_grpc

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


class DriftloopError(Exception):
    """A call failed; `code` is the gRPC status, `details` the (field, problem) pairs."""

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        details: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.details = list(details)


class InvalidInput(DriftloopError):
    pass


class NotFound(DriftloopError):
    pass


class Unauthenticated(DriftloopError):
    pass


class Unavailable(DriftloopError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[DriftloopError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
}


def _typed(exc: grpc.RpcError) -> DriftloopError:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    details: list[tuple[str, str]] = []
    status = rpc_status.from_call(exc)
    if status is not None:
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                details += [(v.field, v.description) for v in bad.field_violations]
    code = exc.code()
    cls = _BY_CODE.get(code, DriftloopError)
    return cls(f"{code.name}: {exc.details()}", code, details)


@dataclass(frozen=True)
class Prediction:
    score: float
    model: str
    version: str
    variant: str
    request_id: str
    experiment: str = ""
    bucket: int = -1


@dataclass(frozen=True)
class BatchPrediction:
    scores: np.ndarray
    variants: list[str]
    versions: list[str]
    request_ids: list[str]
    experiment: str = ""
    buckets: list[int] = field(default_factory=list)


class DriftloopClient:
    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        token: str | None = None,
        kafka_bootstrap: str = "127.0.0.1:9092",
        timeout_s: float = 5.0,
        data_topic: str = "data.events",
        labels_topic: str = "labels.feedback",
    ) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.PredictionServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout_s = timeout_s
        self._kafka_bootstrap = kafka_bootstrap
        self._data_topic, self._labels_topic = data_topic, labels_topic

    def __enter__(self) -> DriftloopClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # -- predictions ---------------------------------------------------------------------

    def predict(
        self,
        model: str,
        entity_key: str = "",
        features: Mapping[str, float | str] | None = None,
        *,
        request_id: str = "",
        timeout_s: float | None = None,
    ) -> Prediction:
        """One prediction. Features left out are filled from the online store by key."""
        numeric: dict[str, float] = {}
        categorical: dict[str, str] = {}
        for name, value in (features or {}).items():
            if isinstance(value, str):
                categorical[name] = value
            else:
                numeric[name] = float(value)
        request = pb.PredictRequest(
            request_id=request_id,
            model=model,
            entity_key=entity_key,
            numeric=numeric,
            categorical=categorical,
        )
        try:
            r = self._stub.Predict(
                request, timeout=timeout_s or self._timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise _typed(exc) from None
        return Prediction(
            r.score, r.model, r.version, r.variant, r.request_id, r.experiment, r.bucket
        )

    def predict_batch(
        self,
        model: str,
        columns: Any,
        entity_keys: Sequence[str] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> BatchPrediction:
        """Score rows given as a pandas DataFrame or a mapping name -> array/list. Numeric
        columns travel as one packed float matrix (NaN = missing), string columns as the
        categorical matrix ("" / None = missing); missing values are filled by key."""
        names = list(columns.columns) if hasattr(columns, "columns") else list(columns)
        numeric_names: list[str] = []
        cat_names: list[str] = []
        numeric_cols: list[np.ndarray] = []
        cat_cols: list[list[str]] = []
        rows = -1
        for name in names:
            if name == "entity_key" and entity_keys is None:
                entity_keys = [str(k) for k in columns[name]]
                continue
            values = np.asarray(columns[name])
            rows = len(values) if rows < 0 else rows
            if values.dtype.kind in "biuf":
                numeric_names.append(str(name))
                numeric_cols.append(values.astype(np.float32))
            else:
                cat_names.append(str(name))
                cat_cols.append(
                    [
                        "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                        for v in values
                    ]
                )
        if rows < 0:
            rows = len(entity_keys or [])
        matrix = np.column_stack(numeric_cols).ravel() if numeric_cols else np.empty(0, np.float32)
        cats = [c[i] for i in range(rows) for c in cat_cols]
        request = pb.PredictBatchRequest(
            model=model,
            rows=rows,
            feature_names=numeric_names,
            values=matrix.tolist(),
            categorical_names=cat_names,
            categorical_values=cats,
            entity_keys=list(entity_keys or []),
        )
        try:
            r = self._stub.PredictBatch(
                request, timeout=timeout_s or self._timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise _typed(exc) from None
        return BatchPrediction(
            np.asarray(r.scores, dtype=np.float64),
            list(r.variants),
            list(r.versions),
            list(r.request_ids),
            r.experiment,
            list(r.buckets),
        )

    # -- events --------------------------------------------------------------------------

    def publish_data(
        self, dataset: str, rows: Iterable[Mapping[str, Any]], source: str = "driftloop-client"
    ) -> int:
        """Publish data events: each row has `entity_key`, optional `event_id`,
        `event_time_ms`, `label`; other fields are features (str = categorical)."""
        events = []
        for row in rows:
            row = dict(row)
            label = row.pop("label", None)
            event = ev.DataEvent(
                event_id=str(row.pop("event_id", "") or uuid.uuid4().hex),
                dataset=dataset,
                entity_key=str(row.pop("entity_key")),
                event_time_ms=int(row.pop("event_time_ms", 0) or time.time() * 1000),
                source=source,
            )
            for name, value in row.items():
                if value is None:
                    continue
                if isinstance(value, str):
                    event.categorical[name] = value
                else:
                    event.numeric[name] = float(value)
            if label is not None:
                event.label = float(label)
            events.append((event.entity_key, event))
        return self._publish(self._data_topic, events)

    def publish_labels(self, model: str, labels: Iterable[Mapping[str, Any]]) -> int:
        """Publish label events: `outcome` plus `request_id` or `entity_key`."""
        events = []
        for item in labels:
            event = ev.LabelEvent(
                label_id=str(item.get("label_id") or uuid.uuid4().hex),
                request_id=str(item.get("request_id", "")),
                entity_key=str(item.get("entity_key", "")),
                model=model,
                outcome=float(item["outcome"]),
                event_time_ms=int(item.get("event_time_ms") or time.time() * 1000),
            )
            events.append((event.entity_key or event.request_id, event))
        return self._publish(self._labels_topic, events)

    def _publish(self, topic: str, events: list[tuple[str, Any]]) -> int:
        from aiokafka import AIOKafkaProducer

        async def send() -> int:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._kafka_bootstrap, acks="all", enable_idempotence=True
            )
            try:
                await producer.start()
            except Exception as exc:
                await producer.stop()
                raise Unavailable(
                    f"Kafka at {self._kafka_bootstrap} is unreachable: {exc}"
                ) from exc
            try:
                futures = []
                for key, message in events:
                    headers = [
                        ("content-type", b"application/x-protobuf"),
                        ("schema", message.DESCRIPTOR.full_name.encode()),
                    ]
                    futures.append(
                        await producer.send(
                            topic, message.SerializeToString(), key=key.encode(), headers=headers
                        )
                    )
                await asyncio.gather(*futures)
            finally:
                await producer.stop()
            return len(futures)

        return asyncio.run(send())
