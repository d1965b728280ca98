"""The prediction log: off the request path, spooled in order while Kafka is down,
replayed when it returns, drops counted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from services.router.prediction_log import PredictionLogger
from services.router.spool import Record, Spool
from tests.unit.router.stand_ins import MemorySink


def rec(i: int) -> Record:
    return Record(
        f"k{i}".encode(), f"v{i}".encode(), (("content-type", b"x"), ("n", bytes([i % 256])))
    )


async def until(cond, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)


async def test_outage_spools_then_replays_in_order_without_loss_or_duplicates(
    tmp_path: Path,
) -> None:
    sink = MemorySink()
    logger = PredictionLogger(sink, Spool(tmp_path / "s", 1 << 20), retry_s=0.01, batch_size=7)
    logger.start()
    logger.submit([rec(i) for i in range(10)])
    await until(lambda: len(sink.delivered) == 10)
    sink.down = True
    for i in range(10, 60):
        logger.submit([rec(i)])
        await asyncio.sleep(0)
    await until(lambda: logger.stats.spooled == 50)
    sink.down = False
    for i in range(60, 80):  # arrive while the spool is replaying: they queue behind it
        logger.submit([rec(i)])
    await until(lambda: len(sink.delivered) == 80)
    assert [r.value for r in sink.delivered] == [f"v{i}".encode() for i in range(80)]
    assert sink.delivered[33].headers == rec(33).headers
    await logger.close(timeout_s=1)


async def test_spool_survives_a_restart(tmp_path: Path) -> None:
    sink = MemorySink(down=True)
    logger = PredictionLogger(sink, Spool(tmp_path / "s", 1 << 20), retry_s=0.01)
    logger.start()
    logger.submit([rec(i) for i in range(5)])
    await until(lambda: logger.stats.spooled == 5)
    await logger.close(timeout_s=0.05)
    sink.down = False
    again = PredictionLogger(sink, Spool(tmp_path / "s", 1 << 20), retry_s=0.01)
    again.start()
    await until(lambda: len(sink.delivered) == 5)
    assert [r.value for r in sink.delivered] == [f"v{i}".encode() for i in range(5)]
    await again.close(timeout_s=1)


async def test_full_queue_and_full_spool_drops_are_counted(tmp_path: Path) -> None:
    dropped: list[tuple[str, int]] = []
    sink = MemorySink(down=True)
    spool = Spool(tmp_path / "s", max_bytes=len(rec(0).encode()) * 3)
    logger = PredictionLogger(
        sink, spool, queue_size=4, retry_s=0.01, on_drop=lambda why, n: dropped.append((why, n))
    )
    logger.submit([rec(i) for i in range(6)])  # not started: the queue holds 4
    assert logger.stats.dropped_queue_full == 2 and ("queue_full", 2) in dropped
    logger.start()
    await until(lambda: logger.stats.dropped_spool_full == 1)
    assert logger.stats.spooled == 3 and ("spool_full", 1) in dropped
    await logger.close(timeout_s=0.05)


def test_spool_ignores_a_torn_tail(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", 1 << 20)
    spool.append([rec(1), rec(2)])
    with open(tmp_path / "s", "ab") as f:
        f.write(rec(3).encode()[:-2])  # a crash mid-write
    records, pos = spool.read(10)
    assert [r.value for r in records] == [b"v1", b"v2"]
    spool.commit(pos)
    assert spool.read(10)[0] == []
