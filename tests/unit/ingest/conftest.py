"""A small declared dataset and an event factory shared by the ingest unit tests."""

from __future__ import annotations

from typing import Any

import pytest

from driftloop.v1.events_pb2 import DataEvent
from services.common.datasets.schema import DatasetSchema

NOW_MS = 1_700_000_000_000

LOANS: dict[str, Any] = {
    "name": "loans",
    "entity_key": "customer_id",
    "event_time": {"max_future_skew_s": 60, "max_age_s": 3600},
    "numeric": {
        "age": {"dtype": "int", "nullable": False, "min": 18, "max": 120},
        "income": {"min": 0},
        "score": {},
    },
    "categorical": {
        "region": {"domain": ["north", "south"], "nullable": False},
        "merchant": {"max_cardinality": 3},
    },
    "label": {"kind": "binary"},
    "segments": ["region"],
}


@pytest.fixture
def loans() -> DatasetSchema:
    return DatasetSchema.model_validate(LOANS)


def make_event(i: int = 0, **overrides: Any) -> DataEvent:
    """A valid `loans` event; `numeric`/`categorical` overrides replace the whole map."""
    fields: dict[str, Any] = {
        "event_id": f"e{i}",
        "dataset": "loans",
        "entity_key": f"c{i % 7}",
        "event_time_ms": NOW_MS - 1000 * i,
        "numeric": {"age": 30 + i % 50, "income": 1000.0 * i, "score": 0.5},
        "categorical": {"region": "north" if i % 2 else "south", "merchant": "m1"},
        "label": float(i % 2),
        "source": "tests",
    }
    fields.update(overrides)
    if fields["label"] is None:
        del fields["label"]
    return DataEvent(**fields)
