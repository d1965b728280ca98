"""The monitor's drift statistics on any two Parquet files, in a throw-away chDB store.

`drift_report` loads the files into a temporary store (ClickHouse's own Parquet reader,
file order kept), chooses the columns to judge and runs `compute_drift`, the very SQL the
live monitor runs. Without an explicit feature list, columns that look like ids, time
stamps or free text are left out, and the report says which and why: a row id "drifts"
in every chunk and would drown the real alerts, so it is listed, not silently judged.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from clickhouse_connect.driver.client import Client

from services.common.clickhouse import connect
from services.monitor.drift import DriftRow, DriftSpec, compute_drift
from services.monitor.performance import estimate_binary, realised_binary, realised_regression
from services.monitor.sql import by_rows, ident, literal

__all__ = [
    "ColumnChoice",
    "DriftReport",
    "PerformanceRow",
    "ReportError",
    "choose_columns",
    "drift_report",
]

_ID_NAME = re.compile(r"(^|[_\W])(id|uuid|guid|key|index)$|^(id|uuid|guid)([_\W]|$)", re.I)
_TIME_NAME = re.compile(r"(^|_)(time|timestamp|ts|date|datetime)$|_at$", re.I)
_NUMERIC = re.compile(r"^(U?Int\d+|Float\d+|Decimal.*)$")
_TEMPORAL = re.compile(r"^(Date|Date32|DateTime|DateTime64)(\(.*\))?$")
FREE_TEXT_DISTINCT_SHARE = 0.5  # a string column with more distinct values than this share
FREE_TEXT_MIN_ROWS = 50
MAX_CATEGORIES = 200


class ReportError(ValueError):
    """Bad input to a drift report (missing file or column); the message says which."""


@dataclass(frozen=True)
class ColumnChoice:
    numeric: list[str]
    categorical: list[str]
    left_out: dict[str, str] = field(default_factory=dict)  # column -> why


@dataclass(frozen=True)
class PerformanceRow:
    """A chunk's performance: realised on its labelled rows (NaN without labels) and the
    label-free CBPE estimate from its scores with the 95 % band (binary tasks)."""

    period: str
    chunk: int
    metric: str
    labelled: int
    realised: float
    estimated: float
    low: float
    high: float


@dataclass(frozen=True)
class DriftReport:
    columns: ColumnChoice
    chunk_size: int
    reference_rows: int
    analysis_rows: int
    rows: list[DriftRow]
    performance: list[PerformanceRow] = field(default_factory=list)

    def alerts(self) -> list[DriftRow]:
        return [r for r in self.rows if r.alert and r.period == "analysis"]

    def as_dict(self) -> dict[str, object]:
        return {
            "chunk_size": self.chunk_size,
            "reference_rows": self.reference_rows,
            "analysis_rows": self.analysis_rows,
            "numeric": self.columns.numeric,
            "categorical": self.columns.categorical,
            "left_out": self.columns.left_out,
            "rows": [r.as_dict() for r in self.rows],
            "performance": [
                {
                    k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in r.__dict__.items()
                }
                for r in self.performance
            ],
        }


def _base_type(ch_type: str) -> str:
    for wrapper in ("Nullable(", "LowCardinality("):
        while ch_type.startswith(wrapper):
            ch_type = ch_type[len(wrapper) : -1]
    return ch_type


def choose_columns(
    client: Client,
    table: str,
    types: dict[str, str],
    *,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    reserved: Sequence[str] = (),
) -> ColumnChoice:
    """Split `types` (column -> ClickHouse type) into numeric and categorical features.

    `features` chooses explicitly (an unknown name is an error); otherwise every column is
    considered and ids, time stamps and free text are left out with the reason."""
    left_out: dict[str, str] = {}
    for name in reserved:
        if name in types:
            left_out[name] = "the time stamp or id column (orders or joins rows)"
    if features is not None:
        unknown = [f for f in features if f not in types]
        if unknown:
            raise ReportError(f"--features names unknown columns {unknown}; have {sorted(types)}")
        candidates = [f for f in features if f not in reserved]
    else:
        candidates = [c for c in types if c not in reserved and not c.startswith("__")]
    for name in exclude:
        if name not in types:
            raise ReportError(f"--exclude names unknown column {name!r}; have {sorted(types)}")
        left_out[name] = "excluded (--exclude)"
    numeric: list[str] = []
    categorical: list[str] = []
    strings: list[str] = []
    for name in candidates:
        if name in exclude:
            continue
        base = _base_type(types[name])
        explicit = features is not None
        if _TEMPORAL.match(base) or (not explicit and _TIME_NAME.search(name)):
            if explicit and _TEMPORAL.match(base):
                raise ReportError(f"column {name!r} is a time stamp ({base}), not a feature")
            left_out[name] = f"looks like a time stamp ({base})"
        elif not explicit and _ID_NAME.search(name):
            left_out[name] = "looks like an id (by its name)"
        elif _NUMERIC.match(base):
            numeric.append(name)
        elif base in ("String", "Bool") or base.startswith(("FixedString", "Enum")):
            (strings if base != "Bool" and not explicit else categorical).append(name)
        else:
            left_out[name] = f"unsupported type {base}"
    if strings:
        exprs = ", ".join(
            f"uniqExact({ident(s)}), avg(length(toString(ifNull({ident(s)}, ''))))" for s in strings
        )
        stats = client.query(f"SELECT count(), {exprs} FROM {table}").result_rows[0]
        rows = int(stats[0])
        for i, name in enumerate(strings):
            distinct, avg_len = int(stats[1 + 2 * i]), float(stats[2 + 2 * i])
            if rows >= FREE_TEXT_MIN_ROWS and distinct > FREE_TEXT_DISTINCT_SHARE * rows:
                left_out[name] = f"looks like free text or an id ({distinct} distinct in {rows})"
            elif distinct > MAX_CATEGORIES or avg_len > 60:
                left_out[name] = f"looks like free text ({distinct} distinct, {avg_len:.0f} chars)"
            else:
                categorical.append(name)
    return ColumnChoice(numeric=numeric, categorical=categorical, left_out=left_out)


def _load(client: Client, name: str, path: Path, order: str | None) -> dict[str, str]:
    if not path.is_file():
        raise ReportError(f"no such Parquet file: {path}")
    src = f"file({literal(str(path.resolve()))}, Parquet)"
    try:
        types = {c: t for c, t, *_ in client.query(f"DESCRIBE {src}").result_rows}
    except Exception as exc:
        raise ReportError(f"cannot read {path} as Parquet: {exc}") from None
    if order is not None and order not in types:
        raise ReportError(f"{path} has no column {order!r}; have {sorted(types)}")
    # One reading thread keeps the file's row order in __row.
    client.command(
        f"CREATE TABLE {name} ENGINE = MergeTree ORDER BY __row AS "
        f"SELECT *, toInt64(rowNumberInAllBlocks()) AS __row FROM {src}",
        settings={"max_threads": 1, "async_insert": 0},
    )
    return types


def drift_report(
    reference: Path,
    analysis: Path,
    chunk_size: int | None = None,
    *,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    timestamp_column: str | None = None,
    score_column: str | None = None,
    label_column: str | None = None,
    labels: Path | None = None,
    id_column: str | None = None,
    store_dir: Path | None = None,
) -> DriftReport:
    """Chunked drift of `analysis` against `reference` (see module docstring)."""
    if labels is not None and (id_column is None or label_column is None):
        raise ReportError("--labels needs --id-column and --label-column")
    with tempfile.TemporaryDirectory(prefix="driftloop-report-", dir=store_dir) as tmp:
        client = connect(f"chdb://{Path(tmp) / 'store'}")
        try:
            ref_types = _load(client, "reference", reference, timestamp_column)
            ana_types = _load(client, "analysis", analysis, timestamp_column)
            ref_rel, ana_rel = "reference", "analysis"
            if labels is not None:
                assert id_column is not None and label_column is not None
                lab_types = _load(client, "labels", labels, id_column)
                if label_column not in lab_types:
                    raise ReportError(f"{labels} has no column {label_column!r}")
                for what, types in (("reference", ref_types), ("analysis", ana_types)):
                    if id_column not in types:
                        raise ReportError(f"the {what} file has no id column {id_column!r}")
                ref_rel, ana_rel = (
                    f"(SELECT d.* EXCEPT ({ident(label_column)}), l.{ident(label_column)} "
                    f"AS {ident(label_column)} FROM {t} AS d LEFT JOIN (SELECT "
                    f"{ident(id_column)}, any({ident(label_column)}) AS {ident(label_column)} "
                    f"FROM labels GROUP BY {ident(id_column)}) AS l USING ({ident(id_column)}))"
                    if label_column in types
                    else f"(SELECT d.*, l.{ident(label_column)} AS {ident(label_column)} "
                    f"FROM {t} AS d LEFT JOIN (SELECT {ident(id_column)}, "
                    f"any({ident(label_column)}) AS {ident(label_column)} FROM labels "
                    f"GROUP BY {ident(id_column)}) AS l USING ({ident(id_column)}))"
                    for t, types in (("reference", ref_types), ("analysis", ana_types))
                )
                ref_types[label_column] = ana_types[label_column] = lab_types[label_column]
            for role, col in (("score", score_column), ("label", label_column)):
                for what, types in (("reference", ref_types), ("analysis", ana_types)):
                    if col is not None and col not in types:
                        raise ReportError(f"the {what} file has no {role} column {col!r}")
            shared = {c: t for c, t in ref_types.items() if c in ana_types}
            reserved = [c for c in (timestamp_column, score_column, label_column, id_column) if c]
            choice = choose_columns(
                client,
                "reference",
                shared,
                features=features,
                exclude=exclude,
                reserved=reserved,
            )
            only_one = sorted(set(ref_types) ^ set(ana_types))
            left_out = {**choice.left_out, **{c: "in only one of the files" for c in only_one}}
            for judged_role in (score_column, label_column):  # judged, as score / label drift
                left_out.pop(judged_role or "", None)
            choice = ColumnChoice(choice.numeric, choice.categorical, left_out)
            n_ref, n_ana = (
                int(client.query(f"SELECT count() FROM {t}").result_rows[0][0])
                for t in ("reference", "analysis")
            )
            if n_ref == 0 or n_ana == 0:
                raise ReportError("both files need at least one row")
            size = chunk_size or max(1, -(-n_ana // 10))
            order = (
                f"toUnixTimestamp64Milli(toDateTime64({ident(timestamp_column)}, 3, 'UTC'))"
                if timestamp_column
                else "__row"
            )
            if timestamp_column and not _TEMPORAL.match(_base_type(shared[timestamp_column])):
                order = f"toFloat64({ident(timestamp_column)})"
            spec = DriftSpec(
                numeric=choice.numeric,
                categorical=choice.categorical,
                score=score_column,
                label=label_column,
            )
            ref_src, ana_src = by_rows(ref_rel, size, order), by_rows(ana_rel, size, order)
            rows = compute_drift(client, ref_src, ana_src, spec)
            performance = (
                _performance(client, ref_src, ana_src, score_column, label_column)
                if score_column
                else []
            )
        finally:
            client.close()
    return DriftReport(choice, size, n_ref, n_ana, rows, performance)


def _performance(
    client: Client, ref_src: str, ana_src: str, score: str, label: str | None
) -> list[PerformanceRow]:
    """Realised and CBPE-estimated performance per chunk (services/monitor/performance.py;
    the estimate assumes calibrated probabilities, so it is given for scores in [0, 1])."""
    label_sql = (
        f"toFloat64OrNull(toString({ident(label)}))" if label else "CAST(NULL AS Nullable(Float64))"
    )
    out: list[PerformanceRow] = []
    for period, src in (("reference", ref_src), ("analysis", ana_src)):
        result = client.query(
            f"SELECT __chunk, groupArray(toFloat64({ident(score)})), "
            f"groupArray({label_sql}) FROM ({src}) WHERE {ident(score)} IS NOT NULL "
            "GROUP BY __chunk ORDER BY __chunk"
        ).result_rows
        for chunk, scores_list, labels_list in result:
            scores = np.asarray(scores_list, dtype=float)
            labels = np.asarray([np.nan if v is None else v for v in labels_list], dtype=float)
            known = np.isfinite(labels)
            binary = bool(np.all(np.isin(labels[known], (0.0, 1.0))))
            probabilities = bool(scores.size and scores.min() >= 0 and scores.max() <= 1)
            realised: dict[str, float] = {}
            if known.any():
                realised = (
                    realised_binary(scores[known], labels[known])
                    if binary
                    else realised_regression(scores[known], labels[known])
                )
            estimated = estimate_binary(scores) if binary and probabilities else {}
            for metric in sorted(set(realised) | set(estimated)):
                est = estimated.get(metric)
                out.append(
                    PerformanceRow(
                        period,
                        int(chunk),
                        metric,
                        int(known.sum()),
                        realised.get(metric, math.nan),
                        est.value if est else math.nan,
                        est.low if est else math.nan,
                        est.high if est else math.nan,
                    )
                )
    return out
