"""Small SQL-text helpers shared by the drift modules: quoting and chunked sources.

A *source* is a ClickHouse SELECT whose rows carry `__chunk` (the chunk a row belongs
to, an integer), `__key` (a number that orders rows: a row index or epoch milliseconds;
each chunk reports its min and max) and the columns to judge, by name.
"""

from __future__ import annotations

__all__ = ["by_rows", "by_time", "ident", "literal"]


def ident(name: str) -> str:
    """A column name as a ClickHouse identifier (backquoted, escaped)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def literal(text: str) -> str:
    """A Python string as a ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def by_rows(relation: str, chunk_size: int, order_by: str) -> str:
    """Chunks of `chunk_size` consecutive rows of `relation` (a table or `(SELECT …)`),
    in the order of the numeric expression `order_by` (e.g. a row-index column)."""
    if chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk_size}")
    return (
        f"SELECT *, intDiv(toInt64(row_number() OVER (ORDER BY {order_by})) - 1, "
        f"{int(chunk_size)}) AS __chunk, toFloat64({order_by}) AS __key FROM {relation}"
    )


def by_time(relation: str, window_ms: int, time_ms: str) -> str:
    """Tumbling windows of `window_ms` over `time_ms`, an epoch-milliseconds expression
    (window edges from epoch milliseconds, so the server's time zone does not matter)."""
    if window_ms < 1:
        raise ValueError(f"window must be >= 1 ms, got {window_ms}")
    return (
        f"SELECT *, intDiv(toInt64({time_ms}), {int(window_ms)}) AS __chunk, "
        f"toFloat64({time_ms}) AS __key FROM {relation}"
    )
