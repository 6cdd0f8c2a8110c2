"""Calibration against issue 7's targets: the fit time of `asd.calibration.calibrate` on 10^5 requests × 4 tiers with the logistic predictor on one core (`fit_s_100k`, goal ≤ 30 s) and feature extraction throughput on the same bundle (`features_per_s`, (request, tier) feature rows per second, goal ≥ 1e5), each against the plain pandas/scikit-learn pipeline it replaces, measured in the same run.

Workload: a synthetic bundle from `asd.traces.synth.write_synthetic_bundle(path, N, 4, seed)`
(logprobs, entropies, token counts, timings, drafts; no answer text).

fit_s_100k times everything `asd calibrate` does from the bundle directory to a solved Policy:
Parquet read into the dense view, causal features (climbed and cold state), one calibrated
logistic predictor per tier fitted on both states (tiers 1-3: 2N rows) with 5 grouped folds and
cross-fitted isotonic calibration, the prompt-only stage-0 predictor, the trace cost model and
the engine tables. Baseline: pandas read + the pandas feature pipeline of bench_features.py
(long frame, groupby/shift, one pivot per feature) + a pivot of the labels, then per tier
`cross_val_predict(CalibratedClassifierCV(StandardScaler → LogisticRegression, isotonic, cv=5),
GroupKFold(5))` for out-of-fold p̂ and one final CalibratedClassifierCV fit on every row — the
climbed state only, no stage 0, no tables (less work than ours). Both on one thread (numba and
BLAS limited to 1).

features_per_s: `compute_features` on the view (after the read), against bench_features.py's
pandas pipeline on the same bundle (after its read).

Both goals are for 10^5 requests: a smaller run (a smoke run) keeps the figures' keys, records
the size it ran in `requests`, and is not judged (meets_goal and meets_goals null).

    python benchmarks/bench_calibrate.py [--requests 100000] [--seed 0] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numba  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from bench_features import asd_features, pandas_feature_tensor  # noqa: E402

from asd.fsutil import atomic_write  # noqa: E402
from benchmarks.common import not_judged, refuse_unwritable_json  # noqa: E402
from asd.traces.synth import MAX_REQUESTS  # noqa: E402

GOALS = {  # key: (goal, "higher" | "lower", unit)
    "fit_s_100k": (30.0, "lower", "s"),
    "features_per_s": (1e5, "higher", "rows/s"),
}
GOAL_REQUESTS = 100_000  # the size both goals are for
MIN_REQUESTS = 100  # fewer: calibrate's fold models may differ by chance past its own consistency check
N_TIERS = 4
FOLDS = 5


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def asd_calibrate(path: Path):
    from asd.calibration.calibrate import calibrate

    return calibrate(path, predictor="logistic", folds=FOLDS, seed=0)


def plain_pipeline(path: Path):
    """pandas + scikit-learn: features and labels pivoted to (N, L), per tier out-of-fold
    calibrated p̂ by cross_val_predict and a final calibrated model. Returns the OOF p̂ (N, L)."""
    import pandas as pd
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, x, _ = pandas_feature_tensor(path, with_text=False)
    labels = pd.read_parquet(path / "outputs.parquet", columns=["request_id", "tier", "quality", "accepted"])
    labels["y"] = labels.accepted.astype(float).where(labels.accepted.notna(), (labels.quality >= 0.5).astype(float))
    y = labels.pivot(index="request_id", columns="tier", values="y").to_numpy()
    groups = np.arange(x.shape[0])
    oof = np.full(y.shape, np.nan)

    def model():
        return CalibratedClassifierCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)),
                                      method="isotonic", cv=FOLDS)

    for i in range(y.shape[1]):
        known = ~np.isnan(y[:, i])
        xi, yi = x[known, i], y[known, i]
        oof[known, i] = cross_val_predict(model(), xi, yi, groups=groups[known], cv=GroupKFold(FOLDS),
                                          method="predict_proba")[:, 1]
        model().fit(xi, yi)  # the model a user would deploy
    return oof


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_path", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if not MIN_REQUESTS <= args.requests <= MAX_REQUESTS:
        ap.exit(2, f"error: --requests {args.requests}: need {MIN_REQUESTS}..{MAX_REQUESTS}\n")
    refuse_unwritable_json(ap, args.json_path)
    from asd.calibration.metrics import auroc
    from asd.traces.synth import write_synthetic_bundle

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    table, notes = [], []
    judged = args.requests >= GOAL_REQUESTS  # a smoke run's figures say nothing of the goals

    def row(key, label, value, baseline, baseline_note):
        goal, better, unit = GOALS[key]
        ratio = (baseline / value if better == "lower" else value / baseline) if value and baseline else None
        table.append({"key": key, "figure": label, "value": value, "unit": unit, "goal": goal, "better": better,
                      "baseline": baseline, "ratio": ratio, "baseline_note": baseline_note,
                      "requests": args.requests, "goal_requests": GOAL_REQUESTS,
                      "meets_goal": bool(value <= goal if better == "lower" else value >= goal) if judged else None})

    with tempfile.TemporaryDirectory(prefix="asd-bench-calibrate-") as tmp, threadpool_limits(limits=1):
        path = Path(tmp) / "synth"
        write_synthetic_bundle(path, args.requests, N_TIERS, args.seed)
        asd_calibrate(write_small(Path(tmp)))  # compile numba kernels outside the timing
        fit_s, cal = timed(lambda: asd_calibrate(path))
        base_s, base_oof = timed(lambda: plain_pipeline(path))
        row("fit_s_100k", f"fit_s_{args.requests // 1000}k (calibrate, logistic, 1 core)", fit_s, base_s,
            "pandas read + pandas feature pivots + per-tier cross_val_predict(CalibratedClassifierCV(isotonic)) "
            "+ final fit (climbed state only, no stage 0, no tables)")
        y = cal.view.acceptable
        ours_auc = [auroc(y[:, i], cal.p_climb[:, i]) for i in range(N_TIERS)]
        base_auc = [auroc(y[:, i], base_oof[:, i]) for i in range(N_TIERS)]
        notes.append("out-of-fold AUROC per tier: calibrate " + ", ".join(f"{a:.3f}" for a in ours_auc)
                     + "; baseline " + ", ".join(f"{a:.3f}" for a in base_auc))

        feat_s, rows, fs = asd_features(path)
        pandas_s, _, names = pandas_feature_tensor(path, with_text=False)
        row("features_per_s", f"features_per_s (compute_features, {len(fs.names)} features)", rows / feat_s,
            rows / pandas_s, f"bench_features.py pandas pipeline, same bundle ({len(names)} features)")
        notes.append(f"features: {rows:,} (request, tier) rows in {feat_s:.2f} s; pandas {pandas_s:.2f} s")
    numba.set_num_threads(threads)

    load = os.getloadavg()[0]
    report = {**{r["key"]: r["value"] for r in table}, "table": table, "notes": notes, "requests": args.requests,
              "tiers": N_TIERS, "folds": FOLDS, "cpu_count": os.cpu_count(), "load_average_1min": load,
              "goal_requests": GOAL_REQUESTS,
              "meets_goals": all(r["meets_goal"] for r in table) if judged else None}
    print(f"calibration benchmark — {args.requests:,} requests x {N_TIERS} tiers, logistic, {FOLDS} grouped folds, "
          f"1 core; {os.cpu_count()} CPUs, load average {load:.2f} (shared machine: figures vary run to run)")
    print(f"{'figure':52}  {'value':>12} {'goal':>10} {'baseline':>12} {'ratio':>8}  met")
    unjudged = not_judged(args.requests, GOAL_REQUESTS)
    for r in table:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.4g}"
        met = unjudged if r["meets_goal"] is None else "yes" if r["meets_goal"] else "NO"
        print(f"{r['figure']:52}  {r['value']:>12.6g} {r['goal']:>10.4g} {r['baseline']:>12.6g} {ratio:>8}  {met}")
    for r in table:
        print(f"  baseline of {r['key']}: {r['baseline_note']}")
    for note in notes:
        print(f"  note: {note}")
    print(f"meets goals: {unjudged if report['meets_goals'] is None else report['meets_goals']}")
    if args.json_path:
        atomic_write(args.json_path, (json.dumps(report, indent=2, allow_nan=False) + "\n").encode())
    return report


def write_small(tmp: Path) -> Path:
    from asd.traces.synth import write_synthetic_bundle

    path = tmp / "warmup"
    write_synthetic_bundle(path, 200, N_TIERS, 1)
    return path


if __name__ == "__main__":
    main()
