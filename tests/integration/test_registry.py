"""The model registry against the real Redis of the local stack and a real artifact root."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
import redis

from services.common.artifacts import ArtifactStore, sha256_hex
from services.common.redis_client import sync_redis
from services.common.registry import (
    ArtifactIntegrityError,
    FeatureSpec,
    Histogram,
    InvalidNameError,
    ModelNotFoundError,
    ModelRegistry,
    NumericProfile,
    ReferenceProfile,
    RegistrationInfo,
    StaleFenceError,
    UnsupportedFormatError,
    fold_aliases,
    save_xgboost,
)
from services.common.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
# A Redis database of its own, so that flushing it cannot disturb other tests' state.
_REGISTRY_TEST_DB = 11


@pytest.fixture
def settings(stack: Settings, tmp_path: Path) -> Settings:
    """The stack's Redis (a database of its own) and a fresh artifact root per test."""
    redis_url = urlunsplit(urlsplit(stack.redis_url)._replace(path=f"/{_REGISTRY_TEST_DB}"))
    return load_settings(
        home=stack.home, redis_url=redis_url, artifact_root=f"file://{tmp_path / 'artifacts'}"
    )


@pytest.fixture
def cache(settings: Settings) -> Iterator[redis.Redis]:
    client = sync_redis(settings)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def registry(settings: Settings, cache: redis.Redis) -> ModelRegistry:
    return ModelRegistry.from_settings(settings)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)
    return x, y


@pytest.fixture(scope="module")
def booster(data: tuple[np.ndarray, np.ndarray]) -> Any:
    import xgboost as xgb

    x, y = data
    params = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 0}
    return xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=5)


def _info(x: np.ndarray, scores: np.ndarray, **extra: Any) -> RegistrationInfo:
    names = [f"f{i}" for i in range(x.shape[1])]
    return RegistrationInfo(
        features=[FeatureSpec(name=n, dtype="float") for n in names],
        reference_profile=ReferenceProfile(
            row_count=len(x),
            numeric={n: NumericProfile.from_values(x[:, i]) for i, n in enumerate(names)},
            prediction=Histogram.from_values(scores),
            base_rate=0.5,
        ),
        code_version="0123abc",
        training_datasets=["ds-1"],
        metrics={"auc": 0.9},
        seed=0,
        **extra,
    )


@pytest.fixture(scope="module")
def xgb_info(data: tuple[np.ndarray, np.ndarray], booster: Any) -> RegistrationInfo:
    import xgboost as xgb

    return _info(data[0], booster.predict(xgb.DMatrix(data[0])))


def _artifact_file(registry: ModelRegistry, name: str, version: int) -> Path:
    path = registry.manifest(name, version).artifact.path
    return Path(registry.store.uri(path).removeprefix("file://"))


@pytest.mark.parametrize("fmt", ["xgboost-ubj", "xgboost-json"])
def test_xgboost_register_alias_load_predicts_like_the_original(
    registry: ModelRegistry,
    settings: Settings,
    booster: Any,
    xgb_info: RegistrationInfo,
    data: Any,
    fmt: str,
) -> None:
    import xgboost as xgb

    manifest = registry.register_xgboost("churn", booster, xgb_info, fmt=fmt)
    assert manifest.version == 1 and manifest.framework == "xgboost"
    assert manifest.library_versions["xgboost"] == xgb.__version__
    registry.set_alias("churn", "champion", 1, actor="alice", reason="first model")

    # A fresh registry (as another service would build) finds it through the alias.
    other = ModelRegistry.from_settings(settings)
    loaded = other.load("churn", "champion")
    assert loaded.manifest == manifest
    matrix = xgb.DMatrix(data[0])
    assert np.array_equal(loaded.model.predict(matrix), booster.predict(matrix))
    [change] = other.alias_history("churn")
    assert (change.alias, change.version, change.previous) == ("champion", 1, None)
    assert (change.actor, change.reason) == ("alice", "first model")


@pytest.mark.parametrize("fmt", ["torch-state-dict", "safetensors"])
def test_torch_state_dict_register_load_predicts_like_the_original(
    registry: ModelRegistry, data: Any, fmt: str
) -> None:
    import torch

    torch.manual_seed(0)

    def mlp() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))

    model = mlp().eval()
    x = torch.from_numpy(data[0])
    with torch.no_grad():
        expected = model(x)
    registry.register_torch("mlp", model.state_dict(), _info(data[0], expected[:, 0].numpy()), fmt)

    loaded = registry.load("mlp", "latest")
    assert loaded.manifest.artifact.format == fmt and loaded.manifest.framework == "torch"
    rebuilt = mlp().eval()
    rebuilt.load_state_dict(loaded.model)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), expected)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:7] + bytes([b[7] ^ 0x10]) + b[8:], id="flipped-byte"),
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
    ],
)
def test_a_damaged_artifact_is_refused_before_parsing(
    registry: ModelRegistry,
    booster: Any,
    xgb_info: RegistrationInfo,
    damage: Callable[[bytes], bytes],
) -> None:
    manifest = registry.register_xgboost("churn", booster, xgb_info)
    path = _artifact_file(registry, "churn", 1)
    damaged = damage(path.read_bytes())
    path.write_bytes(damaged)
    # Even with its sidecar rewritten to match, the manifest's sha256 is what counts.
    path.with_name(path.name + ".sha256").write_text(sha256_hex(damaged))

    # An integrity error (not a parse error from xgboost) shows the check came first.
    with pytest.raises(ArtifactIntegrityError) as err:
        registry.load("churn", 1)
    message = str(err.value)
    assert "'churn' version 1" in message
    assert manifest.artifact.path in message
    assert manifest.artifact.sha256 in message
    assert f"actual {sha256_hex(damaged)}" in message


