"""The distributed fit's pure parts: the shard split and the spec option."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from services.trainer.distributed import shard_bounds
from services.trainer.specs import ModelSpecError, load_model_spec


def test_shards_cover_every_row_once_in_order_with_sizes_within_one() -> None:
    for rows, workers in [(10, 2), (7, 3), (1000, 7), (3, 3)]:
        bounds = shard_bounds(rows, workers)
        assert len(bounds) == workers
        assert bounds[0][0] == 0 and bounds[-1][1] == rows
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        sizes = [b - a for a, b in bounds]
        assert max(sizes) - min(sizes) <= 1
    assert shard_bounds(10, 2) == [(0, 5), (5, 10)]  # a pure function of (rows, workers)


def test_shards_refuse_fewer_rows_than_workers_and_no_workers() -> None:
    with pytest.raises(ValueError, match="2 rows cannot be split across 3 workers"):
        shard_bounds(2, 3)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        shard_bounds(10, 0)


def _spec(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text("name: m\ndataset: credit\n" + body, encoding="utf-8")
    return path


def test_a_spec_asks_for_workers_and_defaults_to_one_process(tmp_path: Path) -> None:
    assert not load_model_spec(_spec(tmp_path, "")).distributed.enabled
    spec = load_model_spec(_spec(tmp_path, "distributed:\n  workers: 4\n"))
    assert spec.distributed.enabled and spec.distributed.workers == 4
    assert spec.distributed.cpus_per_worker == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("kind: mlp\ndistributed: {workers: 2}\n", "supports kind 'xgboost' only, not 'mlp'"),
        ("distributed: {workers: 0}\n", "distributed.workers"),
        ("distributed: {wokers: 2}\n", "distributed.wokers"),
    ],
)
def test_a_bad_distributed_option_is_refused_naming_the_field(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(ModelSpecError, match=message):
        load_model_spec(_spec(tmp_path, body))
