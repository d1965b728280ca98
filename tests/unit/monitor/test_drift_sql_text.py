"""The SQL-text helpers: quoting that cannot be escaped from, bins that match numpy."""

from __future__ import annotations

import numpy as np

from services.monitor.drift_sql import bin_index
from services.monitor.sql import by_rows, ident, literal


def test_identifiers_and_literals_are_escaped() -> None:
    assert ident("a`b") == "`a\\`b`"
    assert literal("it's") == "'it\\'s'"
    assert literal("a\\'") == "'a\\\\\\''"


def test_bin_index_counts_the_edges_at_or_below_a_value_like_searchsorted() -> None:
    inner = [-1.0, 0.0, 2.5]
    values = np.array([-5.0, -1.0, -0.5, 0.0, 2.4, 2.5, 9.0])
    expr = bin_index("v", inner)
    got = [eval(expr, {}, {"v": float(v)}) for v in values]  # the SQL text is Python arithmetic too
    assert got == list(np.searchsorted(inner, values, side="right"))
    assert bin_index("v", []) == "toUInt8(0)"


def test_chunk_size_must_be_positive() -> None:
    import pytest

    with pytest.raises(ValueError, match="chunk size"):
        by_rows("t", 0, "row")
