"""Fit time of one calibrated stage predictor against the issue's goal: 10^5 requests × 30
features, logistic, 5 folds grouped by request, cross-fitted isotonic calibration, on one thread.
The goal is the issue's ≤ 30 s for 10^5 requests × 4 tiers end to end, shared over stage 0 and
four tiers (≤ 6 s a stage). Baseline, measured in the same run: the plain scikit-learn way to get
honest calibrated out-of-fold p̂ — `cross_val_predict` over `CalibratedClassifierCV(isotonic)`.

The goal is for 10^5 requests: a smaller run (a smoke run) is not judged (meets_goal null).

    python benchmarks/bench_predictors.py [--json PATH] [--requests N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sklearn.calibration import CalibratedClassifierCV  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GroupKFold, cross_val_predict  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from asd.calibration.metrics import auroc, ece  # noqa: E402
from asd.calibration.predictors import fit_stage  # noqa: E402
from asd.fsutil import atomic_write  # noqa: E402
from benchmarks.common import not_judged, refuse_unwritable_json  # noqa: E402

N_FEATURES = 30
GOAL_S = 6.0
GOAL_REQUESTS = 100_000  # the size GOAL_S is for
MIN_REQUESTS = 100  # fewer: scikit-learn's nested 5-fold calibration may find under 5 of a class


def stage_data(n, seed=0):
    """Features with mixed scales, acceptance through a non-logistic link (so isotonic matters),
    two rows per request id."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)) * rng.uniform(0.1, 50.0, N_FEATURES)
    z = (X / X.std(0)) @ (rng.normal(size=N_FEATURES) * 0.3)
    y = (rng.random(n) < 0.1 + 0.8 / (1.0 + np.exp(-z))).astype(float)
    return X, y, np.arange(n) // 2


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", dest="json_path", help="write the figures as JSON here")
    ap.add_argument("--requests", type=int, default=100_000)
    args = ap.parse_args(argv)
    if args.requests < MIN_REQUESTS:
        ap.exit(2, f"error: --requests {args.requests}: need at least {MIN_REQUESTS}\n")
    refuse_unwritable_json(ap, args.json_path)
    X, y, groups = stage_data(args.requests)
    fit_s, fit = timed(lambda: fit_stage("logistic", X, y, groups, folds=5, seed=0))

    def plain_sklearn():
        model = CalibratedClassifierCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)),
                                       method="isotonic", cv=5)
        with threadpool_limits(limits=1):
            return cross_val_predict(model, X, y, groups=groups, cv=GroupKFold(5), method="predict_proba")[:, 1]

    base_s, base_p = timed(plain_sklearn)
    judged = args.requests >= GOAL_REQUESTS  # a smoke run's time says nothing of the goal
    figures = {
        "requests": args.requests, "features": N_FEATURES, "folds": 5,
        "stage_fit_s": fit_s, "goal_s": GOAL_S, "goal_requests": GOAL_REQUESTS,
        "meets_goal": fit_s <= GOAL_S if judged else None, "baseline_s": base_s, "ratio": base_s / fit_s,
        "oof_ece": fit.metrics["ece"], "oof_auroc": fit.metrics["auroc"],
        "baseline_oof_ece": ece(y, base_p), "baseline_oof_auroc": auroc(y, base_p),
        "isotonic_knots": int(fit.iso_x.size),
    }
    print(f"predictor benchmark — {args.requests} requests × {N_FEATURES} features, logistic, 5 grouped folds, "
          f"1 thread; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'figure':34} {'value':>10} {'goal':>8} {'baseline':>10} {'ratio':>7}  ok")
    met = (not_judged(args.requests, GOAL_REQUESTS) if not judged
           else "yes" if figures["meets_goal"] else "NO")
    print(f"{'stage_fit_s (fit_stage, logistic)':34} {fit_s:>10.2f} {GOAL_S:>8.1f} {base_s:>10.2f} "
          f"{base_s / fit_s:>7.1f}  {met}")
    print(f"out of fold: ECE {figures['oof_ece']:.4f} (baseline {figures['baseline_oof_ece']:.4f}), "
          f"AUROC {figures['oof_auroc']:.4f} (baseline {figures['baseline_oof_auroc']:.4f}); "
          f"{figures['isotonic_knots']} isotonic knots")
    print("baseline: cross_val_predict(CalibratedClassifierCV(StandardScaler → LogisticRegression, isotonic, cv=5), "
          "GroupKFold(5))")
    if args.json_path:
        atomic_write(args.json_path, (json.dumps(figures, indent=2) + "\n").encode())
    return figures


if __name__ == "__main__":
    main()
