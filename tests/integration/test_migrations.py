"""ClickHouse migrations on the real engine (chDB), each run in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT, run_cli


def test_migrations_applied_twice_give_the_same_schema(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'store'}"
    first = json.loads(
        run_cli("store", "migrate", "--dsn", dsn, "--json", home=tmp_path).stdout.splitlines()[-1]
    )
    assert first["applied"] == ["0001_events", "0002_monitor"]
    schema_1 = json.loads(run_cli("store", "schema", "--dsn", dsn, home=tmp_path).stdout)
    second = json.loads(
        run_cli("store", "migrate", "--dsn", dsn, "--json", home=tmp_path).stdout.splitlines()[-1]
    )
    assert second["applied"] == []
    schema_2 = json.loads(run_cli("store", "schema", "--dsn", dsn, home=tmp_path).stdout)
    assert schema_1 == schema_2
    assert ["alert_state", "LowCardinality(String)"] in schema_1["drift_metrics"]
    assert ["error", "String"] in schema_1["predictions"]
    for table in (
        "predictions",
        "labels",
        "drift_metrics",
        "drift_events",
        "model_events",
        "dataset_versions",
        "data_rejected",
        "experiment_events",
        "performance_metrics",
        "experiment_stats",
        "alert_incidents",
        "sink_rejected",
        "schema_migrations",
    ):
        assert table in schema_1


_EDITED = """
import sys
from services.common.clickhouse import Migration, MigrationError, apply_migrations, connect
client = connect(sys.argv[1])
ddl = "CREATE TABLE IF NOT EXISTS t1 (a {}) ENGINE = MergeTree ORDER BY a;"
base = [Migration(1, "one", ddl.format("UInt8"))]
print(len(apply_migrations(client, base)))
edited = [Migration(1, "one", ddl.format("UInt16"))]
try:
    apply_migrations(client, edited)
except MigrationError as exc:
    print("refused:", exc)
broken = [*base, Migration(2, "two", "CREATE TABLE oops (")]
try:
    apply_migrations(client, broken)
except MigrationError as exc:
    print("failed:", exc)
"""


def test_edited_or_broken_migration_is_refused_clearly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _EDITED, f"chdb://{tmp_path / 's'}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "1"
    assert "refused: migration 0001_one was edited after it was applied" in lines[1]
    assert lines[2].startswith("failed: migration 0002_two failed:")
