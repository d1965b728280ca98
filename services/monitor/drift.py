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
- all numeric features together: the mean PCA reconstruction error (multivariate.py),
  fitted on the even reference chunks, the odd ones giving its reference values.

Every value is a `DriftRow` with its threshold (thresholds.py: the metric's spread over
the reference's chunks, floored by an effect size) and whether it alerts. The rows stay
in ClickHouse until the end: both sources are copied once into a Memory table named
`_drift_<random>_data` (dropped afterwards, with the other scratch tables), every statistic
is SQL over it (drift_sql.py), and only per-chunk results come back to Python. The same
code serves the live monitor (its store) and `driftloop drift report` (a throw-away store
over Parquet files).

How KS is exact without replicating the reference per chunk: see drift_sql.py.
"""

from __future__ import annotations

import math
import secrets
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from clickhouse_connect.driver.client import Client

from services.monitor import drift_sql
from services.monitor.multivariate import PcaModel, fit_pca, standardized_array
from services.monitor.sql import ident, literal
from services.monitor.thresholds import derive_threshold

__all__ = ["PSI_SMOOTHING", "DriftRow", "DriftSpec", "compute_drift"]

PSI_SMOOTHING = 0.5  # added to every bin count before proportions are taken
_DECILES = ", ".join(str(i / 10) for i in range(11))
_PERIOD = "Enum8('reference' = 1, 'analysis' = 2)"
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
    ks: bool = True  # the exact KS costs one sort per column over both periods
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
        f"SELECT CAST('reference' AS {_PERIOD}) AS period, toInt64(__chunk) AS chunk, "
        f"-chunk - 1 AS __s, {columns} FROM ({reference_sql}) UNION ALL "
        f"SELECT CAST('analysis' AS {_PERIOD}) AS period, toInt64(__chunk) AS chunk, "
        f"chunk AS __s, {columns} FROM ({analysis_sql})"
    )


def _run(client: Client, sql: str) -> None:
    client.command(sql, settings=_SETTINGS)


def _rows(client: Client, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in client.query(sql, settings=_SETTINGS).result_rows]


def _learn_edges(
    client: Client, data: str, numeric: Sequence[str], given: Mapping[str, Sequence[float]]
) -> dict[str, list[float]]:
    """Inner bin edges per numeric column: the manifest's when given, else the reference's
    deciles (numpy's linear quantiles, ties merged, the min and max dropped)."""
    edges = {n: [float(e) for e in given[n][1:-1]] for n in numeric if n in given}
    todo = [n for n in numeric if n not in given]
    if todo:
        v = {n: drift_sql.value(n) for n in todo}
        exprs = ", ".join(
            f"quantilesExactInclusiveIf({_DECILES})({v[n]}, isFinite({v[n]}))" for n in todo
        )
        (row,) = _rows(client, f"SELECT {exprs} FROM {data} WHERE period = 'reference'")
        for name, qs in zip(todo, row, strict=True):
            q = sorted({float(x) for x in qs if math.isfinite(x)})
            if q:  # no finite reference value: no bins, no PSI or KS for the column
                edges[name] = [x for x in q if q[0] < x < q[-1]]
    return edges


def compute_drift(
    client: Client, reference_sql: str, analysis_sql: str, spec: DriftSpec
) -> list[DriftRow]:
    """Drift of every chunk of `analysis_sql` (and of `reference_sql`) against the whole
    reference; both are sources (sql.py) with `__chunk`, `__key` and the spec's columns."""
    kinds = spec.kinds()
    if not kinds:
        raise ValueError("nothing to judge: the spec names no column")
    numeric = [*spec.numeric, *([spec.score] if spec.score else [])]
    categorical = [*spec.categorical, *([spec.label] if spec.label else [])]
    columns = ", ".join(["toFloat64(__key) AS __key", *(ident(c) for c in kinds)])
    values: dict[tuple[str, int, str, str], float] = {}
    with _scratch(client) as t:
        data = f"{t}data"
        _run(
            client,
            f"CREATE TABLE {data} ENGINE = Memory AS {_both(reference_sql, analysis_sql, columns)}",
        )
        _run(
            client,
            f"CREATE TABLE {t}meta ENGINE = Memory AS SELECT period, chunk, count() AS rows, "
            f"min(__key) AS start, max(__key) AS end FROM {data} GROUP BY period, chunk",
        )
        meta = {
            (p, int(c)): (int(n), float(s), float(e))
            for p, c, n, s, e in _rows(client, f"SELECT * FROM {t}meta")
        }
        finite: dict[str, dict[int, int]] = {n: {} for n in numeric}
        null_exprs = [f"countIf(NOT isFinite({drift_sql.value(n)}))" for n in numeric]
        null_exprs += [f"countIf({ident(n)} IS NULL)" for n in categorical]
        for p, c, n, *nulls in _rows(
            client,
            f"SELECT period, chunk, count(), {', '.join(null_exprs)} FROM {data} "
            "GROUP BY period, chunk",
        ):
            code = -int(c) - 1 if p == "reference" else int(c)
            for name, missing in zip([*numeric, *categorical], nulls, strict=True):
                values[(p, int(c), name, "null_rate")] = missing / n
                if name in finite:
                    finite[name][code] = int(n) - int(missing)
        edges = _learn_edges(client, data, numeric, spec.bins)
        hist_parts = [
            sql for sql in (
                drift_sql.numeric_hist_sql(data, edges) if edges else "",
                drift_sql.categorical_hist_sql(data, categorical) if categorical else "",
            ) if sql
        ]  # fmt: skip
        _run(client, f"CREATE TABLE {t}hist ENGINE = Memory AS {' UNION ALL '.join(hist_parts)}")
        _run(
            client,
            f"CREATE TABLE {t}refh ENGINE = Memory AS SELECT feature, bin, sum(c) AS rc FROM ("
            f"SELECT feature, bin, cnt AS c FROM {t}hist WHERE period = 'reference' "
            "UNION ALL SELECT g.1 AS feature, toString(arrayJoin(range(toUInt64(g.2)))) AS bin, "
            f"toUInt64(0) AS c FROM (SELECT arrayJoin({_bins_per_feature(edges)}) AS g)"
            ") GROUP BY feature, bin",
        )
        dist = _rows(
            client,
            drift_sql.DISTRIBUTION_SQL.format(
                alpha=PSI_SMOOTHING,
                meta=f"(SELECT period, chunk FROM {t}meta)",
                refh=f"{t}refh",
                hist=f"{t}hist",
            ),
        )
        for p, c, f, _nr, _nt, psi, js, chi2, v in dist:
            values[(p, int(c), f, "psi")] = psi
            if f in categorical:
                values[(p, int(c), f, "jensen_shannon")] = js
                values[(p, int(c), f, "chi_squared")] = chi2
                values[(p, int(c), f, "cramers_v")] = v
        ks_columns = [n for n in numeric if n in edges] if spec.ks else []
        if ks_columns:
            # the distinct-values path first; the columns it cannot judge (ties) again
            ks_rows = _rows(client, drift_sql.ks_distinct_sql(data, ks_columns, finite))
            tied = sorted({f for f, _s, _ks, distinct in ks_rows if not distinct})
            ks_rows = [r[:3] for r in ks_rows if r[0] not in tied]
            if tied:
                ks_rows += _rows(client, drift_sql.ks_sql(data, tied, finite))
            for f, s, ks in ks_rows:
                p, c = ("reference", -int(s) - 1) if s < 0 else ("analysis", int(s))
                values[(p, c, f, "ks")] = float(ks)
        # PCA is fitted on the even reference chunks and its reference errors come from the
        # odd ones: in-sample, the discarded axes are the sample's quietest directions and
        # its error is biased low (by ~15 % with 30 features and 5,000 rows), which made
        # the thresholds fire on fresh data from the same distribution.
        ref_chunks = sorted(c for p, c in meta if p == "reference")
        held_out = len(ref_chunks) >= 2
        fit_on = "chunk % 2 = 0" if held_out else "1"
        pca = _fit_pca(client, data, spec, fit_on) if spec.multivariate else None
        if pca is not None:
            skip = f"WHERE NOT (period = 'reference' AND {fit_on})" if held_out else ""
            errors = _rows(
                client,
                f"SELECT period, chunk, avg({pca.error_sql()}) FROM {data} {skip} "
                "GROUP BY period, chunk",
            )
            for p, c, err in errors:
                values[(p, int(c), "*", "pca_reconstruction_error")] = float(err)
            kinds = {**kinds, "*": "multivariate"}
    return _judge(values, meta, kinds, spec.overrides)


def _bins_per_feature(edges: Mapping[str, Sequence[float]]) -> str:
    pairs = [f"({literal(n)}, {len(inner) + 1})" for n, inner in edges.items()]
    return f"CAST([{', '.join(pairs)}] AS Array(Tuple(String, UInt64)))"


def _fit_pca(client: Client, data: str, spec: DriftSpec, where: str) -> PcaModel | None:
    if len(spec.numeric) < 2:
        return None
    v = {n: drift_sql.value(n) for n in spec.numeric}
    exprs = ", ".join(
        f"avgIf({v[n]}, isFinite({v[n]})), stddevSampIf({v[n]}, isFinite({v[n]}))"
        for n in spec.numeric
    )
    (row,) = _rows(client, f"SELECT {exprs} FROM {data} WHERE period = 'reference' AND {where}")
    stats = {n: (float(row[2 * i]), float(row[2 * i + 1])) for i, n in enumerate(spec.numeric)}
    names = [n for n, (m, s) in stats.items() if math.isfinite(m) and math.isfinite(s) and s > 0]
    if len(names) < 2:
        return None
    means = [stats[n][0] for n in names]
    stds = [stats[n][1] for n in names]
    z = standardized_array(names, means, stds)
    # covarSampMatrix takes columns, not an array: expand the array into its elements.
    cols = ", ".join(f"z[{i + 1}]" for i in range(len(names)))
    ((cov,),) = _rows(
        client, f"SELECT covarSampMatrix({cols}) FROM (SELECT {z} AS z FROM {data} "
        f"WHERE period = 'reference' AND {where})",
    )  # fmt: skip
    return fit_pca(names, means, stds, np.asarray(cov, dtype=float))


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
