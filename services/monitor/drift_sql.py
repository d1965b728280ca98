"""The SQL of the drift statistics, over one materialised table of both periods.

`{data}` holds the reference's and the analysis's rows side by side: `period`
('reference' | 'analysis'), `chunk`, `__key` and the judged columns, wide. Every
statistic is computed one column per UNION ALL branch, so ClickHouse reads one column at
a time and runs the branches on all cores; the branches' results are small.

KS, exact and ties included, in one plain sort per column: each finite value becomes a
UInt128 key, the value's bits made order-preserving (sign bit flipped for positives, all
bits for negatives) in the high 64 and the index of `__s`, the row's chunk code (reference
chunk c as -c-1, analysis chunk c as c, a time window's number, say), among the column's
codes in the low 32, so sorting the keys sorts by value and, within a block of equal
values, by chunk. Walking the sorted array, the reference's count so far gives F_r, and
`arrayEnumerateUniq` a row's rank within its own chunk, i.e. F_c. Both
ECDFs are right-continuous steps, so for a chunk, sup |F_r - F_c| is attained at one of the
chunk's own points x, either at x or just below it (on the gap up to the chunk's next point
F_c is flat while F_r rises, so the largest gap is just below that next point). Ties are
exact: F_r(x) is read at the end of x's block of equal values (`arrayReverseFill`), F_r(x-)
at the end of the previous block (`arrayFill`); a chunk's rows are contiguous within a
block, so F_c(x) is the rank of its last row there and F_c(x-) the rank of its first row
minus one. An ARRAY JOIN and `GROUP BY s` then give every chunk's statistic at once.
Columns whose values are all distinct, as continuous features' are, take a faster form
first (`ks_distinct_sql`: 64-bit keys, no tie handling) that says when it cannot judge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.monitor.sql import ident, literal

__all__ = [
    "DISTRIBUTION_SQL",
    "bin_index",
    "categorical_hist_sql",
    "ks_sql",
    "numeric_hist_sql",
    "value",
]


def value(column: str) -> str:
    """A column as Float64, NULL as NaN; `+ 0.` makes -0.0 into 0.0, which compare equal
    but are distinct keys in GROUP BY and in sorts by value."""
    return f"(ifNull(toFloat64({ident(column)}), nan) + 0.)"


def bin_index(expr: str, inner_edges: Sequence[float]) -> str:
    """Index of the bin of `expr` among bins cut at `inner_edges`: the number of edges at
    or below it (values beyond the outer edges land in the end bins)."""
    if not inner_edges:
        return "toUInt8(0)"
    return "(" + " + ".join(f"({expr} >= {float(e)!r})" for e in inner_edges) + ")"


def numeric_hist_sql(data: str, edges: Mapping[str, Sequence[float]]) -> str:
    branches = [
        f"SELECT period, chunk, {literal(name)} AS feature, toString(b) AS bin, cnt FROM ("
        f"SELECT period, chunk, {bin_index('v', inner)} AS b, count() AS cnt FROM ("
        f"SELECT period, chunk, {value(name)} AS v FROM {data}) "
        "WHERE isFinite(v) GROUP BY period, chunk, b)"
        for name, inner in edges.items()
    ]
    return " UNION ALL ".join(branches)


def categorical_hist_sql(data: str, columns: Sequence[str]) -> str:
    branches = [
        f"SELECT period, chunk, {literal(name)} AS feature, "
        f"toString(assumeNotNull({ident(name)})) AS bin, count() AS cnt FROM {data} "
        f"WHERE {ident(name)} IS NOT NULL GROUP BY period, chunk, bin"
        for name in columns
    ]
    return " UNION ALL ".join(branches)


_SIGN = 1 << 63  # a Float64's sign bit, as an unsigned 64-bit integer
# a Float64's bits `b` as an unsigned integer in the values' order (sign flipped for
# positives, every bit for negatives)
_ORDER_BITS = f"if(b >= {_SIGN}, bitNot(b), bitOr(b, {_SIGN}))"


def _finite_bits(data: str, name: str) -> str:
    """`FROM …` the rows' chunk codes `__s` and the bits `b` of the column's finite values."""
    return (
        f"FROM (SELECT __s, reinterpretAsUInt64(v) AS b FROM (SELECT __s, {value(name)} AS v "
        f"FROM {data}) WHERE isFinite(v))"
    )


def _chunk_codes(counts: Mapping[int, int], index_type: str) -> tuple[int, str, str, str]:
    """For a column's finite values per chunk code: how many codes are the reference's
    (< 0, so first), the sorted codes and their sizes as SQL arrays (an index i's code is
    `codes[i + 1]`), and the index of `__s` among the codes as SQL of `index_type`."""
    codes = sorted(counts)
    codes_sql = f"CAST([{', '.join(map(str, codes))}] AS Array(Int64))"
    sizes_sql = f"CAST([{', '.join(str(counts[c]) for c in codes)}] AS Array(Float64))"
    indices = f"CAST(range({len(codes)}) AS Array({index_type}))"
    index = f"transform(__s, {codes_sql}, {indices}, to{index_type}(0))"
    return sum(1 for c in codes if c < 0), codes_sql, sizes_sql, index


def ks_sql(data: str, columns: Sequence[str], counts: Mapping[str, Mapping[int, int]]) -> str:
    """(feature, s, ks) for every column and chunk code s; `counts[column][s]` is the
    number of finite values of the column in chunk s (every code of `data`). In the keys, a
    code is its index among the sorted codes, so the reference's codes (< 0) come first."""
    branches = []
    for name in columns:
        n_ref, codes_sql, sizes_sql, index = _chunk_codes(counts[name], "UInt32")
        branches.append(
            f"""
SELECT {literal(name)} AS feature, {codes_sql}[i + 1] AS s, max(d) AS ks
FROM (
  SELECT arraySort(K0) AS K,
    arrayMap(k -> toUInt32(k), K) AS I,
    arrayMap(k -> toUInt64(bitShiftRight(k, 32)), K) AS B,
    arrayMap((a, b) -> a != b, B, arrayPushBack(arrayPopFront(B), toUInt64(0))) AS block_end,
    arrayMap((a, b) -> a != b, B, arrayPushFront(arrayPopBack(B), toUInt64(0))) AS block_start,
    arrayMap((a, b, e) -> e OR a != b, I, arrayPushBack(arrayPopFront(I), 0), block_end)
      AS run_last,
    arrayMap((a, b, e) -> e OR a != b, I, arrayPushFront(arrayPopBack(I), 0), block_start)
      AS run_first,
    arrayCumSum(arrayMap(c -> toUInt64(c < {n_ref}), I)) AS cum_ref,
    toFloat64(cum_ref[-1]) AS nr,
    arrayReverseFill((c, m) -> m, cum_ref, block_end) AS ref_le,
    arrayFill((c, m) -> m, arrayPushFront(arrayPopBack(cum_ref), toUInt64(0)), block_start)
      AS ref_lt,
    arrayEnumerateUniq(I) AS rank,
    arrayMap(c -> {sizes_sql}[c + 1], I) AS n,
    arrayMap((le, lt, r, m, last, first) -> greatest(
        if(last, abs(le / nr - r / m), 0.), if(first, abs(lt / nr - (r - 1) / m), 0.)),
      ref_le, ref_lt, rank, n, run_last, run_first) AS D
  FROM (
    SELECT groupArray(bitOr(bitShiftLeft(toUInt128({_ORDER_BITS}), 32), toUInt128({index})))
      AS K0 {_finite_bits(data, name)}
  )
)
ARRAY JOIN I AS i, D AS d
GROUP BY i"""
        )
    return " UNION ALL ".join(branches)


