"""`driftloop drift report` on Parquet files: the drift SQL (chDB) against scipy, alerts,
and the columns it leaves out. Each report runs in its own process (one chDB per process)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from services.monitor.drift import PSI_SMOOTHING
from tests.conftest import REPO_ROOT, run_cli

CHUNK = 1000
N = 3 * CHUNK
Report = dict[str, Any]


def _frame(rng: np.random.Generator, shifted: bool) -> pa.Table:
    x = np.round(rng.normal(size=N), 1)  # rounded: ties, which KS must handle exactly
    y = rng.normal(size=N)
    z = rng.integers(0, 5, size=N).astype(float)  # few values: exact ties only
    y_missing = rng.uniform(size=N) < 0.05
    cat = rng.choice(["a", "b", "c"], size=N, p=[0.5, 0.3, 0.2]).astype(object)
    if shifted:
        x[2 * CHUNK :] += 0.5  # chunk 2: 0.1 * k + 0.5 is not always the double of 0.1 * j
        cat[CHUNK : 2 * CHUNK] = rng.choice(["a", "b", "d"], size=CHUNK, p=[0.2, 0.3, 0.5])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return pa.table(
        {
            "request_id": [f"req-{i}" for i in range(N)],
            "event_time": [start + timedelta(seconds=i) for i in range(N)],
            "comment": [f"free text number {rng.integers(1 << 40)}" for _ in range(N)],
            "x": x,
            "y": pa.array(np.where(y_missing, np.nan, y), mask=y_missing),
            "z": z,
            "cat": cat.tolist(),
        }
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pa.Table, pa.Table]:
    rng = np.random.default_rng(7)
    tmp = tmp_path_factory.mktemp("drift")
    ref, ana = _frame(rng, shifted=False), _frame(rng, shifted=True)
    pq.write_table(ref, tmp / "ref.parquet")
    pq.write_table(ana, tmp / "ana.parquet")
    return tmp / "ref.parquet", tmp / "ana.parquet", ref, ana


@pytest.fixture(scope="module")
def report(files: tuple[Path, Path, pa.Table, pa.Table], tmp_path_factory: Any) -> Report:
    ref, ana, _, _ = files
    home = tmp_path_factory.mktemp("home")
    proc = run_cli(
        "drift", "report", "--reference", str(ref), "--analysis", str(ana),
        "--chunk-size", str(CHUNK), "--json", home=home,
    )  # fmt: skip
    return dict(json.loads(proc.stdout))


def _values(report: Report) -> dict[tuple[str, int, str, str], float]:
    rows = report["rows"]
    return {(r["period"], r["chunk"], r["feature"], r["metric"]): r["value"] for r in rows}


def _psi(ref_counts: np.ndarray, counts: np.ndarray) -> float:
    k = len(ref_counts)
    e = (ref_counts + PSI_SMOOTHING) / (ref_counts.sum() + PSI_SMOOTHING * k)
    a = (counts + PSI_SMOOTHING) / (counts.sum() + PSI_SMOOTHING * k)
    return float(np.sum(rel_entr(a, e) + rel_entr(e, a)))


def _numeric_expected(ref: np.ndarray, chunk: np.ndarray) -> dict[str, float]:
    ref_f, chunk_f = ref[np.isfinite(ref)], chunk[np.isfinite(chunk)]
    edges = np.unique(np.quantile(ref_f, np.linspace(0, 1, 11)))
    inner = edges[1:-1]
    k = len(inner) + 1
    bins: Callable[[np.ndarray], np.ndarray] = lambda v: np.bincount(  # noqa: E731
        np.searchsorted(inner, v, side="right"), minlength=k
    )
    return {
        "psi": _psi(bins(ref_f), bins(chunk_f)),
        "ks": float(stats.ks_2samp(ref_f, chunk_f).statistic),
        "null_rate": float(np.mean(~np.isfinite(chunk))),
    }


def _categorical_expected(ref: list[str], chunk: list[str]) -> dict[str, float]:
    cats = sorted(set(ref) | set(chunk))
    r = np.array([ref.count(c) for c in cats], dtype=float)
    t = np.array([chunk.count(c) for c in cats], dtype=float)
    table = np.vstack([r, t])
    chi2 = stats.chi2_contingency(table, correction=False).statistic
    return {
        "psi": _psi(r, t),
        "jensen_shannon": float(jensenshannon(r / r.sum(), t / t.sum(), base=2)),
        "chi_squared": float(chi2),
        "cramers_v": float(stats.contingency.association(table.astype(np.int64), method="cramer")),
        "null_rate": 0.0,
    }


def test_every_statistic_matches_scipy_in_every_chunk(
    files: tuple[Path, Path, pa.Table, pa.Table], report: Report
) -> None:
    _, _, ref, ana = files
    got = _values(report)
    checked = 0
    for period, table in (("reference", ref), ("analysis", ana)):
        for chunk in range(3):
            part = table.slice(chunk * CHUNK, CHUNK)
            for name in ("x", "y", "z"):
                ref_v = ref.column(name).to_numpy(zero_copy_only=False).astype(float)
                chunk_v = part.column(name).to_numpy(zero_copy_only=False).astype(float)
                for metric, want in _numeric_expected(ref_v, chunk_v).items():
                    assert got[(period, chunk, name, metric)] == pytest.approx(want, abs=1e-6), (
                        period, chunk, name, metric,
                    )  # fmt: skip
                    checked += 1
            expected = _categorical_expected(ref.column("cat").to_pylist(), part["cat"].to_pylist())
            for metric, want in expected.items():
                assert got[(period, chunk, "cat", metric)] == pytest.approx(want, abs=1e-6), (
                    period, chunk, "cat", metric,
                )  # fmt: skip
                checked += 1
    assert checked == 2 * 3 * (3 * 3 + 5)


_KS_SCRIPT = """
import json, sys
import pyarrow as pa
from services.common.clickhouse import connect
from services.monitor.drift_sql import ks_distinct_sql, ks_sql

