"""Simulator performance against issue 8's targets: replay (one λ, a 200-λ sweep, λ bisection),
the discrete-event simulation (one simulated hour at 100 req/s through 4 tiers, λ bisection on
DES latency) and peak memory at 10^6 requests. Baselines are measured in the same run: the
plain-Python twins (asd.simulator.reference) and a SimPy model of the same cascade written here
(one process step per request per tier, each tier a pool of replicas × max-batch slots held for
the request's closed-form latency: no batching slowdown, no KV limit — the readable peer).

Workload: `asd.traces.synth` (4 tiers, drafts for speculative continuation), latency from
asd.simulator.latency with illustrative iteration coefficients (not fitted to any GPU).

Each goal is for the full size (--scale 1): a smaller run keeps the figures' keys, gives each
row's `requests` and the scale, and judges no goal (meets_goal null).

`simulate_1m_end_to_end_s` and `rss_1m_gb`: `python -m asd.cli simulate BUNDLE --tau-max 10000
--json PATH` in a fresh process, as a user runs it, on a 10^6-request × 4-tier bundle from
`asd.traces.synth.write_synthetic_bundle` (Parquet read, features, 5-fold calibration, λ
search, every baseline; writing the bundle is not timed): wall clock and peak RSS of that
process. Baseline: the same command with the pre-scaling settings (every calibration request
fitted, float64 features, Huber on every timed row), timed on 200 requests and on 2% of the
requests (after an untimed run that leaves numba's cache warm) and extrapolated linearly to N:
the fixed part (interpreter start, imports, numba cache loads: paid once, not N/n times) plus
the slope between the two runs times N (linear in N; it flatters the baseline, whose fits grow
faster than N).

    python benchmarks/bench_simulator.py [--json PATH] [--scale S]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numba  # noqa: E402

from asd.engine import Policy, Predictor, bisect_lambda, build_tables  # noqa: E402
from asd.fsutil import atomic_write  # noqa: E402
from benchmarks.common import not_judged, refuse_unwritable_json  # noqa: E402
from asd.simulator import Pools, ReplayInputs, arrival_times, latency_grid, policy_tables, replay, replay_grid  # noqa: E402
from asd.simulator import reference  # noqa: E402
from asd.simulator.des import simulate  # noqa: E402
from asd.simulator.replay_nb import replay_requests_nb  # noqa: E402
from asd.traces.synth import synthesize  # noqa: E402

N_TIERS = 4
# Illustrative [c0, c_prefill_token, c_decode_seq, c_kv_token] ms for 8B/13B/34B/70B-class tiers
# at TP 1/1/2/4 (shape of published H100 serving numbers; NOT a fitted profile).
COEFFS = np.array([[6.0, 0.03, 0.05, 2e-5], [8.0, 0.05, 0.08, 3e-5], [14.0, 0.12, 0.15, 6e-5],
                   [24.0, 0.25, 0.25, 1e-4]])
TENSOR_PARALLEL = np.array([1, 1, 2, 4])
REPLICAS = np.array([4, 4, 6, 4])
MAX_BATCH = 128
KV_CAPACITY = 200_000
QUANTILES = (50.0, 95.0, 99.0)

GOALS = {  # key: (goal, "higher" | "lower", unit, requests the goal is for (the DES hour: 3600 s at 100 req/s))
    "replay_requests_per_s": (5e6, "higher", "req/s", 1_000_000),
    "sweep_200_lambda_100k_s": (2.0, "lower", "s", 100_000),
    "replay_speedup_vs_python": (100.0, "higher", "x", 1_000_000),
    "des_events_per_s": (1e6, "higher", "events/s", 360_000),
    "des_hour_100rps_4tiers_s": (4.0, "lower", "s", 360_000),
    "des_speedup_vs_simpy": (4.0, "higher", "x", 360_000),
    "bisection_replay_100k_s": (1.0, "lower", "s", 100_000),
    "bisection_des_100k_s": (60.0, "lower", "s", 100_000),
    "rss_1m_gb": (2.0, "lower", "GB", 1_000_000),
    "simulate_1m_end_to_end_s": (30.0, "lower", "s", 1_000_000),
}
SIMULATE_TAU_MS = 10_000.0  # p95 limit inside the synthetic ladder's range (always-8b .. always-70b)
E2E_BASELINE_SMALL = 200  # the small run of the end-to-end baseline: mostly its fixed start-up


class Workload:
    """Arrays of a synthetic 4-tier ladder: tokens cold and continued (drafts), latency and GPU
    cost per (request, tier), correctness as quality, and engine tables + bins from a p̂ proxy."""

    def __init__(self, n: int, seed: int = 0, n_bins: int = 20):
        _, _, outputs, drafts = synthesize(max(n, 10), N_TIERS, seed, timings=False)
        n = max(n, 10)
        col = lambda name: outputs.column(name).to_numpy().reshape(n, N_TIERS)  # noqa: E731
        self.n = n
        self.n_prompt = col("n_prompt_tokens").astype(np.int64)
        self.n_decode = col("n_output_tokens").astype(np.int64)
        self.quality = col("quality").astype(np.float64)
        p_hat = np.exp(col("mean_logprob").astype(np.float64))  # monotone in the synthetic signal
        del outputs
        # difficulty-queue keys: what the tier before knew (tier 0: its own p̂ stands in for a prompt score)
        self.difficulty = 1.0 - np.concatenate([p_hat[:, :1], p_hat[:, :-1]], axis=1)
        accepted = np.zeros((n, N_TIERS), dtype=np.int64)
        accepted[:, 1:] = drafts.column("n_accepted").to_numpy().reshape(n, N_TIERS - 1)
        del drafts
        # continuation: verify prompt + accepted draft, decode the rest of this tier's answer
        self.n_prompt_cont = self.n_prompt + accepted
        self.n_decode_cont = np.maximum(self.n_decode - accepted, 0)
        self.latency = latency_grid(COEFFS, self.n_prompt, self.n_decode)
        self.latency_cont = latency_grid(COEFFS, self.n_prompt_cont, self.n_decode_cont)
        self.cost = self.latency * TENSOR_PARALLEL  # GPU-ms
        self.cost_cont = self.latency_cont * TENSOR_PARALLEL
        tables = build_tables(p_hat, self.quality, self.cost_cont, start_costs=self.cost, n_bins=n_bins)
        self.policy = Policy(tables, Predictor.logistic(np.zeros((N_TIERS + 1, 1)), np.zeros(N_TIERS + 1)))
        self.tier_bins = np.stack([np.searchsorted(tables.edges[i, 1:-1], p_hat[:, i], side="right")
                                   for i in range(N_TIERS)], axis=1).astype(np.int64)
        self.inputs = ReplayInputs.build(self.tier_bins, cost=self.cost, cost_cont=self.cost_cont,
                                         latency_ms=self.latency, latency_cont_ms=self.latency_cont,
                                         quality=self.quality, n_bins=n_bins)

    def mid_lambda(self):
        """A λ where requests spread over the whole ladder (about a fifth reach the last tier)."""
        lambdas = np.geomspace(1e2, 1e7, 41)
        grid = replay_grid(self.inputs, *policy_tables(self.policy, lambdas), lambdas=lambdas)
        return float(lambdas[np.argmin(np.abs(grid.stop_fractions[:, -1] - 0.2))])

    def pools(self):
        return Pools.build(COEFFS, replicas=REPLICAS, tensor_parallel=TENSOR_PARALLEL, max_batch=MAX_BATCH,
                           kv_capacity=KV_CAPACITY)

    def simulate(self, walk, arrivals, rows=slice(None), by_difficulty=False):
        return simulate(walk.start[rows], walk.stop[rows], self.n_prompt[rows], self.n_decode[rows],
                        n_prompt_cont=self.n_prompt_cont[rows], n_decode_cont=self.n_decode_cont[rows],
                        arrival_ms=arrivals, pools=self.pools(),
                        priority=self.difficulty[rows] if by_difficulty else None)


def simpy_cascade(walk, latency, latency_cont, arrivals_ms, rows):
    """The same cascade in SimPy: each tier a Resource of replicas × max-batch slots, a request
    holds one slot per tier for its closed-form latency there. Returns (events, e2e)."""
    import simpy

    env = simpy.Environment()
    pools = [simpy.Resource(env, capacity=int(REPLICAS[i] * MAX_BATCH)) for i in range(N_TIERS)]
    e2e = np.empty(len(rows))

    def request(j, r):
        t0 = env.now
        for i in range(int(walk.start[r]), int(walk.stop[r]) + 1):
            with pools[i].request() as slot:
                yield slot
                yield env.timeout(latency[r, i] if i == walk.start[r] else latency_cont[r, i])
        e2e[j] = env.now - t0

    def source():
        now = 0.0
        for j, r in enumerate(rows):
            yield env.timeout(arrivals_ms[j] - now)
            now = arrivals_ms[j]
            env.process(request(j, r))

    env.process(source())
    env.run()
    events = len(rows) + int((walk.stop[rows] - walk.start[rows] + 1).sum())  # arrivals + tier services
    return events, e2e


CPU_SECONDS = {}  # label -> process CPU seconds of the fastest repeat of the last `timed` call


def timed(fn, repeats=1, label=None):
    """Best wall time over repeats, and the result; the CPU seconds of that repeat go to
    CPU_SECONDS[label] (serial kernels: the time on one core, whatever the machine's load)."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, best_cpu = wall, cpu
    if label:
        CPU_SECONDS[label] = best_cpu
    return best, out


RSS_PROBE = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from benchmarks.bench_simulator import Workload
from asd.simulator import arrival_times, replay
w = Workload(int(sys.argv[2]))
walk = replay(w.inputs, w.policy.solve(float(sys.argv[3])))
result = w.simulate(walk, arrival_times(w.n, rate=100.0, seed=1))
assert np.isfinite(result.e2e_ms).all()
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))  # not ru_maxrss: see above
print(json.dumps({"peak_rss_gb": int(hwm.split()[1]) / 2**20}))
"""


SIMULATE_CHILD = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from asd.cli import main
unscaled = sys.argv[2] == "unscaled"
if unscaled:  # the pipeline as it was before it was made to scale
    import asd.calibration.costs as costs
    import asd.simulator.evaluate as evaluate
    evaluate.MAX_CALIBRATION_ROWS = None
    evaluate.FLOAT32_FEATURES_ABOVE_BYTES = float("inf")
    costs.MAX_HUBER_ROWS = 10**12
    evaluate.Evaluation.__init__.__kwdefaults__["max_calibration_rows"] = None
try:
    main(sys.argv[3:], standalone_mode=False)
finally:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"peak_rss_gb": int(hwm.split()[1]) / 2**20}))
"""


