"""Feature extraction throughput (`asd.calibration.compute_features`), in (request, tier)
feature rows per second, on two synthetic 4-tier workloads of --requests requests.

Workloads:
- numeric: logprob/entropy summaries, token counts, timings and drafts, no text (what a
  recorded GPU trace at scale looks like);
- text: the same plus short answer texts in mixed formats ("The answer is (B).", numbers with
  commas, JSON answers, free prose), so the answer parser and agreement features run.

Baseline, measured in the same run on the same data: the plain pandas pipeline it replaces —
a long (request, tier) DataFrame, `DataFrame.apply` of the same answer parser, groupby/shift
for the previous tier, a row-wise apply for the text similarity, vectorised string counts for
the hedging rate, then one pivot per feature.

    python benchmarks/bench_features.py [--requests 100000] [--json PATH]

Target (issue 7): >= 1e5 feature rows/s on the numeric workload.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asd.fsutil import atomic_write  # noqa: E402
from benchmarks.common import refuse_unwritable_json  # noqa: E402
from asd.traces.synth import MAX_REQUESTS, MIN_REQUESTS  # noqa: E402

TARGET_ROWS_PER_S = 1e5
_ANSWER_TEMPLATES = (
    "Let's think step by step. The total is {n:,} so the answer is ({l}).",
    "The answer is {n:,}.",
    '{{"reasoning": "added the parts", "answer": "{l}"}}',
    "{l}",
    "After checking each option, {w} fits best.",
    "#### {n}",
)
_WORDS = ("Paris", "the mitochondria", "photosynthesis", "a prime number", "Newton", "entropy")


def make_texts(n_rows: int, seed: int) -> list[str]:
    """Short answers in mixed formats; nearby tiers often repeat an answer (as real ladders do)."""
    rng = np.random.default_rng(seed)
    template = rng.integers(0, len(_ANSWER_TEMPLATES), n_rows)
    numbers = rng.integers(0, 3000, n_rows)
    letters = rng.choice(list("ABCD"), n_rows)
    words = rng.choice(_WORDS, n_rows)
    return [_ANSWER_TEMPLATES[t].format(n=int(x), l=l, w=w) for t, x, l, w in zip(template, numbers, letters, words)]


def build_bundle(path: Path, n_requests: int, with_text: bool, seed: int):
    from asd.traces.bundle import write_bundle
    from asd.traces.synth import synthesize

    manifest, requests, outputs, drafts = synthesize(n_requests, 4, seed)
    if with_text:
        outputs = outputs.append_column("output", [make_texts(outputs.num_rows, seed)])
    write_bundle(path, manifest, requests, outputs, drafts)


def asd_features(path: Path):
    from asd.calibration.answers import extract_answer
    from asd.calibration.features import compute_features
    from asd.calibration.views import load_view

    extract_answer.cache_clear()
    view = load_view(path)
    t0 = time.perf_counter()
    fs = compute_features(view)
    return time.perf_counter() - t0, view.n_requests * view.n_tiers, fs


def pandas_features(path: Path, with_text: bool):
    """The plain pandas pipeline: long frame → apply/groupby/shift → one pivot per feature.
    Returns (seconds after the Parquet read, feature rows, features)."""
    seconds, x, names = pandas_feature_tensor(path, with_text)
    return seconds, x.shape[0] * x.shape[1], len(names)


def pandas_feature_tensor(path: Path, with_text: bool):
    """The pandas pipeline's (N, L, F) features (requests sorted by id) and their names, and the
    seconds it took after reading the Parquet files."""
    import pandas as pd

    from asd.calibration.answers import PUNCTUATION_TO_SPACE, extract_answer, jaccard, word_set
    from asd.calibration.features import HEDGE_WORDS

    extract_answer.cache_clear()
    columns = ["request_id", "tier", "n_output_tokens", "n_prompt_tokens", "mean_logprob", "min_logprob", "mean_entropy"]
    outputs = pd.read_parquet(path / "outputs.parquet", columns=columns + (["output"] if with_text else []))
    drafts = pd.read_parquet(path / "drafts.parquet", columns=["request_id", "verify_tier", "n_draft_tokens", "n_accepted"])
    t0 = time.perf_counter()
    df = outputs.sort_values(["request_id", "tier"]).reset_index(drop=True)
    feats = pd.DataFrame({"request_id": df.request_id, "tier": df.tier})
    feats["logprob_mean"] = df.mean_logprob.fillna(0.0)
    feats["logprob_min"] = df.min_logprob.fillna(0.0)
    feats["logprob_missing"] = df.mean_logprob.isna().astype(float)
    feats["entropy_mean"] = df.mean_entropy.fillna(0.0)
    feats["log_output_tokens"] = np.log1p(df.n_output_tokens.fillna(0.0))
    feats["log_prompt_tokens"] = np.log1p(df.n_prompt_tokens.fillna(0.0))
    d = drafts.rename(columns={"verify_tier": "tier"})
    d["draft_accept_share"] = (d.n_accepted / d.n_draft_tokens).fillna(0.0)
    feats = feats.merge(d[["request_id", "tier", "draft_accept_share"]], on=["request_id", "tier"], how="left")
    feats["draft_accept_share"] = feats.draft_accept_share.fillna(0.0)
    if with_text:
        feats["answer"] = df.output.apply(lambda t: extract_answer(t).key)
        feats["prev_answer"] = feats.groupby("request_id").answer.shift(1)
        feats["agree_prev"] = ((feats.answer == feats.prev_answer) & feats.answer.notna()).astype(float)
        feats["text"] = df.output
        feats["prev_text"] = feats.groupby("request_id").text.shift(1)
        feats["similarity_prev"] = feats.apply(
            lambda row: jaccard(word_set(row.text), word_set(row.prev_text)) if isinstance(row.prev_text, str) else 0.0,
            axis=1,
        )
        words = df.output.fillna("").str.casefold().str.translate(PUNCTUATION_TO_SPACE).str.split().str.join(" ")
        hedges = words.str.count(r"\b(?:" + "|".join(HEDGE_WORDS) + r")\b")
        feats["hedge_rate"] = np.where(words != "", 100.0 * hedges / (words.str.count(" ") + 1), 0.0)
        feats = feats.drop(columns=["answer", "prev_answer", "text", "prev_text"])
    names = [c for c in feats.columns if c not in ("request_id", "tier")]
    grids = [feats.pivot(index="request_id", columns="tier", values=name).to_numpy() for name in names]
    x = np.stack(grids, axis=-1)
    return time.perf_counter() - t0, x, names


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    if not MIN_REQUESTS <= args.requests <= MAX_REQUESTS:  # the synthetic trace's range
        parser.exit(2, f"error: --requests {args.requests}: need {MIN_REQUESTS}..{MAX_REQUESTS}\n")
    refuse_unwritable_json(parser, args.json_path)

    import tempfile

    report = {"n_requests": args.requests, "n_tiers": 4, "target_rows_per_s": TARGET_ROWS_PER_S, "workloads": {}}
    with tempfile.TemporaryDirectory(prefix="asd-bench-features-") as tmp:
        for name, with_text in (("numeric", False), ("text", True)):
            path = Path(tmp) / name
            build_bundle(path, args.requests, with_text, args.seed)
            ours_s, rows, fs = asd_features(path)
            base_s, base_rows, base_features = pandas_features(path, with_text)
            report["workloads"][name] = {
                "feature_rows": rows,
                "n_features": len(fs.names),
                "groups": fs.groups,
                "seconds": ours_s,
                "features_per_s": rows / ours_s,
                "baseline": "pandas: apply of the same answer parser, groupby/shift, row-wise apply, pivot per feature",
                "baseline_seconds": base_s,
                "baseline_features_per_s": base_rows / base_s,
                "baseline_n_features": base_features,
                "ratio": (rows / ours_s) / (base_rows / base_s),
                # The baseline computes fewer features per row: compare values too.
                "feature_values_per_s": rows * len(fs.names) / ours_s,
                "baseline_feature_values_per_s": base_rows * base_features / base_s,
            }
    numeric = report["workloads"]["numeric"]
    report["features_per_s"] = numeric["features_per_s"]
    report["meets_target"] = numeric["features_per_s"] >= TARGET_ROWS_PER_S
    print(f"feature extraction: {args.requests} requests x 4 tiers (rows = (request, tier) feature vectors)")
    print(f"{'workload':9} {'features':>8} {'rows/s':>12} {'goal':>10} {'pandas rows/s':>14} {'pandas feats':>12} "
          f"{'ratio':>7} {'values/s ratio':>14}")
    for name, w in report["workloads"].items():
        goal = f">= {TARGET_ROWS_PER_S:,.0f}" if name == "numeric" else "—"
        values_ratio = w["feature_values_per_s"] / w["baseline_feature_values_per_s"]
        print(f"{name:9} {w['n_features']:>8} {w['features_per_s']:>12,.0f} {goal:>10} "
              f"{w['baseline_features_per_s']:>14,.0f} {w['baseline_n_features']:>12} {w['ratio']:>6.1f}x {values_ratio:>13.1f}x")
    print("meets target:", report["meets_target"])
    if args.json_path:
        atomic_write(args.json_path, (json.dumps(report, indent=2) + "\n").encode())
    return report


if __name__ == "__main__":
    main()