client = connect(sys.argv[1])
out = []
for i, rows in enumerate(json.loads(sys.stdin.read())):
    client.command(f"CREATE TABLE d{i} (__s Int64, v Nullable(Float64)) ENGINE = Memory")
    client.insert_arrow(f"d{i}", pa.table({
        "__s": [s for s, _ in rows], "v": [None if v == "null" else float(v) for _, v in rows],
    }))
    counts = {}
    for s, v in rows:
        counts[s] = counts.get(s, 0) + (v not in ("null", "nan", "inf", "-inf"))
    exact = client.query(ks_sql(f"d{i}", ["v"], {"v": counts})).result_rows
    fast = client.query(ks_distinct_sql(f"d{i}", ["v"], {"v": counts})).result_rows
    out.append({
        "exact": {str(s): ks for _, s, ks in exact},
        "fast": {str(s): [ks, bool(distinct)] for _, s, ks, distinct in fast},
    })
print(json.dumps(out))
"""


def _ks_in_chdb(tmp_path: Path, trials: list[dict[int, np.ndarray]]) -> list[dict[str, Any]]:
    """Both KS queries on each trial's chunks, plus NaN, infinities and NULL in each."""
    rows = [
        [(c, repr(float(v))) for c, drawn in trial.items() for v in drawn]
        + [(c, x) for c in trial for x in ("nan", "inf", "-inf", "null")]
        for trial in trials
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _KS_SCRIPT, f"chdb://{tmp_path / 'store'}"],
        input=json.dumps(rows), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def _scipy_ks(trial: dict[int, np.ndarray]) -> dict[str, float]:
    reference = np.concatenate([v for c, v in trial.items() if c < 0])
    return {str(c): float(stats.ks_2samp(reference, v).statistic) for c, v in trial.items()}


