"""benchmarks/bench_traces.py runs end to end on a small bundle: every figure is there and
finite, and the printed table says what the JSON says. Whether a target is met is the
benchmark's report, not this test's business; that a bundle below the targets' 10^6 requests
is not judged is."""

import math
import re

import pytest

from tests.benchmarks import run_benchmark


FIGURES = {"simulator columns read (s)", "simulator read peak RSS (MB)", "whole tables, pyarrow (s)",
           "write throughput (output rows/s)", "validation adds to inspect (%)", "inspect, full check (s)",
           "full check adds to inspect (%)", "inspect, bundle asd wrote (s)"}


def printed_rows(stdout: str) -> list[tuple[str, float]]:
    """(figure, value) of each table line after the `figure ... value` header."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("figure"))
    rows = []
    for line in lines[start + 1:]:
        match = re.match(r"(.+?)\s{2,}(-?[\d,]+(?:\.\d+)?)\s", line)
        if not match:
            break
        rows.append((match.group(1).strip(), float(match.group(2).replace(",", ""))))
    return rows


def test_bench_traces_reports_every_figure_finite_and_prints_what_it_writes(tmp_path):
    report, stdout = run_benchmark("bench_traces.py", "--requests", "2000", "--repeats", "1", tmp_path=tmp_path, timeout=300)
    assert report["output_rows"] == 8000 and report["simulator_read"]["rows"] == 8000
    assert report["targets"] == {"read_s": 2.0, "peak_rss_mb": 1500.0, "validation_overhead_pct": 20.0}
    assert {row["figure"] for row in report["table"]} == FIGURES
    for row in report["table"]:
        # an overhead in percent may be ~0 or slightly negative on a tiny bundle; the rest are positive
        assert math.isfinite(row["value"]) and (row["value"] > 0 or "(%)" in row["figure"]), row
        if row["baseline"] is not None:
            assert math.isfinite(row["baseline"]) and row["ratio_baseline_over_value"] == row["baseline"] / row["value"]
    figures = {row["figure"]: row["value"] for row in report["table"]}
    assert figures["validation adds to inspect (%)"] == pytest.approx(report["validation_overhead_pct"])
    printed = printed_rows(stdout)
    assert [f for f, _ in printed] == [row["figure"] for row in report["table"]], stdout
    for (figure, shown), row in zip(printed, report["table"]):
        # Printed with 3 decimals, or rounded to a whole number above 1000.
        assert abs(shown - row["value"]) <= (0.5 if abs(row["value"]) > 1000 else 0.0005), (figure, shown, row["value"])
    assert report["meets_targets"] is None and report["target_requests"] == 1_000_000
    assert "meets targets: not judged: 2,000 requests x 4 tiers, the targets are for 1,000,000 x 4" in stdout
