"""Chunked drift statistics computed inside ClickHouse, with thresholds from the reference.

`compute_drift(client, reference_sql, analysis_sql, spec)` compares each chunk of the
analysis source, and each chunk of the reference itself, with the whole reference:

- numeric features and the score: PSI on the reference bins (the manifest's edges when
  given, else the reference's deciles; values outside the edges count in the end bins),
  smoothed by adding 0.5 to every bin count so an empty bin cannot make it infinite; the
  two-sample Kolmogorov-Smirnov statistic, exact (ties included); null rate;
- categorical features and the label: PSI on the categories (same smoothing), the
  Jensen-Shannon distance (base 2, in [0, 1], scipy's `jensenshannon`), the chi-squared
  statistic of the 2 x k table reference vs chunk (scipy's `chi2_contingency` without
  correction) and its effect size Cramér's V = sqrt(chi2 / n); null rate;
- all numeric features together: the mean PCA reconstruction error (multivariate.py).

Every value is a `DriftRow` with its threshold (thresholds.py: the metric's spread over
the reference's chunks, floored by an effect size) and whether it alerts. The rows stay
in ClickHouse until the end: the work is a handful of INSERT … SELECT into Memory tables
named `_drift_<random>_*`, dropped afterwards, so the same code serves the live monitor
(its store) and `driftloop drift report` (a throw-away store over Parquet files).

KS without replicating the reference per chunk: for a chunk with sorted distinct values
x_1 < … < x_m and ECDF F_c, the reference ECDF F_r is non-decreasing, so on [x_i, x_{i+1})
(where F_c is constant) |F_r - F_c| is largest at an end: F_r(x_i) or F_r(x_{i+1}-).
Both come from two ASOF joins of the chunk's points against the reference's cumulative
counts (`<=` and `<`), and a point at -inf covers the values below x_1.
"""

from __future__ import annotations

import math
import secrets
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from clickhouse_connect.driver.client import Client

from services.monitor.multivariate import PcaModel, fit_pca, standardized_array
from services.monitor.sql import ident, literal
from services.monitor.thresholds import derive_threshold

__all__ = ["PSI_SMOOTHING", "DriftRow", "DriftSpec", "compute_drift"]

PSI_SMOOTHING = 0.5  # added to every bin count before proportions are taken
_DECILES = ", ".join(str(i / 10) for i in range(11))
_SETTINGS = {"async_insert": 0, "join_use_nulls": 0}

Kind = Literal["feature", "score", "label", "multivariate"]
Period = Literal["reference", "analysis"]


@dataclass(frozen=True)
class DriftSpec:
    """What to judge. `bins` maps a numeric column to its reference bin edges
    e_0 < … < e_n (a model manifest's `Histogram.bin_edges`)."""

    numeric: Sequence[str] = ()
    categorical: Sequence[str] = ()
    score: str | None = None
    label: str | None = None
    bins: Mapping[str, Sequence[float]] = field(default_factory=dict)
    multivariate: bool = True
    overrides: Mapping[str, float] = field(default_factory=dict)  # metric -> threshold

    def kinds(self) -> dict[str, Kind]:
        kinds: dict[str, Kind] = {n: "feature" for n in (*self.numeric, *self.categorical)}
        if self.score:
            kinds[self.score] = "score"
        if self.label:
            kinds[self.label] = "label"
        return kinds


@dataclass(frozen=True)
class DriftRow:
    period: Period
    chunk: int
    start: float  # min and max of the chunk's `__key` (row index or epoch ms)
    end: float
    rows: int
    kind: Kind
    feature: str
    metric: str
    value: float
    threshold: float
    alert: bool

    def as_dict(self) -> dict[str, object]:
        return {k: _json_number(v) for k, v in self.__dict__.items()}


def _json_number(v: object) -> object:
    return None if isinstance(v, float) and not math.isfinite(v) else v


@contextmanager
def _scratch(client: Client) -> Iterator[str]:
    prefix = f"_drift_{secrets.token_hex(4)}_"
    try:
        yield prefix
    finally:
        names = client.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() "
            f"AND startsWith(name, {literal(prefix)})"
        ).result_rows
        for (name,) in names:
            client.command(f"DROP TABLE IF EXISTS {ident(name)}")


