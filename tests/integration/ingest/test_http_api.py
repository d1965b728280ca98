"""The ingest HTTP API against the real broker, and the `driftloop datasets` CLI.

The app runs in-process with its lifespan (so it owns a real producer); every test that
publishes gets its own `data.events` topic through the app's settings dependency. The
request checks (every 4xx, the OpenAPI document) need no broker: tests/unit/ingest/
test_http_requests.py.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from aiokafka import TopicPartition

from driftloop.v1.events_pb2 import DataEvent, DataEventBatch
from services.common.artifacts import ArtifactStore
from services.common.datasets.catalog import DatasetCatalog
from services.common.datasets.manifest import (
    OffsetRange,
    VersionManifest,
    build_manifest,
    version_paths,
)
from services.common.datasets.profile import assess_against_reference, profile_table
from services.common.datasets.schema import DatasetSchema, load_schemas
from services.common.kafka import Envelope, ProtobufConsumer, create_consumer, ensure_topics
from services.common.logging import configure_logging
from services.common.settings import Settings, TopicNames, load_settings
from services.ingest.config import IngestSettings
from services.ingest.http.api import app_catalog, app_settings, create_http_app
from services.ingest.http.models import ErrorResponse
from services.ingest.validation import validate_batch
from tests.conftest import run_cli

PARTITIONS = 3
MAX_BODY_BYTES = 64 * 1024
MAX_EVENTS = 50


def _unique(prefix: str) -> str:
    return f"test.{prefix}.{uuid.uuid4().hex[:10]}"


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


@dataclass
class Api:
    client: httpx.AsyncClient
    app: Any
    settings: Settings
    counter: ProtobufConsumer  # assigned to the module topic, to count what was published

    async def published(self) -> int:
        tps = [TopicPartition(self.settings.topics.data_events, p) for p in range(PARTITIONS)]
        ends = await self.counter.raw.end_offsets(tps)
        return sum(ends.values())


@pytest.fixture(scope="module")
def artifact_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
async def api(stack: Settings, artifact_root: Path) -> AsyncIterator[Api]:
    topic = _unique("http")
    settings = load_settings(
        home=stack.home,
        topics=TopicNames(data_events=topic),
        artifact_root=f"file://{artifact_root}",
    )
    await ensure_topics(settings, [topic], partitions=PARTITIONS)
    ingest = IngestSettings(http_max_body_bytes=MAX_BODY_BYTES, http_max_events=MAX_EVENTS)
    configure_logging(settings)  # as the service does: JSON lines, tracebacks as text
    app = create_http_app(settings, ingest)
    counter = create_consumer(settings, group_id=None)
    async with counter, app.router.lifespan_context(app):
        counter.raw.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield Api(client, app, settings, counter)


@pytest.fixture()
async def own_topic(api: Api) -> AsyncIterator[Settings]:
    """A fresh data.events topic for this test, injected through the settings dependency."""
    topic = _unique("http")
    settings = api.settings.model_copy(update={"topics": TopicNames(data_events=topic)})
    await ensure_topics(settings, [topic], partitions=PARTITIONS)
    api.app.dependency_overrides[app_settings] = lambda: settings
    yield settings
    api.app.dependency_overrides.pop(app_settings, None)


async def consume(settings: Settings, n: int, timeout_s: float = 30) -> list[Envelope]:
    topic = settings.topics.data_events
    got: list[Envelope] = []
    async with create_consumer(settings, topic, group_id=None) as consumer:
        deadline = time.monotonic() + timeout_s
        while len(got) < n:
            assert time.monotonic() < deadline, f"only {len(got)} of {n} records arrived"
            batch = await consumer.getmany(timeout_ms=500)
            assert not batch.failures
            got += batch.envelopes
        extra = await consumer.getmany(timeout_ms=300)
        assert not extra.envelopes, "more records than the API said it published"
    return got


async def test_json_events_are_published_keyed_with_headers(api: Api, own_topic: Settings) -> None:
    run = uuid.uuid4().hex[:6]
    events = [credit_event(i, run) for i in range(20)]
    response = await api.client.post("/v1/datasets/credit/events", json=events)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 20 and body["topic"] == own_topic.topics.data_events
    assert body["event_ids"] == [e["event_id"] for e in events]

    records = await consume(own_topic, 20)
    by_id = {r.message.event_id: r for r in records}
    assert set(by_id) == set(body["event_ids"])
    for sent in events:
        record = by_id[sent["event_id"]]
        message = record.message
        assert record.key_str == sent["entity_key"]
        assert record.headers["content-type"] == b"application/x-protobuf"
        assert record.headers["schema"] == b"driftloop.v1.DataEvent"
        assert record.headers["traceparent"].startswith(b"00-")  # the request's trace
        assert message.dataset == "credit" and message.source == "tests"
        assert message.event_time_ms == sent["event_time_ms"]
        assert dict(message.numeric) == pytest.approx(sent["numeric"])
        assert dict(message.categorical) == sent["categorical"]
        assert message.HasField("label") and message.label == sent["label"]
    # one entity key -> one partition
    partitions: dict[str | None, set[int]] = {r.key_str: set() for r in records}
    for r in records:
        partitions[r.key_str].add(r.partition)
    assert all(len(p) == 1 for p in partitions.values())


async def test_protobuf_batch_is_published(api: Api, own_topic: Settings) -> None:
    run = uuid.uuid4().hex[:6]
    events = [to_proto(credit_event(i, run, source="")) for i in range(5)]
    events[0].ClearField("label")
    events[1].dataset = "credit"  # naming the path's dataset is allowed
    body = DataEventBatch(events=events).SerializeToString()
    response = await api.client.post(
        "/v1/datasets/credit/events",
        content=body,
        headers={"content-type": "application/x-protobuf"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["event_ids"] == [e.event_id for e in events]
    records = {r.message.event_id: r.message for r in await consume(own_topic, 5)}
    assert not records[events[0].event_id].HasField("label")
    assert all(m.dataset == "credit" and m.source == "ingest-http" for m in records.values())


# -- the catalog: versions written as the pipeline writes them --------------------------


def _seal(
    store: ArtifactStore,
    schema: DatasetSchema,
    events: list[dict[str, Any]],
    created_at_ms: int,
    parent: VersionManifest | None = None,
) -> VersionManifest:
    protos = [to_proto(e, dataset=schema.name) for e in events]
    result = validate_batch(protos, {schema.name: schema}, now_ms())
    assert result.rejected_count == 0, result.rejected[:2]
    table = result.accepted[schema.name].table
    manifest = build_manifest(
        schema,
        table,
        parent_version_id=parent.version_id if parent else None,
        profile=profile_table(table),
        assessment=assess_against_reference(parent.profile() if parent else None, table),
        source_offsets=[
            OffsetRange(
                topic="data.events", partition=0, first_offset=0, last_offset=len(events) - 1
            )
        ],
        created_at_ms=created_at_ms,
    )
    paths = version_paths(schema.name, manifest.version_id)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    store.put_bytes(paths.data, buffer.getvalue())
    store.put_bytes(paths.manifest, manifest.canonical_json().encode())
    return manifest


@dataclass
class Stored:
    base: VersionManifest
    shifted: VersionManifest
    ambiguous_prefix: str  # the first hex digit of two or more stored versions


def _population(n: int, start: int, age_shift: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(start)
    events = []
    for i in range(start, start + n):
        event = credit_event(i, "stored")
        event["numeric"]["age"] = int(rng.integers(25, 60)) + age_shift
        event["numeric"]["annual_income"] = float(rng.normal(50_000, 8_000))
        events.append(event)
    return events


@pytest.fixture(scope="module")
def stored(api: Api, artifact_root: Path) -> Stored:
    store = ArtifactStore(f"file://{artifact_root}")
    schema = load_schemas(IngestSettings().schemas_dir)["credit"]
    t0 = 1_700_000_000_000
    base = _seal(store, schema, _population(400, 0), t0)
    shifted = _seal(store, schema, _population(300, 1000, age_shift=30), t0 + 60_000, parent=base)
    ids = [base.version_id, shifted.version_id]
    i = 0
    while len({v[0] for v in ids}) == len(ids):  # pigeonhole: at most 15 more
        small = _seal(store, schema, _population(3, 10_000 + 10 * i), t0 - 1000 * (i + 1))
        ids.append(small.version_id)
        i += 1
    first_digits = [v[0] for v in ids]
    prefix = next(d for d in first_digits if first_digits.count(d) > 1)
    return Stored(base, shifted, prefix)


async def test_get_endpoints_list_and_show_stored_versions(api: Api, stored: Stored) -> None:
    datasets = (await api.client.get("/v1/datasets")).json()
    credit = next(d for d in datasets if d["name"] == "credit")
    count = len(DatasetCatalog(ArtifactStore(api.settings.artifact_root)).versions("credit"))
    assert credit["declared"] and credit["version_count"] == count >= 2
    assert credit["latest_version_id"] == stored.shifted.version_id  # created last
    assert credit["suspect_count"] == 1  # the shifted one

    versions = (await api.client.get("/v1/datasets/credit/versions")).json()
    created = [v["created_at_ms"] for v in versions]
    assert created == sorted(created) and len(versions) == count
    last = versions[-1]
    assert last["version_id"] == stored.shifted.version_id and last["row_count"] == 300
    assert last["status"] == "suspect" and last["parent_version_id"] == stored.base.version_id

    full = await api.client.get(f"/v1/datasets/credit/versions/{stored.base.version_id}")
    assert full.status_code == 200
    assert VersionManifest.model_validate(full.json()) == stored.base
    by_prefix = await api.client.get(f"/v1/datasets/credit/versions/{stored.base.version_id[:8]}")
    assert by_prefix.json()["version_id"] == stored.base.version_id

    diff = await api.client.get(
        "/v1/datasets/credit/diff",
        params={"a": stored.base.version_id[:10], "b": stored.shifted.version_id[:10]},
    )
    assert diff.status_code == 200
    features = {f["name"]: f for f in diff.json()["features"]}
    assert diff.json()["row_delta"] == -100
    assert features["age"]["psi"] > 1.0 and features["annual_income"]["psi"] < 0.2


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/datasets/nope/versions", 404, "unknown_dataset"),
        ("/v1/datasets/credit/versions/" + "0" * 31 + "g", 404, "unknown_version"),
        ("/v1/datasets/credit/versions/{ambiguous}", 409, "ambiguous"),
        ("/v1/datasets/credit/diff?a=0", 422, "missing_field"),
        ("/v1/nowhere", 404, "not_found"),
    ],
)
async def test_get_errors_are_json(
    api: Api, stored: Stored, path: str, status: int, code: str
) -> None:
    response = await api.client.get(path.format(ambiguous=stored.ambiguous_prefix))
    assert response.status_code == status, response.text
    assert ErrorResponse.model_validate(response.json()).errors[0].code == code


async def test_health_readiness_and_internal_errors(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True

    def broken() -> DatasetCatalog:
        raise RuntimeError("the store exploded")

    api.app.dependency_overrides[app_catalog] = broken
    try:
        response = await api.client.get("/v1/datasets")
    finally:
        api.app.dependency_overrides.pop(app_catalog)
    assert response.status_code == 500
    assert response.json()["errors"][0]["code"] == "internal"
    assert "exploded" not in response.text  # internals stay in the log
    assert (await api.client.get("/healthz")).status_code == 200


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_env(artifact_root: Path) -> Iterator[dict[str, str]]:
    yield {"DRIFTLOOP_ARTIFACT_ROOT": f"file://{artifact_root}"}


def test_cli_lists_shows_and_diffs_versions(
    stack: Settings, stored: Stored, cli_env: dict[str, str]
) -> None:
    listing = run_cli("datasets", "list", home=stack.home, env=cli_env).stdout
    assert "credit" in listing and stored.shifted.version_id in listing

    versions = run_cli("datasets", "list", "credit", home=stack.home, env=cli_env).stdout
    assert stored.base.version_id in versions and stored.shifted.version_id in versions
    assert versions.index(stored.base.version_id) < versions.index(stored.shifted.version_id)
    assert "suspect" in versions and "300" in versions and "400" in versions

    shown = run_cli("datasets", "show", stored.base.version_id[:8], home=stack.home, env=cli_env)
    age = stored.base.profile().features["age"]
    assert stored.base.version_id in shown.stdout and "rows          400" in shown.stdout
    age_line = next(line for line in shown.stdout.splitlines() if "│ age " in line)
    assert f"{age.mean:.4g}" in age_line and f"{age.max:.4g}" in age_line

    a, b = stored.base.version_id[:9], stored.shifted.version_id[:9]
    diff = run_cli("datasets", "diff", a, b, home=stack.home, env=cli_env).stdout
    assert "400" in diff and "300" in diff and "-100" in diff
    age_row = next(line for line in diff.splitlines() if "│ age " in line)
    cells = [c.strip() for c in age_row.split("│") if c.strip()]
    assert float(cells[-1]) > 1.0  # PSI of the shifted age

    as_json = run_cli("datasets", "diff", a, b, "--json", home=stack.home, env=cli_env).stdout
    assert json.loads(as_json)["row_delta"] == -100


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "{ambiguous}"), "is ambiguous"),
        (("show", "0" * 32), "no version matches"),
        (("show", "not-hex"), "is not a version id"),
        (("diff", "{ambiguous}", "0"), "is ambiguous"),
        (("list", "nope"), "no dataset named 'nope'"),
    ],
)
def test_cli_unknown_or_ambiguous_ids_are_one_clear_error(
    stack: Settings, stored: Stored, cli_env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    argv = [a.format(ambiguous=stored.ambiguous_prefix) for a in args]
    proc = run_cli("datasets", *argv, home=stack.home, env=cli_env, check=False)
    assert proc.returncode == 1, proc
    assert message in proc.stderr and "error:" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
