"""benchmarks/bench_traces.py runs end to end on a small bundle and writes its figures as JSON."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_bench_traces_writes_figures_targets_and_baselines(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_traces.py", "--requests", "2000", "--repeats", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["output_rows"] == 8000 and report["simulator_read"]["rows"] == 8000
    assert report["targets"] == {"read_s": 2.0, "peak_rss_mb": 1500.0, "validation_overhead_pct": 20.0}
    figures = {row["figure"]: row["value"] for row in report["table"]}
    assert {"simulator columns read (s)", "simulator read peak RSS (MB)", "validation adds to inspect (%)"} <= set(figures)
    # an overhead in percent may be ~0 or slightly negative on a tiny bundle; the rest are positive
    assert all(v > 0 for f, v in figures.items() if "(%)" not in f)
    assert all(math.isfinite(v) for v in figures.values())
    assert figures["validation adds to inspect (%)"] == pytest.approx(report["validation_overhead_pct"])
    assert "meets targets" in done.stdout