def ks_distinct_sql(
    data: str, columns: Sequence[str], counts: Mapping[str, Mapping[int, int]]
) -> str:
    """As `ks_sql`, faster, for columns without ties: (feature, s, ks, distinct). The keys
    are 64-bit: the value's order-preserving bits with the lowest `_code_bits` dropped, and
    the chunk index in their place. Where no two neighbours in the sorted keys share their
    value part (`distinct`), the value parts are strictly increasing, so the order is the
    values' own and no value is tied: then F_r(x-) is the count before the row, F_c(x-) its
    rank minus one, and `ks` is exact. Otherwise (a tie, or values so close the dropped
    bits told them apart) the column's `ks` means nothing and `ks_sql` must judge it."""
    branches = []
    for name in columns:
        bits = _code_bits(len(counts[name]))
        n_ref, codes_sql, sizes_sql, index = _chunk_codes(counts[name], "UInt64")
        branches.append(
            f"""
SELECT {literal(name)} AS feature, {codes_sql}[i + 1] AS s, max(d) AS ks, any(distinct) AS distinct
FROM (
  SELECT arraySort(K0) AS K,
    arrayMap(k -> bitAnd(k, {(1 << bits) - 1}), K) AS I,
    NOT arrayExists((a, b) -> bitShiftRight(bitXor(a, b), {bits}) = 0,
      arrayPopBack(K), arrayPopFront(K)) AS distinct,
    arrayMap(c -> toUInt8(c < {n_ref}), I) AS is_ref,
    arrayCumSum(is_ref) AS cum_ref,
    toFloat64(cum_ref[-1]) AS nr,
    arrayEnumerateUniq(I) AS rank,
    arrayMap(c -> {sizes_sql}[c + 1], I) AS n,
    arrayMap((le, ir, r, m) -> greatest(abs(le / nr - r / m), abs((le - ir) / nr - (r - 1) / m)),
      cum_ref, is_ref, rank, n) AS D
  FROM (
    SELECT groupArray(bitOr(bitAnd({_ORDER_BITS}, {((1 << 64) - 1) ^ ((1 << bits) - 1)}),
      {index})) AS K0 {_finite_bits(data, name)}
  )
)
ARRAY JOIN I AS i, D AS d
GROUP BY i"""
        )
    return " UNION ALL ".join(branches)


