"""Which model versions have traffic, and their predictions as a flat relation (SQL text).

Predictions are stored with their features as parallel name/value arrays (one schema for
every model); the drift SQL wants one column per feature, so `version_relation` unpacks
the arrays (a feature absent from a row is NULL there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from services.monitor.sql import ident, literal

__all__ = [
    "LABEL_COLUMN",
    "SCORE_COLUMN",
    "TIME_COLUMN",
    "VersionTraffic",
    "discover",
    "discover_labels",
    "feature_names",
    "label_relation",
    "labelled_predictions",
    "version_filter",
    "version_relation",
]

SCORE_COLUMN = "__score"
TIME_COLUMN = "__t"
LABEL_COLUMN = "__label"


@dataclass(frozen=True)
class VersionTraffic:
    model: str
    version: str
    first_ms: int
    last_ms: int
    rows: int


def discover(client: Client) -> list[VersionTraffic]:
    rows = client.query(
        "SELECT model, version, toUnixTimestamp64Milli(min(time)), "
        "toUnixTimestamp64Milli(max(time)), count() FROM predictions "
        "GROUP BY model, version ORDER BY model, version"
    ).result_rows
    return [VersionTraffic(str(m), str(v), int(a), int(b), int(n)) for m, v, a, b, n in rows]


def discover_labels(client: Client) -> list[VersionTraffic]:
    """Per model the labels it received (version ""): labels name a model, not a version."""
    rows = client.query(
        "SELECT model, toUnixTimestamp64Milli(min(time)), toUnixTimestamp64Milli(max(time)), "
        "count() FROM labels WHERE model != '' GROUP BY model ORDER BY model"
    ).result_rows
    return [VersionTraffic(str(m), "", int(a), int(b), int(n)) for m, a, b, n in rows]


def label_relation(model: str, lo_ms: int, hi_ms: int, categorical: bool) -> str:
    """`(SELECT …)`: the model's labels with a time in [lo_ms, hi_ms): `__t` and `__label`
    (the outcome, as text when the outcomes are classes)."""
    value = "toString(outcome)" if categorical else "outcome"
    return (
        f"(SELECT toUnixTimestamp64Milli(time) AS {TIME_COLUMN}, {value} AS {LABEL_COLUMN} "
        f"FROM labels WHERE model = {literal(model)} "
        f"AND time >= fromUnixTimestamp64Milli(toInt64({int(lo_ms)}), 'UTC') "
        f"AND time < fromUnixTimestamp64Milli(toInt64({int(hi_ms)}), 'UTC'))"
    )


def feature_names(
    client: Client, model: str, version: str, lo_ms: int, hi_ms: int
) -> tuple[list[str], list[str]]:
    """(numeric, categorical) feature names seen in [lo_ms, hi_ms)."""
    row = client.query(
        "SELECT arraySort(groupUniqArrayArray(feature_names)), "
        "arraySort(groupUniqArrayArray(category_names)) FROM predictions "
        f"WHERE {version_filter(model, version, lo_ms, hi_ms)}"
    ).result_rows[0]
    return [str(n) for n in row[0]], [str(n) for n in row[1]]


def labelled_predictions(columns: str, where: str, model: str | None = None) -> str:
    """`(SELECT …)`: predictions matching `where` (their `columns`) with `has` (1 when a
    label was found) and `outcome`. A label naming the request id wins; a label naming only
    the entity key labels that entity's predictions up to it (the first such label at or
    after a prediction, an ASOF join). Labels of another model are not used."""
    models = f"AND model IN ({literal(model)}, '') " if model is not None else ""
    return (
        f"(SELECT p.*, if(r.has = 1, r.outcome, e.outcome) AS outcome, "
        f"greatest(r.has, e.has) AS has FROM (SELECT {columns}, entity_key AS __entity, "
        f"time AS __time FROM predictions WHERE {where}) AS p "
        "LEFT JOIN (SELECT request_id AS __rid, argMax(outcome, time) AS outcome, "
        f"toUInt8(1) AS has FROM labels WHERE request_id != '' {models}GROUP BY request_id) AS r "
        "ON p.request_id = r.__rid "
        "ASOF LEFT JOIN (SELECT entity_key AS __entity, time AS __time, outcome, "
        f"toUInt8(1) AS has FROM labels WHERE request_id = '' AND entity_key != '' {models}) AS e "
        "ON p.__entity = e.__entity AND p.__time <= e.__time)"
    )


def version_filter(model: str, version: str, lo_ms: int, hi_ms: int) -> str:
    return (
        f"model = {literal(model)} AND version = {literal(version)} "
        f"AND time >= fromUnixTimestamp64Milli(toInt64({int(lo_ms)}), 'UTC') "
        f"AND time < fromUnixTimestamp64Milli(toInt64({int(hi_ms)}), 'UTC')"
    )


def version_relation(
    model: str,
    version: str,
    lo_ms: int,
    hi_ms: int,
    numeric: Sequence[str],
    categorical: Sequence[str],
    extra: Sequence[str] = (),
    segment: tuple[str, str] | None = None,
) -> str:
    """`(SELECT …)`: the version's predictions in [lo_ms, hi_ms), one column per feature,
    `__t` (epoch ms) and `__score`; with `segment` (column, value), only those whose
    categorical `column` is `value`."""
    cols = [f"toUnixTimestamp64Milli(time) AS {TIME_COLUMN}", f"score AS {SCORE_COLUMN}"]
    for name in numeric:
        i = f"indexOf(feature_names, {literal(name)})"
        cols.append(
            f"if({i} = 0, CAST(NULL AS Nullable(Float64)), feature_values[{i}]) AS {ident(name)}"
        )
    for name in categorical:
        i = f"indexOf(category_names, {literal(name)})"
        cols.append(
            f"if({i} = 0, CAST(NULL AS Nullable(String)), category_values[{i}]) AS {ident(name)}"
        )
    cols.extend(extra)
    where = version_filter(model, version, lo_ms, hi_ms)
    if segment is not None:
        where += f" AND {segment_value(segment[0])} = {literal(segment[1])}"
    return f"(SELECT {', '.join(cols)} FROM predictions WHERE {where})"


def segment_value(column: str) -> str:
    """A prediction's value of categorical `column` ('' when it has none)."""
    i = f"indexOf(category_names, {literal(column)})"
    return f"if({i} = 0, '', category_values[{i}])"
