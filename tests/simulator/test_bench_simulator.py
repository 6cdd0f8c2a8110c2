"""benchmarks/bench_simulator.py runs end to end at a tiny scale: every figure the issue names is
there, finite, with its goal (not judged at that scale), and the printed table carries the same
numbers as the JSON."""

import math
import re

import pytest

from tests.benchmarks import run_benchmark


FIGURES = ("replay_requests_per_s", "sweep_200_lambda_100k_s", "replay_speedup_vs_python", "des_events_per_s",
           "des_hour_100rps_4tiers_s", "des_speedup_vs_simpy", "bisection_replay_100k_s", "bisection_des_100k_s",
           "rss_1m_gb", "simulate_1m_end_to_end_s")


def test_bench_simulator_reports_every_figure_and_prints_what_it_writes(tmp_path):
    pytest.importorskip("simpy", reason="the benchmark's SimPy peer needs simpy (the test extra)")
    report, stdout = run_benchmark("bench_simulator.py", "--scale", "0.002", tmp_path=tmp_path, timeout=900)
    rows = {r["key"]: r for r in report["rows"]}
    assert set(FIGURES) <= set(rows)
    assert any("asd simulate on" in note for note in report["notes"])  # the end-to-end run's own report
    for key in FIGURES:
        assert math.isfinite(report[key]) and report[key] > 0, key
        assert rows[key]["value"] == report[key]
        assert rows[key]["goal"] > 0 and rows[key]["better"] in ("higher", "lower")
        assert rows[key]["meets_goal"] is None and 0 < rows[key]["requests"] < rows[key]["goal_requests"]
        if key != "rss_1m_gb":
            assert math.isfinite(rows[key]["baseline"]) and math.isfinite(rows[key]["ratio"]), key
    # the printed table: one line per figure, ending in [key], with value, goal, baseline, ratio
    printed = {}
    for line in stdout.splitlines():
        m = re.search(r"\s(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(yes|NO|not judged: .+?)\s+\[(\w+)\]$", line)
        if m:
            printed[m.group(7)] = m.groups()
    assert set(printed) == set(rows)
    for key, (value, cpu, goal, baseline, ratio, met, _) in printed.items():
        row = rows[key]
        assert float(value) == pytest.approx(row["value"], rel=1e-5)
        assert (cpu == "-") == (row["value_cpu_time"] is None)
        if cpu != "-":
            assert float(cpu) == pytest.approx(row["value_cpu_time"], rel=1e-5)
        assert float(goal) == pytest.approx(row["goal"], rel=1e-3)
        assert (baseline == "-") == (row["baseline"] is None)
        if baseline != "-":
            assert float(baseline) == pytest.approx(row["baseline"], rel=1e-5)
            assert float(ratio) == pytest.approx(row["ratio"], rel=1e-3)
        assert met == f"not judged: {row['requests']:,} requests, the goal is for {row['goal_requests']:,}"
