"""benchmarks/bench_features.py runs end to end on a small workload and writes its figures as JSON."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_features_writes_throughput_target_and_pandas_baseline(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_features.py", "--requests", "500", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["target_rows_per_s"] == 1e5 and report["features_per_s"] > 0
    for name in ("numeric", "text"):
        w = report["workloads"][name]
        assert w["feature_rows"] == 2000 and w["baseline_features_per_s"] > 0 and w["ratio"] > 0
    assert "agreement" in report["workloads"]["text"]["groups"]
    assert "agreement" not in report["workloads"]["numeric"]["groups"]
    assert "meets target" in done.stdout
