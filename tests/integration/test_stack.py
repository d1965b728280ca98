"""The launcher against the real parts: up → status → down, loopback only, clear failures."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from services.common.kafka_admin import check_kafka
from services.common.settings import Settings
from services.stack.processes import is_alive, listening_sockets, port_is_free, process_tree
from services.stack.state import read_state
from tests.conftest import run_cli

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _pids(home: Path) -> dict[str, int]:
    state = read_state(home)
    assert state is not None
    return {name: p.pid for name, p in state.parts.items() if p.pid is not None}


def test_session_stack_status_checks_every_part(stack: Settings, stack_home: Path) -> None:
    proc = run_cli("stack", "status", home=stack_home)
    assert proc.stdout.count(" up ") >= 3, proc.stdout
    for part in ("kafka", "redis", "clickhouse"):
        assert part in proc.stdout
    assert "migrations" in proc.stdout
    info = asyncio.run(check_kafka(stack))
    missing = set(stack.topics.all()) - set(info.topics)
    assert not missing, f"the launcher did not create {missing}"


def test_every_stack_listener_is_on_loopback(stack: Settings, stack_home: Path) -> None:
    pids = _pids(stack_home)
    assert set(pids) == {"kafka", "redis"}
    tree = [p for pid in pids.values() for p in process_tree(pid)]
    listeners = listening_sockets(tree)
    assert listeners, "the stack's processes should be listening somewhere"
    ports = {port for _, _, port in listeners}
    state = read_state(stack_home)
    assert state is not None
    assert state.parts["kafka"].ports["broker"] in ports
    assert state.parts["redis"].ports["redis"] in ports
    exposed = [(pid, addr, port) for pid, addr, port in listeners if addr not in LOOPBACK]
    assert not exposed, f"non-loopback listeners: {exposed}"


def test_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    home = tmp_path / "own-stack"
    run_cli("stack", "up", "--partitions", "2", home=home)
    pids = _pids(home)
    state = read_state(home)
    assert state is not None
    ports = [p for part in state.parts.values() for p in part.ports.values()]
    tree = [p for pid in pids.values() for p in process_tree(pid)]
    assert all(is_alive(p) for p in tree)
    assert run_cli("stack", "status", home=home).returncode == 0
    logs = run_cli("stack", "logs", "kafka", "-n", "200", home=home).stdout
    assert "Kafka Server started" in logs

    run_cli("stack", "down", home=home)
    assert not [p for p in tree if is_alive(p)], "down left processes behind"
    assert all(port_is_free(p) for p in ports)
    assert read_state(home) is None
    status = run_cli("stack", "status", home=home, check=False)
    assert status.returncode != 0
    assert "driftloop stack up" in status.stderr


def test_taken_port_gives_specific_error_and_starts_nothing(tmp_path: Path) -> None:
    home = tmp_path / "port-clash"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = run_cli(
            "stack", "up", home=home, check=False, env={"DRIFTLOOP_STACK_KAFKA_PORT": str(port)}
        )
    assert proc.returncode == 1
    err = " ".join(proc.stderr.split())
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert "DRIFTLOOP_STACK_KAFKA_PORT" in err
    assert "Traceback" not in proc.stderr
    state = read_state(home)
    assert state is None or not _pids(home)


def test_status_reports_a_dead_part(tmp_path: Path) -> None:
    home = tmp_path / "half-dead"
    run_cli("stack", "up", home=home)
    try:
        from services.stack.processes import stop_process

        stop_process(_pids(home)["redis"], timeout_s=10)
        proc = run_cli("stack", "status", home=home, check=False)
        assert proc.returncode == 1
        assert "down" in proc.stdout and "cannot reach Redis" in " ".join(proc.stdout.split())
    finally:
        run_cli("stack", "down", home=home, check=False)


@pytest.mark.parametrize("bad", ["not-a-dsn", "mysql://x"])
def test_bad_store_dsn_is_a_clear_error(bad: str, tmp_path: Path) -> None:
    proc = run_cli("store", "ping", "--dsn", bad, home=tmp_path, check=False)
    assert proc.returncode == 1
    assert "unsupported ClickHouse DSN" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_store_state_file_is_read_by_settings(stack: Settings, stack_home: Path) -> None:
    raw = json.loads((stack_home / "stack.json").read_text())
    assert stack.kafka_bootstrap == raw["settings"]["kafka_bootstrap"]
    assert stack.redis_url == raw["settings"]["redis_url"]
    assert stack.clickhouse_dsn == f"chdb://{stack_home / 'clickhouse'}"


def test_missing_java_is_a_specific_error(tmp_path: Path) -> None:
    proc = run_cli("stack", "up", home=tmp_path / "h", check=False, env={"PATH": str(tmp_path)})
    assert proc.returncode == 1
    err = " ".join(proc.stderr.split())
    assert "java is missing" in err and "JDK 17" in err
    assert "Traceback" not in proc.stderr


def test_missing_maven_is_a_specific_error(tmp_path: Path) -> None:
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = shutil.which("java")
    assert java is not None
    (bin_dir / "java").symlink_to(java)
    # an empty jar cache forces a Maven resolve, and mvn is not on PATH
    proc = run_cli(
        "stack",
        "up",
        home=tmp_path / "h",
        check=False,
        env={"PATH": str(bin_dir), "DRIFTLOOP_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 1
    err = " ".join(proc.stderr.split())
    assert "mvn is missing" in err and "Maven Central" in err
    assert "Traceback" not in proc.stderr
