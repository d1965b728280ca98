"""Structured logging: one JSON object per line with service, level, event and trace ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from services.common.logging import configure_logging, get_logger
from services.common.settings import load_settings
from services.common.telemetry import build_telemetry


@pytest.fixture()
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    libraries = {name: logging.getLogger(name).level for name in ("aiokafka", "kafka")}
    yield buffer
    # Leave the process's logging as we found it for the other tests.
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, library_level in libraries.items():
        logging.getLogger(name).setLevel(library_level)
    structlog.reset_defaults()


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_line_has_service_level_event_and_fields(stream: io.StringIO) -> None:
    configure_logging(load_settings(service_name="ingest", log_level="INFO"), stream=stream)
    get_logger("ingest.validation", dataset="loans").info("batch accepted", rows=512)
    get_logger("ingest.validation").debug("not at INFO")
    [line] = _lines(stream)
    assert line["service"] == "ingest" and line["level"] == "info"
    assert line["event"] == "batch accepted" and line["logger"] == "ingest.validation"
    assert line["rows"] == 512 and line["dataset"] == "loans"
    assert line["ts"].endswith("Z")
    assert "trace_id" not in line and "span_id" not in line  # no span is active


def test_trace_and_span_id_of_the_active_span(stream: io.StringIO) -> None:
    settings = load_settings(service_name="router", telemetry_exporter="memory")
    configure_logging(settings, stream=stream)
    telemetry = build_telemetry(settings)
    with telemetry.tracer("test").start_as_current_span("predict") as span:
        get_logger("router").warning("variant failed, falling back", variant="canary")
        logging.getLogger("aiokafka.producer").error("stdlib line inside the span")
    ctx = span.get_span_context()
    structured, stdlib = _lines(stream)
    for line in (structured, stdlib):
        assert line["trace_id"] == f"{ctx.trace_id:032x}"
        assert line["span_id"] == f"{ctx.span_id:016x}"
        assert line["service"] == "router"
    assert structured["level"] == "warning" and structured["variant"] == "canary"
    # Records of libraries that log through stdlib logging come out in the same format.
    assert stdlib["level"] == "error" and stdlib["logger"] == "aiokafka.producer"
    assert stdlib["event"] == "stdlib line inside the span"


def test_exception_is_a_traceback_string(stream: io.StringIO) -> None:
    configure_logging(load_settings(service_name="trainer"), stream=stream)
    try:
        raise ValueError("bad gate input")
    except ValueError:
        get_logger("trainer").exception("gate failed")
    [line] = _lines(stream)
    assert line["level"] == "error" and "ValueError: bad gate input" in line["exception"]


def test_reconfiguring_replaces_the_handler_and_console_format(stream: io.StringIO) -> None:
    configure_logging(load_settings(service_name="monitor"), stream=stream)
    configure_logging(load_settings(service_name="monitor", log_format="console"), stream=stream)
    get_logger("monitor").info("window closed", psi=0.31)
    [text] = stream.getvalue().splitlines()  # one handler: the line is written once
    assert "window closed" in text and "psi=0.31" in text and "service=monitor" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
