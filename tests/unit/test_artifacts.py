"""The artifact store on the local filesystem (and fsspec's in-memory one): no network."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from services.common.artifacts import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStore,
    InvalidArtifactPathError,
    sha256_hex,
)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(f"file://{tmp_path / 'artifacts'}")


def _object_file(store: ArtifactStore, relpath: str) -> Path:
    return Path(store.uri(relpath).removeprefix("file://"))


def test_sha256_hex_matches_hashlib() -> None:
    assert sha256_hex(b"driftloop") == hashlib.sha256(b"driftloop").hexdigest()


def test_put_then_get_round_trips_and_records_the_sha256(store: ArtifactStore) -> None:
    data = bytes(range(256)) * 10
    info = store.put_bytes("models/m/1/model.ubj", data)

    assert info.sha256 == sha256_hex(data)
    assert info.size == len(data)
    assert info.path == "models/m/1/model.ubj"
    assert info.uri == store.uri("models/m/1/model.ubj") and info.uri.startswith("file:///")
    assert store.get_bytes("models/m/1/model.ubj") == data
    assert store.checksum("models/m/1/model.ubj") == info.sha256
    sidecar = _object_file(store, "models/m/1/model.ubj").with_name("model.ubj.sha256")
    assert sidecar.read_text().strip() == info.sha256
    assert store.exists("models/m/1/model.ubj")
    assert not store.exists("models/m/2/model.ubj")


def test_a_flipped_byte_is_refused_naming_object_and_hashes(store: ArtifactStore) -> None:
    data = b"x" * 1000
    info = store.put_bytes("a/blob.bin", data)
    path = _object_file(store, "a/blob.bin")
    corrupt = bytearray(path.read_bytes())
    corrupt[500] ^= 0x01
    path.write_bytes(bytes(corrupt))

    with pytest.raises(ArtifactIntegrityError) as err:
        store.get_bytes("a/blob.bin")
    message = str(err.value)
    assert "a/blob.bin" in message
    assert info.sha256 in message
    assert sha256_hex(bytes(corrupt)) in message


def test_a_truncated_object_is_refused(store: ArtifactStore) -> None:
    store.put_bytes("a/blob.bin", b"0123456789" * 50)
    path = _object_file(store, "a/blob.bin")
    path.write_bytes(path.read_bytes()[:100])

    with pytest.raises(ArtifactIntegrityError, match="100 bytes"):
        store.get_bytes("a/blob.bin")


def test_expected_sha256_overrides_the_sidecar(store: ArtifactStore) -> None:
    info = store.put_bytes("a/b", b"payload")
    assert store.get_bytes("a/b", expected_sha256=info.sha256.upper()) == b"payload"
    with pytest.raises(ArtifactIntegrityError, match=sha256_hex(b"other")):
        store.get_bytes("a/b", expected_sha256=sha256_hex(b"other"))


def test_an_object_without_a_recorded_checksum_is_not_trusted(store: ArtifactStore) -> None:
    store.put_bytes("a/b", b"payload")
    _object_file(store, "a/b").with_name("b.sha256").unlink()
    with pytest.raises(ArtifactIntegrityError, match="no recorded sha256"):
        store.get_bytes("a/b")


def test_missing_objects_give_a_clear_not_found(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFoundError, match=r"no artifact at file://.*/nope/x"):
        store.get_bytes("nope/x")
    with pytest.raises(ArtifactNotFoundError):
        store.checksum("nope/x")
    assert store.list("nope") == []


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "a//b", ".hidden", "a/b.sha256", "x.tmp"])
def test_paths_that_could_escape_or_collide_are_refused(store: ArtifactStore, bad: str) -> None:
    with pytest.raises(InvalidArtifactPathError):
        store.put_bytes(bad, b"x")


def test_list_shows_objects_only(store: ArtifactStore) -> None:
    store.put_bytes("m/1/model.ubj", b"a")
    store.put_bytes("m/1/manifest.json", b"{}")
    assert store.put_if_absent("m/2/claim.json", b"{}")
    store.put_bytes("other/x", b"b")
    assert store.list("m") == ["m/1/manifest.json", "m/1/model.ubj", "m/2/claim.json"]
    assert store.list() == [*store.list("m"), "other/x"]
    # No temp or pending files are left behind by successful writes.
    leftovers = [p.name for p in _object_file(store, "m/1/x").parent.iterdir()]
    assert sorted(leftovers) == sorted(
        ["model.ubj", "model.ubj.sha256", "manifest.json", "manifest.json.sha256"]
    )


def test_put_if_absent_never_overwrites(store: ArtifactStore) -> None:
    assert store.put_if_absent("k", b"first")
    assert not store.put_if_absent("k", b"second")
    assert store.get_bytes("k") == b"first"


def _race(store: ArtifactStore, key: str, n: int) -> dict[int, bool]:
    """`n` threads released together, each trying to create `key` with its own bytes."""
    barrier = threading.Barrier(n)
    results: dict[int, bool] = {}

    def attempt(i: int) -> None:
        barrier.wait()
        results[i] = store.put_if_absent(key, f"writer-{i}".encode() * 1000)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_put_if_absent_has_exactly_one_winner_among_racing_threads(
    store: ArtifactStore,
) -> None:
    n, rounds = 8, 10  # several rounds: one race alone may happen not to overlap
    for r in range(rounds):
        results = _race(store, f"race/key-{r}", n)
        winners = [i for i, won in results.items() if won]
        assert len(results) == n and len(winners) == 1, f"round {r}: winners {winners}"
        assert store.get_bytes(f"race/key-{r}") == f"writer-{winners[0]}".encode() * 1000
    folder = _object_file(store, "race/key-0").parent
    # The losers cleaned up: only the objects and their checksums remain.
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        name for r in range(rounds) for name in (f"key-{r}", f"key-{r}.sha256")
    )


def test_an_interrupted_write_is_still_readable_if_its_pending_digest_matches(
    store: ArtifactStore,
) -> None:
    # Simulate a writer that put the data in place and died before promoting its digest.
    store.put_bytes("a/b", b"complete")
    folder = _object_file(store, "a/b").parent
    (folder / "b.sha256").rename(folder / ".b.sha256.0123.pending")
    assert store.get_bytes("a/b") == b"complete"
    # …but a pending digest never vouches for other bytes.
    _object_file(store, "a/b").write_bytes(b"complet")
    with pytest.raises(ArtifactIntegrityError):
        store.get_bytes("a/b")


def test_files_round_trip_through_the_store(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(b"file body")
    info = store.put_file("f/in.bin", source)
    out = store.get_file("f/in.bin", tmp_path / "out" / "copy.bin", expected_sha256=info.sha256)
    assert (tmp_path / "out" / "copy.bin").read_bytes() == b"file body"
    assert out.sha256 == info.sha256


def test_other_fsspec_backends_share_the_interface() -> None:
    store = ArtifactStore("memory://driftloop-unit/root")
    info = store.put_bytes("m/x", b"abc")
    assert store.get_bytes("m/x") == b"abc"
    assert info.uri == "memory:///driftloop-unit/root/m/x"
    assert store.put_if_absent("m/y", b"1") and not store.put_if_absent("m/y", b"2")
    assert store.get_bytes("m/y") == b"1"
    assert store.list("m") == ["m/x", "m/y"]
