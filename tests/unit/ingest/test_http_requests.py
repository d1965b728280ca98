"""The ingest HTTP API's request checks, without a broker: the app's producer is a
FastAPI dependency, replaced here by one that records what it is given. Every 4xx
answer names the bad event and field, and a rejected request publishes nothing; the
OpenAPI document lists every error. Publishing through a real producer, readiness and
the catalog over sealed versions: tests/integration/ingest/test_http_api.py."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message

from driftloop.v1.events_pb2 import DataEvent, DataEventBatch
from services.common.settings import load_settings
from services.ingest.config import IngestSettings
from services.ingest.http.api import app_producer, create_http_app
from services.ingest.http.models import ErrorResponse

MAX_BODY_BYTES = 64 * 1024
MAX_EVENTS = 50


@dataclass
class RecordingProducer:
    """Stands in for the Kafka producer: acknowledges every send at once."""

    sent: list[tuple[str, Any, Message]] = field(default_factory=list)

    async def send_many(self, topic: str, items: Any) -> list[Any]:
        self.sent += [(topic, key, message) for key, message in items]
        return []


@dataclass
class Api:
    client: httpx.AsyncClient
    producer: RecordingProducer

    async def published(self) -> int:
        return len(self.producer.sent)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = load_settings(home=tmp_path, artifact_root=f"file://{tmp_path / 'artifacts'}")
    ingest = IngestSettings(http_max_body_bytes=MAX_BODY_BYTES, http_max_events=MAX_EVENTS)
    app = create_http_app(settings, ingest)  # no lifespan: no real producer is started
    producer = RecordingProducer()
    app.dependency_overrides[app_producer] = lambda: producer
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        yield Api(client, producer)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def credit_event(i: int, run: str = "", **overrides: Any) -> dict[str, Any]:
    """A valid JSON event of the declared `credit` dataset (deploy/datasets/credit.yaml)."""
    event: dict[str, Any] = {
        "event_id": f"ev-{run}-{i}",
        "entity_key": f"applicant-{i % 10}",
        "event_time_ms": now_ms() - 1000 * i,
        "numeric": {
            "age": 25 + i % 40,
            "annual_income": 40_000.0 + 100 * i,
            "loan_amount": 10_000.0,
            "loan_term_months": 36,
            "debt_to_income": 0.3,
        },
        "categorical": {"region": "north", "employment_type": "salaried", "loan_purpose": "car"},
        "label": i % 2,
        "source": "tests",
    }
    event.update(overrides)
    return event


def to_proto(event: dict[str, Any], **fields: Any) -> DataEvent:
    return DataEvent(**{**event, **fields})


def _bad(index: int, **overrides: Any) -> list[dict[str, Any]]:
    events = [credit_event(i, "bad") for i in range(5)]
    events[index] = credit_event(index, "bad", **overrides)
    return events


_JSON = {"content-type": "application/json"}
_PROTO = {"content-type": "application/x-protobuf"}
_AGE_200 = {**credit_event(0)["numeric"], "age": 200}
_NO_LOAN = {k: v for k, v in credit_event(0)["numeric"].items() if k != "loan_amount"}
_WRONG_DATASET = DataEventBatch(events=[to_proto(credit_event(0), dataset="other")])
_MISSING_KEY = [{k: v for k, v in credit_event(0).items() if k != "entity_key"}]
_DUPLICATE = [credit_event(0, "dup"), credit_event(0, "dup")]

# (request, status, (index, field, code) of an expected error)
CASES: dict[str, tuple[dict[str, Any], int, tuple[int | None, str, str]]] = {
    "malformed json": (
        {"content": b'[{"event_id": ', "headers": _JSON},
        400,
        (None, "", "invalid_body"),
    ),
    "nan is not json": ({"content": b"[NaN]", "headers": _JSON}, 400, (None, "", "invalid_body")),
    "not an array": ({"json": {"event_id": "x"}}, 422, (None, "", "wrong_type")),
    "no events": ({"json": []}, 422, (None, "", "empty")),
    "time is a string": (
        {"json": _bad(2, event_time_ms="yesterday")},
        422,
        (2, "event_time_ms", "wrong_type"),
    ),
    "age is a string": (
        {"json": _bad(1, numeric={"age": "old"})},
        422,
        (1, "numeric.age", "wrong_type"),
    ),
    "region is a number": (
        {"json": _bad(0, categorical={"region": 7})},
        422,
        (0, "categorical.region", "wrong_type"),
    ),
    "missing entity key": ({"json": _MISSING_KEY}, 422, (0, "entity_key", "missing_field")),
    "unknown field": ({"json": _bad(4, colour="red")}, 422, (4, "colour", "unknown_field")),
    "lone surrogate": (
        {
            "content": b'[{"event_id": "\\ud800", "entity_key": "k", "event_time_ms": 1}]',
            "headers": _JSON,
        },
        422,
        (0, "event_id", "invalid"),
    ),
    "out of range": ({"json": _bad(3, numeric=_AGE_200)}, 422, (3, "numeric.age", "out_of_range")),
    "required feature absent": (
        {"json": _bad(3, numeric=_NO_LOAN)},
        422,
        (3, "numeric.loan_amount", "missing_field"),
    ),
    "unknown category": (
        {"json": _bad(0, categorical={"region": "mars"})},
        422,
        (0, "categorical.region", "unknown_category"),
    ),
    "undeclared feature": (
        {"json": _bad(0, numeric={**_AGE_200, "age": 30, "shoe": 9})},
        422,
        (0, "numeric.shoe", "unknown_field"),
    ),
    "event from the future": (
        {"json": _bad(1, event_time_ms=now_ms() + 3_600_000)},
        422,
        (1, "event_time_ms", "event_time_future"),
    ),
    "duplicate ids": ({"json": _DUPLICATE}, 422, (1, "event_id", "duplicate_event_id")),
    "corrupt protobuf": (
        {"content": b"\x0a\xff\xff\xff", "headers": _PROTO},
        400,
        (None, "", "invalid_body"),
    ),
    "protobuf for another dataset": (
        {"content": _WRONG_DATASET.SerializeToString(), "headers": _PROTO},
        422,
        (0, "dataset", "dataset_mismatch"),
    ),
    "csv": (
        {"content": b"a,b\n1,2", "headers": {"content-type": "text/csv"}},
        415,
        (None, "", "unsupported_media_type"),
    ),
    "no content type": ({"content": b"[]"}, 415, (None, "", "unsupported_media_type")),
    "too many events": (
        {"json": [credit_event(i) for i in range(MAX_EVENTS + 1)]},
        413,
        (None, "", "too_large"),
    ),
    "too large by length": (
        {"content": b"[" + b" " * MAX_BODY_BYTES + b"]", "headers": _JSON},
        413,
        (None, "body", "too_large"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_requests_get_4xx_with_per_field_errors_and_publish_nothing(
    api: Api, case: str
) -> None:
    request, status, (index, field, code) = CASES[case]
    response = await api.client.post("/v1/datasets/credit/events", **request)
    assert response.status_code == status, response.text
    errors = ErrorResponse.model_validate(response.json())
    found = {(e.index, e.field, e.code) for e in errors.errors}
    assert (index, field, code) in found, errors
    assert all(e.message for e in errors.errors)
    if index is not None:
        assert index in errors.invalid_indices
    assert await api.published() == 0


async def test_a_partly_valid_batch_is_rejected_whole_listing_every_bad_event(api: Api) -> None:
    events = [credit_event(i, "mixed") for i in range(10)]
    events[3]["numeric"] = _AGE_200
    events[7]["categorical"] = {**events[7]["categorical"], "region": "mars"}
    events[8]["event_time_ms"] = 1  # 1970: far too old
    response = await api.client.post("/v1/datasets/credit/events", json=events)
    assert response.status_code == 422
    body = ErrorResponse.model_validate(response.json())
    assert body.invalid_indices == [3, 7, 8] and body.error_count == 3
    assert [(e.index, e.field, e.code) for e in body.errors] == [
        (3, "numeric.age", "out_of_range"),
        (7, "categorical.region", "unknown_category"),
        (8, "event_time_ms", "event_time_too_old"),
    ]
    assert await api.published() == 0


async def test_body_limit_holds_without_content_length(api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"["
        for _ in range(MAX_BODY_BYTES // 1024 + 1):
            yield b" " * 1024
        yield b"]"

    response = await api.client.post("/v1/datasets/credit/events", content=chunks(), headers=_JSON)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and response.json()["errors"][0]["code"] == "too_large"


async def test_unknown_dataset_is_404(api: Api) -> None:
    response = await api.client.post("/v1/datasets/nope/events", json=[credit_event(0)])
    assert response.status_code == 404
    assert response.json()["errors"][0] == {
        "index": None,
        "field": "name",
        "code": "unknown_dataset",
        "message": "no dataset named 'nope' is declared",
    }


async def test_openapi_documents_bodies_and_every_error(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    post = spec["paths"]["/v1/datasets/{name}/events"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "application/x-protobuf"}
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for status in ("400", "404", "413", "415", "422", "500", "503"):
        assert post["responses"][status]["content"]["application/json"]["schema"] == error_ref
    assert "202" in post["responses"]
    show = spec["paths"]["/v1/datasets/{name}/versions/{version_id}"]["get"]
    assert {"200", "404", "409"} <= set(show["responses"]) and "422" not in show["responses"]
    assert "HTTPValidationError" not in json.dumps(spec)


async def test_valid_events_reach_the_producer_keyed_by_entity_key(api: Api) -> None:
    events = [credit_event(i, "ok") for i in range(3)]
    response = await api.client.post("/v1/datasets/credit/events", json=events)
    assert response.status_code == 202, response.text
    assert [(key, m.event_id) for _, key, m in api.producer.sent] == [  # type: ignore[attr-defined]
        (e["entity_key"], e["event_id"]) for e in events
    ]


async def test_without_a_producer_the_answer_is_503(api: Api, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, artifact_root=f"file://{tmp_path / 'artifacts'}")
    app = create_http_app(settings, IngestSettings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        response = await client.post("/v1/datasets/credit/events", json=[credit_event(0)])
        ready = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["errors"][0]["code"] == "unavailable"
    assert ready.status_code == 503 and ready.json()["ready"] is False
