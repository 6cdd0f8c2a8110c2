"""benchmarks/bench_engine.py runs end to end and writes the figures the issue names."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_engine_writes_every_named_figure_with_its_baseline(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_engine.py", "--requests", "5000", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    for key in ("decisions_per_s_batch", "single_decision_us", "dp_solve_ms_L8_B64", "bisection_s_100k",
                "speedup_vs_reference"):
        assert report[key] > 0, key
    assert report["bisection_status"] == "ok"
    assert "baseline" in done.stdout and "ratio" in done.stdout
