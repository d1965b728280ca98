"""Kafka administration: is the broker there (`check_kafka`), create topics (`ensure_topics`).

Both turn "cannot connect" into one KafkaUnavailableError that names the bootstrap servers
and what to do, instead of a traceback from deep inside the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from services.common.kafka_security import client_options, describe
from services.common.settings import Settings

__all__ = [
    "KafkaClusterInfo",
    "KafkaUnavailableError",
    "check_kafka",
    "diagnose_unavailable",
    "ensure_topics",
    "explain_unavailable",
    "topic_partitions",
]


class KafkaUnavailableError(ConnectionError):
    """Kafka did not answer; the message names the bootstrap servers and what to do."""


def explain_unavailable(settings: Settings, exc: BaseException) -> KafkaUnavailableError:
    return KafkaUnavailableError(
        f"cannot reach Kafka at {describe(settings)} ({str(exc) or type(exc).__name__}); "
        "start the local stack with `driftloop stack up` or set DRIFTLOOP_KAFKA_BOOTSTRAP"
    )


def _cause(settings: Settings, exc: BaseException) -> str:
    """One line naming why a connection attempt failed (never a secret)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for err in chain:
        if isinstance(err, ssl.SSLCertVerificationError):
            return (
                f"the broker's TLS certificate is not trusted ({err.verify_message}): set "
                "DRIFTLOOP_KAFKA_SSL_CAFILE to the CA that signed it "
                f"(now: {settings.kafka_ssl_cafile or 'the system CAs'})"
            )
        if isinstance(err, ssl.SSLError):
            return f"the TLS handshake failed ({err.reason or err}); is the listener SSL?"
    text = " ".join(f"{type(e).__name__}: {e}" for e in chain)
    if "Authentication" in text or "authentication" in text:
        return (
            f"SASL authentication failed for user {settings.kafka_sasl_username!r} with "
            f"{settings.kafka_sasl_mechanism} (wrong DRIFTLOOP_KAFKA_SASL_PASSWORD / _FILE, "
            "user or mechanism)"
        )
    if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in text:
        return "nothing listens there (connection refused)"
    return str(exc) or type(exc).__name__


async def diagnose_unavailable(
    settings: Settings, exc: BaseException, timeout_s: float = 10.0
) -> KafkaUnavailableError:
    """Like `explain_unavailable`, but names the cause: aiokafka's clients only say
    "Unable to bootstrap", so one connection to the first bootstrap server is opened
    with the same security options to see why (untrusted certificate, wrong password,
    refused)."""
    host, _, port = settings.kafka_bootstrap.split(",")[0].strip().rpartition(":")
    try:
        options = client_options(settings)
        async with asyncio.timeout(timeout_s):
            conn = await create_conn(
                host, int(port), request_timeout_ms=int(timeout_s * 1000), **options
            )
        conn.close()
    except Exception as probe:  # the probe's failure is the diagnosis
        cause, found = _cause(settings, probe), True
    else:
        cause, found = str(exc) or type(exc).__name__, False
    hint = (
        ""
        if found and ("TLS" in cause or "SASL" in cause)
        else ("; start the local stack with `driftloop stack up` or set DRIFTLOOP_KAFKA_BOOTSTRAP")
    )
    return KafkaUnavailableError(f"cannot reach Kafka at {describe(settings)}: {cause}{hint}")


@dataclass(frozen=True)
class KafkaClusterInfo:
    bootstrap: str
    cluster_id: str | None
    controller_id: int
    brokers: list[str]
    topics: list[str]
    latency_ms: float


def _admin(settings: Settings, request_timeout_ms: int | None = None) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.service_name}-admin",
        request_timeout_ms=request_timeout_ms or settings.kafka_request_timeout_ms,
        **client_options(settings),
    )


@contextlib.contextmanager
def _client_quiet() -> Iterator[None]:
    """aiokafka logs its own "Unable connect to …" error before raising; the caller turns
    that failure into one KafkaUnavailableError, so the client's line would only repeat it."""
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client_log.setLevel(level)


async def check_kafka(settings: Settings, timeout_s: float = 10.0) -> KafkaClusterInfo:
    """A real metadata request; raises KafkaUnavailableError with what to do."""
    admin = _admin(settings, int(timeout_s * 1000))
    started = time.perf_counter()
    try:
        with _client_quiet():
            async with asyncio.timeout(timeout_s):
                await admin.start()
                cluster = await admin.describe_cluster()
                topics = await admin.list_topics()
    except (KafkaError, OSError, TimeoutError) as exc:
        raise await diagnose_unavailable(settings, exc) from None
    finally:
        await admin.close()
    return KafkaClusterInfo(
        bootstrap=settings.kafka_bootstrap,
        cluster_id=cluster.get("cluster_id"),
        controller_id=cluster["controller_id"],
        brokers=[f"{b['host']}:{b['port']}" for b in cluster["brokers"]],
        topics=sorted(t for t in topics if not t.startswith("__")),
        latency_ms=(time.perf_counter() - started) * 1000,
    )


async def ensure_topics(
    settings: Settings,
    names: Iterable[str],
    partitions: int | None = None,
    *,
    replication_factor: int = 1,
    configs: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet and wait until they have leaders.

    Returns the names created by this call (existing topics are left as they are).
    """
    wanted = list(dict.fromkeys(names))
    new = [
        NewTopic(
            name,
            partitions or settings.topic_partitions,
            replication_factor,
            topic_configs=dict(configs or {}),
        )
        for name in wanted
    ]
    admin = _admin(settings)
    created: list[str] = []
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            response = await admin.create_topics(new)
            for topic, code, *message in response.topic_errors:
                error = for_code(code)
                if code == 0:
                    created.append(topic)
                elif error is not TopicAlreadyExistsError:
                    raise KafkaError(f"cannot create topic {topic!r}: {error.__name__} {message}")
            while True:  # a new topic's partitions need a leader before anyone can use them
                described = await admin.describe_topics(wanted)
                if all(
                    t["error_code"] == 0
                    and t["partitions"]
                    and all(p["leader"] >= 0 for p in t["partitions"])
                    for t in described
                ):
                    return created
                await asyncio.sleep(0.1)
    except (KafkaConnectionError, OSError, TimeoutError) as exc:
        raise await diagnose_unavailable(settings, exc) from None
    finally:
        await admin.close()


async def topic_partitions(settings: Settings, topic: str, timeout_s: float = 10.0) -> list[int]:
    """The partition ids of `topic` (empty when it does not exist), from a real metadata
    request: a consumer's `partitions_for_topic` answers None until it has metadata."""
    admin = _admin(settings, int(timeout_s * 1000))
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            [described] = await admin.describe_topics([topic])
    except (KafkaError, OSError, TimeoutError) as exc:
        raise explain_unavailable(settings, exc) from None
    finally:
        await admin.close()
    if described["error_code"] != 0:
        return []
    return sorted(int(p["partition"]) for p in described["partitions"])
