"""Reference bins from the registry's manifest, cached; misses retried after a while."""

from __future__ import annotations

from typing import Any

from services.monitor.live.reference_bins import ReferenceBins


class _Profile:
    def __init__(self, edges: list[float]) -> None:
        self.bin_edges = edges


class _Registry:
    """Stands in for ModelRegistry.manifest: version 1 of `m` only."""

    def __init__(self) -> None:
        self.calls = 0

    def manifest(self, name: str, version_or_alias: int | str = "latest") -> Any:
        self.calls += 1
        if (name, version_or_alias) != ("m", 1):
            raise LookupError(f"model {name!r} has no version {version_or_alias}")
        profile = type(
            "P", (), {"numeric": {"f0": _Profile([0.0, 1.0, 2.0]), "f1": _Profile([0.0])}}
        )
        return type("M", (), {"reference_profile": profile})()


def test_bins_come_from_the_manifest_and_are_cached() -> None:
    registry = _Registry()
    bins = ReferenceBins(registry)
    assert bins("m", "1") == {"f0": [0.0, 1.0, 2.0]}  # a single edge is no bin: left out
    assert bins("m", "1") == {"f0": [0.0, 1.0, 2.0]}
    assert registry.calls == 1


def test_a_miss_falls_back_and_is_retried_after_retry_s() -> None:
    now = [0.0]
    registry = _Registry()
    bins = ReferenceBins(registry, retry_s=60, clock=lambda: now[0])
    assert bins("m", "2") == {} and bins("m", "2") == {}
    assert registry.calls == 1
    now[0] = 61
    assert bins("m", "2") == {} and registry.calls == 2
    assert bins("m", "canary") == {} and registry.calls == 2  # not a registry version number
    assert ReferenceBins(None)("m", "1") == {}
