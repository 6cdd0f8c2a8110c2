"""benchmarks/bench_traces.py runs end to end on a small bundle and writes its figures as JSON."""

import json
import subprocess
import sys
from pathlib import Path

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
    assert report["targets"] == {"read_s": 2.0, "peak_rss_mb": 1500.0}
    figures = {row["figure"] for row in report["table"]}
    assert {"simulator columns read (s)", "simulator read peak RSS (MB)"} <= figures
    assert all(row["value"] > 0 for row in report["table"])
    assert "meets targets" in done.stdout
