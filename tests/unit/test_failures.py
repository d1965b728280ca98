"""The uniform failure handler: which failures are bad input (2), which an unavailable
dependency (1), and that anything else (a bug) keeps its traceback."""

from __future__ import annotations

import pytest

from services.common.failures import (
    EXIT_BAD_INPUT,
    EXIT_UNAVAILABLE,
    Types,
    classify,
    handled,
    one_line,
)
from services.common.kafka_admin import KafkaUnavailableError
from services.common.registry import ModelNotFoundError
from services.common.settings import SettingsError


class _SpecError(ValueError):
    pass


def _extra() -> tuple[Types, Types]:
    return (_SpecError,), ()


def test_known_failures_are_classified_and_bugs_are_not() -> None:
    assert classify(SettingsError("x")) == EXIT_BAD_INPUT
    assert classify(ModelNotFoundError("x")) == EXIT_BAD_INPUT
    assert classify(KafkaUnavailableError("x")) == EXIT_UNAVAILABLE
    assert classify(_SpecError("x")) is None  # a service's own type only when passed in
    assert classify(_SpecError("x"), _extra) == EXIT_BAD_INPUT
    assert classify(KeyError("x")) is None and classify(ValueError("x")) is None


def test_handled_prints_one_line_and_exits_with_the_code(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DRIFTLOOP_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_, handled(_extra, prefix="trainer: error"):
        raise _SpecError("deploy/models/m.yaml: line 4:\n  key 'gate' appears twice")
    assert exit_.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err == (
        "trainer: error: deploy/models/m.yaml: line 4:; key 'gate' appears twice\n"
    )
    with pytest.raises(ZeroDivisionError), handled(_extra):
        _ = 1 / 0  # a bug is not swallowed into one line


def test_debug_adds_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_DEBUG", "1")
    with pytest.raises(SystemExit), handled():
        raise KafkaUnavailableError("cannot reach Kafka at 127.0.0.1:1")
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("error: cannot reach Kafka at 127.0.0.1:1\n")
    assert one_line(ValueError("")) == "ValueError"