def _both(reference_sql: str, analysis_sql: str, columns: str) -> str:
    return (
        f"SELECT 'reference' AS period, toInt64(__chunk) AS chunk, {columns} "
        f"FROM ({reference_sql}) UNION ALL "
        f"SELECT 'analysis' AS period, toInt64(__chunk) AS chunk, {columns} "
        f"FROM ({analysis_sql})"
    )


def _run(client: Client, sql: str) -> None:
    client.command(sql, settings=_SETTINGS)


def _long_tables(client: Client, t: str, ref: str, ana: str, spec: DriftSpec) -> tuple[str, str]:
    """Unpivot the sources into (period, chunk, feature, value, is_null) tables."""
    numeric = [*spec.numeric, *([spec.score] if spec.score else [])]
    categorical = [*spec.categorical, *([spec.label] if spec.label else [])]
    for name, cols, cast in (
        # + 0. turns -0.0 into 0.0: equal in comparisons, but distinct keys in GROUP BY.
        ("num", numeric, "ifNull(toFloat64({c}), nan) + 0."),
        ("cat", categorical, "CAST({c} AS Nullable(String))"),
    ):
        if name == "num":
            value, null = "kv.2", "NOT isFinite(kv.2)"
            vtype = "Float64"
        else:
            value, null = "ifNull(kv.2, '')", "isNull(kv.2)"
            vtype = "String"
        _run(
            client,
            f"CREATE TABLE {t}{name} (period LowCardinality(String), chunk Int64, "
            f"feature LowCardinality(String), value {vtype}, is_null UInt8) ENGINE = Memory",
        )
        if not cols:
            continue
        kvs = ", ".join(f"tuple({literal(c)}, {cast.format(c=ident(c))})" for c in cols)
        _run(
            client,
            f"INSERT INTO {t}{name} SELECT period, chunk, kv.1, {value}, {null} FROM "
            f"({_both(ref, ana, f'[{kvs}] AS kvs')}) ARRAY JOIN kvs AS kv",
        )
    return f"{t}num", f"{t}cat"


def _histograms(client: Client, t: str, num: str, cat: str, spec: DriftSpec) -> None:
    """`{t}hist`: counts per (period, chunk, feature, bin); `{t}refh`: the reference's
    counts per (feature, bin), every bin of the edges present (0 when empty)."""
    given = [f"({literal(n)}, {_inner_edges_sql(e)})" for n, e in spec.bins.items() if len(e) >= 2]
    learnt = (
        f"SELECT feature, arrayFilter(e -> e > q[1] AND e < q[-1], q) AS inner FROM ("
        f"SELECT feature, arrayDistinct(arraySort(quantilesExactInclusive({_DECILES})(value))) "
        f"AS q FROM {num} WHERE period = 'reference' AND NOT is_null GROUP BY feature)"
    )
    if given:
        names = ", ".join(literal(n) for n in spec.bins)
        learnt += f" WHERE feature NOT IN ({names})"
        learnt = (
            f"{learnt} UNION ALL SELECT g.1 AS feature, g.2 AS inner "
            f"FROM (SELECT arrayJoin([{', '.join(given)}]) AS g)"
        )
    _run(client, f"CREATE TABLE {t}edges ENGINE = Memory AS {learnt}")
    _run(
        client,
        f"CREATE TABLE {t}hist ENGINE = Memory AS "
        f"SELECT n.period AS period, n.chunk AS chunk, n.feature AS feature, "
        f"toString(arrayCount(e -> n.value >= e, e.inner)) AS bin, count() AS cnt "
        f"FROM {num} AS n INNER JOIN {t}edges AS e ON n.feature = e.feature "
        f"WHERE NOT n.is_null GROUP BY period, chunk, feature, bin "
        f"UNION ALL SELECT period, chunk, feature, value AS bin, count() AS cnt "
        f"FROM {cat} WHERE NOT is_null GROUP BY period, chunk, feature, bin",
    )
    _run(
        client,
        f"CREATE TABLE {t}refh ENGINE = Memory AS SELECT feature, bin, sum(c) AS rc FROM ("
        f"SELECT feature, bin, cnt AS c FROM {t}hist WHERE period = 'reference' "
        f"UNION ALL SELECT feature, toString(b) AS bin, toUInt64(0) AS c FROM {t}edges "
        f"ARRAY JOIN range(toUInt64(length(inner) + 1)) AS b) GROUP BY feature, bin",
    )