def simulate_end_to_end(bundle, json_path, unscaled=False):
    """(wall seconds, CPU seconds, peak RSS GB) of `asd simulate` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SIMULATE_CHILD, str(REPO), "unscaled" if unscaled else "scaled",
                          "simulate", str(bundle), "--tau-max", str(SIMULATE_TAU_MS), "--json", str(json_path)],
                         check=True, capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_gb"]


def rss_probe(n, lam):
    """Peak RSS of a fresh process that builds the n-request workload, replays and simulates it."""
    out = subprocess.run([sys.executable, "-c", RSS_PROBE, str(REPO), str(n), repr(lam)], check=True,
                         capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_gb"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", dest="json_path", help="write the figures as JSON here")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every request count and the simulated hour (e.g. 0.01 for a smoke run)")
    args = ap.parse_args(argv)
    if not 0.0 < args.scale <= 1.0:  # above 1 the bundles pass the synthetic trace's 10^6 requests
        ap.exit(2, f"error: --scale {args.scale}: need 0 < S <= 1\n")
    refuse_unwritable_json(ap, args.json_path)
    scale = args.scale
    size = lambda n: max(int(n * scale), 50)  # noqa: E731
    rows, figures, notes = [], {}, []

    # every size is the goal's times --scale: below 1 the figures (same keys) say nothing of the goals.
    # Judged by the scale, not each row's count: a simulated hour's Poisson arrivals vary around 360,000.
    judged = scale >= 1.0

    def row(key, value, baseline, baseline_note, label=None, cpu_value=None, *, requests):
        goal, better, unit, goal_requests = GOALS[key]
        ratio = (value / baseline if better == "higher" else baseline / value) if baseline and value else None
        figures[key] = value
        rows.append({"figure": label or key, "key": key, "value": value, "value_cpu_time": cpu_value,
                     "unit": unit, "goal": goal,
                     "better": better, "baseline": baseline, "baseline_note": baseline_note, "ratio": ratio,
                     "requests": int(requests), "goal_requests": goal_requests,
                     "meets_goal": bool(value >= goal if better == "higher" else value <= goal) if judged else None})

    # -- replay, one λ, one core --------------------------------------------------------------
    n_replay = size(1_000_000)
    big = Workload(n_replay, seed=0)
    lam = big.mid_lambda()
    policy = big.policy.solve(lam)
    inputs = big.inputs
    outs = (np.empty(big.n, np.int64), np.empty(big.n, np.int64), np.empty(big.n), np.empty(big.n), np.empty(big.n))
    args_nb = (inputs.prompt_bins, inputs.tier_bins, inputs.cold_bins, policy.start_table, policy.stop_table,
               policy.stop_cold_table, inputs.cost, inputs.cost_cont, inputs.latency_ms, inputs.latency_cont_ms, inputs.quality)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    replay_requests_nb(*args_nb, *outs)
    replay_s, _ = timed(lambda: replay_requests_nb(*args_nb, *outs), repeats=5, label="replay")
    numba.set_num_threads(threads)
    n_ref = min(big.n, 20_000)
    ref_outs = tuple(a[:n_ref].copy() for a in outs)
    ref_args = tuple(a[:n_ref] if a.shape and a.shape[0] == big.n else a for a in args_nb)
    ref_s, _ = timed(lambda: reference.replay_requests(*ref_args, *ref_outs), label="replay_ref")
    for a, b in zip(ref_outs, outs):
        np.testing.assert_array_equal(a, b[:n_ref])
    replay_rate, ref_rate = big.n / replay_s, n_ref / ref_s
    replay_cpu_rate = big.n / CPU_SECONDS["replay"]
    ref_cpu_rate = n_ref / CPU_SECONDS["replay_ref"]
    row("replay_requests_per_s", replay_rate, ref_rate, "reference.replay_requests (plain Python), same inputs",
        f"replay_requests_per_s ({big.n:,} req, 1 thread)", replay_cpu_rate, requests=big.n)
    row("replay_speedup_vs_python", replay_rate / ref_rate, 1.0, "plain-Python twin = 1", None,
        replay_cpu_rate / ref_cpu_rate, requests=big.n)

    # -- 200-λ sweep over 100k requests --------------------------------------------------------
    n_sweep = size(100_000)
    sweep_rows = np.arange(n_sweep) % big.n
    sweep_inputs = ReplayInputs.build(big.tier_bins[sweep_rows], cost=big.cost[sweep_rows],
                                      cost_cont=big.cost_cont[sweep_rows], latency_ms=big.latency[sweep_rows],
                                      latency_cont_ms=big.latency_cont[sweep_rows], quality=big.quality[sweep_rows],
                                      n_bins=inputs.n_bins)
    lambdas = np.concatenate([[0.0], np.geomspace(1.0, 1e8, 199)])
    replay_grid(sweep_inputs, *policy_tables(policy, lambdas[:2]))  # compile

    def sweep():
        return replay_grid(sweep_inputs, *policy_tables(policy, lambdas), lambdas=lambdas)

    sweep_s, grid = timed(sweep, repeats=3, label="sweep")

    def sweep_loop():  # baseline: one numba replay per λ from a Python loop, numpy percentiles
        stats = []
        for lam_g in lambdas:
            r = replay(sweep_inputs, policy.solve(float(lam_g)))
            stats.append((r.mean_cost, r.mean_quality, *np.percentile(r.latency_ms, QUANTILES)))
        policy.solve(lam)
        return np.array(stats)

    loop_s, loop_stats = timed(sweep_loop)
    np.testing.assert_allclose(loop_stats[:, 2:], grid.latency_q_ms, rtol=1e-9)
    row("sweep_200_lambda_100k_s", sweep_s, loop_s, "Python loop over λ calling replay() + np.percentile",
        f"sweep_200_lambda_{n_sweep // 1000}k_s ({threads} threads)", CPU_SECONDS["sweep"], requests=n_sweep)

    # -- λ bisection on replay p95 latency, 100k requests --------------------------------------
    cache = {}

    def replay_p95(lam_b):
        p = policy.solve(lam_b)
        key = p.stop_table.tobytes() + p.start_table.tobytes()
        if key not in cache:
            cache[key] = replay(sweep_inputs, p).latency("p95")
        return cache[key]

    tau = 0.5 * (replay_p95(0.0) + replay_p95(1e9))
    cache.clear()
    bisect_s, found = timed(lambda: (cache.clear(), bisect_lambda(replay_p95, tau, lam_hi=1e3))[1], label="bisect")
    first = np.empty(n_sweep, np.int64)
    ref_eval_out = (first, first.copy(), np.empty(n_sweep), np.empty(n_sweep), np.empty(n_sweep))
    ref_one_s, _ = timed(lambda: reference.replay_requests(
        sweep_inputs.prompt_bins, sweep_inputs.tier_bins, sweep_inputs.cold_bins, policy.solve(found.lam).start_table,
        policy.stop_table, policy.stop_cold_table, sweep_inputs.cost, sweep_inputs.cost_cont, sweep_inputs.latency_ms,
        sweep_inputs.latency_cont_ms, sweep_inputs.quality, *ref_eval_out))
    # the bisection's calls at λ whose tables it has met are served from `cache`: a plain-Python
    # loop caching by table replays as many distinct policies, and no more
    distinct = len(cache)
    row("bisection_replay_100k_s", bisect_s, ref_one_s * distinct,
        f"reference replay × {distinct} distinct evaluations (one measured; bisect_lambda's "
        f"{found.evaluations} calls repeat tables served from the cache)",
        f"bisection_replay_{n_sweep // 1000}k_s (p95, {found.status})", CPU_SECONDS["bisect"], requests=n_sweep)
    policy.solve(lam)

    # -- DES: one simulated hour at 100 req/s through 4 tiers ----------------------------------
    hour_s = max(3600.0 * scale, 0.5)  # at least ~50 arrivals, as size() keeps 50 requests
    rate = 100.0
    arrivals = arrival_times(10 * int(rate * hour_s) + 100, rate=rate, seed=7)
    arrivals = arrivals[arrivals < hour_s * 1e3]
    n_hour = arrivals.size
    hour_rows = np.arange(n_hour) % big.n
    walk = replay(inputs, policy)
    big.simulate(walk, arrivals[:50], hour_rows[:50])  # compile
    des_s, hour = timed(lambda: big.simulate(walk, arrivals, hour_rows), label="des")
    des_cpu_s = CPU_SECONDS["des"]  # the event loop is serial: CPU time = time on one core
    simpy_s, (simpy_events, simpy_e2e) = timed(
        lambda: simpy_cascade(walk, big.latency, big.latency_cont, arrivals, hour_rows), label="simpy")
    simpy_cpu_s = CPU_SECONDS["simpy"]
    row("des_hour_100rps_4tiers_s", des_s, simpy_s, "SimPy model of the same cascade, same requests",
        f"des_hour_100rps_4tiers_s ({hour_s:g} s, {n_hour:,} req)", des_cpu_s, requests=n_hour)
    row("des_events_per_s", hour.events / des_s, simpy_events / simpy_s,
        "SimPy: arrivals + one service per request per tier, per second", None, hour.events / des_cpu_s,
        requests=n_hour)
    row("des_speedup_vs_simpy", simpy_s / des_s, 1.0, "SimPy = 1", None, simpy_cpu_s / des_cpu_s, requests=n_hour)
    notes.append(f"DES hour: utilisation per tier {np.round(hour.utilisation, 3).tolist()}, "
                 f"mean queue {np.round(hour.mean_queue, 2).tolist()}, p95 e2e {hour.latency('p95'):.0f} ms "
                 f"(SimPy slot model p95 {np.percentile(simpy_e2e, 95):.0f} ms), {hour.events:,} events")
    keyed_s, keyed = timed(lambda: big.simulate(walk, arrivals, hour_rows, by_difficulty=True), label="des_keyed")
    notes.append(f"DES hour with difficulty queues (`--scheduler difficulty`; keys 1 − p̂ of the tier before): "
                 f"{keyed_s:.2f} s against {des_s:.2f} s FIFO; e2e mean/p50/p95 "
                 + "/".join(f"{keyed.latency(q):.0f}" for q in ("mean", "p50", "p95")) + " ms against "
                 + "/".join(f"{hour.latency(q):.0f}" for q in ("mean", "p50", "p95")) + " ms FIFO; "
                 + (f"{changed:,} requests' latency changed" if (changed := int((keyed.e2e_ms != hour.e2e_ms).sum()))
                    else "no latency changed: here the batch and KV limits never made one queued request wait "
                         "behind another, so the order did not matter"))

    # -- λ bisection on DES p95 latency, 100k requests -------------------------------------------
    n_bisect = size(100_000)
    b_rows = np.arange(n_bisect) % big.n
    b_arrivals = arrival_times(n_bisect, rate=rate, seed=11)
    b_inputs = ReplayInputs.build(big.tier_bins[b_rows], cost=big.cost[b_rows], cost_cont=big.cost_cont[b_rows],
                                  latency_ms=big.latency[b_rows], latency_cont_ms=big.latency_cont[b_rows],
                                  quality=big.quality[b_rows], n_bins=inputs.n_bins)
    des_cache = {}
    des_runs = []

    def des_p95(lam_b):
        p = policy.solve(lam_b)
        key = p.stop_table.tobytes() + p.start_table.tobytes()
        if key not in des_cache:
            w = replay(b_inputs, p)
            t0 = time.perf_counter()
            des_cache[key] = big.simulate(w, b_arrivals, b_rows).latency("p95")
            des_runs.append(time.perf_counter() - t0)
        return des_cache[key]

    tau_des = 0.5 * (des_p95(0.0) + des_p95(1e9))
    des_cache.clear()
    des_runs.clear()
    bisect_des_s, found_des = timed(lambda: bisect_lambda(des_p95, tau_des, lam_hi=1e3), label="bisect_des")
    b_walk = replay(b_inputs, policy.solve(found_des.lam))
    simpy_one_s, _ = timed(lambda: simpy_cascade(b_walk, big.latency, big.latency_cont, b_arrivals, b_rows))
    distinct_des = len(des_runs)
    row("bisection_des_100k_s", bisect_des_s, simpy_one_s * distinct_des,
        f"SimPy run × {distinct_des} distinct DES evaluations (one measured)",
        f"bisection_des_{n_bisect // 1000}k_s (p95, {found_des.status})", CPU_SECONDS["bisect_des"],
        requests=n_bisect)
    policy.solve(lam)

    # -- `asd simulate` end to end on 10^6 requests: time and peak memory -------------------------
    import tempfile

    from asd.traces.synth import write_synthetic_bundle

    n_e2e = size(1_000_000)
    n_e2e_base = max(size(20_000), 2 * E2E_BASELINE_SMALL)
    with tempfile.TemporaryDirectory(prefix="asd-bench-simulate-") as tmp:
        bundle = write_synthetic_bundle(Path(tmp) / "ladder", n_e2e, N_TIERS, 0).path
        e2e_s, e2e_cpu, e2e_rss = simulate_end_to_end(bundle, Path(tmp) / "simulate.json")
        e2e_report = json.loads((Path(tmp) / "simulate.json").read_text())
        del bundle
        small_bundle = write_synthetic_bundle(Path(tmp) / "small", E2E_BASELINE_SMALL, N_TIERS, 0).path
        # untimed first: numba compiles (and caches) the unscaled settings' kernels here, not in a timed run
        simulate_end_to_end(small_bundle, Path(tmp) / "small.json", unscaled=True)
        small_s, _, _ = simulate_end_to_end(small_bundle, Path(tmp) / "small.json", unscaled=True)
        base_bundle = write_synthetic_bundle(Path(tmp) / "base", n_e2e_base, N_TIERS, 0).path
        base_s, base_cpu, base_rss = simulate_end_to_end(base_bundle, Path(tmp) / "base.json", unscaled=True)
    # A line through the two runs: a process's start-up is paid once, so scaling one run's whole
    # wall time by N/n would charge it N/n times. A slope below 0 is noise: no per-request part.
    per_request_s = max(base_s - small_s, 0.0) / (n_e2e_base - E2E_BASELINE_SMALL)
    fixed_s = base_s - per_request_s * n_e2e_base
    row("simulate_1m_end_to_end_s", e2e_s, fixed_s + per_request_s * n_e2e,
        f"`asd simulate` before scaling (every calibration row fitted, float64 features) on {E2E_BASELINE_SMALL:,} "
        f"and {n_e2e_base:,} requests ({small_s:.1f} s, {base_s:.1f} s), extrapolated linearly to {n_e2e:,}: "
        f"{fixed_s:.1f} s fixed + {per_request_s * 1e3:.3g} s per 1000 requests",
        f"simulate_1m_end_to_end_s ({n_e2e:,} req, tau {SIMULATE_TAU_MS:g} ms p95)", e2e_cpu, requests=n_e2e)
    row("rss_1m_gb", e2e_rss, None, "", f"rss_1m_gb (`asd simulate`, {n_e2e:,} req, peak)", requests=n_e2e)
    notes.append(f"asd simulate on {n_e2e:,} requests: {e2e_report['evaluation']}; feasible {e2e_report['feasible']}, "
                 f"λ {e2e_report['chosen']['lambda']:.4g}, quality {e2e_report['chosen']['quality']:.3f}, "
                 f"cost_rel {e2e_report['chosen']['cost_rel']:.3f}")
    notes.append(f"unscaled baseline on {n_e2e_base:,} requests: {base_s:.1f} s wall, {base_cpu:.1f} s CPU, "
                 f"peak {base_rss:.2f} GB")
    n_rss = size(1_000_000)
    peak = rss_probe(n_rss, lam)
    here = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    notes.append(f"replay + DES alone on {n_rss:,} requests (synth arrays, no calibration) peaked at {peak:.2f} GB; "
                 f"this benchmark process at {here:.2f} GB")

    report = {**figures, "des_hour_cpu_s": des_cpu_s, "rows": rows, "notes": notes, "lambda": lam, "scale": scale, "threads": threads,
              "bisection_evaluations": {"replay": found.evaluations, "replay_distinct": distinct,
                                        "des": found_des.evaluations, "des_distinct": distinct_des},
              "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
              "requests": {"replay": big.n, "sweep": n_sweep, "des_hour": int(n_hour), "bisection_des": n_bisect,
                           "rss": n_rss, "simulate_end_to_end": n_e2e, "simulate_baseline": n_e2e_base,
                           "simulate_baseline_small": E2E_BASELINE_SMALL},
              "simulate_baseline_fit": {"small_s": small_s, "large_s": base_s, "fixed_s": fixed_s,
                                        "per_request_s": per_request_s}}
    print(f"simulator benchmark — {os.cpu_count()} CPUs, {threads} numba threads, load average "
          f"{os.getloadavg()[0]:.2f} (shared machine: figures vary run to run), scale {scale:g}")
    print("value: wall clock (best of repeats); cpu: the same figure from process CPU time, which on a shared,\n"
          "loaded machine is the time the serial kernels really ran on one core (the sweep: summed over its threads)")
    print(f"{'figure':52} {'value':>12} {'cpu':>12} {'goal':>10} {'baseline':>12} {'ratio':>10}  met")
    for r in rows:
        ratio = f"{r['ratio']:.4g}" if r["ratio"] is not None else "-"
        baseline = f"{r['baseline']:.6g}" if r["baseline"] is not None else "-"
        cpu = f"{r['value_cpu_time']:.6g}" if r["value_cpu_time"] is not None else "-"
        met = (not_judged(r["requests"], r["goal_requests"])
               if r["meets_goal"] is None else "yes" if r["meets_goal"] else "NO")
        print(f"{r['figure']:52} {r['value']:>12.6g} {cpu:>12} {r['goal']:>10.4g} {baseline:>12} {ratio:>10}  "
              f"{met}  [{r['key']}]")
    for r in rows:
        if r["baseline_note"]:
            print(f"  baseline of {r['key']}: {r['baseline_note']}")
    for note in notes:
        print(f"  note: {note}")
    if args.json_path:
        atomic_write(args.json_path, (json.dumps(report, indent=2) + "\n").encode())
    return report


if __name__ == "__main__":
    main()
