"""benchmarks/bench_predictors.py runs end to end and writes its figures with the baseline."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_predictors_writes_fit_time_baseline_and_out_of_fold_metrics(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_predictors.py", "--requests", "5000", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["requests"] == 5000 and report["stage_fit_s"] > 0 and report["baseline_s"] > 0
    assert report["ratio"] == report["baseline_s"] / report["stage_fit_s"]
    assert 0 <= report["oof_ece"] < 0.05 and report["oof_auroc"] > 0.6
    assert "baseline" in done.stdout and "ratio" in done.stdout
