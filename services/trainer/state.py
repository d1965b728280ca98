"""What the trainer remembers per model, rebuilt at start from durable sources only.

- when each model last started training: the newest `TRAINING_STARTED` on `models.events`
  (read from the beginning, without a consumer group);
- the rows accumulated since then: the sealed dataset versions created after that start,
  read from the artifact store (suspect ones only when the policy allows them).

So a restarted (or a second) trainer applies the same cooldown and row counts as the one
before it, with nothing kept in Redis or on local disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka import TopicPartition

from driftloop.v1 import events_pb2 as pb
from services.common.datasets.manifest import VersionManifest
from services.common.kafka import create_consumer
from services.common.settings import Settings
from services.trainer.policy import ModelState
from services.trainer.specs import ModelSpec

__all__ = ["initial_states", "last_training_starts"]


async def last_training_starts(settings: Settings, models: Iterable[str]) -> dict[str, int]:
    """Newest TRAINING_STARTED time per model, from `models.events` (all partitions)."""
    wanted = set(models)
    topic = settings.topics.models_events
    consumer = create_consumer(settings, group_id=None)
    found: dict[str, int] = {}
    async with consumer:
        raw = consumer.raw
        await raw.topics()  # fetches cluster metadata, so the next call knows the topic
        partitions = sorted(raw.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return found
        raw.assign(tps)
        await raw.seek_to_beginning(*tps)
        ends = await raw.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000)
            for env in batch.envelopes:
                msg = env.message
                if (
                    isinstance(msg, pb.ModelEvent)
                    and msg.type == pb.MODEL_EVENT_TYPE_TRAINING_STARTED
                    and msg.model in wanted
                ):
                    found[msg.model] = max(found.get(msg.model, 0), msg.created_at_ms)
            for tp in list(remaining):
                if await raw.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    return found


def initial_states(
    specs: Iterable[ModelSpec],
    starts: Mapping[str, int],
    manifests: Mapping[str, list[VersionManifest]],
) -> dict[str, ModelState]:
    states: dict[str, ModelState] = {}
    for spec in specs:
        since = starts.get(spec.name)
        fresh = [
            m
            for m in manifests.get(spec.dataset, [])
            if (since is None or m.created_at_ms > since)
            and (m.status == "ok" or spec.policy.allow_suspect)
        ]
        states[spec.name] = ModelState(
            model=spec.name,
            last_started_ms=since,
            rows_since_last=sum(m.row_count for m in fresh),
            versions_since_last=tuple(m.version_id for m in fresh),
        )
    return states
