"""benchmarks/bench_policy_quality.py on one real ladder from ../shared/data (skipped when absent):
its figures are `asd sweep`'s own quality check on the same import, the printed row says what
the JSON says, and a bad ladder key is one line and exit 2. Whether the targets are met is the
benchmark's report, not this test's business."""

import subprocess
import sys

import pytest

from asd.calibration.views import load_view
from asd.simulator.sweep import sweep
from tests.benchmarks import REPO, run_benchmark

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_policy_quality as B  # noqa: E402

LADDER = "alpaca-tulu2-dpo"  # 805 requests × 3 text-only tiers: a few seconds per fold seed


def test_the_benchmark_reports_sweeps_own_quality_check(shared_data, tmp_path):
    report, stdout = run_benchmark("bench_policy_quality.py", "--ladders", LADDER, "--seeds", "1", tmp_path=tmp_path)
    assert report["goals"] == {"saved_vs_simple_points": 3.0, "gap_closed": 0.25, "baseline_points_above_policy": 0}
    (row,) = report["ladders"]
    assert row["ladder"] == LADDER and row["n_tiers"] == 3 and row["text_only"] and row["targets_apply"]

    B.import_ladder(LADDER, shared_data, tmp_path / "bundle")
    check = sweep(tmp_path / "bundle", folds=5, cost_model="params", seed=0)["quality_check"]
    assert load_view(tmp_path / "bundle").n_requests == row["n_requests"] == 805
    assert row["saved_vs_simple_points"] == pytest.approx(check["saved_vs_simple_points"])
    assert row["gap_closed"] == pytest.approx(check["gap_closed"])
    assert row["policy_cost_at_losses_mean"] == pytest.approx(check["policy_cost_at_losses_mean"])
    assert row["baseline_points_above_policy"] == [len(check["baseline_points_above_policy"])]
    points = check["baseline_points_above_policy"]
    above = [p["quality_above"] for p in points if p["quality_above"] is not None]
    extra = [p["policy_extra_cost"] for p in points if p["policy_extra_cost"] is not None]
    assert row["baseline_above_requests"] == [round(max(above) * 805, 1) if above else None]
    assert row["baseline_above_extra_cost_points"] == [round(100 * max(extra), 2) if extra else None]
    margins = (f"{max(above) * 805:.0f}" if above else "—") + "/" + (f"{100 * max(extra):.1f}" if extra else "—")
    z = check["baseline_above_z_max"]
    assert row["baseline_above_z_max"] == [None if z is None else round(z, 2)]
    assert row["loss_slack_requests"] == round((check["always_last_quality"] - check["quality_floor"]) * 805, 1)
    assert row["met"] == {"saved": check["saved_vs_simple_points"] >= 3, "gap": check["gap_closed"] >= 0.25,
                          "above": not check["baseline_points_above_policy"]}

    (line,) = [line for line in stdout.splitlines() if line.startswith(LADDER)]
    assert line.split()[1:11] == ["805", "3", "bind", f"{row['loss_slack_requests']:.0f}",
                                 f"{row['policy_cost_at_losses_mean']:.3f}",
                                 f"{row['saved_vs_simple_points']:.1f}", f"{row['gap_closed']:.3f}",
                                 str(row["baseline_points_above_policy"][0]),
                                 margins, "—" if z is None else f"{z:.1f}"]


def test_the_reference_rows_are_the_same_check_on_the_fitted_q_frontier(shared_data, tmp_path):
    from asd.simulator.evaluate import Evaluation
    from asd.simulator.fitted_q import fitted_q_reference
    from asd.simulator.sweep import baseline_frontiers, quality_check

    report, stdout = run_benchmark("bench_policy_quality.py", "--ladders", LADDER, "--seeds", "1", "--reference",
                                   tmp_path=tmp_path)
    (row,) = report["ladders"]
    assert report["reference"] is True
    B.import_ladder(LADDER, shared_data, tmp_path / "bundle")
    ev = Evaluation(tmp_path / "bundle", folds=5, cost_model="params", seed=0)
    check = quality_check([p.as_dict() for p in fitted_q_reference(ev, seed=0)], baseline_frontiers(ev),
                          ev.view.tier_names)
    reference = row["fitted_q_seed0"]
    assert reference["saved_vs_simple_points"] == pytest.approx(check["saved_vs_simple_points"])
    assert reference["gap_closed"] == pytest.approx(check["gap_closed"])
    assert reference["policy_saved_vs_simple_points"] == pytest.approx(row["saved_vs_simple_points"])  # one seed
    assert reference["policy_gap_closed"] == pytest.approx(row["gap_closed"])
    table = stdout.split("fold seed 0, policy against the learned reference", 1)[1]
    (line,) = [line for line in table.splitlines() if line.startswith(LADDER)]
    assert line.split()[1:] == [f"{row['saved_vs_simple_points']:.1f}", f"{row['gap_closed']:.3f}",
                                f"{check['saved_vs_simple_points']:.1f}", f"{check['gap_closed']:.3f}"]


def test_an_unknown_ladder_is_one_line_and_exit_2():
    done = subprocess.run([sys.executable, "benchmarks/bench_policy_quality.py", "--ladders", "mmlu-gpt5"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: unknown ladder 'mmlu-gpt5'; ladders are {', '.join(B.LADDERS)}"]
