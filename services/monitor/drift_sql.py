"""The SQL of the drift statistics, over one materialised table of both periods.

`{data}` holds the reference's and the analysis's rows side by side: `period`
('reference' | 'analysis'), `chunk`, `__key` and the judged columns, wide. Every
statistic is computed one column per UNION ALL branch, so ClickHouse reads one column at
a time and runs the branches on all cores; the branches' results are small.

KS, exact and ties included, in one sort per column: sort the column's values from both
periods by value, with `__s`, the row's chunk code (reference chunk c as -c-1, analysis
chunk c as c). Walking the sorted array, the reference's count so far gives F_r, and
`arrayEnumerateUniq(s)` a row's rank within its own chunk, i.e. F_c. Both ECDFs are
right-continuous steps, so for a chunk, sup |F_r - F_c| is attained at one of the chunk's
own points x, either at x or just below it (on the gap up to the chunk's next point F_c is
flat while F_r rises, so the largest gap is just below that next point, which is the
"just below" of that point). Ties are exact: F_r(x) is read at the end of x's tie block
(`arrayReverseFill`), F_r(x-) at the end of the previous block (`arrayFill`); F_c(x) is the
rank plus the same chunk's rows later in the block, F_c(x-) the rank minus those earlier
in it (`arrayEnumerateUniq` over (block, s), forwards and backwards), so the order of
tied values in the sort does not matter. An ARRAY JOIN and
`GROUP BY s` then give every chunk's statistic at once. Columns whose distinct values are
never closer than DBL_EPSILON take the same statistic from ClickHouse's own
`kolmogorovSmirnovTest` instead (`ks_native_sql`), which is several times faster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.monitor.sql import ident, literal

__all__ = [
    "DISTRIBUTION_SQL",
    "KS_NATIVE_EPSILON",
    "bin_index",
    "categorical_hist_sql",
    "ks_gap_sql",
    "ks_native_sql",
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


def ks_sql(data: str, columns: Sequence[str], counts: Mapping[str, Mapping[int, int]]) -> str:
    """(feature, s, ks) for every column and chunk code s; `counts[column][s]` is the
    number of finite values of the column in chunk s."""
    branches = []
    for name in columns:
        keys = sorted(counts[name])
        key_sql = "CAST([" + ", ".join(str(k) for k in keys) + "] AS Array(Int64))"
        n_sql = "CAST([" + ", ".join(str(counts[name][k]) for k in keys) + "] AS Array(Float64))"
        branches.append(
            f"""
SELECT {literal(name)} AS feature, s, max(greatest(
    abs(le / nr - cle / transform(s, {key_sql}, {n_sql}, 1.)),
    abs(lt / nr - clt / transform(s, {key_sql}, {n_sql}, 1.)))) AS ks
FROM (
  SELECT arraySort((s, v) -> v, S0, V0) AS S, arraySort(V0) AS V,
    arrayMap((a, b) -> a != b, V, arrayPushBack(arrayPopFront(V), inf)) AS block_end,
    arrayMap((a, b) -> a != b, V, arrayPushFront(arrayPopBack(V), -inf)) AS block_start,
    arrayCumSum(block_start) AS block,
    arrayCumSum(arrayMap(s -> toUInt64(s < 0), S)) AS cum_ref,
    toFloat64(cum_ref[-1]) AS nr,
    arrayReverseFill((c, m) -> m, cum_ref, block_end) AS ref_le,
    arrayFill((c, m) -> m, arrayPushFront(arrayPopBack(cum_ref), toUInt64(0)), block_start)
      AS ref_lt,
    arrayEnumerateUniq(S) AS rank,
    arrayMap((r, a) -> r + a - 1, rank,
      arrayReverse(arrayEnumerateUniq(arrayReverse(block), arrayReverse(S)))) AS c_le,
    arrayMap((r, a) -> r - a, rank, arrayEnumerateUniq(block, S)) AS c_lt
  FROM (
    SELECT groupArray(v) AS V0, groupArray(__s) AS S0
    FROM (SELECT __s, {value(name)} AS v FROM {data}) WHERE isFinite(v)
  )
)
ARRAY JOIN S AS s, ref_le AS le, ref_lt AS lt, c_le AS cle, c_lt AS clt
GROUP BY s"""
        )
    return " UNION ALL ".join(branches)


# kolmogorovSmirnovTest treats |x - y| < DBL_EPSILON as a tie
KS_NATIVE_EPSILON = 2.220446049250313e-16


def ks_native_sql(
    data: str, columns: Sequence[str], counts: Mapping[str, Mapping[int, int]]
) -> str:
    """As `ks_sql`, through ClickHouse's `kolmogorovSmirnovTest` (several times faster):
    for columns whose distinct values are all at least `KS_NATIVE_EPSILON` apart
    (`ks_gap_sql`). The function sorts both samples and walks them, exact with ties, but
    it takes values closer than that epsilon for equal. A reference row is fed to every
    chunk's group as the reference sample (0), and to its own chunk's group as the chunk
    sample (1) too: a reference chunk is judged against the whole reference, itself
    included."""
    branches = []
    for name in columns:
        codes = sorted(counts[name])
        as_reference = "[" + ", ".join(f"({int(c)}, 0)" for c in codes) + "]"
        pairs = (
            f"CAST(if(__s < 0, arrayPushFront({as_reference}, (__s, 1)), [(__s, 1)]) "
            "AS Array(Tuple(Int64, UInt8)))"
        )
        branches.append(
            f"SELECT {literal(name)} AS feature, p.1 AS s, "
            "kolmogorovSmirnovTest('two-sided', 'asymp')(v, p.2).1 AS ks "
            f"FROM (SELECT __s, v FROM (SELECT __s, {value(name)} AS v FROM {data}) "
            f"WHERE isFinite(v)) ARRAY JOIN {pairs} AS p GROUP BY s"
        )
    return " UNION ALL ".join(branches)


def ks_gap_sql(data: str, columns: Sequence[str]) -> str:
    """(feature, gap): the smallest difference between two distinct finite values of each
    column, both periods together (inf when there are fewer than two)."""
    return " UNION ALL ".join(
        f"SELECT {literal(name)} AS feature, "
        "if(empty(g), inf, arrayMin(g)) AS gap FROM (SELECT "
        "arrayFilter(d -> d > 0, arrayDifference(arraySort(groupArray(v)))) AS g "
        f"FROM (SELECT {value(name)} AS v FROM {data}) WHERE isFinite(v))"
        for name in columns
    )


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
