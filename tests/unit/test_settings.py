from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.settings import SettingsError, load_settings


def _write_state(home: Path, **settings: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "stack.json").write_text(json.dumps({"version": 1, "settings": settings}))


def test_defaults_live_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLOOP_HOME", raising=False)
    s = load_settings(home=tmp_path)
    assert s.clickhouse_dsn == f"chdb://{tmp_path}/clickhouse"
    assert s.artifact_root == f"file://{tmp_path}/artifacts"
    assert s.topics.data_events == "data.events"
    assert len(s.topics.all()) == 8


def test_state_file_is_read_and_env_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_state(tmp_path, kafka_bootstrap="127.0.0.1:1111", redis_url="redis://127.0.0.1:2/0")
    monkeypatch.setenv("DRIFTLOOP_HOME", str(tmp_path))
    s = load_settings()
    assert s.kafka_bootstrap == "127.0.0.1:1111"
    assert s.redis_url == "redis://127.0.0.1:2/0"
    monkeypatch.setenv("DRIFTLOOP_KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    assert load_settings().kafka_bootstrap == "10.0.0.1:9092"
    assert load_settings(kafka_bootstrap="h:1").kafka_bootstrap == "h:1"


def test_nested_topic_names_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRIFTLOOP_TOPICS__DRIFT_EVENTS", "team-a.drift")
    s = load_settings(home=tmp_path)
    assert s.topics.drift_events == "team-a.drift"
    assert s.topics.data_events == "data.events"


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("DRIFTLOOP_KAFKA_BOOTSTRAP", "no-port", "DRIFTLOOP_KAFKA_BOOTSTRAP"),
        ("DRIFTLOOP_REDIS_URL", "http://x", "DRIFTLOOP_REDIS_URL"),
        ("DRIFTLOOP_CLICKHOUSE_DSN", "mysql://x", "DRIFTLOOP_CLICKHOUSE_DSN"),
        ("DRIFTLOOP_TOPIC_PARTITIONS", "0", "DRIFTLOOP_TOPIC_PARTITIONS"),
        ("DRIFTLOOP_LOG_LEVEL", "LOUD", "DRIFTLOOP_LOG_LEVEL"),
    ],
)
def test_bad_setting_names_the_variable(
    env: str, value: str, needle: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings(home=tmp_path)
    assert needle in str(info.value)


def test_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "stack.json").write_text("{not json")
    with pytest.raises(SettingsError, match="driftloop stack down"):
        load_settings(home=tmp_path)
