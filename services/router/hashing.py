"""The sticky-hash bucket of a request key: a documented function another language can
compute byte for byte.

    bucket(salt, key) = int.from_bytes(SHA-256(utf8(salt) || 0x1F || utf8(key))[0:8], "big")
                        mod 10000

0x1F (ASCII unit separator) cannot appear in a salt, so (salt "a", key "bc") and (salt
"ab", key "c") hash different bytes. The first 8 bytes of SHA-256 are uniform over 2^64;
2^64 mod 10000 = 1616, so the modulo bias is 1616 / 2^64 per bucket: none measurable. The
same key and salt give the same bucket in every process, replica and restart: no state is
involved. Test vectors are in the README and in tests/unit/router/test_hashing.py.
"""

from __future__ import annotations

import hashlib

__all__ = ["BUCKETS", "SEPARATOR", "bucket"]

BUCKETS = 10_000
SEPARATOR = b"\x1f"


def bucket(salt: str, key: str) -> int:
    """The bucket in [0, 10000) of `key` under `salt`."""
    digest = hashlib.sha256(salt.encode() + SEPARATOR + key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS
