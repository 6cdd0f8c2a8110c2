"""`asd calibrate`, `asd simulate` and `asd sweep` end to end: the built-in trace through the
CLI, a small synthetic ladder through the Python API (seeded, so figures reproduce)."""

from __future__ import annotations

import json
import math
from dataclasses import astuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from asd.cli import main
from asd.engine import Policy
from asd.errors import ConfigError, PolicyError
from asd.simulator import baselines as B
from asd.simulator.evaluate import Evaluation
from asd.simulator.outcomes import Outcomes, latency_stat
from asd.simulator.report import _above_text, _load_text, _spread_text, _summarised, print_sweep
from asd.simulator.job import (TRACE_DES_NOTE, deployment_check, des_latency, difficulty_priority,
                               last_policy_change, prediction_margin, simulate, trace_rate)
from asd.simulator.sweep import (_above, _extra_cost, _quality_above, cheapest_within, paired_se, run_sweep,
                                  sweep)
from asd.traces.bundle import open_bundle
from asd.traces.synth import write_synthetic_bundle

BUILTIN_PATH = str(open_bundle("builtin").path)

BUILTIN = open_bundle("builtin").path
BASELINES = ["fixed-2stage", "pipeline", "threshold", "router", "random", "protocol", "oracle"]


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def finite(d):
    return all(v is None or math.isfinite(v) for v in (d["quality"], d["cost_rel"], *d["latency_ms"].values()))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "ladder"
    write_synthetic_bundle(path, 400, 3, 7, informativeness=0.7)
    return path


@pytest.fixture(scope="module")
def evaluation(synth):
    return Evaluation(synth, folds=3, seed=0)


def test_simulate_builtin_cli_reports_every_baseline_at_tau(tmp_path):
    # --json inside the --plots directory it precedes: --plots is parsed first, making the directory
    out = tmp_path / "plots" / "sim.json"
    result = run("simulate", "--tau-max", "800", "--json", str(out), "--plots", str(tmp_path / "plots"))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for key in ("tau_max_ms", "stat", "mode", "split", "n_requests", "speculative", "cost_model", "chosen",
                "baselines", "feasible"):
        assert key in data
    assert data["n_requests"] == 600 and data["folds"] == 5 and data["split"] is None
    assert data["settings"] == {"predictor": "logistic", "risk": "mean", "stage0": True, "seed": 0}
    assert list(data["baselines"]) == ["always-smollm2-135m", "always-gemma3-270m"] + BASELINES
    assert data["feasible"] and data["chosen"]["latency_ms"]["p95"] <= 800
    assert all(finite(b) for b in data["baselines"].values()) and finite(data["chosen"])
    oracle = data["baselines"]["oracle"]["quality"]
    assert all(b["quality"] <= oracle + 1e-12 for b in data["baselines"].values())
    assert data["chosen"]["quality"] <= oracle
    assert sum(data["chosen"]["stop_fractions"]) == pytest.approx(1.0)
    # The built-in ladder's last tier is worse (0.34 against 0.41): at a slack limit the policy must
    # not buy the worse tier (stage 0 once skipped to it on a lucky 48-request prompt bin).
    assert data["chosen"]["quality"] >= data["baselines"]["always-smollm2-135m"]["quality"] - 0.01
    assert "held-out results at τ_max = 800 ms" in result.output and "oracle" in result.output
    assert all((tmp_path / "plots" / name).stat().st_size > 0 for name in ("latency.png", "stops.png"))


def test_simulate_reports_an_infeasible_limit_instead_of_failing(evaluation):
    data = simulate(tau_max=1e-3, stat="p95", evaluation=evaluation)
    assert data["feasible"] is False and data["chosen"]["lambda"] == 0.0
    assert data["search"]["status"] == "infeasible"


def test_simulate_with_a_generous_limit_is_slack_and_meets_it(evaluation):
    data = simulate(tau_max=1e9, stat="p99", evaluation=evaluation)
    assert data["feasible"] and data["search"]["status"] == "slack"
    assert data["chosen"]["latency_ms"]["p99"] <= 1e9


def test_a_slack_limit_never_picks_worse_than_a_tight_one():
    """The halvings under a slack limit started at the bracket's top (1e15) and compared 17 copies
    of the deepest policy: on the built-in trace τ_max = 1e308 chose quality 0.407 at cost 2.20
    where τ_max = 800 ms chose 0.418 at 1.61. They now start at the last λ where a fold's
    policy changes."""
    ev = Evaluation(BUILTIN_PATH, folds=5, seed=0)
    tight, slack = (simulate(tau_max=tau, stat="p95", evaluation=ev) for tau in (800.0, 1e308))
    assert tight["search"]["status"] == "ok" and slack["search"]["status"] == "slack"
    assert slack["chosen"]["quality"] >= tight["chosen"]["quality"]
    assert slack["chosen"]["lambda"] <= last_policy_change(ev) < 1e15


def _best_on_grid(ev, lams, tau_max, stat):
    """(quality, -cost) of the best pooled policy within τ_max among `lams`, by brute force."""
    best = None
    for lam in lams:
        out = ev.policy_outcomes(lam)
        if latency_stat(out.latency_ms, stat) <= tau_max:
            key = (float(np.nanmean(out.quality)), -float(out.cost.mean()))
            best = key if best is None or key > best else best
    return best


@pytest.mark.parametrize("stat, limits", [("p95", (370.0, 440.0, 440.2, 500.0, 800.0, 1070.0)),
                                          ("mean", (238.0, 245.0, 340.0))])
def test_tau_search_beats_every_lambda_of_a_fine_grid_and_a_looser_limit_never_picks_worse(stat, limits):
    """Latency is not monotone in λ with stage 0: bisection for the largest λ within τ_max, then
    16 halvings of it, chose quality 0.405 at p95 ≤ 440.2 ms on the built-in trace where 0.410
    met 440 ms, and on an AlpacaEval ladder missed a better policy beyond a λ where p95 first
    crossed τ_max. Every distinct pooled policy is now compared (found by a hunt)."""
    from asd.simulator.job import search_tau

    ev = Evaluation(BUILTIN_PATH, folds=5, seed=0)
    grid = [0.0, *np.geomspace(1e-2, 1e7, 1500)]
    qualities = []
    for tau in limits:
        found = search_tau(ev, tau, stat)
        assert found.exhaustive and found.tried == found.distinct
        out = ev.policy_outcomes(found.lam)
        assert latency_stat(out.latency_ms, stat) <= tau and found.statistic == latency_stat(out.latency_ms, stat)
        chosen = (float(np.nanmean(out.quality)), -float(out.cost.mean()))
        best = _best_on_grid(ev, grid, tau, stat)
        assert best is not None and chosen >= best, (tau, chosen, best)
        qualities.append(chosen[0])
    assert qualities == sorted(qualities)


def test_tau_search_over_a_spread_of_policies_where_every_one_would_cost_too_much(monkeypatch, evaluation):
    """Past MAX_CANDIDATE_WALKS request walks (10^6 requests × thousands of distinct policies)
    an even spread of them, bisection's limit and its halvings are compared; where the budget
    leaves no room to enumerate them at all, a λ grid instead. Each says so."""
    from asd.simulator import job

    tau = latency_stat(evaluation.policy_outcomes(0.0).latency_ms, "p95") * 1.5
    full = job.search_tau(evaluation, tau, "p95")
    monkeypatch.setattr(job, "MAX_CANDIDATE_WALKS", 1)
    monkeypatch.setattr(job, "MIN_CANDIDATES", 8)
    grid = job.search_tau(evaluation, tau, "p95")
    monkeypatch.setattr(job, "ENUMERATE_AT_LEAST", 0)
    spread = job.search_tau(evaluation, tau, "p95")
    assert full.exhaustive and not spread.exhaustive and not grid.exhaustive
    assert full.distinct == full.tried and full.intervals == len(evaluation.distinct_policy_lambdas())
    assert spread.intervals == len(evaluation.distinct_policy_lambdas()) > spread.tried >= 1
    assert spread.distinct is None and grid.distinct is None and grid.intervals is None and grid.tried >= 1
    for found in (spread, grid):
        assert found.status == full.status == "ok" and found.statistic <= tau
    assert "even spread" in spread.note() and "log grid" in grid.note() and "every distinct policy" in full.note()


def test_kv_tokens_limit_each_replicas_cache_in_the_des_and_the_reports_say_so(tmp_path):
    """--kv-tokens sets the KV-cache capacity per replica that the DES always had but no command
    could set (found by a hunt): the load section names it, the runs use it, and a capacity no
    request path fits is one line naming the request, the tier and a capacity that fits."""
    from asd.simulator.job import des_latency

    ev = Evaluation(BUILTIN_PATH, folds=5, seed=0)
    out = ev.policy_outcomes(4000.0)
    limited = des_latency(ev, rate=6.0, max_batch=16, kv_tokens=[130, 200])
    assert limited.pools.kv_capacity.tolist() == [130, 200]
    unlimited = des_latency(ev, rate=6.0, max_batch=16)
    queued, free = limited(out), unlimited(out)
    # with room for about one request per replica, requests wait for the cache to free
    assert limited.last.max_queue.max() > unlimited.last.max_queue.max()
    assert np.isfinite(queued.latency_ms).all() and queued.latency_ms.mean() > free.latency_ms.mean()
    with pytest.raises(ConfigError, match=r"^--kv-tokens 100,100: request '\w+' needs \d+ KV tokens \(prompt, draft "
                                          r"and output\) at tier \S+, more than a replica holds; every request fits "
                                          r"with --kv-tokens \d+,\d+$"):
        des_latency(ev, rate=6.0, kv_tokens=100)
    result = run("simulate", "--tau-max", "800", "--mode", "des", "--rate", "6", "--kv-tokens", "150,200",
                 "--json", str(tmp_path / "s.json"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s.json").read_text())["load"]["kv_tokens"] == [150, 200]
    assert "KV cache [150, 200] tokens per replica" in " ".join(result.output.split())
    swept = run("sweep", "--mode", "des", "--rate", "6", "--kv-tokens", "150", "--json", str(tmp_path / "w.json"))
    assert swept.exit_code == 0, swept.output
    assert json.loads((tmp_path / "w.json").read_text())["load"]["kv_tokens"] == [150, 150]
    plain = run("simulate", "--tau-max", "800", "--kv-tokens", "150", "--json", str(tmp_path / "r.json"))
    assert "warning: --kv-tokens has no effect without --mode des; ignored" in plain.output


def test_tau_search_under_the_des_finds_the_distinct_policies_where_replay_would(monkeypatch, evaluation):
    """Whether to find the distinct policies goes by the requests (finding them costs replay
    walks), not by the DES's cost per try: under --mode des every bundle over 4,000 requests had
    gone to the λ grid, not 40,000 as documented (found by a hunt). A slack limit's lambda_limit is
    the largest λ tried, a repeated walk included."""
    from asd.simulator import job

    n = evaluation.held.size
    monkeypatch.setattr(job, "MAX_CANDIDATE_WALKS", n * job.ENUMERATE_AT_LEAST)  # replay: just enumerates
    des = job.des_latency(evaluation, rate=5.0)
    found = job.search_tau(evaluation, 1e12, "p95", des)
    assert found.intervals == len(evaluation.distinct_policy_lambdas())
    assert not found.exhaustive or found.tried <= job.ENUMERATE_AT_LEAST // job.DES_WALK_COST
    monkeypatch.undo()
    slack = job.search_tau(evaluation, 1e12, "p95")
    assert slack.status == "slack" and slack.lam_limit == max(evaluation.distinct_policy_lambdas())


def test_the_oracle_bounds_the_quality_of_every_policy_point_and_baseline(evaluation):
    result = sweep(evaluation=evaluation)
    oracle = result["baselines"]["oracle"][0]["quality"]
    assert all(p["quality"] <= oracle + 1e-12 for p in result["policy"])
    assert all(p["quality"] <= oracle + 1e-12 for pts in result["baselines"].values() for p in pts)
    assert len(result["baselines"]["fixed-2stage"]) == 1 and len(result["baselines"]["threshold"]) >= 2


def test_tuned_baselines_are_picked_over_the_costs_they_can_reach(evaluation):
    """Cost budgets run from always-first to always-last and on to climbing every tier (the
    pipeline): a threshold cascade may cost more than always-last, and where the first tier is
    the dearer one (the built-in ladder) that is its whole range."""
    from asd.simulator.sweep import BUDGET_LEVELS, EXTRA_BUDGET_LEVELS, baseline_frontiers

    frontiers = baseline_frontiers(evaluation)
    top = frontiers["pipeline"][0]["cost_rel"]
    budgets = [p["budget"] for p in frontiers["threshold"]]
    assert max(budgets) <= max(top, 1.0) + 1e-12 and min(budgets) < 1.0  # synth: speculative, top < 1
    assert len(frontiers["threshold"]) <= BUDGET_LEVELS + EXTRA_BUDGET_LEVELS
    builtin = baseline_frontiers(Evaluation("builtin", folds=5, seed=0))
    first = builtin["always-smollm2-135m"][0]["cost_rel"]
    assert first > 1.0  # the built-in ladder's first tier is the dearer one
    threshold = builtin["threshold"]
    assert len(threshold) >= 3 and threshold[0]["cost_rel"] == pytest.approx(first)
    assert threshold[-1]["cost_rel"] > first + 0.5  # cascades that climb, not only always-first
    assert max(p["budget"] for p in threshold) <= builtin["pipeline"][0]["cost_rel"] + 1e-12
    assert len(builtin["router"]) >= 2


def test_policy_latency_is_monotone_in_lambda_without_stage0(synth):
    ev = Evaluation(synth, folds=3, seed=0, stage0=False)
    lams = np.geomspace(1e-3, 1e6, 40)
    means = [ev.policy_outcomes(lam).latency_ms.mean() for lam in lams]
    assert all(b >= a - 1e-9 for a, b in zip(means, means[1:]))
    depth = [ev.policy_outcomes(lam).stop for lam in lams]
    assert all((b >= a).all() for a, b in zip(depth, depth[1:]))


def test_seeds_reproduce(synth):
    a = simulate(tau_max=2000, evaluation=Evaluation(synth, folds=3, seed=3))
    b = simulate(tau_max=2000, evaluation=Evaluation(synth, folds=3, seed=3))
    assert json.dumps(a, sort_keys=True, default=float) == json.dumps(b, sort_keys=True, default=float)


def test_sweep_policy_points_are_distinct_policies(evaluation):
    points = sweep(evaluation=evaluation)["policy"]
    keys = [tuple(p["stop_fractions"]) + (p["cost_rel"],) for p in points]
    assert len(points) >= 3
    assert all(a != b for a, b in zip(keys, keys[1:]))


def test_sweep_lists_a_policy_met_again_at_a_larger_lambda_once(tmp_path):
    """With stage 0 the policy's outcome need not move monotonically in λ: on this ladder one
    came back two breakpoints later and was listed twice (only a repeat of the point just before
    was dropped), and "N distinct policies" counted it twice. Each is listed once, at its
    smallest λ."""
    from asd.calibration.calibrate import calibrate_to_file
    from asd.traces.split import split_bundle

    write_synthetic_bundle(tmp_path / "s", 300, 3, 2)
    split_bundle(tmp_path / "s", test_frac=0.3, seed=0)
    calibrate_to_file(tmp_path / "s", tmp_path / "p.npz")
    points = run_sweep(tmp_path / "s", policy=tmp_path / "p.npz")["policy"]
    keys = [(p["quality"], p["cost_rel"], p["latency_ms"]["mean"], tuple(p["stop_fractions"])) for p in points]
    assert len(set(keys)) == len(keys)
    lams = [p["lambda"] for p in points]
    assert lams == sorted(lams)


def test_des_mode_under_load_is_slower_than_replay(evaluation):
    replay = simulate(tau_max=1e9, stat="mean", evaluation=evaluation)
    des = simulate(tau_max=1e9, stat="mean", mode="des", rate=50.0, evaluation=evaluation)
    assert des["load"]["rate"] == 50.0 and des["mode"] == "des"
    assert des["chosen"]["lambda"] == pytest.approx(replay["chosen"]["lambda"])
    assert des["chosen"]["latency_ms"]["mean"] >= replay["chosen"]["latency_ms"]["mean"] * 0.5
    with pytest.raises(ConfigError, match="--rate"):
        simulate(tau_max=1e9, mode="des", evaluation=evaluation)


def test_des_alone_times_every_fixed_baseline_as_replay_does_fixed_2stage_skipping_the_middle_tiers(synth):
    """The DES ran every request through every tier from its start to its stop, so on 3+ tiers
    fixed-2stage (first tier, then the last, which regenerates) was timed as the pipeline: the
    protocol's criteria were judged against the wrong latency under --mode des. And a speculative
    continuation decoded from prompt + whole draft, where the cost model's closed form drops the
    rejected tokens (the pipeline's first request: 3363.47 ms in the DES, 3363.08 replayed). With
    requests far apart (1e-6 req/s: alone in the system) each method's DES latency is its replay's."""
    ev = Evaluation(synth, folds=2, cost_model="profile")
    alone = des_latency(ev, rate=1e-6)
    for name, out in ev.iter_label_free_baselines():
        timed = alone(out)
        np.testing.assert_allclose(timed.latency_ms, out.latency_ms, rtol=1e-6, err_msg=name)  # arrivals ~1e11 ms
        if name == "fixed-2stage":
            middle = alone.last.tier_done_ms[:, 1:-1]
            assert np.isnan(middle).all() and not np.isnan(alone.last.tier_done_ms[:, [0, -1]]).any()
    assert not np.allclose(B.fixed_two_stage(ev.arrays).latency_ms, B.pipeline(ev.arrays).latency_ms)


def test_difficulty_keys_are_what_a_request_is_known_by_when_it_joins_each_queue(evaluation):
    ev = evaluation
    out = ev.policy_outcomes(1.0)
    # the keys hang on each request's start tier only: draw every start, so cold starts are covered
    out = Outcomes(np.random.default_rng(0).integers(0, ev.view.n_tiers, ev.held.size), *astuple(out)[1:])
    keys = difficulty_priority(ev, out)
    assert keys.shape == (ev.held.size, ev.view.n_tiers) and ((keys >= 0) & (keys <= 1)).all()
    lo = 0
    for f in ev.folds:  # an element-wise twin: prompt models at the start tier, the transition row after
        prompt_p = ev.router_scores(f)[1]
        policy, t = f.policy, f.policy.tables
        for j in range(f.held.size):
            s = int(out.start[lo + j])
            for i in range(ev.view.n_tiers):
                if i == s:
                    want = prompt_p[j, i]
                elif i == 0:
                    want = prompt_p[j, 0]  # never joined: the start tier is above
                else:
                    cold = t.cold_start and i - 1 == s and s > 0
                    trans, b = (t.trans_cold, f.cold_bins) if cold else (t.trans, f.tier_bins)
                    want = sum(trans[i - 1][b[j, i - 1], c] * policy.q_mean[i, c] for c in range(t.n_bins))
                assert keys[lo + j, i] == pytest.approx(1.0 - want, abs=1e-12)
        lo += f.held.size


def test_simulate_des_with_the_difficulty_scheduler_reorders_queues_not_paths(evaluation):
    args = dict(tau_max=1e9, stat="mean", mode="des", rate=200.0, max_batch=2, evaluation=evaluation)
    fifo = simulate(**args)
    keyed = simulate(**args, scheduler="difficulty")
    assert fifo["load"]["scheduler"] == "fifo" and keyed["load"]["scheduler"] == "difficulty"
    for key in ("lambda", "quality", "cost_rel", "stop_fractions"):
        assert keyed["chosen"][key] == fifo["chosen"][key]
    assert keyed["chosen"]["latency_ms"] != fifo["chosen"]["latency_ms"]  # queues formed, and their order moved
    assert simulate(**args, scheduler="difficulty")["chosen"] == keyed["chosen"]  # deterministic
    with pytest.raises(ConfigError, match="--scheduler 'sjf': use one of fifo, difficulty"):
        simulate(**args, scheduler="sjf")


def test_des_arrivals_bursty_gamma_and_the_traces_own_offsets(evaluation, synth):
    args = dict(tau_max=1e9, stat="mean", mode="des", rate=50.0, evaluation=evaluation)
    poisson = simulate(**args)
    bursty = simulate(**args, arrivals="gamma", cv=3.0)
    assert poisson["load"]["arrivals"] == "poisson" and poisson["load"]["cv"] is None
    assert bursty["load"]["arrivals"] == "gamma" and bursty["load"]["cv"] == 3.0 and bursty["load"]["rate"] == 50.0
    assert bursty["chosen"]["latency_ms"]["p99"] > poisson["chosen"]["latency_ms"]["p99"]  # bursts queue
    # the trace's offsets: each held-out request arrives when it was recorded to (pooled order)
    latency = des_latency(evaluation, rate=None, arrivals="trace")
    latency(evaluation.policy_outcomes(1.0))
    offsets = pq.read_table(synth / "requests.parquet", columns=["arrival_s"]).column(0).to_numpy()[evaluation.held]
    np.testing.assert_allclose(latency.last.arrival_ms, (offsets - offsets.min()) * 1e3)
    traced = simulate(tau_max=1e9, stat="mean", mode="des", arrivals="trace", evaluation=evaluation)
    assert traced["load"]["rate"] == pytest.approx((offsets.size - 1) / np.ptp(offsets))  # n arrivals, n - 1 gaps
    with pytest.raises(ConfigError, match="--arrivals 'uniform': use one of poisson, gamma, trace"):
        simulate(**args, arrivals="uniform")
    with pytest.raises(ConfigError, match="--cv 0.0: the gaps' coefficient of variation must be a positive number"):
        simulate(**args, arrivals="gamma", cv=0.0)


def test_trace_rate_counts_gaps_and_is_none_in_words_when_every_arrival_is_at_one_instant():
    assert trace_rate(np.array([0.0, 500.0, 1000.0])) == {"rate": 2.0}  # 3 arrivals, 2 gaps in 1 s
    assert trace_rate(np.zeros(4)) == {"rate": None, "rate_note": "all 4 arrivals at one instant: no rate"}
    assert trace_rate(np.zeros(1)) == {"rate": None, "rate_note": "a single arrival: no rate"}
    load = {"arrivals": "trace", "cv": None, "scheduler": "fifo", "replicas": [1], "max_batch": 4}
    assert _load_text(load | trace_rate(np.zeros(4))) == (" with the trace's offsets (all 4 arrivals at one "
                                                          "instant: no rate), replicas [1], max batch 4, fifo queues")


def test_simulate_trace_arrivals_all_at_one_instant_write_strict_json_without_a_rate(tmp_path, synth):
    path = tmp_path / "one_instant"
    write_synthetic_bundle(path, 60, 2, 3)
    requests = pq.read_table(path / "requests.parquet")
    pq.write_table(requests.set_column(requests.schema.get_field_index("arrival_s"), "arrival_s",
                                       pa.array(np.zeros(requests.num_rows))), path / "requests.parquet")
    out = tmp_path / "sim.json"
    result = CliRunner().invoke(main, ["simulate", str(path), "--tau-max", "1e9", "--mode", "des", "--arrivals",
                                       "trace", "--folds", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "divide by zero" not in result.stderr and "inf req/s" not in result.stdout
    assert "all 60 arrivals at one instant: no rate" in " ".join(result.stdout.split())
    load = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))["load"]
    assert load["rate"] is None and load["rate_note"] == "all 60 arrivals at one instant: no rate"


def test_a_chrome_trace_cut_at_its_span_limit_is_warned_about(tmp_path, monkeypatch):
    import asd.simulator.job as job

    monkeypatch.setattr(job, "CHROME_TRACE_SPANS", 50)  # the built-in run has a few hundred spans
    trace = tmp_path / "run.json"
    result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--mode", "des", "--rate", "6",
                                       "--chrome-trace", str(trace), "--json", str(tmp_path / "sim.json")])
    assert result.exit_code == 0, result.output
    other = json.loads(trace.read_text())["otherData"]
    dropped = other["spans_dropped"]
    assert other["spans_written"] == 50 and dropped > 0
    warning = (f"warning: --chrome-trace {trace}: only the first 50 (request, tier) spans are written, {dropped:,} "
               "more dropped (chrome://tracing slows past a few hundred thousand)")
    assert warning in result.stderr.splitlines()
    data = json.loads((tmp_path / "sim.json").read_text())
    assert data["load"]["chrome_trace_spans_dropped"] == dropped and warning[len("warning: "):] in data["warnings"]


def test_des_under_the_trace_cost_model_notes_that_it_is_not_replay_even_alone(synth):
    """Replay under `trace` charges recorded e2e; the DES runs the iteration coefficients fitted
    from the trace, so the README's 'one request at a time it equals replay' holds for profile
    and params only: the run says so where it does not hold."""
    args = dict(tau_max=1e9, stat="mean", mode="des", rate=1e-6)
    traced = Evaluation(synth, folds=2, cost_model="trace")
    alone = des_latency(traced, rate=1e-6)
    out = next(traced.iter_label_free_baselines())[1]
    assert not np.allclose(alone(out).latency_ms, out.latency_ms, rtol=1e-6)  # why the note is there
    assert simulate(**args, evaluation=traced)["load"]["latency_note"] == TRACE_DES_NOTE
    assert "latency_note" not in simulate(**args, evaluation=Evaluation(synth, folds=2, cost_model="profile"))["load"]
    result = run("simulate", "--tau-max", "800", "--mode", "des", "--rate", "6", "--folds", "2")
    assert f"note: {TRACE_DES_NOTE}" in " ".join(result.output.split())


def test_trace_arrivals_refuse_held_out_requests_without_offsets_by_count(tmp_path):
    path = tmp_path / "gaps"
    write_synthetic_bundle(path, 60, 2, 3)
    requests = pq.read_table(path / "requests.parquet")
    offsets = requests.column("arrival_s").to_pylist()
    offsets[:7] = [None] * 7
    pq.write_table(requests.set_column(requests.schema.get_field_index("arrival_s"), "arrival_s",
                                       pa.array(offsets, pa.float64())), path / "requests.parquet")
    ev = Evaluation(path, folds=3, seed=0)
    with pytest.raises(ConfigError, match=r"gaps: --arrivals trace needs requests.arrival_s; 7 of 60 held-out "
                                          r"requests have none \(use --rate R"):
        des_latency(ev, rate=None, arrivals="trace")


def test_trace_arrivals_on_a_trace_without_offsets_fail_in_one_line_before_calibrating():
    result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--mode", "des", "--arrivals", "trace"])
    assert result.exit_code != 0 and "calibrating" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {BUILTIN}: --arrivals trace needs requests.arrival_s, and no request has one (use --rate R for "
        "Poisson or gamma arrivals)"]
    result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--mode", "des", "--rate", "3", "--cv", "2"])
    assert "warning: --cv has no effect without --arrivals gamma; ignored" in result.stderr.splitlines()


TOO_SLOW = "error: arrivals at rate 1e-300 req/s: 600 requests span "


@pytest.mark.parametrize("command", [["simulate", "--tau-max", "800"], ["sweep"]])
@pytest.mark.parametrize("arrivals", ["poisson", "gamma"])
def test_a_rate_too_low_to_time_is_refused_before_calibrating(monkeypatch, command, arrivals):
    """--rate 1e-300 was refused by the DES, in one line, but only after every fold was calibrated."""
    def no_fold(*args, **kwargs):
        raise AssertionError("a fold was calibrated before the rate was refused")

    monkeypatch.setattr(Evaluation, "_fold", no_fold)
    result = CliRunner().invoke(main, [*command, "--mode", "des", "--rate", "1e-300", "--arrivals", arrivals])
    assert result.exit_code == 2 and "calibrating" not in result.stderr and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(TOO_SLOW), result.output
    assert lines[0].endswith("rounds latencies away; use a higher rate (for latencies without queueing, --mode replay)")


def test_simulate_writes_the_chosen_policys_des_run_as_a_chrome_trace(tmp_path):
    trace, out = tmp_path / "traces" / "run.json", tmp_path / "out" / "sim.json"  # missing folders are made
    result = run("simulate", "--tau-max", "800", "--mode", "des", "--rate", "6", "--max-batch", "4",
                 "--chrome-trace", str(trace), "--json", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["load"]["chrome_trace"] == str(trace)
    # the deployment line judges folds on replayed latencies, not this load's: it says so under des
    assert data["deployment"]["latency"] == "replay"
    assert "deployment (on replayed latencies, without this load's queueing): " in " ".join(result.output.split())
    events = json.loads(trace.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    # one span per request per tier it ran, under the chosen policy (its stop fractions say where it ended)
    assert len(spans) >= data["n_requests"]
    assert {e["args"]["name"] for e in events if e["name"] == "process_name"} == set(data["tiers"])
    ended = np.bincount([e["args"]["stop_tier"] for e in spans if e["pid"] == e["args"]["stop_tier"]],
                        minlength=len(data["tiers"])) / data["n_requests"]
    np.testing.assert_allclose(ended, data["chosen"]["stop_fractions"])
    assert all(e["dur"] > 0 and e["args"]["queued_ms"] >= 0 for e in spans)
    (tmp_path / "afile").write_text("")
    result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--mode", "des", "--rate", "6",
                                       "--chrome-trace", str(tmp_path / "afile" / "run.json")])
    assert result.exit_code != 0 and "calibrating" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'afile' / 'run.json'}: cannot write --chrome-trace ({tmp_path / 'afile'} is a file, "
        "not a directory)")
    result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--chrome-trace", str(trace)])
    assert "warning: --chrome-trace has no effect without --mode des; ignored" in result.stderr.splitlines()


def test_simulate_cli_names_the_scheduler_and_warns_when_it_has_no_effect():
    result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--mode", "des", "--rate", "8",
                                       "--max-batch", "2", "--scheduler", "difficulty"])
    assert result.exit_code == 0, result.output
    assert "mode des at 8 req/s (Poisson), replicas [1, 1], max batch 2, difficulty queues" in result.stdout
    result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--scheduler", "difficulty"])
    assert "warning: --scheduler has no effect without --mode des; ignored" in result.stderr.splitlines()
    from tests.simulator.test_check import POLICY  # a given policy: its tables give the keys after a climb

    result = CliRunner().invoke(main, ["simulate", "--policy", str(POLICY), "--tau-max", "800", "--mode", "des",
                                       "--rate", "6", "--max-batch", "4", "--scheduler", "difficulty"])
    assert result.exit_code == 0 and "max batch 4, difficulty queues" in result.stdout, result.output