def _code_bits(codes: int) -> int:
    return max(1, (codes - 1).bit_length())


DISTRIBUTION_SQL = """
SELECT period, chunk, feature, nr, nt,
  arraySum(arrayMap((a, e) -> (a - e) * log(a / e),
    arrayMap(x -> (x + {alpha}) / (nt + {alpha} * k), t),
    arrayMap(x -> (x + {alpha}) / (nr + {alpha} * k), r))) AS psi,
  sqrt(greatest(0., 0.5 * arraySum(arrayMap((p, q) -> if(p > 0, p * log2(2 * p / (p + q)), 0.),
      arrayMap(x -> x / nr, r), arrayMap(x -> x / nt, t)))
    + 0.5 * arraySum(arrayMap((q, p) -> if(q > 0, q * log2(2 * q / (p + q)), 0.),
      arrayMap(x -> x / nt, t), arrayMap(x -> x / nr, r))))) AS js,
  arraySum(arrayMap((a, b) -> if(a + b > 0,
      pow(a - nr * (a + b) / (nr + nt), 2) / (nr * (a + b) / (nr + nt))
    + pow(b - nt * (a + b) / (nr + nt), 2) / (nt * (a + b) / (nr + nt)), 0.), r, t)) AS chi2,
  sqrt(chi2 / (nr + nt)) AS cramers_v
FROM (
  SELECT period, chunk, feature, groupArray(toFloat64(rc)) AS r, groupArray(toFloat64(tc)) AS t,
    arraySum(r) AS nr, arraySum(t) AS nt, length(r) AS k
  FROM (
    SELECT period, chunk, feature, bin, sum(rc) AS rc, sum(tc) AS tc FROM (
      SELECT c.period AS period, c.chunk AS chunk, r.feature AS feature, r.bin AS bin,
        r.rc AS rc, toUInt64(0) AS tc
      FROM {meta} AS c CROSS JOIN {refh} AS r
      UNION ALL SELECT period, chunk, feature, bin, toUInt64(0) AS rc, cnt AS tc FROM {hist}
    ) GROUP BY period, chunk, feature, bin
  ) GROUP BY period, chunk, feature
)
"""
