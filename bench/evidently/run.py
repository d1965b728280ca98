"""Evidently's DataDriftPreset over the bench's windows, run inside the bench-only venv.

    python bench/evidently/run.py REF.parquet ANA.parquet WINDOW_ROWS [METHOD]

Prints one JSON line: seconds for all windows (Parquet reading excluded) and the
(feature, window) pairs Evidently calls drifted. METHOD forces a stattest ("ks", "psi").
"""

from __future__ import annotations

import json
import sys
import time

import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset


def _drifted(snapshot_dict: dict) -> list[str]:
    out = []
    for metric in snapshot_dict["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        name, value = metric["metric_name"], float(metric["value"])
        threshold = float(config.get("threshold") or name.split("threshold=")[1].rstrip(")"))
        p_value = "p_value" in config.get("method", name)
        if (value < threshold) if p_value else (value >= threshold):
            out.append(config["column"])
    return out


def main() -> None:
    ref_path, ana_path, window = sys.argv[1], sys.argv[2], int(sys.argv[3])
    method = sys.argv[4] if len(sys.argv) > 4 else None
    ref = pd.read_parquet(ref_path)
    ana = pd.read_parquet(ana_path)
    preset = DataDriftPreset(method=method) if method else DataDriftPreset()
    flagged = []
    start = time.perf_counter()
    for w in range(len(ana) // window):
        cur = ana.iloc[w * window : (w + 1) * window].reset_index(drop=True)
        snapshot = Report([preset]).run(current_data=cur, reference_data=ref)
        flagged += [[f, w] for f in _drifted(snapshot.dict())]
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "flagged": flagged}))


if __name__ == "__main__":
    main()
