"""benchmarks/bench_features.py runs end to end on a small workload and writes its figures as JSON."""

from tests.benchmarks import run_benchmark


def test_bench_features_writes_throughput_target_and_pandas_baseline(tmp_path):
    report, stdout = run_benchmark("bench_features.py", "--requests", "500", tmp_path=tmp_path, timeout=300)
    assert report["target_rows_per_s"] == 1e5 and report["features_per_s"] > 0
    for name in ("numeric", "text"):
        w = report["workloads"][name]
        assert w["feature_rows"] == 2000 and w["baseline_features_per_s"] > 0 and w["ratio"] > 0
    assert "agreement" in report["workloads"]["text"]["groups"]
    assert "agreement" not in report["workloads"]["numeric"]["groups"]
    assert "meets target" in stdout