def _start_workers(
    kind: str, settings: Settings, go: Path, ids: list[str], **args: Any
) -> list[subprocess.Popen[str]]:
    """Child processes running `_worker_main`; each waits for `go` to exist before acting."""
    procs = []
    for worker_id in ids:
        spec = json.dumps(
            {
                "kind": kind,
                "root": settings.artifact_root,
                "id": worker_id,
                "redis_url": settings.redis_url,
                "go": str(go),
                **args,
            }
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from tests.integration.test_registry import _worker_main;_worker_main()",
                    spec,
                ],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + 120
    while not all((go.parent / f"ready-{i}").exists() for i in ids):
        assert time.monotonic() < deadline, "worker processes did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    return procs


def _worker_main() -> None:
    spec = json.loads(sys.argv[1])
    settings = load_settings(redis_url=spec["redis_url"], artifact_root=spec["root"])
    registry = ModelRegistry.from_settings(settings)
    go = Path(spec["go"])
    (go.parent / f"ready-{spec['id']}").touch()
    while not go.exists():
        time.sleep(0.005)
    if spec["kind"] == "alias":
        _set_aliases(registry, spec["id"], spec["n"])
    else:
        info = RegistrationInfo.model_validate_json(spec["info"])
        registry.register("churn", bytes.fromhex(spec["artifact"]), "xgboost-ubj", info)


def _set_aliases(registry: ModelRegistry, worker: str, n: int) -> None:
    for i in range(n):
        alias = ("champion", "canary")[i % 2]
        registry.set_alias("churn", alias, 1 + i % 3, actor=worker, reason=f"{worker}-{i}")


def test_concurrent_alias_changes_from_threads_and_processes_are_all_recorded_once(
    registry: ModelRegistry,
    settings: Settings,
    booster: Any,
    xgb_info: RegistrationInfo,
    tmp_path: Path,
) -> None:
    for _ in range(3):
        registry.register_xgboost("churn", booster, xgb_info)
    n = 20
    go = tmp_path / "go"
    procs = _start_workers("alias", settings, go, ["p0", "p1"], n=n)
    threads = [threading.Thread(target=_set_aliases, args=(registry, f"t{i}", n)) for i in (0, 1)]
    for t in threads:
        t.start()
    go.touch()
    for t in threads:
        t.join()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err

    history = registry.alias_history("churn")
    workers = ["t0", "t1", "p0", "p1"]
    assert [c.seq for c in history] == list(range(4 * n))  # no gap, no duplicate
    assert sorted(c.reason for c in history) == sorted(
        f"{w}-{i}" for w in workers for i in range(n)
    )
    # Each worker's own changes appear in the order it made them.
    for w in workers:
        assert [c.reason for c in history if c.actor == w] == [f"{w}-{i}" for i in range(n)]
    # Every `previous` is the value just before it, and the state is the fold of the log.
    for alias in ("champion", "canary"):
        changes = [c for c in history if c.alias == alias]
        assert [c.previous for c in changes[1:]] == [c.version for c in changes[:-1]]
    assert registry.aliases("churn") == fold_aliases(history).aliases
    assert registry.store.list("models/churn/aliases") == [
        f"models/churn/aliases/{s:012d}.json" for s in range(4 * n)
    ]


def test_concurrent_registrations_get_distinct_versions(
    registry: ModelRegistry,
    settings: Settings,
    booster: Any,
    xgb_info: RegistrationInfo,
    tmp_path: Path,
) -> None:
    artifact = save_xgboost(booster)
    go = tmp_path / "go"
    procs = _start_workers(
        "register",
        settings,
        go,
        ["p0", "p1"],
        artifact=artifact.hex(),
        info=xgb_info.model_dump_json(),
    )
    versions: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: versions.append(
                registry.register("churn", artifact, "xgboost-ubj", xgb_info).version
            )
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    go.touch()
    for t in threads:
        t.join()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err

    assert len(versions) == 4 and len(set(versions)) == 4
    assert registry.versions("churn") == [1, 2, 3, 4, 5, 6]
    assert all(registry.load("churn", v).manifest.version == v for v in range(1, 7))


