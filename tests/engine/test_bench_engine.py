"""benchmarks/bench_engine.py runs end to end: every named figure is there and finite, each
table row has its baseline, and the printed table says what the JSON says. Whether a target
is met is the benchmark's report, not this test's business."""

import math

from tests.benchmarks import run_benchmark


NAMED = ("decisions_per_s_batch", "decisions_per_s_batch_all_threads", "single_decision_us", "dp_solve_ms_L8_B64",
         "evidence_replay_ms_25k_L4", "stage0_per_lambda_us_25k_L4",
         "bisection_s_100k", "speedup_vs_reference", "compile_s_first_process", "first_calls_s_cached_process")


def printed_rows(stdout: str) -> dict[str, list[str]]:
    """figure → the printed cells after it (value, target, baseline, ratio, ok)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("figure"))
    rows = {}
    for line in lines[start + 1:]:
        if line.startswith("compile cost"):
            break
        rows[line[:42].strip()] = line[42:].split()
    return rows


def test_bench_engine_reports_every_figure_finite_and_prints_what_it_writes(tmp_path):
    report, stdout = run_benchmark("bench_engine.py", "--requests", "5000", tmp_path=tmp_path, timeout=600)
    for key in NAMED:
        assert isinstance(report[key], (int, float)) and math.isfinite(report[key]) and report[key] > 0, key
    assert report["bisection_status"] == "ok"
    printed = printed_rows(stdout)
    assert len(report["rows"]) >= 4
    for row in report["rows"]:
        for key in ("value", "target", "baseline", "ratio_vs_baseline"):
            assert row[key] is not None and math.isfinite(row[key]), (row["figure"], key)
        cells = printed[row["figure"]]  # KeyError: a figure written but not printed
        assert float(cells[0]) == float(f"{row['value']:.4g}"), (row["figure"], cells[0], row["value"])
        assert float(cells[1]) == float(f"{row['target']:.4g}") and float(cells[2]) == float(f"{row['baseline']:.4g}")
        assert cells[3] == f"{row['ratio_vs_baseline']:.0f}x" and cells[4] == ("yes" if row["meets_target"] else "NO")
    speedup = printed["speedup_vs_reference (batch, 1 thread)"]
    assert float(speedup[0]) == round(report["speedup_vs_reference"])
    assert f"{report['compile_s_first_process']:.2f} s" in stdout

