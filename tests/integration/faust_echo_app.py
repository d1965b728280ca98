"""A faust worker used by test_faust_roundtrip: DataEvent in, PredictionLog out.

Run as `python -m faust -A tests.integration.faust_echo_app worker`; the test passes
ECHO_APP_ID / ECHO_IN_TOPIC / ECHO_OUT_TOPIC / ECHO_DATADIR and the broker
(DRIFTLOOP_KAFKA_BOOTSTRAP or DRIFTLOOP_HOME) through the environment, so every run uses
its own topics, group and data directory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator

import faust

from driftloop.v1 import events_pb2
from services.common.faust_codec import event_trace_context, protobuf_topic, record_headers
from services.common.kafka_security import faust_app_options
from services.common.settings import load_settings

settings = load_settings()
app = faust.App(
    os.environ.get("ECHO_APP_ID", "driftloop-faust-echo"),
    **faust_app_options(settings),  # brokers and credentials from the one factory
    store="memory://",
    # faust keeps a data directory (default: ./<app id>-data); never inside the repo.
    datadir=os.environ.get("ECHO_DATADIR", os.path.join(tempfile.gettempdir(), "faust-echo")),
    web_enabled=False,
    topic_replication_factor=1,
    topic_partitions=1,
    consumer_auto_offset_reset="earliest",  # records sent before the worker joined count too
)
source = protobuf_topic(app, os.environ.get("ECHO_IN_TOPIC", "echo.in"), events_pb2.DataEvent)
sink = protobuf_topic(app, os.environ.get("ECHO_OUT_TOPIC", "echo.out"), events_pb2.PredictionLog)


def transform(event: events_pb2.DataEvent) -> events_pb2.PredictionLog:
    """A stand-in model: the score is the sum of the numeric features."""
    return events_pb2.PredictionLog(
        request_id=event.event_id,
        time_ms=event.event_time_ms,
        model="faust-echo",
        variant=event.dataset,
        entity_key=event.entity_key,
        numeric=dict(event.numeric),
        categorical=dict(event.categorical),
        score=sum(event.numeric.values()),
    )


@app.agent(source)
async def echo(stream: faust.StreamT[events_pb2.DataEvent]) -> AsyncIterator[None]:
    async for event in stream.events():
        out = transform(event.value)
        # Keep the producer's trace: the output record's traceparent continues it.
        headers = record_headers(out, event_trace_context(event))
        await sink.send(key=event.key, value=out, headers=headers)
        yield None