def test_the_registry_works_the_same_after_redis_is_flushed_or_lost(
    registry: ModelRegistry, cache: redis.Redis, booster: Any, xgb_info: RegistrationInfo
) -> None:
    for _ in range(2):
        registry.register_xgboost("churn", booster, xgb_info)
    registry.set_alias("churn", "champion", 1, actor="ci", reason="a")
    registry.set_alias("churn", "challenger", 2, actor="ci", reason="b")
    registry.set_alias("churn", "champion", 2, actor="ci", reason="c")
    expected = {"champion": 2, "challenger": 2}
    assert registry.aliases("churn") == expected
    assert len(cache.keys("driftloop:registry:*")) == 1

    cache.flushdb()
    assert registry.aliases("churn") == expected
    assert len(cache.keys("driftloop:registry:*")) == 1  # rebuilt from the store
    assert registry.load("churn", "champion").manifest.version == 2

    # A cache that disagrees with the store is ignored, not believed.
    [key] = cache.keys("driftloop:registry:*")
    cache.set(key, json.dumps({"seq": 0, "sha256": "0" * 64, "aliases": {"champion": 99}}))
    assert registry.get_alias("churn", "champion") == 2

    # Without Redis at all (none given, or unreachable) the answers are the same.
    store = ArtifactStore(registry.store.root_uri)
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    offline = ModelRegistry(store, unreachable)
    for other in (ModelRegistry(store), offline):
        assert other.aliases("churn") == expected
        assert other.alias_history("churn") == registry.alias_history("churn")
    # A change made without the cache is seen by a reader whose cache predates it.
    offline.set_alias("churn", "shadow", 1, actor="ci", reason="x")
    assert registry.aliases("churn") == {**expected, "shadow": 1}


def test_clear_errors_and_refusals(
    registry: ModelRegistry, booster: Any, xgb_info: RegistrationInfo
) -> None:
    with pytest.raises(ModelNotFoundError, match="no model named 'churn'"):
        registry.load("churn")
    registry.register_xgboost("churn", booster, xgb_info)
    with pytest.raises(ModelNotFoundError, match=r"no version 5; versions: \[1\]"):
        registry.load("churn", 5)
    with pytest.raises(ModelNotFoundError, match="no alias 'champion'"):
        registry.load("churn", "champion")
    with pytest.raises(ModelNotFoundError, match="no version 2"):
        registry.set_alias("churn", "champion", 2, actor="ci", reason="typo")
    with pytest.raises(ModelNotFoundError, match="no alias 'canary' to remove"):
        registry.remove_alias("churn", "canary", actor="ci", reason="cleanup")
    assert registry.alias_history("churn") == []  # refusals leave the log untouched
    with pytest.raises(InvalidNameError):
        registry.set_alias("churn", "Champion!", 1, actor="ci", reason="bad name")
    with pytest.raises(UnsupportedFormatError, match="pickle"):
        registry.register("churn", b"\x80\x04.", "pickle", xgb_info)

    registry.set_alias("churn", "canary", 1, actor="ci", reason="try")
    removal = registry.remove_alias("churn", "canary", actor="ci", reason="done")
    assert (removal.version, removal.previous) == (None, 1)
    assert registry.aliases("churn") == {}


def test_a_registration_that_died_before_its_manifest_is_invisible(
    registry: ModelRegistry, booster: Any, xgb_info: RegistrationInfo
) -> None:
    registry.register_xgboost("churn", booster, xgb_info)
    # What a crash after the claim and the artifact, before the manifest, leaves behind.
    assert registry.store.put_if_absent("models/churn/versions/000002/claim.json", b"{}")
    registry.store.put_bytes("models/churn/versions/000002/model.ubj", b"partial")

    assert registry.versions("churn") == [1]
    assert registry.resolve("churn", "latest") == 1
    with pytest.raises(ModelNotFoundError):
        registry.set_alias("churn", "champion", 2, actor="ci", reason="not committed")
    assert registry.register_xgboost("churn", booster, xgb_info).version == 3


def test_a_warm_alias_cache_still_refuses_a_stale_fencing_token(
    registry: ModelRegistry,
    settings: Settings,
    cache: redis.Redis,
    booster: Any,
    xgb_info: RegistrationInfo,
) -> None:
    for _ in range(2):
        registry.register_xgboost("churn", booster, xgb_info)
    registry.set_alias("churn", "challenger", 1, actor="trainer-a", reason="r", fence=5)
    registry.set_alias("churn", "challenger", 2, actor="trainer-b", reason="r", fence=7)
    assert len(cache.keys("driftloop:registry:*")) == 1  # the cache is warm at the last entry

    # Another process (a fresh registry on the same Redis) starts from the cached fold.
    other = ModelRegistry.from_settings(settings)
    assert other.max_fence("churn") == 7
    with pytest.raises(StaleFenceError, match="token 5 is stale"):
        other.set_alias("churn", "champion", 1, actor="trainer-a", reason="late", fence=5)
    assert other.aliases("churn") == {"challenger": 2}

    # A cache written before it kept the high-water mark is not trusted for fencing.
    [key] = cache.keys("driftloop:registry:*")
    doc = json.loads(cache.get(key) or b"{}")
    cache.set(key, json.dumps({k: v for k, v in doc.items() if k != "max_fence"}))
    with pytest.raises(StaleFenceError):
        ModelRegistry.from_settings(settings).set_alias(
            "churn", "champion", 1, actor="trainer-a", reason="late", fence=5
        )