def test_ks_orders_every_double_exactly(tmp_path: Path) -> None:
    """The KS SQL sorts values by their bits: negative and positive, -0.0 and 0.0 (equal),
    subnormals, neighbouring doubles (closer than DBL_EPSILON), the largest finite ones,
    and ties within and across chunks, each chunk on its own few values of the pool; NaN,
    infinities and NULL are left out, as scipy leaves them."""
    near = [float(np.nextafter(1e-300, 1.0)), float(np.nextafter(1.0, 2.0))]
    pool = [-1.7e308, -1.5, -1e-300, -5e-324, -0.0, 0.0, 5e-324, 1e-300, 1.0, 2.5, 1.7e308, *near]
    rng = np.random.default_rng(11)
    # two reference chunks, three analysis ones (codes as time windows number them, too)
    codes = {-2: 40, -1: 60, 0: 80, 29_800_000: 50, 1 << 40: 30}
    trials: list[dict[int, np.ndarray]] = []
    for _ in range(25):
        trial = {}
        for code, n in codes.items():
            some = rng.choice(pool, size=int(rng.integers(1, len(pool) + 1)), replace=False)
            trial[code] = rng.choice(some, size=n, p=rng.dirichlet(np.ones(len(some))))
        trials.append(trial)
    for trial, got in zip(trials, _ks_in_chdb(tmp_path, trials), strict=True):
        want = _scipy_ks(trial)
        assert set(got["exact"]) == set(want)
        for code, ks in want.items():
            assert got["exact"][code] == pytest.approx(ks, abs=1e-12), (code, trial)
        # every trial has ties: the distinct-values query must say it cannot judge it
        assert not any(distinct for _, distinct in got["fast"].values())


def test_ks_of_distinct_values_is_exact_and_knows_when_it_is_not(tmp_path: Path) -> None:
    """The faster KS (64-bit keys, the value's lowest bits replaced by the chunk) on values
    spread over every magnitude and sign: exact, and flagged distinct; the same values with
    a value and its next double, or one value twice, in two chunks: flagged not distinct."""
    rng = np.random.default_rng(12)
    codes = {-3: 70, -2: 50, -1: 60, 0: 90, 7: 40, 29_800_000: 80}
    trials: list[dict[int, np.ndarray]] = []
    for k in range(12):
        trial = {}
        for code, n in codes.items():
            scale = 10.0 ** rng.uniform(-300, 300, size=n) if k % 2 else 1.0
            trial[code] = (rng.normal(size=n) + (0.5 if code == 7 else 0.0)) * scale
        trials.append(trial)
    near = dict(trials[0])  # 1.5 and its next double: only the lowest mantissa bit differs
    near[-1], near[0] = np.append(near[-1], 1.5), np.append(near[0], np.nextafter(1.5, 2.0))
    tie = dict(trials[1])
    tie[7] = np.append(tie[7], tie[-2][5])
    results = _ks_in_chdb(tmp_path, [*trials, near, tie])
    for trial, got in zip(trials, results[: len(trials)], strict=True):
        want = _scipy_ks(trial)
        for code, ks in want.items():
            fast, distinct = got["fast"][code]
            assert distinct, code
            assert fast == pytest.approx(ks, abs=1e-12), code
            assert got["exact"][code] == pytest.approx(ks, abs=1e-12), code
    for got in results[-2:]:
        assert not any(distinct for _, distinct in got["fast"].values())


def test_only_the_shifted_chunks_alert(report: Report) -> None:
    alerts = {
        (r["chunk"], r["feature"], r["metric"])
        for r in report["rows"]
        if r["alert"] and r["period"] == "analysis"
    }
    univariate = {a for a in alerts if a[1] != "*"}
    assert {(2, "x", "psi"), (2, "x", "ks")} <= univariate
    assert {(1, "cat", m) for m in ("psi", "jensen_shannon", "cramers_v")} <= univariate
    assert {(c, f) for c, f, _ in univariate} == {(2, "x"), (1, "cat")}
    assert not any(r["alert"] for r in report["rows"] if r["period"] == "reference")


def test_ids_time_stamps_and_free_text_are_left_out_and_listed(report: Report) -> None:
    assert report["numeric"] == ["x", "y", "z"]
    assert report["categorical"] == ["cat"]
    left_out = report["left_out"]
    assert set(left_out) == {"request_id", "event_time", "comment"}
    assert "id" in left_out["request_id"]
    assert "time stamp" in left_out["event_time"]
    assert "free text" in left_out["comment"]


