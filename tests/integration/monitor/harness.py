"""The monitor as a child process (tests/integration/harness.py) on the real stack, with its
own topics, consumer group, chDB store and HTTP port, and helpers to feed it and read what
it did."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

from services.common.kafka import create_producer, ensure_topics
from services.common.settings import Settings, TopicNames, load_settings
from tests.integration.harness import ServiceProcess, free_port

__all__ = ["MonitorHarness", "group_caught_up", "wait_until"]

T = TypeVar("T")


def wait_until(probe: Callable[[], T], done: Callable[[T], bool], timeout_s: float, what: str) -> T:
    """Poll `probe` until `done(value)`; fail with the last value after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    value = probe()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value: {value!r}")
        time.sleep(0.25)
        value = probe()
    return value


class MonitorHarness:
    def __init__(self, stack: Settings, tmp: Path, **monitor_env: str) -> None:
        uid = uuid.uuid4().hex[:10]
        self.topics = TopicNames(
            **{f: f"{f.replace('_', '.')}.{uid}" for f in TopicNames.model_fields}
        )
        self.settings = load_settings(home=stack.home, topics=self.topics)
        self.tmp = tmp
        self.port = free_port()
        self.dsn = f"chdb://{tmp / 'store'}"
        self.group = f"monitor-{uid}"
        (tmp / "models").mkdir(exist_ok=True)
        self.env = {
            "DRIFTLOOP_HOME": str(stack.home),
            "DRIFTLOOP_CLICKHOUSE_DSN": self.dsn,
            "DRIFTLOOP_LOG_FORMAT": "json",
            **{
                f"DRIFTLOOP_TOPICS__{f.upper()}": getattr(self.topics, f)
                for f in TopicNames.model_fields
            },
            "DRIFTLOOP_MONITOR_GROUP_ID": self.group,
            "DRIFTLOOP_MONITOR_HTTP_PORT": str(self.port),
            "DRIFTLOOP_MONITOR_MODELS_DIR": str(tmp / "models"),
            **monitor_env,
        }
        self.process: ServiceProcess | None = None
        asyncio.run(ensure_topics(self.settings, self.topics.all()))

    def start(self, **extra_env: str) -> MonitorHarness:
        self.process = ServiceProcess(
            ["-m", "services.monitor"],
            {**self.env, "DRIFTLOOP_MONITOR_GROUP_ID": self.group, **extra_env},
            self.tmp / "monitor.log",
        ).start()
        wait_until(self._ready, bool, 90, f"monitor ready\n{self.log_tail()}")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            raise AssertionError(f"monitor exited:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self, **kwargs: Any) -> None:
        if self.process is not None:
            self.process.stop(**kwargs)

    def log_tail(self, n: int = 40) -> str:
        return self.process.log_tail(n) if self.process else ""

    def query(self, sql: str) -> list[list[Any]]:
        status, body = self.request("POST", "/v1/query", {"sql": sql})
        assert status == 200, (status, body, self.log_tail())
        rows: list[list[Any]] = body["rows"]
        return rows

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def scalar(self, sql: str) -> Any:
        return self.query(sql)[0][0]

    def publish(self, topic: str, items: Iterable[tuple[str, Message]]) -> None:
        async def _send() -> None:
            async with create_producer(self.settings) as producer:
                futures = await producer.send_many(topic, list(items))
                await asyncio.gather(*futures)

        asyncio.run(_send())

    def publish_raw(self, topic: str, values: Iterable[bytes]) -> None:
        async def _send() -> None:
            async with create_producer(self.settings) as producer:
                for value in values:
                    await (await producer.send_raw(topic, value, key=b"bad"))

        asyncio.run(_send())


def group_caught_up(settings: Settings, group: str, topics: Iterable[str]) -> bool:
    """Whether `group` has committed every partition of `topics` up to its end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def _check() -> bool:
        # the harness creates every topic with settings.topic_partitions partitions
        parts = [TopicPartition(t, p) for t in topics for p in range(settings.topic_partitions)]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            ends = await consumer.end_offsets(parts)
            for tp in parts:
                committed = await consumer.committed(tp)
                if ends[tp] > 0 and (committed or 0) < ends[tp]:
                    return False
            return True
        finally:
            await consumer.stop()

    return asyncio.run(_check())
