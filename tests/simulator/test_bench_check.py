"""benchmarks/bench_check.py runs end to end on a tiny bundle: every figure is there and finite,
and the printed table says what the JSON says. Whether the 5 s target is met is the
benchmark's report, not this test's business."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIGURES = ["asd check, 3 promises (s)", "asd check CPU, user + sys (s)", "read bundle (s)", "features (s)",
           "evaluation incl. features, cost grid, bins (s)", "replay (s)", "whole check in process (s)"]


def printed_rows(stdout: str) -> list[tuple[str, float]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("figure"))
    rows = []
    for line in lines[start + 1:]:
        match = re.match(r"(.+?)\s{2,}(\d+\.\d{3})\s", line)
        if not match:
            break
        rows.append((match.group(1).strip(), float(match.group(2))))
    return rows


def test_bench_check_reports_every_figure_finite_and_prints_what_it_writes(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_check.py", "--requests", "400", "--calibration-requests", "300",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["n_requests"] == 400 and report["n_tiers"] == 4 and report["promises"] == 3
    assert report["targets"] == {"check_s": 5.0} and isinstance(report["meets_targets"], bool)
    assert [row["figure"] for row in report["table"]] == FIGURES
    for row in report["table"]:
        assert math.isfinite(row["value"]) and row["value"] > 0, row
    head = report["table"][0]
    assert head["value"] == report["check_s"] and head["baseline"] == report["simulate_s"] > 0
    assert head["ratio_baseline_over_value"] == pytest.approx(report["simulate_s"] / report["check_s"])
    printed = printed_rows(done.stdout)
    assert [f for f, _ in printed] == FIGURES, done.stdout
    for (figure, shown), row in zip(printed, report["table"]):
        assert abs(shown - row["value"]) <= 0.0005, (figure, shown, row["value"])
    assert f"meets targets: {report['meets_targets']}" in done.stdout
