"""What the trainer remembers per model, rebuilt at start from durable sources only.

- when each model last started training: the newest `TRAINING_STARTED` on `models.events`
  (read from the beginning, without a consumer group);
- the rows accumulated since then: the sealed dataset versions created after that start,
  read from the artifact store (suspect ones only when the policy allows them). When they
  already reach the policy's `min_new_rows`, the newest of them is kept as a deferred
  trigger, so the rows are trained on as soon as the cooldown allows even though their
  announcements were consumed (and committed) by the trainer before the restart.

- the drift it was told about since then: the newest `DriftEvent` per model on
  `drift.events` created after that start (read from the beginning, without a consumer
  group). A drift trigger held back by the cooldown was consumed and committed before the
  restart; it becomes the deferred trigger again (it wins over rows: it is the stronger
  reason, and a training covers both), and the policy re-decides it when the cooldown ends.

So a restarted (or a second) trainer applies the same cooldown and row counts, and keeps
the same deferred trigger, as the one before it, with nothing kept in Redis or on local
disk.

The end offsets are taken first and the log read up to them: `partitions_for_topic` of a
fresh consumer answers None until it has metadata (aiokafka 0.14), so the partitions come
from a real metadata request (`topic_partitions`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from aiokafka import TopicPartition
from google.protobuf.message import Message

from driftloop.v1 import events_pb2 as pb
from services.common.datasets.manifest import VersionManifest
from services.common.kafka import create_consumer
from services.common.kafka_admin import topic_partitions
from services.common.settings import Settings
from services.trainer.policy import ModelState, Trigger
from services.trainer.specs import ModelSpec
from services.trainer.triggers import triggers_for

__all__ = ["drift_since", "initial_states", "last_training_starts"]


async def _read_to_end(settings: Settings, topic: str, visit: Callable[[Message], None]) -> None:
    """Every record of `topic` (all partitions) up to its end offsets now, to `visit`."""
    tps = [TopicPartition(topic, p) for p in await topic_partitions(settings, topic)]
    if not tps:
        return
    consumer = create_consumer(settings, group_id=None)
    async with consumer:
        raw = consumer.raw
        raw.assign(tps)
        await raw.seek_to_beginning(*tps)
        ends = await raw.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000)
            for env in batch.envelopes:
                visit(env.message)
            for stuck in consumer.fetcher.stuck:  # unreadable: logged (kafka.partition_stuck)
                remaining.discard(TopicPartition(stuck.topic, stuck.partition))
            for tp in list(remaining):
                if await raw.position(tp) >= ends[tp]:
                    remaining.discard(tp)


async def last_training_starts(settings: Settings, models: Iterable[str]) -> dict[str, int]:
    """Newest TRAINING_STARTED time per model, from `models.events` (all partitions)."""
    wanted = set(models)
    found: dict[str, int] = {}

    def visit(msg: Message) -> None:
        if (
            isinstance(msg, pb.ModelEvent)
            and msg.type == pb.MODEL_EVENT_TYPE_TRAINING_STARTED
            and msg.model in wanted
        ):
            found[msg.model] = max(found.get(msg.model, 0), msg.created_at_ms)

    await _read_to_end(settings, settings.topics.models_events, visit)
    return found


async def drift_since(
    settings: Settings, models: Iterable[str], starts: Mapping[str, int]
) -> dict[str, pb.DriftEvent]:
    """Per model the newest DriftEvent created after its last training start."""
    wanted = set(models)
    found: dict[str, pb.DriftEvent] = {}

    def visit(msg: Message) -> None:
        if not isinstance(msg, pb.DriftEvent) or msg.model not in wanted:
            return
        if msg.created_at_ms <= starts.get(msg.model, -1):
            return  # the training that started after it covered it
        newest = found.get(msg.model)
        if newest is None or msg.created_at_ms >= newest.created_at_ms:
            found[msg.model] = msg

    await _read_to_end(settings, settings.topics.drift_events, visit)
    return found


def initial_states(
    specs: Iterable[ModelSpec],
    starts: Mapping[str, int],
    manifests: Mapping[str, list[VersionManifest]],
    drift: Mapping[str, pb.DriftEvent] | None = None,
) -> dict[str, ModelState]:
    states: dict[str, ModelState] = {}
    for spec in specs:
        since = starts.get(spec.name)
        fresh = sorted(
            (
                m
                for m in manifests.get(spec.dataset, [])
                if (since is None or m.created_at_ms > since)
                and (m.status == "ok" or spec.policy.allow_suspect)
            ),
            key=lambda m: (m.created_at_ms, m.version_id),
        )
        rows = sum(m.row_count for m in fresh)
        deferred = None
        if fresh and rows >= spec.policy.min_new_rows:
            newest = fresh[-1]
            deferred = Trigger(
                kind="dataset_version",
                model=spec.name,
                dataset=spec.dataset,
                at_ms=newest.created_at_ms,
                version_id=newest.version_id,
                rows=newest.row_count,
                suspect=newest.status == "suspect",
                detail=f"{len(fresh)} versions ({rows} rows) sealed since the last training, "
                "found at start-up",
            )
        event = (drift or {}).get(spec.name)
        if event is not None:
            [trigger] = triggers_for(event, [spec], event.created_at_ms)
            deferred = trigger.model_copy(
                update={"detail": f"{trigger.detail}, raised since the last training"}
            )
        states[spec.name] = ModelState(
            model=spec.name,
            last_started_ms=since,
            rows_since_last=rows,
            versions_since_last=tuple(m.version_id for m in fresh),
            deferred=deferred,
        )
    return states
