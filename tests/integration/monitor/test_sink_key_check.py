"""The sink's key check on a real chDB store: both of its ways of asking (the keys stored in
the batch's time range, or the batch's keys in chunks when that range holds many rows) skip
exactly the rows already stored; and every sink table's sorting key holds the columns of
its sink key (what lets the writer skip `optimize_on_insert`). chDB runs in a subprocess
(one store path per process)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from services.monitor.sinks.rows import SINK_TABLES
from services.monitor.sinks.writer import _REJECTED
from tests.conftest import REPO_ROOT

_SCRIPT = """
import json, sys
from services.common.clickhouse import apply_migrations, connect
from services.monitor.sinks.writer import PendingWrite, write_pending

client = connect(sys.argv[1])
apply_migrations(client)
T0 = 1_796_000_000_000

def row(i, ms):
    return (f"r{i}", ms, "m", "1", "a", "", False, f"k{i}", 0, ["f"], [1.0], [], [],
            0.5, 1.0, "")

def write(rows):
    pending = PendingWrite()
    pending.rows["predictions"].extend(rows)
    result = write_pending(client, pending)
    return [result.inserted["predictions"], result.skipped["predictions"]]

out = {"first": write([row(i, T0 + 1000 * i) for i in range(50)])}
# a narrow replay (its range holds 3 stored rows): one query for the range's keys
out["narrow"] = write([row(20, T0 + 20_000), row(21, T0 + 21_000), row(100, T0 + 20_500)])
# a wide one (its range holds all 51 stored rows, > 4 x 3): the keys are sent in chunks
out["wide"] = write([row(0, T0), row(49, T0 + 49_000), row(101, T0 + 30_500)])
counted = client.query("SELECT count(), uniqExact(request_id) FROM predictions")
out["stored"] = counted.result_rows[0]
tables = client.query(
    "SELECT name, sorting_key FROM system.tables WHERE database = currentDatabase()"
)
out["sorting_keys"] = dict(tables.result_rows)
print(json.dumps(out))
"""


def test_key_check_skips_stored_rows_by_either_query(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, f"chdb://{tmp_path / 'store'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["first"] == [50, 0]
    assert out["narrow"] == [1, 2]
    assert out["wide"] == [1, 2]
    assert out["stored"] == [52, 52]
    # A block holds one row per sink key; that two rows with one sorting key can only be
    # one sink key (so merging the block on insert removes nothing) needs every column of
    # the sink key in the sorting key.
    for spec in [*SINK_TABLES.values(), _REJECTED]:
        sorting = {c.strip() for c in out["sorting_keys"][spec.table].split(",")}
        used = set(re.findall(r"[a-z_]+", spec.key_sql)) & set(spec.columns)
        assert used and used <= sorting, (spec.table, used, sorting)
