"""How often the state the simulator does not model would change a decision: a request that stage 0
starts cold at tier 1 and that then climbs to tier 2 has, live, no answer from tier 0, so its
`agree_any_prev`, `agree_count_prev` and `agree_share_prev` at tier 2 count tier 1 alone, while the
replay reads them with tier 0 too. On a 4-tier ladder that is the only climb after a cold start that
ends in a decision (tier 3 always stops).

Per real 4-tier ladder in ../shared/data (or $ASD_SHARED_DATA), imported into a temporary directory
as `benchmarks/bench_policy_quality.py` imports it, calibrated as `asd sweep --cost-model params`
does (pooled 5-fold cross-fitting, fold seed 0), at every EVERY-th distinct policy: the held-out
requests started at tier 1 that reach tier 2, and how many of them would decide differently at tier
2 with those three features counted over tier 1 alone (as the live runner computes them).

    python scripts/resumed_state.py [--ladders KEY,...] [--every 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_policy_quality import SHARED_DATA, import_ladder  # noqa: E402

FOUR_TIER_LADDERS = ("alpaca-phi2-llama2-chat", "alpaca-gemma-vicuna-openbuddy", "mmlu-llama2-qwen110")


def resumed_tier2(tier_x: np.ndarray, names: list[str]) -> np.ndarray:
    """tier_x with tier 2's agreement counts over tier 1 alone: there they are tier 2's agreement
    with tier 1 (`agree_prev`), and its share is that over an answered tier 1."""
    c = {n: names.index(n) for n in ("agree_prev", "prev_answered", "agree_any_prev", "agree_count_prev",
                                     "agree_share_prev")}
    out = np.array(tier_x, dtype=np.float64)
    agree = out[:, 2, c["agree_prev"]]
    out[:, 2, c["agree_any_prev"]] = agree
    out[:, 2, c["agree_count_prev"]] = agree
    out[:, 2, c["agree_share_prev"]] = np.where(out[:, 2, c["prev_answered"]] > 0, agree, 0.0)
    return out


def measure(key: str, scratch: Path, every: int) -> dict:
    from asd.calibration.views import load_view
    from asd.simulator.evaluate import Evaluation

    import_ladder(key, SHARED_DATA, scratch / key)
    view = load_view(scratch / key)
    ev = Evaluation(view, folds=5, cost_model="params", predictor="logistic", stage0=True, risk="mean", seed=0)
    names = list(ev.features.names)
    resumed = [f.policy.tier_bins(resumed_tier2(ev.features.tier_x[f.held], names))[:, 2] for f in ev.folds]
    lams = ev.distinct_policy_lambdas()[::every]
    most_walks = most_differ = walks = differ = 0
    for lam in lams:
        walks_here = differ_here = 0
        for f, bins in zip(ev.folds, resumed):
            o = f.walk(lam)  # solves f.policy at λ
            climbed = (o.start == 1) & (o.stop >= 2)
            stop = f.policy.stop_table[2]
            walks_here += int(climbed.sum())
            differ_here += int((stop[f.tier_bins[climbed, 2]] != stop[bins[climbed]]).sum())
        most_walks, most_differ = max(most_walks, walks_here), max(most_differ, differ_here)
        walks, differ = walks + walks_here, differ + differ_here
    return {"ladder": key, "n_requests": view.n_requests, "lambdas": len(lams), "most_walks": most_walks,
            "most_differ": most_differ, "walks": walks, "differ": differ}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ladders", default=",".join(FOUR_TIER_LADDERS), help="comma-separated keys (default: "
                    f"{', '.join(FOUR_TIER_LADDERS)})")
    ap.add_argument("--every", type=int, default=5, help="every EVERY-th distinct policy (default 5)")
    args = ap.parse_args(argv)
    keys = [k.strip() for k in args.ladders.split(",")]
    unknown = [k for k in keys if k not in FOUR_TIER_LADDERS]
    if unknown:
        ap.exit(2, f"error: {unknown[0]!r} is not one of the 4-tier ladders {', '.join(FOUR_TIER_LADDERS)}\n")
    if args.every < 1:
        ap.exit(2, f"error: --every {args.every}: need at least 1\n")
    if not SHARED_DATA.is_dir():
        ap.exit(2, f"error: real public data not found at {SHARED_DATA} (set ASD_SHARED_DATA)\n")
    print(f"{'ladder':32} {'N':>6} {'λ values':>8} {'walks, most':>11} {'differ, most':>12}  all")
    with tempfile.TemporaryDirectory(prefix="asd-resumed-") as scratch:
        for key in keys:
            r = measure(key, Path(scratch), args.every)
            print(f"{key:32} {r['n_requests']:>6} {r['lambdas']:>8} {r['most_walks']:>11} {r['most_differ']:>12} "
                  f" {r['differ']} of {r['walks']}")


if __name__ == "__main__":
    main()