def test_unknown_feature_is_a_clear_error(
    files: tuple[Path, Path, pa.Table, pa.Table], tmp_path: Path
) -> None:
    ref, ana, _, _ = files
    proc = run_cli(
        "drift", "report", "--reference", str(ref), "--analysis", str(ana),
        "--features", "x,nope", home=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "unknown columns ['nope']" in proc.stderr


def test_a_broken_correlation_alerts_only_the_multivariate_detector(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    n = 4 * CHUNK

    def frame(broken: bool) -> pa.Table:
        a = rng.normal(size=n)
        b = a + 0.3 * rng.normal(size=n)
        if broken:  # chunks 2-3: b keeps its marginal but no longer follows a
            b[2 * CHUNK :] = rng.permutation(b[2 * CHUNK :])
        return pa.table({"a": a, "b": b, "c": rng.normal(size=n), "d": rng.normal(size=n)})

    pq.write_table(frame(False), tmp_path / "ref.parquet")
    pq.write_table(frame(True), tmp_path / "ana.parquet")
    proc = run_cli(
        "drift", "report", "--reference", str(tmp_path / "ref.parquet"),
        "--analysis", str(tmp_path / "ana.parquet"), "--chunk-size", str(CHUNK), "--json",
        home=tmp_path,
    )  # fmt: skip
    rows = json.loads(proc.stdout)["rows"]
    alerts = {(r["chunk"], r["feature"], r["metric"]) for r in rows if r["alert"]}
    assert alerts == {(2, "*", "pca_reconstruction_error"), (3, "*", "pca_reconstruction_error")}
    assert not any(r["alert"] for r in rows if r["period"] == "reference")


def test_labels_from_a_third_file_give_realised_performance_next_to_its_estimate(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(5)
    n = 2 * 2000

    def frame(start: int) -> pa.Table:
        score = rng.uniform(0.02, 0.98, size=n)
        return pa.table(
            {"request_id": [f"q{start + i}" for i in range(n)], "x": rng.normal(size=n),
             "score": score, "outcome": (rng.uniform(size=n) < score).astype(np.int64)}
        )  # fmt: skip

    ref, ana = frame(0), frame(n)
    pq.write_table(ref.drop(["outcome"]), tmp_path / "ref.parquet")
    pq.write_table(ana.drop(["outcome"]), tmp_path / "ana.parquet")
    labels = pa.concat_tables([ref, ana]).select(["request_id", "outcome"])
    pq.write_table(labels, tmp_path / "labels.parquet")
    proc = run_cli(
        "drift", "report", "--reference", str(tmp_path / "ref.parquet"),
        "--analysis", str(tmp_path / "ana.parquet"), "--chunk-size", "2000",
        "--score-column", "score", "--label-column", "outcome",
        "--labels", str(tmp_path / "labels.parquet"), "--id-column", "request_id", "--json",
        home=tmp_path,
    )  # fmt: skip
    report = json.loads(proc.stdout)
    auc = [p for p in report["performance"] if p["metric"] == "auc"]
    assert {(p["period"], p["chunk"]) for p in auc} == {
        (period, c) for period in ("reference", "analysis") for c in (0, 1)
    }
    for p in auc:
        assert p["labelled"] == 2000
        # calibrated scores: the label-free estimate is close to what the labels say
        assert abs(p["realised"] - p["estimated"]) < 0.05, p
        assert p["low"] < p["estimated"] < p["high"]
    kinds = {(r["feature"], r["kind"]) for r in report["rows"]}
    assert ("score", "score") in kinds and ("outcome", "label") in kinds
    assert "request_id" in report["left_out"]


def test_timestamp_column_orders_the_rows_before_chunking(
    files: tuple[Path, Path, pa.Table, pa.Table], tmp_path: Path
) -> None:
    ref, _, _, ana = files
    shuffled = ana.take(np.random.default_rng(3).permutation(ana.num_rows))
    pq.write_table(shuffled, tmp_path / "shuffled.parquet")
    proc = run_cli(
        "drift", "report", "--reference", str(ref),
        "--analysis", str(tmp_path / "shuffled.parquet"), "--chunk-size", str(CHUNK),
        "--timestamp-column", "event_time", "--features", "x", "--json", home=tmp_path,
    )  # fmt: skip
    rows = [r for r in json.loads(proc.stdout)["rows"] if r["period"] == "analysis"]
    alerting = {r["chunk"] for r in rows if r["alert"] and r["feature"] == "x"}
    assert alerting == {2}  # the shift is in the last third by time, wherever its rows sit
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000
    assert {(r["chunk"], r["start"]) for r in rows} == {
        (c, start + c * CHUNK * 1000) for c in range(3)
    }
