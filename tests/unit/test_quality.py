"""The broken-feed check of a sealed batch: each sign of a broken feed makes it suspect;
a distribution shift alone is measured (per-feature PSI) but keeps it ok."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from services.common.datasets.profile import MIN_PROFILE_COUNT, profile_table
from services.common.datasets.quality import QualityConfig, assess_quality
from services.common.datasets.schema import DatasetSchema

N = 5000


def _batch(
    seed: int,
    n: int = N,
    shift: float = 0.0,
    null_rate: float = 0.0,
    age: np.ndarray | None = None,
    region: list[str] | None = None,
) -> pa.Table:
    rng = np.random.default_rng(seed)
    ages = rng.normal(40.0 + shift, 10.0, n) if age is None else age
    regions = (
        rng.choice(["north", "south", "east"], n, p=[0.5, 0.3, 0.2]) if region is None else region
    )
    return pa.table(
        {
            "event_id": [f"e{seed}-{i}" for i in range(n)],
            "event_time_ms": np.arange(n, dtype=np.int64),
            "age": pa.array(ages, mask=rng.random(n) < null_rate),
            "income": rng.lognormal(10.0, 0.5, n),
            "region": regions,
            "label": pa.array(rng.integers(0, 2, n).astype(float), mask=rng.random(n) < 0.5),
        }
    )


REFERENCE = profile_table(_batch(0, null_rate=0.02))


def test_no_reference_is_ok_with_no_shift() -> None:
    assert assess_quality(None, _batch(0)) == ("ok", [], {})


def test_a_batch_like_the_reference_is_ok_and_its_shift_is_small() -> None:
    report = assess_quality(REFERENCE, _batch(1, null_rate=0.02))
    assert (report.status, report.reasons) == ("ok", [])
    assert set(report.shift) == {"age", "income", "region"}
    assert all(v < 0.05 for v in report.shift.values())


def test_a_shift_alone_is_recorded_but_not_suspect() -> None:
    report = assess_quality(REFERENCE, _batch(1, shift=10.0, null_rate=0.02))
    assert (report.status, report.reasons) == ("ok", [])
    assert report.shift["age"] > 0.2 and report.shift["income"] < 0.05


@pytest.mark.parametrize(
    ("batch", "reason"),
    [
        (_batch(1, null_rate=0.4), "null_rate(age)=0.4"),
        (_batch(1, age=np.full(N, 41.0)), "constant(age)=41"),
        (_batch(1, region=["north"] * N), "constant(region)=north"),
        (
            _batch(
                1, age=np.r_[np.full(500, -999.0), np.full(N - 500, 40.0) + np.arange(N - 500) % 7]
            ),
            "sentinel(age)=-999 in 0.10",
        ),
        (
            _batch(
                1, age=np.r_[np.full(300, 1e6), np.random.default_rng(2).normal(40, 10, N - 300)]
            ),
            "out_of_range(age)=0.06>0.02",
        ),
        (_batch(1, region=[f"r{i % 40}" for i in range(N)]), "new_categories(region)=40>5"),
    ],
)
def test_each_sign_of_a_broken_feed_makes_the_batch_suspect(batch: pa.Table, reason: str) -> None:
    report = assess_quality(REFERENCE, batch)
    assert report.status == "suspect"
    assert any(r.startswith(reason) for r in report.reasons), report.reasons


def test_thresholds_come_from_the_config() -> None:
    broken = _batch(1, null_rate=0.4)
    lenient = QualityConfig(null_rate_jump=0.5)
    assert assess_quality(REFERENCE, broken, lenient).status == "ok"
    calm = _batch(2, null_rate=0.08)  # a rise smaller than the allowed jump
    assert assess_quality(REFERENCE, calm).status == "ok"


def test_the_label_is_not_judged_by_default() -> None:
    relabelled = _batch(1, null_rate=0.02).set_column(
        5, "label", pa.array(np.ones(N), mask=np.arange(N) % 10 != 0)
    )
    assert assess_quality(REFERENCE, relabelled).status == "ok"
    judged = assess_quality(REFERENCE, relabelled, skip=())
    assert judged.status == "suspect" and any("(label)" in r for r in judged.reasons)


def test_too_few_rows_are_not_judged() -> None:
    """A small version (say sealed by age) is not suspect by chance."""
    few = _batch(1, n=MIN_PROFILE_COUNT - 1, null_rate=0.4, age=np.full(MIN_PROFILE_COUNT - 1, 1.0))
    assert assess_quality(REFERENCE, few).status == "ok"
    enough = assess_quality(REFERENCE, _batch(1, n=MIN_PROFILE_COUNT, null_rate=0.4))
    assert enough.status == "suspect"
    small_reference = profile_table(_batch(0, n=MIN_PROFILE_COUNT - 1))
    assert assess_quality(small_reference, _batch(1, null_rate=0.4)).status == "ok"


def test_a_dataset_yaml_declares_its_thresholds_and_they_do_not_change_its_hash() -> None:
    from services.common.datasets.schema import schema_hash

    doc = {
        "name": "loans",
        "entity_key": "loan_id",
        "event_time": {"max_age_s": 3600},
        "numeric": {"age": {"min": 0, "max": 150}},
    }
    plain = DatasetSchema.model_validate(doc)
    strict = DatasetSchema.model_validate(doc | {"quality": {"null_rate_jump": 0.01}})
    assert plain.quality == QualityConfig() and strict.quality.null_rate_jump == 0.01
    assert schema_hash(plain) == schema_hash(strict)
    with pytest.raises(ValueError, match="null_rate_jum"):
        DatasetSchema.model_validate(doc | {"quality": {"null_rate_jum": 0.01}})
