"""Event-time watermarks over the partitions of predictions.log (pure)."""

from __future__ import annotations

from services.monitor.live.scheduler import _bounded
from services.monitor.live.traffic import VersionTraffic
from services.monitor.sinks.watermark import HOLD, Watermarks


def test_nothing_is_complete_before_the_partitions_are_known() -> None:
    assert Watermarks().of("m") == HOLD


def test_a_partition_behind_holds_the_model_back_to_its_newest_prediction_there() -> None:
    marks = Watermarks()
    marks.written({(0, "m"): 10_000, (1, "m"): 4_000})
    marks.positions({0: True, 1: True})
    assert marks.of("m") == 4_000
    marks.positions({0: True, 1: False})  # partition 1 read to its end
    assert marks.of("m") == 10_000
    marks.positions({0: False, 1: False})
    assert marks.of("m") is None  # everything produced so far is stored


def test_the_bound_is_per_model_because_a_backlog_may_hold_one_model_then_another() -> None:
    marks = Watermarks()
    # partition 0 has given a's whole history (up to 50 s) and b's first rows (up to 2 s)
    marks.written({(0, "a"): 50_000, (0, "b"): 2_000, (1, "a"): 50_000, (1, "b"): 9_000})
    marks.positions({0: True, 1: True})
    assert marks.of("a") == 50_000
    assert marks.of("b") == 2_000


def test_a_model_not_yet_seen_in_a_backlog_is_held_completely() -> None:
    marks = Watermarks()
    marks.written({(0, "a"): 50_000, (1, "b"): 9_000})
    marks.positions({0: True, 1: False})
    assert marks.of("b") == HOLD  # b's rows may be anywhere in partition 0's backlog
    assert marks.of("a") == 50_000


def test_once_read_to_its_end_a_partition_bounds_unseen_models_by_its_newest_time() -> None:
    marks = Watermarks()
    marks.written({(0, "a"): 50_000, (1, "b"): 9_000})
    marks.positions({0: False, 1: False})
    marks.written({(0, "a"): 60_000})
    marks.positions({0: True, 1: False})  # live traffic arrives on partition 0
    assert marks.of("b") == 60_000


def test_a_revoked_partition_is_forgotten_and_a_snapshot_does_not_move() -> None:
    marks = Watermarks()
    marks.written({(0, "m"): 1_000, (1, "m"): 5_000})
    marks.positions({0: True, 1: True})
    frozen = marks.snapshot()
    marks.positions({1: True})
    assert marks.of("m") == 5_000
    assert frozen("m") == 1_000


def test_traffic_is_judged_only_as_far_as_it_is_complete() -> None:
    traffic = VersionTraffic("m", "1", 1_000, 90_000, 10)
    assert _bounded(traffic, None) == traffic
    assert _bounded(traffic, 95_000) == traffic
    assert _bounded(traffic, 40_000) == VersionTraffic("m", "1", 1_000, 40_000, 10)
    assert _bounded(traffic, HOLD) is None
    assert _bounded(traffic, 500) is None
