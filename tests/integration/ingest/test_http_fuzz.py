"""Fuzzing the ingest HTTP API: nothing a client sends earns a 5xx, and the service stays up.

The app is served by uvicorn on a free 127.0.0.1 port (a real server with a real
producer on the local stack's broker); schemathesis derives requests from the OpenAPI
document it serves, and a direct loop throws malformed protobuf bytes and random JSON at
the publishing endpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from driftloop.v1.events_pb2 import DataEvent, DataEventBatch
from services.common.kafka import ensure_topics
from services.common.logging import configure_logging
from services.common.settings import Settings, TopicNames, load_settings
from services.ingest.config import IngestSettings
from services.ingest.http.api import create_http_app
from tests.integration.ingest.test_http_api import credit_event

MAX_EVENTS = 20
# The same inputs on every run (Hypothesis seeds them from the test's name), so CI is
# reproducible; DRIFTLOOP_FUZZ_EXPLORE=1 draws new ones (a failure prints the input).
_FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("DRIFTLOOP_FUZZ_EXPLORE", "") != "1",
)
EVENTS_PATH = "/v1/datasets/credit/events"


@dataclass
class Served:
    base_url: str
    settings: Settings


@pytest.fixture(scope="module")
async def served(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    topic = f"test.fuzz.{uuid.uuid4().hex[:10]}"
    root: Path = tmp_path_factory.mktemp("fuzz-artifacts")
    app_settings = load_settings(
        home=stack.home, topics=TopicNames(data_events=topic), artifact_root=f"file://{root}"
    )
    await ensure_topics(app_settings, [topic], partitions=1)
    ingest = IngestSettings(http_max_events=MAX_EVENTS, http_max_body_bytes=16 * 1024)
    configure_logging(app_settings)  # as the service does: JSON lines, tracebacks as text
    app = create_http_app(app_settings, ingest)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="ingest-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(f"http://127.0.0.1:{port}", app_settings)
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)


# Protobuf bodies: random bytes, and serialized batches with arbitrary field values.
_events = st.builds(
    DataEvent,
    event_id=st.text(max_size=20),
    dataset=st.sampled_from(["", "credit", "other"]),
    entity_key=st.text(max_size=10),
    event_time_ms=st.integers(-(2**63), 2**63 - 1),
    numeric=st.dictionaries(st.sampled_from(["age", "loan_amount", "x"]), st.floats()),
    categorical=st.dictionaries(st.sampled_from(["region", "y"]), st.text(max_size=8)),
)
_protobuf = st.one_of(
    st.binary(max_size=512),
    st.lists(_events, max_size=5).map(lambda e: DataEventBatch(events=e).SerializeToString()),
)
schemathesis.openapi.media_type("application/x-protobuf", _protobuf)


# A request over the documented size limits is refused with 413, not 400/422.
_CONFIG = SchemathesisConfig.from_str(
    "[checks.negative_data_rejection]\n"
    'expected-statuses = ["400", "404", "405", "409", "413", "415", "422"]\n'
)


@pytest.fixture(scope="module")
def api_schema(served: Served) -> Any:
    return schemathesis.openapi.from_url(f"{served.base_url}/openapi.json", config=_CONFIG)


OPERATIONS = [
    ("POST", "/v1/datasets/{name}/events"),
    ("GET", "/v1/datasets"),
    ("GET", "/v1/datasets/{name}/versions"),
    ("GET", "/v1/datasets/{name}/versions/{version_id}"),
    ("GET", "/v1/datasets/{name}/diff"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    served = {(method.upper(), path) for path in api_schema for method in api_schema[path]}
    assert served == set(OPERATIONS)


def _cases(operation: Any) -> st.SearchStrategy[Any]:
    """Schema-valid and schema-violating requests; with path parameters, also ones aimed
    at the declared dataset so that bodies get past the 404."""
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    if operation.path_parameters or operation.query or operation.body:
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    if "{name}" in operation.path:
        credit = {"name": "credit"}
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=credit))
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=credit))
    return st.one_of(strategies)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_schemathesis_finds_no_server_error_or_undocumented_answer(
    api_schema: Any, method: str, path: str
) -> None:
    operation = api_schema[path][method]

    @given(case=_cases(operation))
    @settings(_FUZZ, max_examples=80)
    def check(case: Any) -> None:
        # Schema-valid events are still refused when they break the dataset's declared
        # rules (ranges, domains, required features), which OpenAPI cannot express.
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    check()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_FIELDS = ["event_id", "entity_key", "event_time_ms", "numeric", "categorical", "label", "source"]


@st.composite
def _mutated_events(draw: st.DrawFn) -> list[Any]:
    """Valid events with some fields dropped or replaced by arbitrary JSON."""
    events: list[Any] = [credit_event(i, "fuzz") for i in range(draw(st.integers(1, 3)))]
    for event in events:
        for name in draw(st.lists(st.sampled_from(_FIELDS), max_size=3, unique=True)):
            if draw(st.booleans()):
                event.pop(name, None)
            else:
                event[name] = draw(_json)
    return events


def _post(client: httpx.Client, body: bytes, content_type: str) -> int:
    response = client.post(EVENTS_PATH, content=body, headers={"content-type": content_type})
    assert response.status_code < 500, response.text
    if response.status_code != 202:
        assert response.json()["errors"], response.text  # an ErrorResponse, never empty
    return response.status_code


@settings(_FUZZ, max_examples=150)
@given(doc=_json | _mutated_events())
def test_random_json_is_refused_with_4xx(served: Served, doc: Any) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        body = json.dumps(doc, allow_nan=True).encode()
        status = _post(client, body, "application/json")
        is_event_list = isinstance(doc, list) and doc and all(isinstance(e, dict) for e in doc)
        assert status != 202 or is_event_list


def test_malformed_bytes_get_4xx_and_the_service_stays_up(served: Served) -> None:
    rng = random.Random(20240611)
    valid = DataEventBatch(events=[DataEvent(**credit_event(i, "raw")) for i in range(3)])
    good = valid.SerializeToString()
    bodies: list[tuple[bytes, str]] = [
        (b"", "application/x-protobuf"),
        (b"", "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),  # not UTF-8
        (b"[" * 50_000, "application/json"),  # nesting beyond the parser's recursion limit
        (b"[" + b"9" * 5000 + b"]", "application/json"),  # an integer too long to parse
        (b'[{"event_time_ms": 1e999}]', "application/json"),
        (b"\x0a" + b"\xff" * 10 + b"\x01", "application/x-protobuf"),  # length beyond the end
        (b"\x0a\x02\x0a\x80", "application/x-protobuf"),  # nested truncated varint
    ]
    for _ in range(200):
        bodies.append((rng.randbytes(rng.randint(1, 300)), "application/x-protobuf"))
    for _ in range(200):  # a valid batch with a few bytes flipped, cut or inserted
        mutated = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(mutated))
            choice = rng.random()
            if choice < 0.5:
                mutated[at] = rng.randrange(256)
            elif choice < 0.75:
                del mutated[at:]
            else:
                mutated.insert(at, rng.randrange(256))
        bodies.append((bytes(mutated), "application/x-protobuf"))

    statuses: dict[int, int] = {}
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        for body, content_type in bodies:
            status = _post(client, body, content_type)
            statuses[status] = statuses.get(status, 0) + 1
        assert set(statuses) <= {202, 400, 413, 422}, statuses
        assert statuses.get(400, 0) > 100 and statuses.get(422, 0) > 0  # both paths exercised
        # still alive, still ready, and still doing its job
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json()["ready"] is True
        fresh = [credit_event(i, uuid.uuid4().hex[:6]) for i in range(3)]
        response = client.post(EVENTS_PATH, json=fresh)
        assert response.status_code == 202 and response.json()["accepted"] == 3
