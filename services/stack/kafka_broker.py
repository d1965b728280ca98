"""A real Apache Kafka broker (KRaft, single node) from Maven Central jars, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from services.common.protogen import REPO_ROOT
from services.stack.config import StackConfig
from services.stack.errors import (
    BrokerExitedError,
    ReadinessTimeoutError,
    StackError,
    ToolMissingError,
)
from services.stack.processes import is_alive, start_detached, tail

__all__ = ["broker_command", "fetch_jars", "format_storage", "server_properties", "wait_ready"]

POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J_CONFIG = REPO_ROOT / "deploy" / "kafka" / "log4j2.yaml"
_READY_LINE = "Kafka Server started"


def _require(tool: str, purpose: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissingError(tool, purpose, hint)
    return path


def check_java() -> str:
    java = _require(
        "java",
        "to run the Kafka broker (Java 17 or newer)",
        "Install a JDK 17+ (e.g. `apt-get install openjdk-17-jre-headless`).",
    )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', out)
    if match and int(match[1]) < 17:
        raise StackError(f"Kafka 4 needs Java 17 or newer; `java -version` says: {out.strip()}")
    return java


def libs_dir(config: StackConfig) -> Path:
    pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return config.cache_dir / f"kafka-{config.kafka_version}-{pom_hash}" / "libs"


def fetch_jars(config: StackConfig) -> Path:
    """Resolve the broker's jars with Maven into the cache (once per version and pom)."""
    libs = libs_dir(config)
    marker = libs.parent / ".complete"
    if marker.is_file():
        return libs
    mvn = _require(
        "mvn",
        "to fetch the Kafka broker jars from Maven Central",
        "Install Maven (`apt-get install maven`) — scripts/bootstrap.sh expects it on PATH.",
    )
    if libs.exists():
        shutil.rmtree(libs)
    libs.mkdir(parents=True)
    proc = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            f"-Dkafka.version={config.kafka_version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        raise StackError(
            f"Maven could not fetch Kafka {config.kafka_version} from Maven Central "
            f"(exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    marker.write_text(f"{config.kafka_version}\n")
    return libs


def server_properties(
    port: int, controller_port: int, data_dir: Path, overrides: dict[str, str] | None = None
) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        # 127.0.0.1, not localhost, which may resolve to ::1
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        # a small heap must not run out; the cleaner stays on (faust changelogs are compacted)
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    }
    settings.update(overrides or {})  # e.g. the SASL_SSL listener (kafka_secure)
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def _java_cmd(libs: Path, main: str, *args: str, heap_mb: int = 256) -> list[str]:
    return [
        "java",
        f"-Xms{min(256, heap_mb)}m",
        f"-Xmx{heap_mb}m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]


def format_storage(
    libs: Path, properties: Path, data_dir: Path, extra: list[str] | None = None
) -> None:
    """Format the KRaft log directory once; an already formatted one is left alone."""
    if (data_dir / "meta.properties").is_file():
        return
    cluster_id = (
        subprocess.run(
            _java_cmd(libs, "kafka.tools.StorageTool", "random-uuid"),
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    proc = subprocess.run(
        _java_cmd(
            libs,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(properties),
            *(extra or []),
        ),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise StackError(f"formatting Kafka storage failed:\n{(proc.stdout + proc.stderr)[-2000:]}")


def broker_command(libs: Path, properties: Path, heap_mb: int) -> list[str]:
    return _java_cmd(libs, "kafka.Kafka", str(properties), heap_mb=heap_mb)


def start(libs: Path, properties: Path, log: Path, cwd: Path, heap_mb: int) -> int:
    return start_detached(broker_command(libs, properties, heap_mb), log, cwd).pid


async def _metadata_ok(bootstrap: str, options: dict[str, Any]) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **options)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        await admin.close()


def wait_ready(
    pid: int,
    bootstrap: str,
    log: Path,
    log_offset: int,
    timeout_s: float,
    options: dict[str, Any] | None = None,
) -> float:
    """Wait for the log line and a successful metadata request (with the client security
    `options` of a secure broker); fail fast if it exits."""
    started = time.monotonic()
    deadline = started + timeout_s
    seen_line = False
    while time.monotonic() < deadline:
        if not is_alive(pid):
            raise BrokerExitedError("the Kafka broker", None, str(log), tail(log, 30))
        if not seen_line and log.is_file():
            with log.open("rb") as handle:
                handle.seek(log_offset)
                seen_line = _READY_LINE.encode() in handle.read()
        if seen_line and asyncio.run(_metadata_ok(bootstrap, options or {})):
            return time.monotonic() - started
        time.sleep(0.3)
    raise ReadinessTimeoutError("the Kafka broker", timeout_s, str(log), tail(log, 30))
