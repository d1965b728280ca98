"""`driftloop stack up | status | down | logs`: the local default stack, for real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from rich.console import Console

from services.common.kafka_admin import KafkaUnavailableError, check_kafka, ensure_topics
from services.common.kafka_security import client_options
from services.common.kafka_stuck import RedisStuckLedger, StuckPartition
from services.common.redis_client import RedisUnavailableError, check_redis, sync_redis
from services.common.settings import Settings, load_settings, masked_url
from services.stack import kafka_broker, kafka_secure, redis_server, store
from services.stack.config import StackConfig
from services.stack.errors import PortInUseError, StackError, StackNotRunningError
from services.stack.processes import free_port, is_alive, port_is_free, stop_process, tail
from services.stack.progress import StepReporter
from services.stack.state import PartState, StackState, read_state, remove_state, write_state

__all__ = ["PartStatus", "down", "log_paths", "status", "up"]

PARTS = ("kafka", "redis", "clickhouse")
_SECURITY_KEYS = (
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password_file",
    "kafka_ssl_cafile",
)


@dataclass
class PartStatus:
    part: str
    ok: bool
    address: str
    detail: str


def _pick_port(configured: int, previous: int | None, part: str, setting: str) -> int:
    if configured:
        if not port_is_free(configured):
            raise PortInUseError(part, configured, setting)
        return configured
    if previous and port_is_free(previous):
        return previous  # keep addresses stable across down/up
    return free_port()


def _check_configured_ports(config: StackConfig) -> None:
    """Fail before starting anything when an explicitly configured port is taken."""
    for port, part, setting in (
        (config.kafka_port, "the Kafka broker", "DRIFTLOOP_STACK_KAFKA_PORT"),
        (
            config.kafka_controller_port,
            "the Kafka controller",
            "DRIFTLOOP_STACK_KAFKA_CONTROLLER_PORT",
        ),
        (config.redis_port, "redis-server", "DRIFTLOOP_STACK_REDIS_PORT"),
    ):
        if port and not port_is_free(port):
            raise PortInUseError(part, port, setting)


def _running(state: StackState | None) -> bool:
    return bool(state) and any(
        p.pid is not None and is_alive(p.pid)
        for p in state.parts.values()  # type: ignore[union-attr]
    )


@contextmanager
def _exclusive(home: Path, config: StackConfig, console: Console) -> Iterator[None]:
    """One `up` or `down` per home at a time: checking whether a stack runs and starting
    one must not interleave with another `up` (two stacks, the last state write wins)."""
    home.mkdir(parents=True, exist_ok=True)
    lock = FileLock(home / "stack.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        console.print(f"[yellow]waiting for another `driftloop stack` command in {home}[/yellow]")
        try:
            lock.acquire(timeout=config.lock_timeout_s)
        except Timeout:
            raise StackError(
                f"another `driftloop stack up/down` has held {home / 'stack.lock'} for "
                f"{config.lock_timeout_s:g} s; wait for it or stop it"
            ) from None
    try:
        yield
    finally:
        lock.release()


def up(
    home: Path,
    config: StackConfig,
    console: Console,
    partitions: int | None = None,
    *,
    secure: bool = False,
) -> Settings:
    """Start every part, wait until each is ready, record them in the state file.
    `secure`: Kafka listens on SASL_SSL only (SCRAM users, generated certificates;
    `kafka_secure`)."""
    with _exclusive(home, config, console):
        return _up(home, config, console, partitions, secure)


def _up(
    home: Path, config: StackConfig, console: Console, partitions: int | None, secure: bool
) -> Settings:
    previous = read_state(home)
    if _running(previous):
        console.print(f"[yellow]the stack in {home} is already running[/yellow]")
        return load_settings(home=home)
    _check_configured_ports(config)
    logs = home / "logs"
    state = StackState(started_at_ms=int(time.time() * 1000))
    old = previous.parts if previous else {}
    reporter = StepReporter(console)
    try:
        with reporter.live():
            _up_kafka(home, config, reporter, state, old.get("kafka"), logs, secure)
            _up_redis(home, config, reporter, state, old.get("redis"), logs)
            write_state(home, state)  # so `down` can clean up even if a later step fails
            settings = (
                load_settings(home=home, topic_partitions=partitions)
                if partitions
                else load_settings(home=home)
            )
            with reporter.step("Kafka topics") as out:
                created = len(asyncio.run(ensure_topics(settings, settings.topics.all())))
                out.append(
                    f"{len(settings.topics.all())} topics ({created} new), "
                    f"{settings.topic_partitions} partitions each"
                )
            with reporter.step("ClickHouse engine store (chDB): migrations") as out:
                dsn = f"chdb://{home / 'clickhouse'}"
                result = store.migrate(dsn)
                out.append(f"{dsn}, {len(result['applied'])} applied now")  # type: ignore[arg-type]
                state.settings["clickhouse_dsn"] = dsn
                state.parts["clickhouse"] = PartState(detail={"dsn": dsn})
            artifacts = home / "artifacts"
            artifacts.mkdir(parents=True, exist_ok=True)
            state.settings["artifact_root"] = f"file://{artifacts}"
            write_state(home, state)
    except BaseException:
        _stop_parts(state, config.stop_timeout_s)
        write_state(home, state)
        raise
    return load_settings(home=home)


def _up_kafka(
    home: Path,
    config: StackConfig,
    reporter: StepReporter,
    state: StackState,
    old: PartState | None,
    logs: Path,
    secure: bool = False,
) -> None:
    with reporter.step("Kafka broker jars (Maven Central, cached)") as out:
        kafka_broker.check_java()
        libs = kafka_broker.fetch_jars(config)
        out.append(f"Kafka {config.kafka_version}")
    with reporter.step("Kafka broker (KRaft)") as out:
        prev = old.ports if old else {}
        port = _pick_port(
            config.kafka_port, prev.get("broker"), "the Kafka broker", "DRIFTLOOP_STACK_KAFKA_PORT"
        )
        cport = _pick_port(
            config.kafka_controller_port,
            prev.get("controller"),
            "the Kafka controller",
            "DRIFTLOOP_STACK_KAFKA_CONTROLLER_PORT",
        )
        if cport == port:
            cport = free_port()
        # A secure broker has its own log directory: its SCRAM users are written when
        # the storage is formatted.
        kdir = home / ("kafka-secure" if secure else "kafka")
        kdir.mkdir(parents=True, exist_ok=True)
        properties = kdir / "server.properties"
        overrides, scram, client = None, None, {}
        if secure:
            tls = kafka_secure.prepare(kdir / "tls")
            overrides = kafka_secure.secure_properties(port, cport, tls)
            scram = kafka_secure.scram_arguments(tls)
            client = kafka_secure.client_settings(tls)
        properties.write_text(kafka_broker.server_properties(port, cport, kdir / "data", overrides))
        properties.chmod(0o600)  # holds the keystore password in secure mode
        kafka_broker.format_storage(libs, properties, kdir / "data", scram)
        log = logs / "kafka.log"
        offset = log.stat().st_size if log.is_file() else 0
        pid = kafka_broker.start(libs, properties, log, kdir, config.kafka_heap_mb)
        bootstrap = f"127.0.0.1:{port}"
        state.parts["kafka"] = PartState(
            pid=pid, ports={"broker": port, "controller": cport}, log=str(log)
        )
        state.settings["kafka_bootstrap"] = bootstrap
        for key in _SECURITY_KEYS:  # a plain restart after a secure one
            state.settings.pop(key, None)
        state.settings.update(client)
        options = client_options(load_settings(**client)) if secure else {}
        kafka_broker.wait_ready(pid, bootstrap, log, offset, config.ready_timeout_s, options)
        out.append(f"SASL_SSL://{bootstrap} (SCRAM-SHA-512)" if secure else bootstrap)


def _up_redis(
    home: Path,
    config: StackConfig,
    reporter: StepReporter,
    state: StackState,
    old: PartState | None,
    logs: Path,
) -> None:
    with reporter.step("redis-server") as out:
        port = _pick_port(
            config.redis_port,
            (old.ports if old else {}).get("redis"),
            "redis-server",
            "DRIFTLOOP_STACK_REDIS_PORT",
        )
        log = logs / "redis.log"
        pid = redis_server.start(port, home / "redis", log)
        url = f"redis://127.0.0.1:{port}/0"
        state.parts["redis"] = PartState(pid=pid, ports={"redis": port}, log=str(log))
        state.settings["redis_url"] = url
        redis_server.wait_ready(pid, url, log, config.ready_timeout_s)
        out.append(url)


def _stop_parts(state: StackState, timeout_s: float) -> list[str]:
    """Stop every started part (reverse order); returns the parts that would not die."""
    stuck = []
    for name in reversed(list(state.parts)):
        part = state.parts[name]
        if part.pid is not None:
            if stop_process(part.pid, timeout_s):
                part.pid = None
            else:
                stuck.append(f"{name} (pid {part.pid})")
    return stuck


def down(home: Path, config: StackConfig, console: Console) -> None:
    with _exclusive(home, config, console):
        _down(home, config, console)


def _down(home: Path, config: StackConfig, console: Console) -> None:
    state = read_state(home)
    if state is None:
        console.print(f"no stack recorded in {home}: nothing to stop")
        return
    reporter = StepReporter(console)
    with reporter.live(), reporter.step("stopping the local stack") as out:
        stuck = _stop_parts(state, config.stop_timeout_s)
        if stuck:
            write_state(home, state)
            raise StackError(f"could not stop: {', '.join(stuck)}; kill them by hand")
        remove_state(home)
        out.append("Kafka, redis-server stopped; data kept in " + str(home))


def status(home: Path) -> list[PartStatus]:
    """Check each part for real: a metadata request, a PING, a query."""
    state = read_state(home)
    if state is None:
        raise StackNotRunningError(
            f"no stack recorded in {home}; start it with `driftloop stack up`"
        )
    settings = load_settings(home=home)
    results: list[PartStatus] = []
    redis_shown, ch_shown = masked_url(settings.redis_url), masked_url(settings.clickhouse_dsn)
    try:
        info = asyncio.run(check_kafka(settings, timeout_s=15))
        detail = f"{len(info.brokers)} broker(s), {len(info.topics)} topics"
        results.append(PartStatus("kafka", True, settings.kafka_bootstrap, detail))
    except KafkaUnavailableError as exc:
        results.append(PartStatus("kafka", False, settings.kafka_bootstrap, str(exc)))
    try:
        rtt_ms = check_redis(settings)
        results.append(PartStatus("redis", True, redis_shown, f"PING {rtt_ms:.1f} ms"))
    except RedisUnavailableError as exc:
        results.append(PartStatus("redis", False, redis_shown, str(exc)))
    else:
        stuck = _stuck_partitions(settings)
        if stuck:  # a consumer group cannot read a partition: say which, and how to resume
            results.append(
                PartStatus(
                    "stuck partitions",
                    False,
                    redis_shown,
                    "; ".join(s.describe() for s in stuck),
                )
            )
    try:
        ch = store.ping(settings.clickhouse_dsn)
        results.append(
            PartStatus(
                "clickhouse",
                True,
                ch_shown,
                f"ClickHouse {ch['version']}, {ch['tables']} tables, {ch['migrations']} migrations",
            )
        )
    except StackError as exc:
        results.append(PartStatus("clickhouse", False, ch_shown, str(exc)))
    return results


def _stuck_partitions(settings: Settings) -> list[StuckPartition]:
    client = sync_redis(settings)
    try:
        return RedisStuckLedger(client).all()
    finally:
        client.close()


def log_paths(home: Path) -> dict[str, Path]:
    return {name: home / "logs" / f"{name}.log" for name in ("kafka", "redis")}


def show_logs(home: Path, part: str, lines: int) -> str:
    paths = log_paths(home)
    chosen = paths if part == "all" else {part: paths[part]}
    return "\n".join(f"==> {p} <==\n{tail(p, lines)}" for p in chosen.values())
