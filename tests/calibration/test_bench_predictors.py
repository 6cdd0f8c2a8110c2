"""benchmarks/bench_predictors.py runs end to end and writes its figures with the baseline."""

from tests.benchmarks import run_benchmark


def test_bench_predictors_writes_fit_time_baseline_and_out_of_fold_metrics(tmp_path):
    report, stdout = run_benchmark("bench_predictors.py", "--requests", "5000", tmp_path=tmp_path, timeout=600)
    assert report["requests"] == 5000 and report["stage_fit_s"] > 0 and report["baseline_s"] > 0
    assert report["ratio"] == report["baseline_s"] / report["stage_fit_s"]
    assert 0 <= report["oof_ece"] < 0.05 and report["oof_auroc"] > 0.6
    assert "baseline" in stdout and "ratio" in stdout
    # the goal is for 10^5 requests: a 5000-request run is not judged
    assert report["meets_goal"] is None and report["goal_requests"] == 100_000
    assert "not judged: 5,000 requests, the goal is for 100,000" in stdout