def _inner_edges_sql(edges: Sequence[float]) -> str:
    inner = [float(e) for e in edges[1:-1]]
    return "CAST([" + ", ".join(repr(e) for e in inner) + "] AS Array(Float64))"


_DISTRIBUTION_SQL = """
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
      FROM (SELECT DISTINCT period, chunk FROM {t}meta) AS c CROSS JOIN {t}refh AS r
      UNION ALL SELECT period, chunk, feature, bin, toUInt64(0) AS rc, cnt AS tc FROM {t}hist
    ) GROUP BY period, chunk, feature, bin
  ) GROUP BY period, chunk, feature
)
"""

_KS_SQL = """
SELECT p.period, p.chunk, p.feature,
  max(greatest(abs(r1.le / n.nr - p.le / p.nc), abs(r2.le / n.nr - p.le / p.nc))) AS ks
FROM (
  SELECT period, chunk, feature, pts.1 AS value, pts.2 AS next_value, pts.3 AS le, nc
  FROM (
    SELECT period, chunk, feature, arraySort(x -> x.1, groupArray((value, cnt))) AS vc,
      arrayMap(x -> x.1, vc) AS xs, arrayCumSum(arrayMap(x -> x.2, vc)) AS cs,
      toFloat64(cs[-1]) AS nc
    FROM (SELECT period, chunk, feature, value, count() AS cnt FROM {num}
          WHERE NOT is_null GROUP BY period, chunk, feature, value)
    GROUP BY period, chunk, feature
  ) ARRAY JOIN arrayZip(arrayPushFront(xs, -inf), arrayPushBack(xs, inf),
    arrayPushFront(arrayMap(x -> toFloat64(x), cs), 0.)) AS pts
) AS p
INNER JOIN (SELECT feature, toFloat64(max(le)) AS nr FROM {t}rcdf GROUP BY feature) AS n
  ON p.feature = n.feature
ASOF LEFT JOIN {t}rcdf AS r1 ON p.feature = r1.feature AND p.value >= r1.value
ASOF LEFT JOIN {t}rcdf AS r2 ON p.feature = r2.feature AND p.next_value > r2.value
GROUP BY p.period, p.chunk, p.feature
"""


def _ks(client: Client, t: str, num: str) -> list[tuple[str, int, str, float]]:
    _run(
        client,
        f"CREATE TABLE {t}rcdf ENGINE = Memory AS SELECT feature, value, "
        f"sum(cnt) OVER (PARTITION BY feature ORDER BY value ROWS UNBOUNDED PRECEDING) AS le "
        f"FROM (SELECT feature, value, count() AS cnt FROM {num} "
        f"WHERE period = 'reference' AND NOT is_null GROUP BY feature, value)",
    )
    rows = client.query(_KS_SQL.format(t=t, num=num), settings=_SETTINGS).result_rows
    return [(p, int(c), f, float(v)) for p, c, f, v in rows]


def _fit_pca(client: Client, t: str, num: str, ref: str, spec: DriftSpec) -> PcaModel | None:
    stats = client.query(
        f"SELECT feature, avg(value), stddevSamp(value) FROM {num} "
        "WHERE period = 'reference' AND NOT is_null GROUP BY feature"
    ).result_rows
    usable = {f: (m, s) for f, m, s in stats if math.isfinite(s) and s > 0}
    names = [n for n in spec.numeric if n in usable]
    if len(names) < 2:
        return None
    means = [usable[n][0] for n in names]
    stds = [usable[n][1] for n in names]
    z = standardized_array(names, means, stds)
    # covarSampMatrix takes columns, not an array: expand the array into its elements.
    cols = ", ".join(f"z[{i + 1}]" for i in range(len(names)))
    cov = client.query(
        f"SELECT covarSampMatrix({cols}) FROM (SELECT {z} AS z FROM ({ref}))"
    ).result_rows[0][0]
    return fit_pca(names, means, stds, np.asarray(cov, dtype=float))


