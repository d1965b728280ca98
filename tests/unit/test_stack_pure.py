"""Pure parts of the launcher and the migration runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.clickhouse import Migration, MigrationError, load_migrations
from services.stack.kafka_broker import server_properties
from services.stack.processes import listening_sockets, port_is_free
from services.stack.state import PartState, StackState, read_state, write_state


def test_server_properties_bind_loopback_only(tmp_path: Path) -> None:
    text = server_properties(9092, 9093, tmp_path)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["log.dirs"] == str(tmp_path)


def test_state_round_trip(tmp_path: Path) -> None:
    state = StackState(
        started_at_ms=5,
        settings={"redis_url": "redis://127.0.0.1:1/0"},
        parts={"redis": PartState(pid=42, ports={"redis": 1}, log="x")},
    )
    write_state(tmp_path, state)
    assert read_state(tmp_path) == state
    assert read_state(tmp_path / "nope") is None


def test_migration_statements_split_and_skip_comments() -> None:
    m = Migration(
        1,
        "x",
        "-- comment; here\nCREATE TABLE a (x UInt8) ENGINE = Log;\n\n"
        "CREATE TABLE b (y UInt8) ENGINE = Log;\n",
    )
    assert m.statements() == [
        "CREATE TABLE a (x UInt8) ENGINE = Log",
        "CREATE TABLE b (y UInt8) ENGINE = Log",
    ]
    assert m.checksum != Migration(1, "x", m.sql + " ").checksum


def test_repo_migrations_are_well_formed() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert migrations[0].version == 1


def test_badly_named_migration_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_snake_name\.sql"):
        load_migrations(tmp_path)


def test_port_check_and_listener_inspection() -> None:
    import os
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free(port)
        mine = listening_sockets([os.getpid()])
        assert (os.getpid(), "127.0.0.1", port) in mine
    assert port_is_free(port)


def test_stack_up_and_down_wait_for_one_another_on_a_file_lock(tmp_path: Path) -> None:
    import io

    from filelock import FileLock
    from rich.console import Console

    from services.stack import launcher
    from services.stack.config import StackConfig
    from services.stack.errors import StackError

    config = StackConfig(lock_timeout_s=0.2)
    console = Console(file=io.StringIO())
    with FileLock(tmp_path / "stack.lock"):  # another `up` in the middle of starting parts
        for command in (launcher.up, launcher.down):
            with pytest.raises(StackError, match="another `driftloop stack up/down` has held"):
                command(tmp_path, config, console)
    assert read_state(tmp_path) is None  # nothing was started or recorded meanwhile
    launcher.down(tmp_path, config, console)  # once released, it goes ahead
    assert "nothing to stop" in console.file.getvalue()  # type: ignore[attr-defined]