@pytest.mark.parametrize("command, plot", [(["sweep", "--folds", "2"], "frontier_latency.png"),
                                           (["simulate", "--folds", "2", "--tau-max", "800"], "latency.png"),
                                           (["calibrate", "-o", "p.npz"], "reliability.png")])
def test_a_plot_that_cannot_be_written_is_refused_before_calibrating(synth, tmp_path, monkeypatch, command, plot):
    """A directory where a plot goes failed only after calibrating, with --csv already replaced."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plots" / plot).mkdir(parents=True)
    (tmp_path / "keep.csv").write_text("precious\n")
    csv = ["--csv", "keep.csv"] if command[0] == "sweep" else []
    result = CliRunner().invoke(main, [command[0], str(synth), *command[1:], "--plots", "plots", *csv])
    assert result.exit_code == 2 and "calibrating" not in result.output, result.output
    assert result.output.splitlines() == [f"error: plots/{plot}: cannot write --plots (it is a directory)"]
    assert (tmp_path / "keep.csv").read_text() == "precious\n" and not (tmp_path / "p.npz").exists()


def test_a_sweep_whose_plot_fails_leaves_the_csv_that_was_there(synth, tmp_path, monkeypatch):
    from asd.simulator import plots as P

    def fail(*args, **kwargs):
        raise ConfigError("plots/frontier_cost.png: cannot write plot (No space left on device)")

    monkeypatch.setattr(P, "frontier", fail)
    (tmp_path / "keep.csv").write_text("precious\n")
    with pytest.raises(ConfigError, match="No space"):
        run_sweep(synth, folds=2, plots=tmp_path / "plots", csv_path=tmp_path / "keep.csv")
    assert (tmp_path / "keep.csv").read_text() == "precious\n"


def test_calibrate_cli_writes_a_policy_for_its_bundle(tmp_path):
    policy_file, report = tmp_path / "p.npz", tmp_path / "cal.json"
    result = run("calibrate", "builtin", "-o", str(policy_file), "--json", str(report), "--plots", str(tmp_path))
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    for key in ("tiers", "features", "predictor", "cost_model", "stage0", "split"):
        assert key in data
    for tier in data["tiers"]:
        assert set(tier) >= {"name", "auroc", "brier", "ece", "n", "best_feature", "best_feature_auroc"}
        assert tier["n"] == 600 and 0.5 < tier["auroc"] <= 1.0 and 0 <= tier["ece"] <= 1
    assert "every request" in data["data"]  # the built-in trace has no split column: said so
    policy = Policy.load(policy_file)
    assert policy.tier_names == ["smollm2-135m", "gemma3-270m"]
    assert policy.meta["features"]["names"] == data["features"]
    assert data["policy_lambda"] == policy.lam == 1.0 and data["cost_unit"] == "gpu_ms"
    assert "solved at λ = 1 (GPU-ms charged per unacceptable answer)" in " ".join(result.output.split())
    Policy.load(policy_file, expect_content_hash=policy.meta["bundle"]["content_hash"])
    with pytest.raises(PolicyError):
        Policy.load(policy_file, expect_content_hash="0" * 64)
    assert (tmp_path / "reliability.png").stat().st_size > 0


def test_explain_shows_one_requests_walk(evaluation):
    from asd.simulator.job import explain

    rid = str(evaluation.view.request_ids[5])
    ex = explain(evaluation, rid, 10.0)
    assert ex["request_id"] == rid and len(ex["tiers"]) == 3
    assert {t["decision"] for t in ex["tiers"]} <= {"stop", "continue"}
    names = [t["tier"] for t in ex["tiers"]]
    start, stop = names.index(ex["start_tier"]), names.index(ex["stop_tier"])
    # each tier's place on the walk: the start is never "climbed" (it was), tiers off the walk say why
    expected = (["skipped"] * start + ["cold start" if start else "start"] + ["climbed"] * (stop - start)
                + ["not reached"] * (len(names) - 1 - stop))
    assert [t["state"] for t in ex["tiers"]] == expected
    assert [t["ran"] for t in ex["tiers"]] == [start <= i <= stop for i in range(len(names))]
    # a cold start shows its cold-state p̂, the one its bin and decision come from
    lam = 1e5  # deep enough that stage 0 skips tier 0 for some requests
    f = evaluation.folds[0]
    walk = f.policy.solve(lam).walk(f.prompt_bins, f.tier_bins, cold_bins=f.cold_bins,
                                    route_scores=None if f.stage0_route is None else f.stage0_route[0])
    j = int(np.flatnonzero(walk.start > 0)[0])
    cold = explain(evaluation, str(evaluation.view.request_ids[f.held[j]]), lam)
    s = int(walk.start[j])
    tier = cold["tiers"][s]
    cold_x = evaluation.features.cold_x[f.held[j]]
    assert tier["state"] == "cold start" and tier["bin"] == int(f.cold_bins[j, s])
    assert tier["p_hat"] == pytest.approx(f.policy.predictor.predict_proba(s + 1, cold_x[s:s + 1])[0], rel=1e-12)
    assert tier["p_hat"] != pytest.approx(float(f.p_held[j, s]))  # the climbed state's, shown before
    ids = evaluation.view.request_ids.astype(str)
    with pytest.raises(ConfigError, match=rf"no such request in .* \(its request ids: {ids[0]}, {ids[1]}, {ids[2]}, …\)"):
        explain(evaluation, "not-a-request", 10.0)


def test_calibrate_cli_gbt_reference_reports_beside_logistic_and_writes_no_policy(tmp_path):
    """The offline yardstick: boosted trees and logistic on the same rows and folds, per tier and
    for stage 0; `-o` is not written (trees are not exportable to a policy)."""
    policy_file, report = tmp_path / "p.npz", tmp_path / "ref.json"
    result = run("calibrate", "builtin", "-o", str(policy_file), "--predictor", "gbt-reference", "--json", str(report),
                 "--plots", str(tmp_path / "plots"))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the terminal wraps notes anywhere
    assert "boosted trees | logistic" in text and "no policy written" in text
    assert "ignored builtin: calibrated on every request" in text  # named as given, not the package's path
    assert not policy_file.exists()
    data = json.loads(report.read_text())
    assert data["plots"] == [str(tmp_path / "plots" / "reliability.png")]  # --plots was silently ignored
    assert (tmp_path / "plots" / "reliability.png").stat().st_size > 0
    assert [t["name"] for t in data["tiers"]] == ["smollm2-135m", "gemma3-270m"]
    for row in data["tiers"] + [data["stage0_metrics"]]:
        assert row["n"] == 600
        for key in ("auroc", "logistic_auroc"):
            assert 0.5 < row[key] <= 1.0, (row["name"], key)
        for key in ("brier", "ece", "logistic_brier", "logistic_ece"):
            assert 0.0 <= row[key] <= 1.0



@pytest.mark.parametrize("args, message", [
    (["simulate", "/no/such/bundle", "--tau-max", "800"], "/no/such/bundle"),
    (["simulate", "--tau-max", "800", "--mode", "des"], "--rate"),
    (["simulate", "--tau-max", "-5"], "--tau-max"),
    (["simulate", "--tau-max", "800", "--replicas", "x"], "--replicas"),
    # checked before the bundle is read and calibrated on (inf was refused after five calibrations)
    (["simulate", "/no/such/bundle", "--tau-max", "800", "--mode", "des", "--rate", "inf"],
     "error: --rate inf: must be a positive, finite number of requests per second"),
    (["simulate", "/no/such/bundle", "--tau-max", "800", "--mode", "des", "--rate", "2", "--replicas", "100000000"],
     "error: --replicas '100000000': at most 10000 per tier"),  # 10^8 replicas filled the memory
    (["simulate", "/no/such/bundle", "--tau-max", "800", "--mode", "des", "--rate", "2", "--max-batch", "10" * 10],
     "--max-batch"),
    (["simulate", "", "--tau-max", "800"], "bundle path is empty"),  # Path("") would be the working directory
    (["traces", "validate", ""], "bundle path is empty"),
    # checked before the bundle is read and calibrated on; inf named "target inf", not the flag
    (["simulate", "/no/such/bundle", "--tau-max", "inf"], "error: --tau-max inf: must be a positive number"),
    (["simulate", "--tau-max", "800", "--mode", "des", "--rate", "2", "--replicas", "1,2,3"],
     "--replicas 1,2,3: " + BUILTIN_PATH + " has 2 tiers (smollm2-135m → gemma3-270m); give one count, or one per tier\n"),
    # empty values were taken as the default (cost model, --json '' named no path) or fitted a
    # policy on no feature group at all
    (["simulate", "--tau-max", "800", "--cost-model", ""], "error: unknown cost model ''; choose one of trace, profile, params"),
    (["calibrate", "builtin", "-o", "p.npz", "--cost-model", ""], "error: unknown cost model ''"),
    (["calibrate", "builtin", "-o", "p.npz", "--features", ",,"], "error: no feature group named: name at least one of logprob"),
    # the stage group alone is the same policy on no answer features (AUROC 0.5), fitted without a word
    (["calibrate", "builtin", "-o", "p.npz", "--features", "stage"],
     "error: --features stage: stage is always included; name at least one of logprob, entropy"),
    (["simulate", "--tau-max", "800", "--json", ""], "error: --json '': give a file path"),
    (["sweep", "/no/such/bundle"], "/no/such/bundle"),
    (["calibrate", "/no/such/bundle", "-o", "p.npz"], "/no/such/bundle"),
    (["calibrate", "builtin", "-o", "p.npz", "--risk", "bold"], "--risk"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["simulate", "--tau-max", "800", "--mode", "des", "--rate", "2", "--replicas", "1,2,3"], "has 2 tiers"),
    (["sweep", "--mode", "des", "--rate", "2", "--replicas", "1,1,1,1"], "has 2 tiers"),
    (["simulate", "--tau-max", "800", "--mode", "des", "--rate", "2", "--kv-tokens", "500,500,500"],
     "--kv-tokens 500,500,500: " + BUILTIN_PATH + " has 2 tiers"),
    (["simulate", "--tau-max", "800", "--mode", "des", "--rate", "2", "--kv-tokens", "0"],
     "error: --kv-tokens '0': every count must be >= 1"),
    (["simulate", "--tau-max", "800", "--explain", "17"],
     f"no such request in {BUILTIN_PATH} (its request ids: b0000, b0001, b0002, …)"),
    (["simulate", "--tau-max", "800", "--risk", "lcb:7"], "G in [0.5, 1)"),
    (["sweep", "--risk", "lcb:0.3"], "G in [0.5, 1)"),
    (["calibrate", "builtin", "-o", "p.npz", "--risk", "lcb:1"], "G in [0.5, 1)"),
    (["simulate", "--tau-max", "800", "--plots", "/dev/null/plots"], "/dev/null/plots: cannot create --plots directory"),
    (["sweep", "--plots", "/dev/null/plots"], "/dev/null/plots: cannot create --plots directory"),
    (["sweep", "--csv", "/dev/null/dir/points.csv"], "cannot write --csv (/dev/null is a file, not a directory)"),
    (["calibrate", "builtin", "-o", "/dev/null/policies/p.npz"],
     "/dev/null/policies/p.npz: cannot write -o (/dev/null is a file, not a directory)"),
])
def test_mistakes_the_bundle_can_show_are_refused_before_any_calibration(args, message):
    """A wrong --replicas count, --explain id, --risk level or output path is refused as soon as
    the options are parsed or the bundle is read: on a large ladder the five fold calibrations
    before it take minutes."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert "calibrating" not in result.output


