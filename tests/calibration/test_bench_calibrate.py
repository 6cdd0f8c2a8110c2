"""benchmarks/bench_calibrate.py runs end to end at a tiny size: every figure is there and
finite, with its goal, baseline and ratio, and the printed table says what the JSON says.
Whether a target is met is the benchmark's report, not this test's business; that a run below
the goals' 10^5 requests is not judged is."""

import math
import re

from tests.benchmarks import run_benchmark


KEYS = ["fit_s_100k", "features_per_s"]


def printed_rows(stdout: str) -> list[list[str]]:
    """Cells of each table line after the `figure ... value` header (columns 2+ spaces apart)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("figure"))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith(" "):
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def test_bench_calibrate_reports_every_figure_finite_and_prints_what_it_writes(tmp_path):
    report, stdout = run_benchmark("bench_calibrate.py", "--requests", "1000", tmp_path=tmp_path, timeout=600)
    assert [r["key"] for r in report["table"]] == KEYS
    assert report["requests"] == 1000 and report["tiers"] == 4
    for r in report["table"]:
        for field in ("value", "goal", "baseline", "ratio"):
            assert isinstance(r[field], float) and math.isfinite(r[field]) and r[field] > 0, (r["key"], field)
        assert report[r["key"]] == r["value"]
        assert r["baseline_note"]
        assert r["meets_goal"] is None and r["requests"] == 1000 and r["goal_requests"] == 100_000
    assert report["table"][0]["goal"] == 30.0 and report["table"][1]["goal"] == 1e5
    printed = printed_rows(stdout)
    assert len(printed) == len(report["table"]), stdout
    for cells, r in zip(printed, report["table"]):
        figure, value, goal, baseline, ratio, met = cells
        assert figure == r["figure"]
        for shown, exact in ((value, r["value"]), (goal, r["goal"]), (baseline, r["baseline"]), (ratio, r["ratio"])):
            assert math.isclose(float(shown), exact, rel_tol=1e-3), (figure, shown, exact)
        assert met == "not judged: 1,000 requests, the goal is for 100,000"
    assert report["meets_goals"] is None
    assert "meets goals: not judged: 1,000 requests, the goal is for 100,000" in stdout