def compute_drift(
    client: Client, reference_sql: str, analysis_sql: str, spec: DriftSpec
) -> list[DriftRow]:
    """Drift of every chunk of `analysis_sql` (and of `reference_sql`) against the whole
    reference; both are sources (sql.py) with `__chunk`, `__key` and the spec's columns."""
    kinds = spec.kinds()
    if not kinds:
        raise ValueError("nothing to judge: the spec names no column")
    values: dict[tuple[str, int, str, str], float] = {}
    with _scratch(client) as t:
        _run(
            client,
            f"CREATE TABLE {t}meta ENGINE = Memory AS SELECT period, chunk, count() AS rows, "
            f"min(__key) AS start, max(__key) AS end FROM "
            f"({_both(reference_sql, analysis_sql, 'toFloat64(__key) AS __key')}) "
            "GROUP BY period, chunk",
        )
        meta = {
            (p, int(c)): (int(n), float(s), float(e))
            for p, c, n, s, e in client.query(f"SELECT * FROM {t}meta").result_rows
        }
        num, cat = _long_tables(client, t, reference_sql, analysis_sql, spec)
        _histograms(client, t, num, cat, spec)
        categorical = {*spec.categorical, *([spec.label] if spec.label else [])}
        dist = client.query(
            _DISTRIBUTION_SQL.format(t=t, alpha=PSI_SMOOTHING), settings=_SETTINGS
        ).result_rows
        for p, c, f, _nr, _nt, psi, js, chi2, v in dist:
            values[(p, int(c), f, "psi")] = psi
            if f in categorical:
                values[(p, int(c), f, "jensen_shannon")] = js
                values[(p, int(c), f, "chi_squared")] = chi2
                values[(p, int(c), f, "cramers_v")] = v
        for p, c, f, ks in _ks(client, t, num):
            values[(p, c, f, "ks")] = ks
        nulls = client.query(
            f"SELECT period, chunk, feature, avg(is_null) FROM "
            f"(SELECT period, chunk, feature, is_null FROM {num} UNION ALL "
            f"SELECT period, chunk, feature, is_null FROM {cat}) GROUP BY period, chunk, feature"
        ).result_rows
        for p, c, f, rate in nulls:
            values[(p, int(c), f, "null_rate")] = float(rate)
        pca = _fit_pca(client, t, num, reference_sql, spec) if spec.multivariate else None
        if pca is not None:
            errors = client.query(
                f"SELECT period, chunk, avg(err) FROM "
                f"({_both(reference_sql, analysis_sql, f'{pca.error_sql()} AS err')}) "
                "GROUP BY period, chunk"
            ).result_rows
            for p, c, err in errors:
                values[(p, int(c), "*", "pca_reconstruction_error")] = float(err)
            kinds = {**kinds, "*": "multivariate"}
    return _judge(values, meta, kinds, spec.overrides)


def _judge(
    values: Mapping[tuple[str, int, str, str], float],
    meta: Mapping[tuple[str, int], tuple[int, float, float]],
    kinds: Mapping[str, Kind],
    overrides: Mapping[str, float],
) -> list[DriftRow]:
    reference: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (period, _chunk, feature, metric), value in values.items():
        if period == "reference":
            reference[(feature, metric)].append(float(value))
    thresholds = {
        key: derive_threshold(key[1], vals, overrides=overrides) for key, vals in reference.items()
    }
    rows = []
    for (period, chunk, feature, metric), value in sorted(values.items()):
        threshold = thresholds.get((feature, metric))
        rows_n, start, end = meta[(period, chunk)]
        value = float(value)
        rows.append(
            DriftRow(
                period="reference" if period == "reference" else "analysis",
                chunk=chunk,
                start=start,
                end=end,
                rows=rows_n,
                kind=kinds.get(feature, "feature"),
                feature=feature,
                metric=metric,
                value=value,
                threshold=threshold.value if threshold else math.nan,
                alert=threshold.breached(value) if threshold else False,
            )
        )
    return rows
