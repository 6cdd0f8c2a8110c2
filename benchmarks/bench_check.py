"""`asd check` against issue 11's target: a policy's three promises (min quality, max cost, max p95
latency) checked on 10^5 requests x 4 tiers in at most 5 s wall with numba's cache warm, as a CI
job runs it (a fresh `python -m asd.cli check` process); the baseline, measured in the same run,
is `asd simulate --policy` on the same bundle and policy (the same replay, plus its λ search and
every baseline).

Workload: a synthetic bundle (`asd.traces.synth.write_synthetic_bundle`, 4 tiers, drafts) and a
policy calibrated on a smaller synthetic bundle of the same ladder (a team calibrates once and
checks every new trace). Phases are also timed in one process (bundle read, features, replay,
promises) to say what dominates.

The target is for 10^5 requests: a smaller run (a smoke run) is not judged (meets_targets
null); `n_requests` says what it ran.

    python benchmarks/bench_check.py [--requests N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asd.fsutil import atomic_write  # noqa: E402
from benchmarks.common import not_judged, refuse_unwritable_json  # noqa: E402
from asd.traces.synth import MAX_REQUESTS  # noqa: E402

TARGET_S = 5.0
TARGET_REQUESTS = 100_000  # the size TARGET_S is for
MIN_REQUESTS = 100  # fewer: calibrate's fold models may differ by chance past its own consistency check
PROMISES = ["--min-quality", "0.1", "--max-cost-rel", "2.0", "--max-latency", "p95=1e9"]


def timed_cli(argv: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of a fresh `asd` process; its CPU seconds (user + sys) go to `done.cpu_s`
    (on a shared machine wall time includes waiting for a core, CPU time does not)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "asd.cli", *argv], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    done.cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, done


def phases(policy: Path, bundle: Path) -> dict:
    """The check's parts in this process (imports and numba already loaded)."""
    from asd.calibration.views import load_view
    from asd.simulator.check import check_policy
    from asd.simulator.evaluate import Evaluation, fixed_policy_features, load_policy

    out = {}
    t = time.perf_counter()
    view = load_view(bundle)
    out["read bundle (s)"] = time.perf_counter() - t
    p = load_policy(policy)
    t = time.perf_counter()
    fixed_policy_features(p, view)
    out["features (s)"] = time.perf_counter() - t
    t = time.perf_counter()
    ev = Evaluation(view, policy=p)
    out["evaluation incl. features, cost grid, bins (s)"] = time.perf_counter() - t
    t = time.perf_counter()
    ev.policy_outcomes()
    out["replay (s)"] = time.perf_counter() - t
    t = time.perf_counter()
    check_policy(p, view, min_quality=0.1, max_cost_rel=2.0, max_latency={"p95": 1e9})
    out["whole check in process (s)"] = time.perf_counter() - t
    return out


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--calibration-requests", type=int, default=3000)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    for option, n in (("--requests", args.requests), ("--calibration-requests", args.calibration_requests)):
        if not MIN_REQUESTS <= n <= MAX_REQUESTS:
            parser.exit(2, f"error: {option} {n}: need {MIN_REQUESTS}..{MAX_REQUESTS}\n")
    refuse_unwritable_json(parser, args.json_path)

    from asd.calibration.calibrate import calibrate_to_file
    from asd.traces.synth import write_synthetic_bundle

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle, small, policy = tmp / "bundle", tmp / "small", tmp / "policy.npz"
        write_synthetic_bundle(bundle, args.requests, 4, 11)
        write_synthetic_bundle(small, min(args.calibration_requests, args.requests), 4, 12)
        calibrate_to_file(small, policy, lam=5000.0)
        # warm numba's on-disk cache (and the OS file cache) as a CI job with a cached NUMBA_CACHE_DIR has it
        warm_s, warm = timed_cli(["check", str(policy), str(small), *PROMISES], env)
        if warm.returncode not in (0, 1):
            raise SystemExit(f"warm-up check failed: {warm.stderr}")
        check_s, done = timed_cli(["check", str(policy), str(bundle), *PROMISES, "--json", str(tmp / "check.json")], env)
        if done.returncode not in (0, 1):
            raise SystemExit(f"asd check failed: {done.stderr}")
        checked = json.loads((tmp / "check.json").read_text())
        simulate_s, sim = timed_cli(["simulate", str(bundle), "--policy", str(policy), "--tau-max", "1e9"], env)
        if sim.returncode != 0:
            raise SystemExit(f"asd simulate failed: {sim.stderr}")
        parts = phases(policy, bundle)

    rows = [("asd check, 3 promises (s)", check_s, TARGET_S, simulate_s, "asd simulate --policy, same bundle"),
            ("asd check CPU, user + sys (s)", done.cpu_s, None, sim.cpu_s, "asd simulate --policy, same bundle")]
    rows += [(name, value, None, None, None) for name, value in parts.items()]
    report = {
        "n_requests": args.requests, "n_tiers": 4, "promises": len(checked["rows"]), "check_passed": checked["passed"],
        "check_s": check_s, "simulate_s": simulate_s, "check_cpu_s": done.cpu_s, "simulate_cpu_s": sim.cpu_s,
        "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count(), "warmup_check_s": warm_s, "phases_s": parts,
        "targets": {"check_s": TARGET_S}, "target_requests": TARGET_REQUESTS,
        # a smoke run's time says nothing of the target
        "meets_targets": check_s <= TARGET_S if args.requests >= TARGET_REQUESTS else None,
        "table": [{"figure": f, "value": v, "target": t, "baseline": b, "baseline_of": bn,
                   "ratio_baseline_over_value": (b / v) if b else None} for f, v, t, b, bn in rows],
    }
    print(f"asd check: {args.requests} requests x 4 tiers, {report['promises']} promises "
          f"({'all hold' if checked['passed'] else 'some fail'}); numba cache warm (warm-up run {warm_s:.2f} s); "
          f"load average {report['load_average_1min']:.1f} on {report['cpus']} CPUs")
    print(f"{'figure':48} {'value':>10} {'target':>8} {'baseline':>10} {'ratio':>7}  baseline")
    for f, v, t, b, bn in rows:
        target = f"<= {t:g}" if t else "—"
        base = f"{b:.3f}" if b else "—"
        ratio = f"{b / v:.1f}x" if b else "—"
        print(f"{f:48} {v:>10.3f} {target:>8} {base:>10} {ratio:>7}  {bn or ''}")
    print("meets targets:", report["meets_targets"] if report["meets_targets"] is not None
          else not_judged(args.requests, TARGET_REQUESTS))
    if args.json_path:
        atomic_write(args.json_path, (json.dumps(report, indent=2) + "\n").encode())
    return report


if __name__ == "__main__":
    main()
