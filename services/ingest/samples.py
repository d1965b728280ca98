"""Sample `credit` events with a real signal, for the demo and the loop tests.

The default label is drawn from a logistic model of the features (debt-to-income and
utilisation raise the risk, income and age lower it), so a trained model reaches an AUC
of about 0.8 and a `shift` of debt-to-income moves both the inputs and the outcome.
"""

from __future__ import annotations

import math
import random
import time
import uuid

from driftloop.v1 import events_pb2 as pb

__all__ = ["EMPLOYMENT", "REGIONS", "credit_sample", "credit_sample_event"]

REGIONS = ["north", "south", "east", "west", "central"]
EMPLOYMENT = ["salaried", "self_employed", "contractor", "unemployed", "retired", "student"]


def credit_sample_event(
    rng: random.Random, event_id: str, now_ms: int, shift: float = 0.0
) -> pb.DataEvent:
    dti = rng.uniform(0.0, 2.0) + shift
    util = rng.uniform(0.0, 1.2)
    age = rng.randint(18, 90)
    income = rng.lognormvariate(10.5, 0.4)
    logit = -2.0 + 1.6 * dti + 1.2 * util - 0.02 * (age - 40) - 0.5 * math.log(income / 36_000)
    return pb.DataEvent(
        event_id=event_id,
        dataset="credit",
        entity_key=f"app-{rng.randrange(5_000):05d}",
        event_time_ms=now_ms - rng.randrange(600_000),
        numeric={
            "age": float(age),
            "annual_income": income,
            "loan_amount": round(rng.uniform(1_000, 50_000), 2),
            "loan_term_months": float(rng.choice([12, 24, 36, 60])),
            "debt_to_income": min(dti, 10.0),
            "credit_utilization": util,
            "num_open_accounts": float(rng.randint(0, 20)),
        },
        categorical={
            "region": rng.choice(REGIONS),
            "employment_type": rng.choice(EMPLOYMENT),
            "loan_purpose": f"purpose_{rng.randrange(8):02d}",
        },
        label=float(rng.random() < 1 / (1 + math.exp(-logit))),
        source="sample",
    )


def credit_sample(
    n: int, seed: int = 0, shift: float = 0.0, now_ms: int | None = None
) -> list[pb.DataEvent]:
    """`n` labelled events with fresh, unique ids (so a second call is new data)."""
    rng = random.Random(seed)
    now_ms = now_ms or int(time.time() * 1000)
    prefix = uuid.uuid4().hex[:8]
    return [credit_sample_event(rng, f"{prefix}-{i:07d}", now_ms, shift) for i in range(n)]
