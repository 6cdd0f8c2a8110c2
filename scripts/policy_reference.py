"""Is the policy limited by the engine or by the features? Compares asd's pooled cross-fitted
policy with a learned reference on the same requests, folds, costs and features: fitted-Q with
boosted trees over every feature (`asd.simulator.fitted_q`), at 1, 2 and 3 % quality loss
against always-last.

    python scripts/policy_reference.py BUNDLE [--folds 5] [--seed 0] [--cost-model params] [--points 25] [--json PATH]

If the reference is no cheaper than the policy at the same quality, better use of these
features will not close the gap to the oracle; better features (or logprobs) might.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LOSSES = (0.01, 0.02, 0.03)


def main(argv=None) -> int:
    sys.path.insert(0, str(REPO))
    from asd.cli import JsonPath
    from asd.errors import AsdError
    from asd.fsutil import atomic_write
    from asd.calibration.calibrate import require_labels
    from asd.calibration.views import load_view
    from asd.simulator.evaluate import Evaluation
    from asd.simulator.fitted_q import fitted_q_reference
    from asd.simulator.sweep import cheapest_within, sweep

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="a trace bundle, or 'builtin'")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="fold seed (and the trees' seed)")
    parser.add_argument("--cost-model", default="params", choices=["trace", "profile", "params"])
    parser.add_argument("--points", type=int, default=25, help="value weights μ on the reference's grid")
    parser.add_argument("--json", type=Path, help="write both frontiers and the comparison here")
    args = parser.parse_args(argv)
    try:
        if args.points < 2:
            raise AsdError(f"--points {args.points}: need at least 2")
        if args.seed < 0:
            raise AsdError(f"--seed {args.seed}: need a seed >= 0")
        if args.json:
            JsonPath().convert(str(args.json), None, None)  # before the work, as the CLI does
        view = load_view(args.bundle)
        require_labels(view, np.arange(view.n_requests), "policy_reference.py")  # before calibrating
        ev = Evaluation(view, folds=args.folds, cost_model=args.cost_model, seed=args.seed)
        result = sweep(evaluation=ev)
        mus = np.geomspace(0.1, 1000.0, args.points)
        reference = [p.as_dict() for p in fitted_q_reference(
            ev, mus, seed=args.seed, progress=lambda j, n: print(f"\rfitted-Q: μ {j + 1} of {n}", end="",
                                                                 file=sys.stderr, flush=True))]
        print(file=sys.stderr)
        last = result["quality_check"]["always_last_quality"]
        rows = []
        for loss in LOSSES:
            floor = last * (1.0 - loss)
            policy, ref = cheapest_within(result["policy"], floor), cheapest_within(reference, floor)
            rows.append({"loss": loss, "quality_floor": floor,
                         "policy_cost": None if policy is None else policy["cost_rel"],
                         "reference_cost": None if ref is None else ref["cost_rel"]})
        oracle = result["quality_check"]["oracle"]["cost_rel"]
        print(f"{args.bundle}: {ev.design['description']}; cost model {ev.cost_model.kind}; "
              f"oracle cost {oracle:.3f}")
        print("loss  quality ≥   policy cost   fitted-Q cost")
        for r in rows:
            policy_cost, reference_cost = (("n/a" if c is None else f"{c:.3f}") for c in
                                           (r["policy_cost"], r["reference_cost"]))
            print(f"{100 * r['loss']:3.0f}%  {r['quality_floor']:9.4f}   {policy_cost:>11}   {reference_cost:>13}")
        if args.json:
            atomic_write(args.json, json.dumps({"bundle": str(args.bundle), "seed": args.seed,
                                                     "cost_model": ev.cost_model.kind, "comparison": rows,
                                                     "policy": result["policy"], "fitted_q": reference}, indent=1).encode())
    except AsdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the --json target went away during the run
        print(f"error: {args.json}: cannot write --json ({exc.strerror or exc})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