def test_a_refused_run_leaves_no_plots_directory_and_a_good_one_makes_it(tmp_path):
    """--plots is made when the option is parsed (so that a bad path is refused at once and other
    outputs may go inside it), and a run refused after that (a bad --stat, an --explain id) left
    the empty directory behind. The directories it made are now removed again when the command
    leaves them empty; a directory that was there stays."""
    plots = tmp_path / "a" / "plots"
    for args in (["simulate", "--tau-max", "800", "--plots", str(plots), "--stat", "p42"],
                 ["simulate", "--tau-max", "800", "--plots", str(plots), "--explain", "17"],
                 ["calibrate", "builtin", "-o", str(tmp_path / "p.npz"), "--plots", str(plots), "--lambda", "-1"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert not (tmp_path / "a").exists(), args
    (tmp_path / "f").write_text("x")
    result = CliRunner().invoke(main, ["sweep", "--plots", str(tmp_path / "f")])
    assert result.exit_code == 2 and "f: cannot create --plots directory (it is a file)" in result.stderr
    result = CliRunner().invoke(main, ["sweep", "--plots", str(tmp_path / "f" / "plots")])
    assert result.exit_code == 2 and "plots: cannot create --plots directory (not a directory)" in result.stderr.lower()
    assert (tmp_path / "f").read_text() == "x"
    (tmp_path / "kept").mkdir()
    for spelled in (tmp_path / "kept", tmp_path / "new" / ".." / "kept"):  # not made by the command: left alone
        result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--plots", str(spelled), "--stat", "p42"])
        assert result.exit_code == 2 and (tmp_path / "kept").is_dir(), spelled
    result = CliRunner().invoke(main, ["calibrate", "builtin", "-o", str(plots / "p.npz"), "--plots", str(plots)])
    assert result.exit_code == 0, result.output  # -o inside the --plots directory the same command makes
    assert (plots / "reliability.png").is_file() and (plots / "p.npz").is_file()


def test_calibrate_out_creates_missing_directories(tmp_path):
    """-o is checked when parsed, but a path whose directories do not exist yet is fine: the
    policy file is written atomically and its directories created, as before the check."""
    target = tmp_path / "policies" / "2026" / "p.npz"
    result = CliRunner().invoke(main, ["calibrate", "builtin", "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert Policy.load(target).tier_names == ["smollm2-135m", "gemma3-270m"]


def test_explain_of_a_calibration_request_is_refused_before_calibrating(tmp_path):
    """On a split bundle --explain shows a held-out request; one the policy is calibrated on is
    refused up front, naming its split."""
    from asd.calibration.views import load_view
    from asd.traces.split import split_bundle

    bundle = tmp_path / "split"
    split_bundle("builtin", out=bundle)
    view = load_view(bundle)
    cal_id = str(view.request_ids[np.flatnonzero(view.split == "calibration")[0]])
    test_id = str(view.request_ids[np.flatnonzero(view.split == "test")[0]])
    result = CliRunner().invoke(main, ["simulate", str(bundle), "--tau-max", "800", "--explain", cal_id])
    assert result.exit_code == 2, result.output
    assert f"--explain {cal_id!r}: the request is in split 'calibration', not the held-out split 'test'" in result.output
    assert "calibrating" not in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["simulate", str(bundle), "--tau-max", "800", "--explain", test_id])
    assert result.exit_code == 0, result.output
    assert test_id in result.output and "values: the expected cost from that tier on" in result.output


def test_explain_decisions_agree_with_the_replayed_walk(evaluation):
    """The debugger's per-tier decisions (cold-state tables at a skipped-to start tier) lead to
    the very start and stop tiers the replay gives that request."""
    from asd.simulator.job import explain

    fold = evaluation.folds[0]
    for lam in (0.0, 10.0, 1e3, 1e6):
        out = fold.walk(lam)
        for j in range(0, fold.held.size, max(1, fold.held.size // 15)):
            ex = explain(evaluation, str(evaluation.view.request_ids[fold.held[j]]), lam)
            names = list(evaluation.view.tier_names)
            start, stop = names.index(ex["start_tier"]), names.index(ex["stop_tier"])
            assert (start, stop) == (int(out.start[j]), int(out.stop[j]))
            decisions = [t["decision"] for t in ex["tiers"][start:stop]]
            assert all(d == "continue" for d in decisions)
            assert stop == len(names) - 1 or ex["tiers"][stop]["decision"] == "stop"
            for t in ex["tiers"]:  # the values shown are the ones that decide (ties stop)
                if t["continue_value"] is not None:
                    stops = t["stop_value"] <= t["continue_value"] + 1e-12 * max(1.0, abs(t["continue_value"]))
                    assert (t["decision"] == "stop") == stops


def test_sweep_ablation_and_csv(synth, tmp_path):
    from rich.console import Console

    from asd.simulator.sweep import run_sweep

    csv_path = tmp_path / "frontier.csv"
    result = run_sweep(synth, folds=3, ablate="features", csv_path=csv_path, plots=tmp_path / "plots")
    names = [a["name"] for a in result["ablation"]]
    assert "without logprob" in names and "without stage" not in names  # stage is always kept
    assert "without prompt text" not in names  # synthetic requests have no prompt text: no text model to drop
    # synthetic outputs have no text: the groups read from it were skipped without a word
    absent = {g: "no output text in trace" for g in ("format", "content", "agreement")}
    assert result["ablation_groups_absent"] == absent and not {f"without {g}" for g in absent} & set(names)
    assert (f"--ablate features: {synth} lacks feature groups format (no output text in trace); content (no output "
            "text in trace); agreement (no output text in trace): not ablated (no frontier uses them)"
            ) in result["warnings"]
    console = Console(width=400, record=True)
    print_sweep(result, console=console)
    assert ("not ablated (absent from " + str(synth) + "): format (no output text in trace), content (no output text "
            "in trace), agreement (no output text in trace)") in console.export_text()
    for a in result["ablation"]:
        assert a["base_cost_rel"] is None or math.isfinite(a["base_cost_rel"])
    rows = csv_path.read_text().splitlines()
    n_points = len(result["policy"]) + sum(len(p) for p in result["baselines"].values())
    assert rows[0].startswith("method,lambda,quality,cost_rel") and len(rows) == 1 + n_points
    assert all((tmp_path / "plots" / f).stat().st_size > 0 for f in ("frontier_cost.png", "frontier_latency.png"))


def test_risk_ablation_compares_every_risk_mode_but_the_runs_own(tmp_path):
    """`--ablate risk` compares the mean with lower credible bounds: it compared lcb:0.7..0.95
    with the run's own, so under `--risk lcb:0.9` lcb:0.9 against itself and never the mean."""
    from asd.simulator.sweep import run_sweep

    write_synthetic_bundle(tmp_path / "s", 200, 2, 3, informativeness=0.7)
    for risk, names in (("mean", ["risk lcb:0.7", "risk lcb:0.8", "risk lcb:0.9", "risk lcb:0.95"]),
                        (0.9, ["risk mean", "risk lcb:0.7", "risk lcb:0.8", "risk lcb:0.95"])):
        result = run_sweep(tmp_path / "s", folds=3, ablate="risk", risk=risk)
        assert [a["name"] for a in result["ablation"]] == names
        # the JSON records what shaped the policies, as the CLI names it
        assert result["settings"] == {"predictor": "logistic", "risk": "mean" if risk == "mean" else "lcb:0.9",
                                      "stage0": True, "seed": 0}
        assert len({a["base_cost_rel"] for a in result["ablation"]}) == 1  # one base: this run's own frontier
        for a in result["ablation"]:
            if a["cost_rel"] is not None and a["base_cost_rel"] is not None:
                assert a["change_points"] == pytest.approx(100 * (a["cost_rel"] - a["base_cost_rel"]))


def test_sweep_ablation_drops_stage0s_text_model_where_there_is_one():
    from asd.simulator.sweep import run_sweep

    result = run_sweep("builtin", folds=3, ablate="features", cost_model="params")
    text = [a for a in result["ablation"] if a["name"] == "without prompt text"]
    assert len(text) == 1 and text[0]["base_cost_rel"] is not None
    assert text[0]["cost_rel"] is None or math.isfinite(text[0]["change_points"])


def test_a_policy_whose_text_model_is_malformed_is_refused_in_one_line():
    from asd.calibration.calibrate import calibrate

    policy = calibrate("builtin", rows=np.arange(0, 600, 2), seed=0, single_feature_report=False).policy
    assert "prompt_text" in policy.meta
    policy = Policy(policy.tables, policy.predictor, lam=policy.lam, risk=policy.risk, tier_names=policy.tier_names,
                    meta={**policy.meta, "prompt_text": {"version": 99}})  # a new object: no parsed model cached
    with pytest.raises(PolicyError, match=r"^policy: prompt text model: expected a dict with version 1"):
        Evaluation("builtin", policy=policy)


@pytest.mark.parametrize("bundle", ["builtin", "synth"])
def test_the_router_takes_the_prompt_stages_its_fold_fitted_and_they_are_what_it_would_fit(bundle, tmp_path,
                                                                                            monkeypatch):
    """router_scores reuses the fold's prompt stage (tier 0) and routed stage 0 (tiers 1..L−2)
    instead of fitting them again (one fit left: the last tier's): the scores equal fresh fits of
    every tier. The built-in trace has a prompt text model, the synthetic 4-tier ladder none."""
    from asd.calibration import predictors
    from asd.calibration.predictors import fit_stage
    from asd.calibration.prompt_text import with_prompt_text

    if bundle == "synth":
        bundle = write_synthetic_bundle(tmp_path / "s", 600, 4, 0).path
    ev = Evaluation(bundle, folds=3, seed=0, cost_model="params")
    fitted = []
    monkeypatch.setattr(predictors, "fit_stage", lambda *a, **k: fitted.append(a[2]) or fit_stage(*a, **k))
    for f in ev.folds:
        c = f.calibration
        assert c.prompt_fit is not None and len(c.route_fits) == ev.view.n_tiers - 2
        fitted.clear()
        route_cal, route_held = ev.router_scores(f)
        assert len(fitted) == 1
        np.testing.assert_array_equal(fitted[0], ev.view.acceptable[f.cal, -1])
        x_held = with_prompt_text(ev.features.prompt_x[f.held], ev.view.prompts[f.held], c.prompt_text)
        for s in range(ev.view.n_tiers):
            fresh = fit_stage("logistic", c.prompt_x, ev.view.acceptable[f.cal, s], np.arange(f.cal.size), folds=5,
                              seed=0)
            np.testing.assert_array_equal(route_cal[:, s], fresh.oof_p)
            np.testing.assert_array_equal(route_held[:, s], fresh.predict(x_held))


def test_counting_the_bundles_prompts_once_changes_no_fold(monkeypatch):
    """The evaluation counts the prompts once for every fold's text model (PromptTokens); above
    PROMPT_TOKENS_MAX_ROWS each fit counts its own, as asd calibrate does: the same policies, held-out
    outcomes and router scores either way."""
    from asd.simulator import evaluate as E

    once = Evaluation("builtin", folds=3, seed=0, cost_model="params")
    assert once.prompt_tokens is not None and len(once.prompt_tokens) == once.view.n_requests
    assert all(f.calibration.prompt_text is not None for f in once.folds)
    monkeypatch.setattr(E, "PROMPT_TOKENS_MAX_ROWS", 0)
    each = Evaluation("builtin", folds=3, seed=0, cost_model="params")
    assert each.prompt_tokens is None
    for a, b in zip(once.folds, each.folds):
        np.testing.assert_array_equal(a.calibration.prompt_x, b.calibration.prompt_x)
        np.testing.assert_array_equal(a.prompt_bins, b.prompt_bins)
        for x, y in zip(once.router_scores(a), each.router_scores(b)):
            np.testing.assert_array_equal(x, y)
    for lam in (100.0, 3000.0, 1e5):
        for x, y in zip(astuple(once.policy_outcomes(lam)), astuple(each.policy_outcomes(lam))):
            np.testing.assert_array_equal(x, y)
    # another evaluation of the view (an ablation, a repeated check) takes the counts made
    shared = Evaluation(once.view, folds=3, seed=1, cost_model="params", prompt_tokens=once.counted_prompts())
    assert shared.prompt_tokens is once.prompt_tokens
    assert Evaluation(once.view, folds=3, seed=0, stage0=False).counted_prompts() is None  # no text model: not counted
    with pytest.raises(ValueError, match="counts 2 prompts"):
        Evaluation(once.view, folds=3, prompt_tokens=once.prompt_tokens.take([0, 1]))


@pytest.mark.parametrize("stat", ["mean", "p95"])
def test_prediction_margin_covers_the_spread_of_a_windows_statistic(stat):
    # lognormal latencies: the statistic over fresh windows of 500 exceeds the calibration
    # estimate + margin about 5% of the time (one-sided 95%), and rarely with no margin at 50%
    rng = np.random.default_rng(3)
    calibration = rng.lognormal(6.0, 0.8, 2000)
    margin = prediction_margin(calibration, stat, n_window=500, seed=1)
    estimate = latency_stat(calibration, stat)
    assert margin > 0
    exceed = []
    for _ in range(400):
        fresh_cal = rng.lognormal(6.0, 0.8, 2000)
        window = rng.lognormal(6.0, 0.8, 500)
        bound = latency_stat(fresh_cal, stat) + prediction_margin(fresh_cal, stat, 500, seed=2)
        exceed.append(latency_stat(window, stat) > bound)
    assert 0.01 <= np.mean(exceed) <= 0.12
    # a larger window is a more stable statistic: a smaller margin; a constant has none
    assert prediction_margin(calibration, stat, n_window=50_000, seed=1) < margin
    assert estimate > 0 and prediction_margin(np.full(100, 7.0), stat, 10) == 0.0


def test_deployment_check_keeps_lambda_within_the_margin_and_reports_both(evaluation):
    lat = [latency_stat(evaluation.policy_outcomes(lam).latency_ms, "p95") for lam in (0.0, 1e9)]
    tau = 0.5 * (lat[0] + lat[1])  # a binding limit
    d = deployment_check(evaluation, tau, "p95")
    plain = d["without_margin"]
    assert d["of"] == len(evaluation.folds) == len(d["lambdas"]) == len(plain["lambdas"]) == len(d["margin_ms"])
    assert all(m > 0 for m in d["margin_ms"])
    # each λ kept its calibration rows within τ_max − margin, with the best quality there of the
    # fold policy's distinct policies that do (as the report picks among held-out ones)
    from asd.simulator.job import calibration_lambdas

    def on_calibration(f, lam):
        out = f.walk_calibration(lam)
        return latency_stat(out.latency_ms, "p95"), float(np.nanmean(out.quality))

    for f, lam, m in zip(evaluation.folds, d["lambdas"], d["margin_ms"]):
        statistic, quality = on_calibration(f, lam)
        assert statistic <= tau - m + 1e-9
        others = [on_calibration(f, other) for other in calibration_lambdas(evaluation, f.policy, f.cal.size)]
        assert quality >= max(q for st, q in others if st <= tau - m) - 1e-12
    assert d["met"] == sum(v <= tau for v in d["held_out_statistic"])
    assert plain["met"] == sum(v <= tau for v in plain["held_out_statistic"])
    assert "prediction margin" in d["note"]


def test_sweep_repeats_the_quality_check_over_fold_seeds(synth, tmp_path):
    out = tmp_path / "sweep.json"
    result = run("sweep", str(synth), "--folds", "3", "--seed", "4", "--repeats", "3", "--json", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rep = data["repeats"]
    assert rep["seeds"] == [4, 5, 6] and len(rep["checks"]) == 3
    # the first draw is the run the frontiers come from; each other one is that seed's own sweep
    assert rep["checks"][0]["saved_vs_simple_points"] == pytest.approx(data["quality_check"]["saved_vs_simple_points"])
    other = sweep(synth, folds=3, seed=6)["quality_check"]
    assert rep["checks"][2]["saved_vs_simple_points"] == pytest.approx(other["saved_vs_simple_points"])
    saved = [c["saved_vs_simple_points"] for c in rep["checks"]]
    assert rep["saved_vs_simple_points"]["mean"] == pytest.approx(np.mean(saved))
    assert rep["saved_vs_simple_points"]["sd"] == pytest.approx(np.std(saved, ddof=1))
    assert rep["met"] == sum(c["met"] for c in rep["checks"])
    assert "over 3 fold seeds (4..6)" in result.output
    # each repeat's folds say which repeat they are (they were "calibrating k/3" over and over)
    assert "sweep: calibrating 3/3" in result.stderr and "sweep: fold seed 6 (3 of 3): calibrating 3/3" in result.stderr
    # the policy's cost at 1, 2 and 3 % loss (the middle one is the check's own) and their mean, per seed
    q = data["quality_check"]
    last = data["baselines"][f"always-{data['tiers'][-1]}"][0]["quality"]
    assert list(q["policy_cost_at_loss"]) == ["0.01", "0.02", "0.03"]
    for level, cost in q["policy_cost_at_loss"].items():
        assert cost == cheapest_within(data["policy"], last * (1 - float(level)))["cost_rel"]
    assert q["policy_cost_at_loss"]["0.02"] == q["policy"]["cost_rel"]
    assert q["policy_cost_at_losses_mean"] == pytest.approx(np.mean(list(q["policy_cost_at_loss"].values())))
    means = [c["policy_cost_at_losses_mean"] for c in rep["checks"]]
    assert means[0] == pytest.approx(q["policy_cost_at_losses_mean"])
    assert rep["policy_cost_at_losses_mean"]["mean"] == pytest.approx(np.mean(means))
    assert "policy cost at 1 / 2 / 3% loss" in result.output
    # the report counts the points above the frontier by baseline, as the JSON lists them
    printed = " ".join(result.output.split())
    assert (f"baseline points above the policy: {_above_text(q['baseline_points_above_policy'], data['n_requests'])}"
            in printed)
    # each point above says how far: quality above the policy's best at no more cost, and what
    # the policy pays beyond its cost for at least its quality
    for p in q["baseline_points_above_policy"]:
        cheaper = [x["quality"] for x in data["policy"] if x["cost_rel"] <= p["cost_rel"] + 1e-12]
        reaching = [x["cost_rel"] for x in data["policy"] if x["quality"] >= p["quality"] - 1e-9]
        assert p["quality_above"] == (pytest.approx(p["quality"] - max(cheaper)) if cheaper else None)
        assert p["policy_extra_cost"] == (pytest.approx(min(reaching) - p["cost_rel"]) if reaching else None)
    for key in ("quality_above", "policy_extra_cost"):
        values = [p[key] for p in q["baseline_points_above_policy"] if p[key] is not None]
        assert rep["checks"][0][f"baseline_above_{key}_max"] == (max(values) if values else None)
    assert rep["checks"][0]["baseline_above_z_max"] == q["baseline_above_z_max"]


def test_each_point_above_carries_the_paired_standard_error_of_its_margin(evaluation):
    result = sweep(evaluation=evaluation)
    q = result["quality_check"]
    points = [p for p in q["baseline_points_above_policy"] if p["policy_lambda"] is not None]
    assert points  # this synthetic ladder has threshold and router points above the frontier
    for p in points:
        # measured against the best policy point that costs no more (of equal ones the cheapest)
        cheaper = [x for x in result["policy"] if x["cost_rel"] <= p["cost_rel"] + 1e-12]
        best = max(x["quality"] for x in cheaper)
        compared = min((x for x in cheaper if x["quality"] == best), key=lambda x: x["cost_rel"])
        assert p["policy_lambda"] == compared["lambda"]
        # both replayed again on the same held-out requests: the figures the frontiers show
        base = evaluation.tuned_baseline(p["baseline"], cost_rel=p["budget"])
        pol = evaluation.policy_outcomes(p["policy_lambda"])
        assert np.nanmean(base.quality) == pytest.approx(p["quality"])
        assert np.nanmean(pol.quality) == pytest.approx(compared["quality"])
        d = (base.quality - pol.quality)[~np.isnan(base.quality) & ~np.isnan(pol.quality)]
        assert p["quality_above_se"] == pytest.approx(d.std(ddof=1) / np.sqrt(d.size))
        assert p["quality_above_z"] == pytest.approx(p["quality_above"] / p["quality_above_se"])
    z = [p["quality_above_z"] for p in points if p["quality_above_z"] is not None]
    assert q["baseline_above_z_max"] == max(z)
    assert f"{max(z):.1f} paired standard errors" in _above_text(q["baseline_points_above_policy"],
                                                                 result["n_requests"])


def test_the_paired_standard_error_reads_the_requests_labelled_in_both():
    a = np.array([1.0, 0.0, 1.0, np.nan, 1.0])
    b = np.array([0.0, 0.0, 1.0, 1.0, np.nan])
    # differences 1, 0, 0 over the three labelled in both: sd 0.577, over √3
    assert paired_se(a, b) == pytest.approx(np.std([1.0, 0.0, 0.0], ddof=1) / np.sqrt(3))
    assert paired_se(a[:1], b[:1]) is None  # one request: no spread to read
    assert paired_se(np.ones(4), np.zeros(4)) == 0.0


def test_points_above_are_counted_by_baseline_in_first_seen_order_with_how_far_above():
    assert _above_text([], 805) == "0"
    points = [{"baseline": "threshold", "quality_above": 0.004, "policy_extra_cost": 0.004, "quality_above_z": None},
              {"baseline": "router", "quality_above": 0.0161, "policy_extra_cost": 0.0123, "quality_above_z": None},
              {"baseline": "threshold", "quality_above": 0.001, "policy_extra_cost": 0.001, "quality_above_z": None}]
    assert _above_text(points, 805) == ("3 (threshold 2, router 1; up to 0.0161 quality above the policy at their cost, "
                                        "13 of 805 requests' worth; the policy matches them for up to 1.2 points more "
                                        "cost)")
    points.append({"baseline": "router", "quality_above": None, "policy_extra_cost": None, "quality_above_z": None})
    assert _above_text(points, 805).endswith("; 1 cheaper than every policy point; 1 above the policy's best quality)")
    assert _above_text(points[:1], 805) == ("1 (threshold 1; 0.0040 quality above the policy at its cost, 3 of 805 "
                                            "requests' worth; the policy matches it for 0.4 points more cost)")
    # with paired standard errors (`paired_noise`), the largest margin in those units
    points[0]["quality_above_z"], points[1]["quality_above_z"] = 0.8, 2.26
    assert "13 of 805 requests' worth, at most 2.3 paired standard errors; the policy" in _above_text(points, 805)
    assert "3 of 805 requests' worth, 0.8 paired standard errors; the policy" in _above_text(points[:1], 805)


def test_a_point_above_lies_above_the_best_policy_point_that_costs_no_more_and_is_matched_at_a_price():
    frontier = [{"cost_rel": 0.2, "quality": 0.80}, {"cost_rel": 0.5, "quality": 0.90}, {"cost_rel": 0.4, "quality": 0.85}]
    point = {"cost_rel": 0.45, "quality": 0.87}
    assert _above(point, frontier)
    assert _quality_above(point, frontier) == pytest.approx(0.02)  # against 0.85 at 0.4, not 0.90 at 0.5
    assert _extra_cost(point, frontier) == pytest.approx(0.05)  # 0.90 at 0.5
    assert not _above({"cost_rel": 0.5, "quality": 0.90}, frontier)  # level is not above
    cheap = {"cost_rel": 0.1, "quality": 0.10}  # cheaper than every policy point: above, matched at 0.2
    assert _above(cheap, frontier) and _quality_above(cheap, frontier) is None
    assert _extra_cost(cheap, frontier) == pytest.approx(0.1)
    best = {"cost_rel": 0.6, "quality": 0.95}
    assert _above(best, frontier) and _extra_cost(best, frontier) is None
    assert not _above({"cost_rel": 0.6, "quality": None}, frontier)


def test_sweep_under_load_moves_latencies_only(synth, tmp_path):
    load = dict(rate=50.0, max_batch=2, arrivals="gamma", cv=2.0, scheduler="difficulty")
    replayed = run_sweep(synth, folds=3)
    loaded = run_sweep(synth, folds=3, mode="des", **load)
    assert replayed["mode"] == "replay" and replayed["load"] is None
    assert loaded["mode"] == "des" and loaded["load"] == {"rate": 50.0, "arrivals": "gamma", "cv": 2.0,
                                                          "replicas": [1, 1, 1], "max_batch": 2,
                                                          "kv_tokens": None, "scheduler": "difficulty"}
    # the same policies and baselines, with the same quality and cost; only latencies change
    assert [p["lambda"] for p in loaded["policy"]] == [p["lambda"] for p in replayed["policy"]]
    for a, b in zip(loaded["policy"], replayed["policy"]):
        assert (a["quality"], a["cost_rel"], a["stop_fractions"]) == (b["quality"], b["cost_rel"], b["stop_fractions"])
        assert a["latency_ms"]["mean"] >= b["latency_ms"]["mean"] * (1 - 1e-9)  # contention never speeds one up
    def without_latency(x):
        if isinstance(x, dict):
            return {k: without_latency(v) for k, v in x.items() if k != "latency_ms"}
        return [without_latency(v) for v in x] if isinstance(x, list) else x

    assert without_latency(loaded["quality_check"]) == without_latency(replayed["quality_check"])
    assert any(a["latency_ms"] != b["latency_ms"] for a, b in zip(loaded["policy"], replayed["policy"]))
    # each point is the DES `asd simulate --mode des` runs on that λ's held-out outcomes
    ev = Evaluation(synth, folds=3, seed=0)
    point = loaded["policy"][len(loaded["policy"]) // 2]
    des = des_latency(ev, seed=0, replicas=1, **load)(ev.policy_outcomes(point["lambda"]))
    assert point["latency_ms"]["p95"] == pytest.approx(np.percentile(des.latency_ms, 95), rel=1e-12)
    out = run("sweep", str(synth), "--folds", "3", "--mode", "des", "--rate", "50", "--max-batch", "2")
    words = " ".join(out.output.split())  # the line wraps at the terminal's width
    assert out.exit_code == 0 and "mode des at 50 req/s (Poisson), replicas [1, 1, 1], max batch 2, fifo queues" in words
    result = CliRunner().invoke(main, ["sweep", "--rate", "3", "--scheduler", "difficulty"])
    assert "warning: --rate, --scheduler have no effect without --mode des; ignored" in result.stderr.splitlines()


def test_sweep_repeats_needs_folds_not_a_fixed_split(tmp_path):
    path = tmp_path / "split"
    write_synthetic_bundle(path, 200, 2, 3)
    assert run("traces", "split", str(path)).exit_code == 0
    result = CliRunner().invoke(main, ["sweep", str(path), "--repeats", "2"])
    assert result.exit_code == 2 and "use --folds K" in result.output and "Traceback" not in result.output
    assert "calibrating" not in result.output  # refused before the split's calibration, not after


@pytest.mark.filterwarnings("ignore:tier:UserWarning")  # "tier i: no observed acceptance"
def test_sweep_of_an_unlabelled_bundle_is_one_line_and_simulate_still_runs(tmp_path):
    """Spec-Bench imports carry no quality labels: sweep's quality check multiplied always-last's
    None quality (a TypeError traceback); it has nothing to compare, so it says so."""
    from asd.traces.bundle import open_bundle, write_bundle

    write_synthetic_bundle(tmp_path / "s", 200, 2, 5)
    source = open_bundle(tmp_path / "s")
    outputs = source.to_pandas("outputs").assign(quality=None, accepted=None)
    write_bundle(tmp_path / "u", source.manifest, source.to_pandas("requests"), outputs, source.to_pandas("drafts"))
    result = CliRunner().invoke(main, ["sweep", str(tmp_path / "u"), "--folds", "2"])
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
    # before any calibration (it came after minutes of it on a large ladder)
    assert result.stderr.splitlines() == [
        f"error: asd sweep compares quality at a cost, but {tmp_path / 'u'} has no quality label at its last tier "
        "synth-70b (an unlabelled bundle): use asd simulate for cost and latency"]
    # the held-out check stays for a bundle labelled only outside the held-out requests
    requests = source.to_pandas("requests").assign(split=["calibration" if i < 100 else "test" for i in range(200)])
    calibration = set(requests["request_id"][:100])
    labelled = outputs.assign(quality=[1.0 if r in calibration else None for r in outputs["request_id"]])
    write_bundle(tmp_path / "v", source.manifest, requests, labelled, source.to_pandas("drafts"))
    result = CliRunner().invoke(main, ["sweep", str(tmp_path / "v")])
    assert result.exit_code == 2 and result.stderr.splitlines()[-1] == (
        "error: asd sweep compares quality at a cost, but always-synth-70b has no quality label on the held-out "
        "requests (an unlabelled bundle): use asd simulate for cost and latency")
    assert run("simulate", str(tmp_path / "u"), "--folds", "2", "--tau-max", "1e5").exit_code == 0


def test_sweep_of_a_trace_whose_last_tier_costs_nothing_is_one_line(tmp_path):
    """0 ms recorded at the last tier (valid: timings are >= 0): every cost relative to
    always-last is undefined, and sweep's budgets compared None with a float (a TypeError)."""
    from asd.traces.bundle import open_bundle, write_bundle

    write_synthetic_bundle(tmp_path / "s", 200, 2, 5)
    source = open_bundle(tmp_path / "s")
    outputs = source.to_pandas("outputs")
    outputs.loc[outputs["tier"] == 1, ["e2e_ms", "ttft_ms"]] = 0.0
    write_bundle(tmp_path / "z", source.manifest, source.to_pandas("requests"), outputs, source.to_pandas("drafts"))
    result = CliRunner().invoke(main, ["sweep", str(tmp_path / "z"), "--folds", "2"])
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "error: asd sweep: always-synth-70b costs 0 on the 200 held-out requests under the trace cost model (its "
        "recorded timings are 0), so cost relative to always-last is undefined and there is no quality–cost "
        "frontier: use --cost-model params or profile, or asd simulate for quality and latency")
    assert run("sweep", str(tmp_path / "z"), "--folds", "2", "--cost-model", "params").exit_code == 0


def _without_labels(source_path, path, tiers=None, keep=()):
    """A copy of the bundle at source_path with no quality label at `tiers` (indices; all by
    default), but for the requests in `keep`."""
    from asd.traces.bundle import write_bundle

    source = open_bundle(source_path)
    outputs = source.to_pandas("outputs")
    drop = outputs["tier"].isin(tiers) if tiers is not None else np.ones(len(outputs), dtype=bool)
    drop &= ~outputs["request_id"].isin(list(keep))
    outputs["quality"] = outputs["quality"].where(~drop, None)
    outputs["accepted"] = outputs["accepted"].astype(object).where(~drop, None)
    return write_bundle(path, source.manifest, source.to_pandas("requests"), outputs, source.to_pandas("drafts"))


def test_simulate_of_an_unlabelled_bundle_replays_only_the_methods_that_need_no_labels(tmp_path):
    """With no label at the last tier there is no quality to choose λ by: simulate fitted a policy
    on Beta(1, 1) priors, which stopped every request at the first tier, "chose" it as the best
    quality (every quality unknown) and met the protocol's latency goal with it (Spec-Bench's draft
    tier, which never ran alone). Now nothing is fitted: each tier alone, fixed-2stage and pipeline
    are replayed on every request, with the cost and latency they have on the labelled bundle."""
    write_synthetic_bundle(tmp_path / "s", 200, 3, 5)
    _without_labels(tmp_path / "s", tmp_path / "u")
    label_free = ["always-synth-8b", "always-synth-34b", "always-synth-70b", "fixed-2stage", "pipeline"]
    result = CliRunner().invoke(main, ["simulate", str(tmp_path / "u"), "--tau-max", "900", "--json",
                                       str(tmp_path / "u.json")])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "calibrating" not in result.stderr and "no observed acceptance" not in result.stderr  # nothing fitted
    assert "no quality label at the last tier synth-70b: no policy is chosen" in result.stdout
    shown = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ") and line.strip()]
    assert shown == ["replayed", "method", *label_free], shown  # the title, the header, then exactly these  # the header, then exactly these: no policy row, no tuned baseline
    data = json.loads((tmp_path / "u.json").read_text())
    assert data["labelled"] is False and data["n_requests"] == 200 and data["split"] is None
    # what would shape a fitted policy is said to have no effect, not dropped silently
    shaped = CliRunner().invoke(main, ["simulate", str(tmp_path / "u"), "--tau-max", "900", "--risk", "lcb:0.9",
                                       "--predictor", "mlp"])
    assert shaped.exit_code == 0, shaped.output
    assert "warning: --predictor, --risk: no policy is fitted, so they have no effect" in shaped.stderr
    assert all(data[k] is None for k in ("chosen", "feasible", "search", "criteria", "deployment"))
    assert list(data["baselines"]) == label_free
    # the same methods on the labelled bundle: the same requests, the same charges (labels move
    # no cost or latency); only quality is known there
    labelled = simulate(tmp_path / "s", tau_max=900, folds=2)
    assert labelled["labelled"] is True and labelled["chosen"] is not None
    for name in label_free:
        got, want = data["baselines"][name], labelled["baselines"][name]
        assert got["quality"] is None and want["quality"] is not None
        assert got["cost_rel"] == pytest.approx(want["cost_rel"], rel=1e-12)
        assert got["stop_fractions"] == want["stop_fractions"]
        for stat in ("mean", "p50", "p95", "p99"):
            assert got["latency_ms"][stat] == pytest.approx(want["latency_ms"][stat], rel=1e-12)
        assert got["meets_tau"] == (got["latency_ms"]["p95"] <= 900)
    # the library call decides as the command does
    assert simulate(tmp_path / "u", tau_max=900)["baselines"] == data["baselines"]
    # under load too: the DES load section describes the always-last run
    des = simulate(tmp_path / "u", tau_max=900, mode="des", rate=5.0)
    assert des["chosen"] is None and list(des["baselines"]) == label_free
    assert des["load"]["utilisation"][:2] == [0.0, 0.0] and des["load"]["utilisation"][2] > 0
    assert des["load"]["run"] == "always-synth-70b"
    # --split NAME replays that split's requests only, still fitting nothing
    assert run("traces", "split", str(tmp_path / "u")).exit_code == 0
    split = simulate(tmp_path / "u", tau_max=900, split="test")
    assert split["chosen"] is None and 0 < split["n_requests"] < 200 and split["split"] == "test"


def test_partly_labelled_last_tier_judges_every_method_on_the_same_requests(tmp_path):
    """Last tier labelled on a tenth of the requests (a judge run on a sample): always-last was
    judged on those, the oracle and the policy on all, so the oracle ("an upper bound") showed
    0.667 under always-last's 0.872 and the criteria a +26% quality loss. Now every method's
    quality is the mean over the same requests: those labelled at every tier."""
    from asd.traces.bundle import write_bundle

    write_synthetic_bundle(tmp_path / "s", 300, 3, 5)
    source = open_bundle(tmp_path / "s")
    outputs = source.to_pandas("outputs")
    rng = np.random.default_rng(0)
    dropped = set(rng.choice(source.to_pandas("requests")["request_id"], 270, replace=False))
    unjudged = (outputs["tier"] == 2) & outputs["request_id"].isin(dropped)
    outputs["quality"] = outputs["quality"].where(~unjudged, None)
    outputs["accepted"] = outputs["accepted"].astype(object).where(~unjudged, None)
    write_bundle(tmp_path / "p", source.manifest, source.to_pandas("requests"), outputs, source.to_pandas("drafts"))
    result = simulate(tmp_path / "p", tau_max=1e9, folds=3)
    assert any(w.startswith("270 of 300 held-out requests lack a quality label at some tier") for w in result["warnings"])
    full = simulate(tmp_path / "s", tau_max=1e9, folds=3)
    kept = ~outputs.loc[outputs["tier"] == 0, "request_id"].isin(dropped).to_numpy()
    quality = source.to_pandas("outputs").pivot(index="request_id", columns="tier", values="quality")
    quality = quality.loc[source.to_pandas("requests")["request_id"]].to_numpy(dtype=float)[kept]
    for i, name in enumerate(["synth-8b", "synth-34b", "synth-70b"]):  # each tier alone: the mean over the 30
        assert result["baselines"][f"always-{name}"]["quality"] == pytest.approx(quality[:, i].mean())
    oracle = result["baselines"]["oracle"]["quality"]
    assert all(oracle >= b["quality"] - 1e-12 for b in result["baselines"].values()) and oracle >= result["chosen"]["quality"]
    assert result["baselines"]["always-synth-70b"]["cost_rel"] == pytest.approx(1.0)  # cost still over all 300
    # the sweep's "requests' worth" counts the 30 quality is measured on, not all 300
    from rich.console import Console

    from asd.simulator.sweep import run_sweep

    swept = run_sweep(tmp_path / "p", folds=3)
    assert swept["n_requests"] == 300 and swept["quality_requests"] == 30
    console = Console(record=True, width=200)
    print_sweep(swept, console)
    above = swept["quality_check"]["baseline_points_above_policy"]
    assert above and "of 30 requests' worth" in console.export_text()  # 7 points above on this draw
    assert not full["warnings"]
    # the oracle still sends each request to its cheapest acceptable tier by every label it has
    ev = Evaluation(tmp_path / "p", folds=3)
    from asd.simulator.evaluate import ladder_arrays

    every_label = B.oracle(ladder_arrays(ev.view, ev.costs, ev.held))
    np.testing.assert_array_equal(B.oracle(ev.arrays).stop, every_label.stop)
    assert result["baselines"]["oracle"]["cost_rel"] == pytest.approx(every_label.cost.sum() / ev.cost_last)
    # no request labelled at every labelled tier: nothing in common to judge on, so it says so
    halves = outputs.copy()
    first_half = set(source.to_pandas("requests")["request_id"][:150])
    for tier, keep in ((0, True), (2, False)):
        gone = (halves["tier"] == tier) & (halves["request_id"].isin(first_half) != keep)
        halves["quality"] = halves["quality"].where(~gone, None)
        halves["accepted"] = halves["accepted"].astype(object).where(~gone, None)
    write_bundle(tmp_path / "d", source.manifest, source.to_pandas("requests"), halves, source.to_pandas("drafts"))
    disjoint = simulate(tmp_path / "d", tau_max=1e9, folds=3)
    assert any(w.startswith("no held-out request is labelled at every tier that is labelled") for w in disjoint["warnings"])
    assert disjoint["chosen"]["quality"] is not None
    # a test split with no label at the last tier, which the calibration rows have labels at:
    # judged partly labelled too (it read as fully labelled, each method on its own requests, no warning)
    assert run("traces", "split", str(tmp_path / "s"), "-o", str(tmp_path / "t")).exit_code == 0
    split = open_bundle(tmp_path / "t")
    test_ids = set(split.to_pandas("requests").query("split == 'test'")["request_id"])
    blind = split.to_pandas("outputs")
    gone = (blind["tier"] == 2) & blind["request_id"].isin(test_ids)
    blind["quality"] = blind["quality"].where(~gone, None)
    blind["accepted"] = blind["accepted"].astype(object).where(~gone, None)
    write_bundle(tmp_path / "tb", split.manifest, split.to_pandas("requests"), blind, split.to_pandas("drafts"))
    blind_test = simulate(tmp_path / "tb", tau_max=1e9, split="test")
    assert any(w.startswith("no held-out request is labelled at every tier that is labelled") for w in blind_test["warnings"])
    assert blind_test["baselines"]["always-synth-70b"]["quality"] is None


def test_options_that_need_the_chosen_policy_are_refused_on_an_unlabelled_bundle(tmp_path):
    write_synthetic_bundle(tmp_path / "s", 200, 2, 5)
    _without_labels(tmp_path / "s", tmp_path / "u")
    u = str(tmp_path / "u")
    policy_file = tmp_path / "given.npz"
    assert CliRunner().invoke(main, ["calibrate", str(tmp_path / "s"), "-o", str(policy_file)]).exit_code == 0
    for extra, what in ((["--explain", "synth-000"], "--explain shows the chosen policy's walk of a request"),
                        # a given policy's λ would be searched for a quality no request has
                        (["--policy", str(policy_file)], "--policy: λ is searched for the best quality"),
                        (["--plots", str(tmp_path / "p")], "--plots draws the chosen policy's latency and stops"),
                        (["--mode", "des", "--rate", "5", "--scheduler", "difficulty"],
                         "--scheduler difficulty orders the queues by the policy's predicted difficulty"),
                        (["--save-policy", str(tmp_path / "d.npz")], "--save-policy: ")):
        result = CliRunner().invoke(main, ["simulate", u, "--tau-max", "900", "--json", str(tmp_path / "r.json"),
                                           *extra])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {what}") and "no quality label" in lines[0], lines
        assert not (tmp_path / "r.json").exists() and not (tmp_path / "d.npz").exists()
        assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())
    with pytest.raises(ConfigError, match="--policy: λ is searched for the best quality"):  # the library alike
        simulate(tmp_path / "u", tau_max=900, evaluation=Evaluation(tmp_path / "u", policy=policy_file))


def test_every_report_states_how_continuing_to_a_tier_is_priced(tmp_path):
    """The issue: speculative continuation where the trace has drafts, regeneration otherwise —
    stated in every report. The grid knew (and said why), the reports printed only the cost
    model's own note; and a tier that records no output token count was filled with the mean
    over every tier without a word."""
    data = simulate(tau_max=800)  # the built-in trace has longest-prefix drafts
    assert data["speculative"] is True and "speculative continuation from drafts" in data["cost_note"]
    write_synthetic_bundle(tmp_path / "s", 200, 2, 5)
    source = open_bundle(tmp_path / "s")
    from asd.traces.bundle import write_bundle

    outputs = source.to_pandas("outputs")
    outputs["n_output_tokens"] = outputs["n_output_tokens"].astype("Int32").where(outputs["tier"] != 0, None)
    write_bundle(tmp_path / "nd", source.manifest, source.to_pandas("requests"), outputs)  # and no drafts
    result = run("simulate", str(tmp_path / "nd"), "--tau-max", "900", "--folds", "2", "--json",
                 str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    note = json.loads((tmp_path / "r.json").read_text())["cost_note"]
    assert "regeneration: trace has no drafts" in note
    assert "synth-8b recorded no output token count: filled with the mean over every tier" in note
    assert "regeneration: trace has no drafts" in " ".join(result.stdout.split())  # printed, not only in JSON
    result = run("calibrate", str(tmp_path / "nd"), "-o", str(tmp_path / "p.npz"), "--json", str(tmp_path / "c.json"))
    assert result.exit_code == 0, result.output
    assert "regeneration: trace has no drafts" in json.loads((tmp_path / "c.json").read_text())["cost_note"]
    assert "regeneration: trace has no drafts" in " ".join(result.stdout.split())


def test_library_warnings_print_as_one_warning_line_each(tmp_path):
    """A tier with no observed acceptance in a fold's calibration rows warns during calibration
    (here tiers 0 and 1 are labelled on one request only, so the fold that holds it out fits
    without): the CLI prints it as a `warning:` line, not Python's file:line: UserWarning plus the
    offending source line."""
    write_synthetic_bundle(tmp_path / "s", 200, 3, 5)
    _without_labels(tmp_path / "s", tmp_path / "u", tiers=[0, 1], keep=["synth-000"])
    result = CliRunner().invoke(main, ["simulate", str(tmp_path / "u"), "--tau-max", "1e6"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "no observed acceptance" in line]
    assert lines and all(line.startswith("warning: tier ") for line in lines), result.stderr
    assert len(lines) == len(set(lines)) == 2, result.stderr  # once per tier, not once per fold as well
    assert "UserWarning" not in result.stderr and ".py:" not in result.stderr


def test_too_few_requests_for_calibrations_folds_says_whose_folds(tmp_path):
    """`--folds 2` on 6 requests leaves 3 to calibrate on; the 5 in the message is calibration's own
    cross-validation, which the user never set, so the message says so."""
    from asd.traces.bundle import open_bundle, write_bundle

    write_synthetic_bundle(tmp_path / "s", 10, 2, 5)
    source = open_bundle(tmp_path / "s")
    requests = source.to_pandas("requests").head(6)
    keep = lambda t: source.to_pandas(t).loc[lambda d: d.request_id.isin(requests.request_id)]  # noqa: E731
    write_bundle(tmp_path / "tiny", source.manifest, requests, keep("outputs"), keep("drafts"))
    result = CliRunner().invoke(main, ["simulate", str(tmp_path / "tiny"), "--folds", "2", "--tau-max", "800"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].endswith(
        "3 requests to calibrate on; calibration cross-validates each predictor over 5 folds of requests and needs "
        "at least 5"), result.stderr


def test_options_without_effect_are_named_in_one_warning_and_defaults_are_not():
    """An option typed on the command line that the chosen mode ignores is named (not silently
    dropped); an option left at its default is not the user's choice and draws no warning."""
    result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--rate", "3", "--max-batch", "4"])
    assert result.exit_code == 0, result.output
    assert "warning: --rate, --max-batch have no effect without --mode des; ignored" in result.stderr.splitlines()
    result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--mode", "des", "--rate", "3"])
    assert result.exit_code == 0 and "no effect" not in result.stderr
    from tests.simulator.test_check import POLICY

    result = CliRunner().invoke(main, ["check", str(POLICY), "builtin", "--min-quality", "0.1", "--tolerance", "0.1"])
    assert result.exit_code == 0 and "warning: --tolerance has no effect without --against; ignored" in result.stderr


def test_calibrate_needs_out_except_for_the_gbt_reference_which_names_what_it_ignores(tmp_path):
    result = CliRunner().invoke(main, ["calibrate", "builtin"])
    assert result.exit_code == 2 and "Missing option '-o' / '--out'" in result.output
    result = CliRunner().invoke(main, ["calibrate", "builtin", "--predictor", "gbt-reference"])
    assert result.exit_code == 0 and "no effect" not in result.stderr and "boosted trees | logistic" in result.stdout
    result = CliRunner().invoke(main, ["calibrate", "builtin", "--predictor", "gbt-reference", "--bins", "5",
                                       "--no-stage0", "-o", str(tmp_path / "p.npz")])
    assert result.exit_code == 0 and not (tmp_path / "p.npz").exists()
    assert ("warning: --out, --bins have no effect with --predictor gbt-reference; ignored"
            in result.stderr.splitlines())
    assert "stage 0" not in result.stdout  # --no-stage0 fits no prompt stage, as asd calibrate's


def test_gbt_reference_logistic_column_is_what_asd_calibrate_reports():
    """The yardstick's logistic column is the policy's own predictor, fitted as `calibrate`
    fits it: cold copies of the rows beside the climbed ones under stage 0, and stage 0's
    prompt text; it printed a column fitted otherwise (ECE 0.088 against calibrate's 0.062)."""
    from asd.calibration.calibrate import calibrate, reference_report

    for stage0 in (True, False):
        ref = reference_report("builtin", stage0=stage0)
        cal = calibrate("builtin", stage0=stage0).report
        for ref_row, cal_row in zip(ref["tiers"], cal["tiers"]):
            for key in ("auroc", "brier", "ece"):
                assert ref_row["logistic_" + key] == cal_row[key], (stage0, ref_row["name"], key)
        if stage0:
            for key in ("auroc", "brier", "ece"):
                assert ref["stage0_metrics"]["logistic_" + key] == cal["stage0_metrics"][key]
        else:
            assert ref["stage0_metrics"] is None and cal["stage0_metrics"] is None


def test_save_policy_writes_what_asd_calibrate_fits_solved_at_the_deployment_rules_lambda(tmp_path):
    """--save-policy: the policy fitted on every request (identical tables to `asd calibrate` on
    the same bundle), solved at the λ the deployment line's rule picks on those requests — its
    statistic there within τ_max less the margin; check, live and serve then run it as saved."""
    from asd.calibration.calibrate import calibrate
    from asd.simulator.job import calibration_lambdas, deployed_lambda, run_simulate

    saved = tmp_path / "deploy.npz"
    result = run_simulate("builtin", tau_max=800.0, stat="p95", save_policy=saved)
    info = result["deployed_policy"]
    policy = Policy.load(saved)
    assert info["path"] == str(saved) and policy.lam == info["lambda"] and info["status"] == "ok"
    assert policy.meta["deployment"] == {k: v for k, v in info.items() if k != "path"}
    assert info["calibration_requests"] == 600 and info["margin_ms"] > 0
    assert info["calibration_statistic_ms"] <= 800.0 - info["margin_ms"]
    fitted = calibrate("builtin", lam=policy.lam).policy
    for name, table in vars(policy.tables).items():
        if isinstance(table, np.ndarray):
            np.testing.assert_array_equal(table, getattr(fitted.tables, name), err_msg=name)
    np.testing.assert_array_equal(policy.stop_table, fitted.stop_table)
    np.testing.assert_array_equal(policy.start_table, fitted.start_table)
    # the rule is the deployment check's, on the deployment fit's own calibration rows
    ev = Evaluation("builtin", folds=5, seed=0)
    fold = ev.deployment_fold()
    _, kept, margin = deployed_lambda(fold.walk_calibration, 800.0, "p95", 120, 0, float(ev.arrays.cost.sum(axis=1).mean()),
                                      calibration_lambdas(ev, fold.policy, fold.cal.size))
    assert kept.lam == pytest.approx(info["lambda"]) and margin == pytest.approx(info["margin_ms"])
    printed = " ".join(run("simulate", "--tau-max", "800", "--save-policy", str(tmp_path / "cli.npz")).output.split())
    assert f"wrote {tmp_path / 'cli.npz'}: fitted on 600 requests, λ = {info['lambda']:.4g} by the same rule" in printed
    assert Policy.load(tmp_path / "cli.npz").lam == pytest.approx(info["lambda"])


@pytest.mark.parametrize("extra, message", [
    (["--policy", "tests/policies/builtin.npz"], "--save-policy writes a policy fitted here: with --policy there is none"),
    (["--mode", "des", "--rate", "5"], "--save-policy picks λ on replayed latencies"),
])
def test_save_policy_refusals_are_one_line_before_any_calibration(extra, message, tmp_path):
    result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--save-policy", str(tmp_path / "p.npz"), *extra])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "calibrating" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "p.npz").exists()


def test_save_policy_will_not_write_over_a_file_that_is_not_a_policy(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--save-policy", str(notes)])
    assert result.exit_code == 2 and "Traceback" not in result.output and "calibrating" not in result.output
    assert notes.read_text() == "mine"


def test_fitting_options_with_a_given_policy_are_warned_about():
    from tests.simulator.test_check import POLICY

    result = CliRunner().invoke(main, ["simulate", "--policy", str(POLICY), "--tau-max", "800", "--predictor", "mlp",
                                       "--no-stage0"])
    assert result.exit_code == 0, result.output
    assert ("warning: --predictor, --stage0/--no-stage0 have no effect with --policy (the file is replayed as it was "
            "fitted); ignored") in result.output


@pytest.mark.parametrize("tau_max, status, bisects, said", [
    (1.0, "infeasible", False, "(p95 on them is 351 ms even at λ = 0, over τ_max less a"),
    (1e9, "slack", False, "τ_max is slack on them: every distinct policy fits, the best quality there at p95"),
    (1e9, "slack", True, "(the held-out choice above), as τ_max is slack on them (p95"),
])
def test_save_policy_at_an_infeasible_or_slack_limit_writes_the_cheapest_or_the_best_and_says_so(
        tau_max, status, bisects, said, tmp_path, monkeypatch):
    """Every distinct policy is compared on the calibration rows where that is affordable: at a
    slack limit the best of them. Past that (patched here) the rule bisects for the largest λ,
    which at a slack limit is the search bracket's top, so the report's held-out choice is
    deployed instead."""
    from asd.simulator import job

    if bisects:
        monkeypatch.setattr(job, "ENUMERATE_AT_LEAST", 10**12)
    saved = tmp_path / "deploy.npz"
    result = run("simulate", "--tau-max", str(tau_max), "--save-policy", str(saved), "--json", str(tmp_path / "s.json"))
    data = json.loads((tmp_path / "s.json").read_text())
    info = data["deployed_policy"]
    assert info["status"] == status and Policy.load(saved).lam == info["lambda"]
    assert info["rule"] == ("largest λ (bisection)" if bisects else "best quality among distinct policies")
    if status == "infeasible":
        assert info["lambda"] == 0.0 and info["calibration_statistic_ms"] > tau_max - info["margin_ms"]
        assert info["chosen_by"] == "rule"
    elif bisects:
        # the deepest policy (held out: quality 0.425 at cost 2.13 against 0.427 at 1.99 at the
        # report's choice) is not deployed
        chosen = data["chosen"]
        assert info["chosen_by"] == "held-out quality" and info["lambda"] == chosen["lambda"] < 1e6
        assert info["calibration_statistic_ms"] <= tau_max - info["margin_ms"]
        assert info["deepest_statistic_ms"] <= tau_max - info["margin_ms"]
        assert Policy.load(saved).meta["deployment"]["chosen_by"] == "held-out quality"
        # the deployment line judges the λ a fold's rule would deploy: the same choice, not the deepest
        assert chosen["lambda"] in data["deployment"]["lambdas"] and max(data["deployment"]["lambdas"]) < 1e6
    else:
        assert info["chosen_by"] == "rule" and info["deepest_statistic_ms"] is None
        assert info["calibration_statistic_ms"] <= tau_max - info["margin_ms"]
    assert said in " ".join(result.output.split())


def test_save_policy_where_the_margin_at_the_limit_is_too_wide_takes_each_lambdas_own(tmp_path):
    """p99 on 600 requests jumps where λ meets τ_max: the margin measured there (680 ms) ruled
    out every λ and the file got λ = 0 as "infeasible", though λ = 0 met τ_max with its own margin."""
    result = run("simulate", "--tau-max", "800", "--stat", "p99", "--save-policy", str(tmp_path / "p.npz"),
                 "--json", str(tmp_path / "s.json"))
    info = json.loads((tmp_path / "s.json").read_text())["deployed_policy"]
    assert result.exit_code == 0 and info["status"] == "ok" and info["lambda"] > 0
    assert info["calibration_statistic_ms"] + info["margin_ms"] <= 800.0


def test_save_policy_records_the_requests_it_was_fitted_on_for_asd_checks_in_sample_warning(tmp_path):
    split = tmp_path / "sp"
    assert run("traces", "split", "builtin", "-o", str(split)).exit_code == 0
    saved = tmp_path / "p.npz"
    assert run("simulate", str(split), "--split", "calibration", "--tau-max", "800", "--save-policy",
               str(saved)).exit_code == 0  # replayed on 'calibration': fitted on the 'test' split
    assert Policy.load(saved).meta["calibration"]["split"] == "test"
    on_test = CliRunner().invoke(main, ["check", str(saved), str(split), "--split", "test", "--max-latency", "p95=800"])
    on_cal = CliRunner().invoke(main, ["check", str(saved), str(split), "--split", "calibration",
                                       "--max-latency", "p95=800"])
    assert "in-sample" in on_test.output and "in-sample" not in on_cal.output


def test_save_policy_is_written_last_so_a_failed_run_replaces_no_policy(tmp_path):
    (tmp_path / "plots" / "latency.png").mkdir(parents=True)  # the plot cannot be written
    saved = tmp_path / "p.npz"
    result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--plots", str(tmp_path / "plots"),
                                       "--save-policy", str(saved)])
    # refused before any work now (plot files are checked up front), and still nothing written
    assert result.exit_code == 2 and "latency.png: cannot write --plots (it is a directory)" in result.output
    assert not saved.exists() and "calibrating" not in result.output


def test_save_policy_paths_are_checked_like_every_output(tmp_path):
    (tmp_path / "adir").mkdir()
    for path, message in ((tmp_path / "adir", "cannot write --save-policy (it is a directory)"),
                          ("", "--save-policy '': give a file path")):
        result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--save-policy", str(path)])
        assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output


def test_save_policy_refuses_an_unlabelled_bundle(shared_data, tmp_path):
    bundle = tmp_path / "sb"
    assert run("traces", "import", "spec-bench", str(shared_data / "spec_bench"), "-o", str(bundle)).exit_code == 0
    result = CliRunner().invoke(main, ["simulate", str(bundle), "--tau-max", "5000", "--save-policy",
                                       str(tmp_path / "p.npz")])
    assert result.exit_code == 2 and "has no quality label at tier vicuna-68m" in result.output
    assert not (tmp_path / "p.npz").exists()


def test_the_sweep_table_shows_every_frontier_point_its_summary_compares():
    """The table shows 16 evenly spaced points of a long frontier: on the built-in trace the
    summary's "matches it for 5.3 points more cost" was measured at a point it left out."""
    from rich.console import Console

    result = run_sweep("builtin", cost_model="params")
    points, check = result["policy"], result["quality_check"]
    assert len(points) > 16 and check["baseline_points_above_policy"]
    wanted = _summarised(points, check)
    for entry in check["baseline_points_above_policy"]:  # the points the summary's figures come from
        compared = [i for i in wanted if points[i]["lambda"] == entry["policy_lambda"]]
        if entry["policy_extra_cost"] is None:  # above the policy's best quality: no point matches it
            assert compared
            continue
        matching = [i for i in wanted if points[i]["cost_rel"] - entry["cost_rel"] == pytest.approx(
            entry["policy_extra_cost"])]
        assert compared and matching
    console = Console(record=True, width=120)
    print_sweep(result, console)
    text = console.export_text()
    printed = {line.split()[0] for line in text.splitlines() if line.strip()}
    lams = {f"{p['lambda']:.4g}" for p in points}
    assert all(f"{points[i]['lambda']:.4g}" in printed for i in wanted)
    assert f"{len(printed & lams)} of {len(points)} shown" in text


def test_long_tier_names_fold_in_the_method_table_rather_than_cut_its_figures(evaluation):
    """Hugging Face ids as tier names (`always-meta-llama/Llama-2-70b-chat-hf-awq-int4-vllm`)
    took the width at 120 columns, and rich cut every figure to `0.…`."""
    from rich.console import Console

    from asd.simulator.report import print_simulation

    result = simulate(evaluation.view, tau_max=1e9, evaluation=evaluation)
    long = "meta-llama/Llama-2-{}-chat-hf-awq-int4-vllm"
    renamed = {name.replace("synth-", long.format("")): s for name, s in result["baselines"].items()}
    result = {**result, "baselines": renamed, "tiers": [long.format(t) for t in result["tiers"]]}
    console = Console(record=True, width=120)
    print_simulation(result, console)
    text = console.export_text()
    assert "…" not in text
    for name, s in [("policy", result["chosen"]), *renamed.items()]:
        figures = f"{s['quality']:.3f}   {s['cost_rel']:.3f}"
        assert figures in text, (name, figures)


def test_the_verdict_column_is_not_cropped_when_long_tier_names_and_four_stop_shares_fill_the_width(evaluation):
    """FuseChat's 37-character names and four tiers' stop shares at 120 columns had left the
    `p95≤τ` column one letter wide: the verdict could not be read off the table."""
    from rich.console import Console

    from asd.simulator.report import print_simulation

    result = simulate(evaluation.view, tau_max=1e9, evaluation=evaluation)
    long = "FuseChat-Llama-3.2-1B-Instruct-{}"
    renamed = {name.replace("synth-", long.format("")): {**s, "stop_fractions": [0.25] * 4}
               for name, s in result["baselines"].items()}
    console = Console(record=True, width=120)
    print_simulation({**result, "baselines": renamed}, console)
    text = console.export_text()
    assert "p95≤τ" in text
    rows = [line for line in text.splitlines() if line.strip().startswith(("policy", "fixed-2stage", "oracle"))]
    assert len(rows) == 3 and all(line.rstrip().endswith("yes") for line in rows), rows


def test_method_names_stay_on_one_line_beside_a_wide_stops_column(evaluation):
    """With eight tiers' stop shares (or 1e13 ms latencies) the foldable method column was squeezed:
    `fixed-2stag` / `e`, or one letter a line."""
    from rich.console import Console

    from asd.simulator.report import print_simulation

    result = simulate(evaluation.view, tau_max=1e9, evaluation=evaluation)
    wide = {name: {**s, "stop_fractions": [0.125] * 8,
                   "latency_ms": {k: 4.3e13 for k in s["latency_ms"]}} for name, s in result["baselines"].items()}
    console = Console(record=True, width=120)
    print_simulation({**result, "baselines": wide}, console)
    text = console.export_text()
    for name in wide:
        assert f"  {name} " in text, name


def test_explain_says_a_routing_threshold_no_score_reaches_sends_every_request_to_the_last_tier():
    """The routed stage 0's grid ends at 2.0 ("no score reaches it"): --explain printed "starts at the
    first tier whose prompt-only p̂ reaches 2.000"."""
    from rich.console import Console

    from asd.simulator.report import print_explain

    tier = {"tier": "a", "ran": True, "state": "start", "output": "x", "acceptable": True, "p_hat": 0.5, "bin": 0,
            "stop_value": 1.0, "continue_value": None, "decision": "stop", "features": {"f": 1.0}}
    ex = {"request_id": "q0", "lambda": 1.0, "cost_model": "trace", "start_tier": "a", "stop_tier": "a",
          "prompt": "p", "stage0": {"rule": "routed", "threshold": 2.0, "route_scores": [0.3]}, "tiers": [tier]}
    console = Console(record=True, width=120)
    print_explain(ex, console)
    text = console.export_text()
    assert "every request starts at the last tier" in text and "2.000" not in text
    console = Console(record=True, width=120)
    print_explain({**ex, "stage0": {**ex["stage0"], "threshold": 0.4}}, console)
    assert "whose prompt-only p̂ reaches 0.400" in console.export_text()


def test_a_tier_labelled_nowhere_is_refused_before_fitting_and_warned_about_when_replaying(tmp_path):
    """asd calibrate refused a middle tier with no label at all; simulate and sweep fitted on Beta(1, 1)
    there and measured quality without every request that stopped at it (0.750 over the 20% that
    reached the last tier, with 80% stopping at the unlabelled one)."""
    from asd.simulator.sweep import run_sweep
    from asd.traces.bundle import write_bundle

    write_synthetic_bundle(tmp_path / "s", 200, 3, 5)
    source = open_bundle(tmp_path / "s")
    outputs = source.to_pandas("outputs")
    middle = outputs["tier"] == 1
    outputs["quality"] = outputs["quality"].where(~middle, None)
    outputs["accepted"] = outputs["accepted"].astype(object).where(~middle, None)
    write_bundle(tmp_path / "m", source.manifest, source.to_pandas("requests"), outputs, source.to_pandas("drafts"))
    message = r"calibrating the policy: .* has no quality label at tier synth-34b: a policy fitted on it"
    with pytest.raises(ConfigError, match=message):
        simulate(tmp_path / "m", tau_max=1e9, folds=3)
    with pytest.raises(ConfigError, match=message):
        run_sweep(tmp_path / "m", folds=3)
    result = CliRunner().invoke(main, ["sweep", str(tmp_path / "m"), "--folds", "3"])
    assert result.exit_code == 2 and result.stderr.startswith("error: calibrating the policy: ")
    # a given policy is replayed, and says whose quality leaves those requests out
    policy = Evaluation(tmp_path / "s", folds=3).folds[0].policy
    replayed = simulate(tmp_path / "m", tau_max=1e9, evaluation=Evaluation(tmp_path / "m", policy=policy))
    assert any(w.endswith("has no quality label at tier synth-34b: a request a method stops at there is left out "
                          "of that method's quality") for w in replayed["warnings"])


def test_a_criterion_near_its_goal_prints_the_digits_that_decide_it():
    """A GPU change of −39.98% printed "−40.0% (goal −40%: not met)"."""
    from asd.simulator.report import _criterion

    assert _criterion({"value": -0.39978, "bound": -0.40}) == "-39.98%"
    assert _criterion({"value": -0.351, "bound": -0.30}) == "-35.1%"  # one decimal where it does not read as the goal
    assert _criterion({"value": -0.29996, "bound": -0.30}) == "-29.996%"
    assert _criterion({"value": None, "bound": 0.02}) == "—"


def test_oracle_on_a_test_split_counts_a_tier_judged_only_on_calibration_rows_as_unjudged(tmp_path):
    """The middle tier is labelled on the calibration rows alone. Quality is judged by the tiers
    labelled anywhere in the bundle, and so is the oracle: a test request whose cheap tier fails
    and whose last tier suffices may stop at the unjudged middle tier (cost a lower bound). It
    was sent past it to the last tier, as if the middle tier were never acceptable (the hunt's
    example: oracle cost 0.31 instead of 0.04, and "gap closed" blank)."""
    from asd.traces.bundle import write_bundle
    from asd.traces.split import split_bundle

    write_synthetic_bundle(tmp_path / "s", 300, 3, 5)
    split_bundle(tmp_path / "s", test_frac=0.5, seed=0)
    source = open_bundle(tmp_path / "s")
    requests, outputs = source.to_pandas("requests"), source.to_pandas("outputs")
    test_ids = set(requests.loc[requests["split"] == "test", "request_id"])
    unjudged = (outputs["tier"] == 1) & outputs["request_id"].isin(test_ids)
    outputs["quality"] = outputs["quality"].where(~unjudged, None)
    outputs["accepted"] = outputs["accepted"].astype(object).where(~unjudged, None)
    write_bundle(tmp_path / "p", source.manifest, requests, outputs, source.to_pandas("drafts"))

    ev = Evaluation(tmp_path / "p", split="test")
    oracle = dict(ev.iter_fixed_baselines(1.0))["oracle"]
    acc = ev.arrays.acceptable
    assert np.isnan(acc[:, 1]).all()  # the test rows carry no label at the middle tier
    cheapest = np.argmin(np.where(~np.isnan(acc) | (acc == 1.0), np.where(acc == 1.0, ev.arrays.cost, np.inf),
                                  ev.arrays.cost), axis=1)
    some_ok = (acc == 1.0).any(axis=1)
    # by hand: where any tier is judged acceptable, the cheapest of those and the unjudged middle
    # tier; where none is, the cheapest tier
    expected = np.where(some_ok, cheapest, np.argmin(ev.arrays.cost, axis=1))
    assert (expected == 1).sum() > 10
    np.testing.assert_array_equal(oracle.stop, expected)
    assert (oracle.cost <= B.oracle(ev.arrays).cost + 1e-12).all()  # judged by the test rows alone: dearer
    assert oracle.cost.sum() < B.oracle(ev.arrays).cost.sum()


def test_reliability_diagram_counts_each_request_once_as_the_table_does(monkeypatch, tmp_path):
    """Under stage 0 a tier's fit stacks cold-start copies after the climbed rows: the diagram
    drew both (gemma3-270m n=1200, ECE 0.061 beside the table's 600 and 0.062)."""
    import asd.calibration.calibrate as C
    from asd.calibration.metrics import ece

    drawn = {}
    monkeypatch.setattr(C, "reliability_plot", lambda curves, path, title=None: drawn.update(curves))
    report = C.calibrate_to_file("builtin", tmp_path / "p.npz", plots=tmp_path)
    for tier in report["tiers"]:
        y, p = drawn[tier["name"]]
        assert y.size == tier["n"] == 600 and ece(y, p) == pytest.approx(tier["ece"])
    drawn.clear()
    reference = C.calibrate_to_file("builtin", None, predictor="gbt-reference", plots=tmp_path)
    for tier in reference["tiers"]:
        y, p = drawn[tier["name"]]
        assert y.size == tier["n"] == 600 and ece(y, p) == pytest.approx(tier["ece"])


def test_gbt_reference_refuses_fewer_requests_than_folds_as_calibrate_does(tmp_path):
    from asd.traces.split import split_bundle

    write_synthetic_bundle(tmp_path / "tiny", 10, 2, 0)
    split_bundle(tmp_path / "tiny", test_frac=0.7, seed=0)  # 4 calibration requests
    for extra in (["-o", str(tmp_path / "p.npz")], ["--predictor", "gbt-reference"]):
        result = CliRunner().invoke(main, ["calibrate", str(tmp_path / "tiny"), *extra])
        assert result.exit_code == 2, result.output
        assert "4 requests to calibrate on; calibration cross-validates each predictor over 5 folds" in result.output


def test_a_given_policy_replayed_in_sample_is_not_called_held_out(tmp_path):
    """`--policy` on the requests it was fitted on: the table said "in-sample" while the λ line
    above it still read "best held-out quality"."""
    from asd.calibration.calibrate import calibrate_to_file

    calibrate_to_file("builtin", tmp_path / "p.npz")
    result = run("simulate", "--tau-max", "800", "--policy", str(tmp_path / "p.npz"))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "the best in-sample quality of the" in text and "in-sample results at τ_max = 800 ms" in text
    assert "best held-out" not in text and "held-out results" not in text


def test_under_des_the_tuned_baselines_meet_tau_by_the_loads_latency_on_their_calibration_rows():
    """The policy's λ is searched on the DES's latencies; threshold and router picked their
    member on replayed latencies, which the load then pushed past τ_max (router p95 437 ms
    replayed, 1364 ms under 6 req/s). Each fold now picks, by brute force here, the best-quality
    member whose statistic under the same load (FIFO, same rate) on its calibration rows meets τ_max."""
    from asd.simulator.job import des_latency, tuned_latency
    from asd.simulator.outcomes import latency_stat

    ev = Evaluation("builtin", folds=3, seed=0)
    load = dict(rate=6.0, max_batch=4, seed=0)
    result = simulate(tau_max=800, mode="des", evaluation=ev, **load)
    router = result["baselines"]["router"]
    assert router["meets_tau"] and router["latency_ms"]["p95"] <= 800
    timer_for = tuned_latency(ev, **load)
    for f in ev.folds:
        scored = f.tuned["router"]
        timer = des_latency(ev, rows=f.cal, **load)
        stats = np.array([latency_stat(timer(scored._paths.outcomes(start, stop)).latency_ms, "p95")
                          for start, stop in scored.family.members(scored.scores)])
        every = np.arange(f.cal.size)
        np.testing.assert_array_equal(scored.latency("p95", timer_for(f, every)), stats)
        ok = stats <= 800
        assert ok.any()
        best = np.flatnonzero(ok)[np.argmax(scored.quality[ok])]
        chosen = scored.choose(latency=("p95", 800.0), timer=timer_for(f, every))
        assert scored.quality[chosen] == scored.quality[best] and stats[chosen] <= 800
    # replay mode still picks on replayed latencies
    replayed = simulate(tau_max=800, evaluation=ev)["baselines"]["router"]
    assert replayed["latency_ms"]["p95"] <= 800


def test_under_the_difficulty_scheduler_the_tuned_baselines_are_timed_with_it_on_their_calibration_rows():
    """They were picked under FIFO queues while the policy's λ and every held-out run used the
    difficulty scheduler. Now a fold's calibration rows get their keys as the held-out ones do:
    the prompt models' out-of-fold scores at the start tier, the fold policy's bins after a climb."""
    from asd.simulator.job import _difficulty_keys, calibration_priority, des_latency, tuned_latency

    ev = Evaluation("builtin", folds=3, seed=0)
    load = dict(rate=6.0, max_batch=4, seed=0)
    simulate(tau_max=800, mode="des", evaluation=ev, scheduler="difficulty", **load)
    f = ev.folds[0]
    scored = f.tuned["router"]
    assert f.timers["router"].key[-2] == "difficulty"  # (…, scheduler, kv_tokens)
    every = np.arange(f.cal.size)
    start, stop = next(iter(scored.family.members(scored.scores)))
    out = scored._paths.outcomes(start, stop)
    keys = calibration_priority(ev, f, every, out)
    # by hand for the rows that start at tier 0: 1 − their prompt model's P(acceptable at tier 0)
    at0 = out.start == 0
    np.testing.assert_allclose(keys[at0, 0], 1.0 - ev.router_scores(f)[0][at0, 0])
    np.testing.assert_array_equal(keys, _difficulty_keys(f.policy, ev.router_scores(f)[0], f.cal_bins[1],
                                                         f.cal_bins[2], out.start))
    timed = tuned_latency(ev, scheduler="difficulty", **load)(f, every)(out).latency_ms
    fifo = des_latency(ev, rows=f.cal, **load)(out).latency_ms
    assert timed.mean() == pytest.approx(fifo.mean(), rel=0.5) and not np.array_equal(timed, fifo)
    with pytest.raises(ConfigError, match="give fold and positions"):
        des_latency(ev, rows=f.cal, scheduler="difficulty", **load)


def test_sweep_budgets_span_the_single_tiers_costs_where_the_first_tier_is_the_dearer():
    """The built-in ladder's first tier costs 1.177 of always-last: budgets from always-first's
    cost to always-last's were 24 copies of 1.0, and the router, which mixes single tiers and so
    costs between 1.0 and 1.177, got 2 points where it has a dozen (its points above the policy
    read 0.010 above at 0.8 standard errors instead of 0.043 at 2.2)."""
    from asd.simulator.sweep import baseline_frontiers

    ev = Evaluation("builtin", cost_model="params", seed=0)
    first = float(ev.arrays.cost[:, 0].sum() / ev.cost_last)
    assert first > 1.1
    router = baseline_frontiers(ev)["router"]
    inside = [p["budget"] for p in router if 1.0 < p["budget"] < first]
    assert len(router) >= 10 and len(inside) >= 8
    assert all(1.0 - 1e-9 <= p["cost_rel"] <= first + 1e-9 for p in router)


def test_explain_shows_the_cold_start_tiers_continue_value(evaluation):
    """At a tier a request started at cold (stage 0 skipped the tiers below) the debugger shows
    the cold state's continue value, the one its decision was made on (it showed "—")."""
    from asd.simulator.job import explain

    seen, lam = 0, 1e5  # on this ladder stage 0 skips the first tier for about a third of requests here
    for fold in evaluation.folds:
        policy = fold.policy.solve(lam)
        for j in range(fold.held.size):
            ex = explain(evaluation, str(evaluation.view.request_ids[fold.held[j]]), lam)
            for i, t in enumerate(ex["tiers"][:-1]):
                if t["state"] != "cold start":
                    continue
                seen += 1
                assert t["continue_value"] == policy.continue_value(i, t["bin"], cold=True)
                stops = t["stop_value"] <= t["continue_value"] + 1e-12 * max(1.0, abs(t["continue_value"]))
                assert (t["decision"] == "stop") == stops
            if seen >= 5:
                return
    assert seen, "no held-out request started cold above tier 0"


def test_quality_loss_criterion_against_a_reference_of_quality_zero():
    """fixed-2stage with quality 0: the relative loss is undefined and the policy cannot lose
    anything, so the goal is met (it read "not met" beside a policy at 0.49)."""
    from asd.simulator.job import criteria

    ref = {"quality": 0.0, "cost_rel": 1.0, "latency_ms": {"p95": 200.0}}
    chosen = {"quality": 0.49, "cost_rel": 0.5, "latency_ms": {"p95": 100.0}}
    loss = criteria(chosen, ref, "p95")["quality_loss"]
    assert loss["value"] is None and loss["met"]
    assert not criteria(dict(chosen, quality=None), ref, "p95")["quality_loss"]["met"]
    assert criteria(dict(chosen, quality=0.5), dict(ref, quality=0.6), "p95")["quality_loss"]["met"] is False


def test_a_one_tier_ladder_is_refused_by_every_command_that_decides(tmp_path):
    """A one-tier bundle imports (inspect reads it), but simulate, sweep and calibrate had nothing
    to decide: fixed-2stage charged the one tier twice and the report read its goals as met
    against that double cost (latency −50%, GPU −50%)."""
    rows = [{"request_id": f"r{i}", "model": "only-8b", "prompt": f"p{i}", "output": "x" * (i + 1),
             "quality": i % 2, "e2e_ms": 10.0 + i} for i in range(30)]
    source = tmp_path / "one.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bundle = tmp_path / "one"
    assert run("traces", "import", "jsonl", str(source), "--tiers", "only-8b", "-o", str(bundle)).exit_code == 0
    for args in (["simulate", str(bundle), "--tau-max", "100"], ["sweep", str(bundle)],
                 ["calibrate", str(bundle), "-o", str(tmp_path / "p.npz")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, args
        assert result.output == (f"error: {bundle}: one tier (only-8b); a cascade needs at least two to choose "
                                 "between (import the other tiers' runs with it)\n"), args
    assert not (tmp_path / "p.npz").exists()


def test_a_margin_under_one_request_reads_as_its_fraction_not_zero():
    """A graded quality (a 0.5 draw, a weighted judge) can put a point half a request above."""
    point = {"baseline": "router", "quality_above": 0.125, "policy_extra_cost": None, "quality_above_z": None}
    assert "0.1250 quality above the policy at its cost, 0.5 of 4 requests' worth" in _above_text([point], 4)
    point["quality_above"] = 0.375
    assert "1.5 of 4" not in _above_text([point], 4) and "2 of 4 requests' worth" in _above_text([point], 4)


def _point(quality, cost):
    return {"quality": quality, "cost_rel": cost, "latency_ms": None}


def test_the_check_says_when_a_tier_beats_the_last_and_why_a_gap_closed_exceeds_one():
    from asd.simulator.sweep import quality_check

    tiers = ["a", "b", "c"]
    baselines = {"always-a": [_point(0.50, 0.1)], "always-b": [_point(0.90, 0.4)], "always-c": [_point(0.70, 1.0)],
                 "threshold": [_point(0.70, 0.8)], "router": [_point(0.60, 0.3)],
                 "oracle": [_point(0.95, 0.3)]}
    policy = [_point(0.50, 0.1), _point(0.69, 0.2)]  # floor 0.686: the policy at 0.2, below the oracle's 0.3
    check = quality_check(policy, baselines, tiers)
    assert check["best_simple"]["name"] == "always-b" and check["gap_closed"] == pytest.approx(2.0)
    first, second = check["notes"]
    assert first.startswith("always-b (0.900) has a higher quality than always-c (0.700)")
    assert second.startswith("gap closed above 1: the oracle (0.300) reaches quality 0.950")
    # an ordinary ladder: the last tier is the best and the gap is partly closed, nothing to say
    baselines["always-b"] = [_point(0.65, 0.4)]
    baselines["oracle"] = [_point(0.95, 0.05)]
    assert quality_check(policy, baselines, tiers)["notes"] == []


def test_a_repeats_spread_says_how_many_seeds_it_is_of_when_some_never_reach_the_floor():
    one = {"mean": 0.946, "sd": 0.0, "min": 0.946, "max": 0.946, "n": 1}
    assert _spread_text(one, 3) == "0.946 ± 0.000 (0.946 to 0.946 of the 1 seed that reaches it)"
    assert _spread_text({**one, "n": 3}, 3) == "0.946 ± 0.000 (0.946 to 0.946)"
    assert _spread_text(None, 3) == "n/a"
    assert _spread_text({**one, "n": 2}, 3).endswith("of the 2 seeds that reach it)")
