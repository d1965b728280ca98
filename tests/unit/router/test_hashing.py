"""The sticky-hash bucket: published test vectors and uniformity."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import stats

from services.router.hashing import BUCKETS, bucket

# (salt, key, bucket): the README publishes these; another language must reproduce them.
VECTORS = [
    ("exp", "user-1", 1666),
    ("exp", "user-2", 2325),
    ("credit-ab", "42", 3438),
    ("", "", 8438),
]


@pytest.mark.parametrize(("salt", "key", "expected"), VECTORS)
def test_published_vectors(salt: str, key: str, expected: int) -> None:
    assert bucket(salt, key) == expected


def test_definition_is_sha256_of_salt_separator_key() -> None:
    digest = hashlib.sha256(b"my-salt\x1fentity-7").digest()
    assert bucket("my-salt", "entity-7") == int.from_bytes(digest[:8], "big") % 10_000


def test_separator_keeps_salt_and_key_apart() -> None:
    assert bucket("a", "bc") != bucket("ab", "c")


def test_buckets_are_uniform_over_100k_keys() -> None:
    counts = np.bincount(
        [bucket("uniformity", f"key-{i}") for i in range(100_000)], minlength=BUCKETS
    )
    assert counts.size == BUCKETS
    # 100 coarse bins of 100 buckets (1,000 keys expected each) and the 10,000 buckets
    coarse = counts.reshape(100, 100).sum(axis=1)
    assert stats.chisquare(coarse).pvalue > 0.001
    assert stats.chisquare(counts).pvalue > 0.001


def test_salt_changes_the_assignment() -> None:
    same = sum(bucket("s1", f"k{i}") == bucket("s2", f"k{i}") for i in range(2_000))
    assert same < 20  # independent hashes agree about 1 time in 10,000
