"""From a trace bundle to a Policy: the one path that turns recorded outputs into the artifact
`asd simulate`, `asd check`, `asd live` and `asd serve` run unchanged.

Steps: dense view → causal features (climbed state, and the cold state of a request that
started at a tier) → one calibrated predictor per tier, fitted on both states with the
`cold_start` flag telling them apart, and a prompt-only predictor for stage 0 → engine tables
built from the predictors' own OUT-OF-FOLD p̂ (in-sample p̂ would be overconfident, and tables
from another model would drift from the decisions) → the cost/latency model → a Policy whose
header carries the feature spec, the cost model and the bundle it came from.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from asd import __version__
from asd.calibration.costs import COST_MODELS, CostGrid, CostModel, fit_cost_model
from asd.calibration.features import FeatureSet, compute_features, parse_groups
from asd.calibration.id_sketch import request_id_sketch
from asd.calibration.metrics import auroc, best_single_feature, reliability_plot, stage_metrics
from asd.calibration.predictors import PREDICTORS, StageFit, fit_stage, group_folds, stack_predictor
from asd.calibration.prompt_text import PromptTextModel, PromptTokens, attach_prompt_text, fit_prompt_text
from asd.calibration.views import TraceView, load_view
from asd.engine import Policy
from asd.errors import ConfigError

DEFAULT_FOLDS = 5
# Pseudo-observations of each tier's Beta prior, centred on the tier's overall acceptance rate
# (engine `build_tables(prior_strength=...)`): a thin bin leans toward the tier, not toward 1/2.
DEFAULT_PRIOR_STRENGTH = 2.0
# A bin's acceptance counts each request's label and its calibrated out-of-fold p̂ half each. A bin
# holds a few dozen requests on a ladder of hundreds, and its label noise decided where the DP
# stopped; p̂ alone inherits the calibration map's error in the bin (on the 600-request built-in
# trace the main job's quality fell from 0.412 to 0.388 with p̂ only). Pooled 5-fold GPU cost at
# 1-3 % loss against always-last, `params`, mean of fold seeds 0-2, labels → half each (→ p̂ only):
# AlpacaEval Llama-2-chat 0.731 → 0.659 (0.644), GSM8K Mixtral → GPT-4 0.893 → 0.872 (0.881),
# option-logits Qwen 0.342 → 0.336 (0.337), MMLU-Pro Llama-3.1 0.956 → 0.953, MMLU-Pro Llama-2
# 0.885 → 0.887 (0.886); the built-in trace 1.000 throughout.
DEFAULT_P_HAT_WEIGHT = 0.5
MIN_BINS, MAX_BINS = 4, 20
# The DP stops or goes on per bin, so its cuts can fall only on bin edges: with √N/2 bins the
# threshold cascade, which cuts at every p̂, found points between them. By default the tables have
# BIN_REFINE times `default_bins` bins, and each bin's statistics pool the bins up to BIN_REFINE
# away (`build_tables(pool_bins=)`, triangular weights: about 1.25 default bins of requests), so
# the cuts are finer while each estimate rests on as many requests as before. Pooled 5-fold GPU
# cost at 1-3 % loss against always-last, `params`, mean of fold seeds 0-2, default bins → 4x
# pooled ±4: AlpacaEval Llama-2-chat 0.659 → 0.638, GSM8K Mixtral → GPT-4 0.872 → 0.868,
# option-logits Qwen 0.336 → 0.334, MMLU-Pro Llama-2 0.887 → 0.881, MMLU-Pro Llama-3.1 0.953 →
# 0.952, option-logits Llama-2 0.970 both. More bins without pooling cost more on AlpacaEval (0.683
# at 2x, 0.691 at 3x); 2x or 3x pooled ±2 or ±3 were within 0.015 of 4x on every ladder, either way.
# The built-in trace's main job (p95 ≤ 800 ms) held 0.418 on fold seed 0 (0.418, 0.410 on seeds 1-2,
# against 0.422, 0.418 before: 2-5 of its 600 requests).
BIN_REFINE = 4


def default_bins(n_requests: int) -> int:
    """Bins per tier: about √N / 2, within [4, 20] — enough requests per bin that each Beta
    posterior and transition row rests on data, enough bins to separate easy from hard."""
    return int(np.clip(round(math.sqrt(max(n_requests, 1)) / 2), MIN_BINS, MAX_BINS))


MIN_REQUESTS_PER_PROMPT_BIN, MAX_PROMPT_BINS = 200, 5


def default_tier_bins(n_requests: int) -> tuple[int, int]:
    """(bins, pool_bins) of `calibrate` without --bins: BIN_REFINE times `default_bins`, pooled
    ±BIN_REFINE (see BIN_REFINE); fewer times where the requests are too few to fill the bins."""
    coarse = default_bins(n_requests)
    refine = int(np.clip(n_requests // coarse, 1, BIN_REFINE))
    return coarse * refine, (refine if refine > 1 else 0)


def default_prompt_bins(n_requests: int) -> int:
    """Stage-0 bins: at least 200 requests each, at most 5. A skip is chosen by comparing the
    start tiers' values within one prompt bin; with a few dozen requests per bin the difference
    is noise (±0.1 in acceptance), and stage 0 skips to a worse tier on a lucky bin. At most 5:
    prompt-only scores are weak (stage-0 AUROC 0.55-0.65 on the real ladders), and each bin's
    start is the best of L replayed means, which more, thinner bins make luckier. Against 10,
    GPU cost at 1-3% loss (pooled 5 folds, seeds 0-2) was lower or within 0.005 on all four
    ladders of over 2,000 requests: MMLU-Pro Llama-2 0.876/0.889/0.879 -> 0.854/0.867/0.884,
    option-logits Llama-2 0.963/0.960/0.964 -> 0.960/0.956/0.957, option-logits Qwen and
    MMLU-Pro Llama-3.1 within 0.003."""
    return int(np.clip(n_requests // MIN_REQUESTS_PER_PROMPT_BIN, 1, MAX_PROMPT_BINS))


def default_cost_model(view: TraceView) -> str:
    """`trace` when every tier has recorded end-to-end timings, else the hardware `profile`."""
    timed = np.isfinite(view.e2e_ms).any(axis=0)
    return "trace" if timed.size and timed.all() else "profile"


def split_rows(view: TraceView, split: str | None) -> tuple[np.ndarray, str]:
    """Rows to calibrate on and a sentence saying which: the named split when the bundle has a
    split column, else every request."""
    has_split = view.has_split
    if split is None or not has_split:
        reason = "every request (the bundle has no split column)" if not has_split else "every request"
        return np.arange(view.n_requests), f"{reason}: {view.n_requests} requests"
    rows = np.flatnonzero(view.split == split)
    if rows.size == 0:
        known = sorted({s for s in view.split if s is not None})
        raise ConfigError(f"{view.path}: no request in split {split!r} (splits: {', '.join(known)})")
    return rows, f"split {split!r}: {rows.size} of {view.n_requests} requests"


def require_ladder(view: TraceView) -> None:
    """Refuse a one-tier bundle: it leaves a policy nothing to decide (and its `fixed-2stage`
    would charge the one tier twice, as draft and as verifier)."""
    if view.n_tiers < 2:
        raise ConfigError(f"{view.path}: one tier ({', '.join(view.tier_names)}); a cascade needs at least two "
                          "to choose between (import the other tiers' runs with it)")


def require_labels(view: TraceView, rows: np.ndarray, what: str) -> None:
    """`what` (a command or option) fits a policy or a predictor on `rows`: refuse, before any
    fitting, a tier none of whose rows carries a quality label, since a fit there would know
    nothing of that tier's answers (it used to write a policy that stops everywhere by default)."""
    labelled = np.isfinite(view.acceptable[rows]).any(axis=0)
    if not labelled.all():
        tier = view.tier_names[int(np.flatnonzero(~labelled)[0])]
        where = "" if rows.size == view.n_requests else f" among the {rows.size} requests it calibrates on"
        raise ConfigError(f"{what}: {view.path} has no quality label at tier {tier}{where}: a policy fitted on it "
                          "would know nothing about that tier's answers (label the bundle first)")


@dataclass
class Calibration:
    """A fitted policy and how it was fitted. Arrays are aligned with `rows` (view rows).

    p_climb / p_cold (n, L): out-of-fold calibrated p̂ after each tier, for a request that
    climbed there / started there cold; p_prompt (n,): out-of-fold stage-0 score (None without
    stage 0); costs: the cost grid of these rows; report: what `asd calibrate` prints (built
    from build_report when first read: a simulation's fold fits never read it, and its metrics
    cost seconds at 10^6 requests); prompt_text: the stage-0 text model (None without one) and
    prompt_x (n, P [+ L]) stage 0's input on these rows (the text logits out of fold)."""

    policy: Policy
    view: TraceView
    features: FeatureSet
    cost_model: CostModel
    rows: np.ndarray
    p_climb: np.ndarray
    p_cold: np.ndarray
    p_prompt: np.ndarray | None
    costs: CostGrid
    fits: list[StageFit]
    prompt_fit: StageFit | None
    build_report: Callable[[], dict] = field(default=dict, repr=False)
    prompt_text: PromptTextModel | None = None
    prompt_x: np.ndarray | None = None
    route_fits: list[StageFit] = field(default_factory=list)  # the routed stage 0's, tiers 1..L−2

    @cached_property
    def report(self) -> dict:
        return self.build_report()

    def oof_bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prompt, climbed, cold) bins of the calibration rows from their out-of-fold p̂ — what
        a λ chosen on calibration data must be judged on."""
        t = self.policy.tables
        tier = np.stack([_bin(self.p_climb[:, i], t.edges[i]) for i in range(t.n_tiers)], axis=1)
        cold = np.stack([_bin(self.p_cold[:, i], t.edges[i]) for i in range(t.n_tiers)], axis=1)
        prompt = (np.zeros(len(self.rows), dtype=np.int64) if self.p_prompt is None
                  else _bin(self.p_prompt, t.edges0))
        return prompt, tier, cold


def _bin(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges[1:-1], p, side="right").astype(np.int64)


def require_folds(view: TraceView, n: int, folds: int) -> None:
    if n < folds:
        raise ConfigError(f"{view.path}: {n} requests to calibrate on; calibration cross-validates each predictor "
                          f"over {folds} folds of requests and needs at least {folds}")


def fit_tier_stages(predictor: str, fs: FeatureSet, rows: np.ndarray, y: np.ndarray, stage0: bool, folds: int,
                    seed: int) -> tuple[list[StageFit], np.ndarray, np.ndarray]:
    """One predictor per tier on the calibration rows: each tier's fit, and its out-of-fold p̂ in
    the climbed state and in the cold one (a request started there by stage 0; the same as
    climbed without stage 0)."""
    n, n_tiers = rows.size, y.shape[1]
    request = np.arange(n)
    fits, p_climb, p_cold = [], np.empty((n, n_tiers)), np.empty((n, n_tiers))
    for i in range(n_tiers):
        climbed = fs.tier_x[rows, i]
        if stage0 and i > 0:  # both states in one model; the cold_start flag tells them apart
            fit = fit_stage(predictor, np.concatenate([climbed, fs.cold_x[rows, i]]),
                            np.concatenate([y[:, i], y[:, i]]), np.concatenate([request, request]),
                            folds=folds, seed=seed)
            p_climb[:, i], p_cold[:, i] = fit.oof_p[:n], fit.oof_p[n:]
        else:
            fit = fit_stage(predictor, climbed, y[:, i], request, folds=folds, seed=seed)
            p_climb[:, i] = p_cold[:, i] = fit.oof_p
        fits.append(fit)
    return fits, p_climb, p_cold


def climbed_metrics(fit: StageFit, y: np.ndarray, p_climb: np.ndarray) -> dict:
    """A tier's out-of-fold metrics in the climbed state, as requests meet it on the way up (a
    stage-0 fit also holds cold copies of the rows, which are not counted here)."""
    labelled = ~np.isnan(y)
    return (stage_metrics(y[labelled], p_climb[labelled], fit.fold[:labelled.size][labelled])
            if labelled.any() else fit.metrics)


def stage0_inputs(view: TraceView, fs: FeatureSet, rows: np.ndarray, y: np.ndarray, prompt_text: bool, folds: int,
                  seed: int, prompt_tokens: PromptTokens | None = None):
    """Stage 0's features on the calibration rows, the prompt text model and its out-of-fold
    logits (None, None without `prompt_text` or where it finds nothing to fit)."""
    prompt_x, text_model, text_oof = fs.prompt_x[rows], None, None
    if prompt_text:
        # What the prompt's words say (a topic, a kind of request) reaches stage 0 as one logit per
        # tier; the hand-made prompt features see only its shape. Pooled 5-fold cost at 1-3% loss
        # fell on every AlpacaEval and option-logits ladder (phi-2 -> Llama-2-chat 0.668 -> 0.554)
        # and three MMLU-Pro ones, and rose 1.3-1.9 points on two (README section 7 has the table).
        text_model, text_oof = fit_prompt_text(view.prompts[rows], y, folds, seed,
                                               None if prompt_tokens is None else prompt_tokens.take(rows))
        if text_model is not None:
            prompt_x = np.hstack([prompt_x, text_oof])
    return prompt_x, text_model, text_oof


def calibrate(
    bundle,
    *,
    rows=None,
    split: str | None = "calibration",
    predictor: str = "logistic",
    groups=None,
    n_bins: int | None = None,
    risk="mean",
    stage0: bool = True,
    cost_model: str | None = None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    lam: float = 1.0,
    features: FeatureSet | None = None,
    single_feature_report: bool = True,
    prior_strength: float | None = DEFAULT_PRIOR_STRENGTH,
    n_prompt_bins: int | None = None,
    p_hat_weight: float = DEFAULT_P_HAT_WEIGHT,
    pool_bins: int | None = None,
    routed_stage0: bool = True,
    prompt_text: bool = True,
    prompt_tokens: PromptTokens | None = None,
    sketch_ids: bool | None = None,
) -> Calibration:
    """Fit a Policy on a bundle (a path, "builtin", a Bundle or a TraceView).

    rows: view rows to fit on (overrides `split`); features: precomputed for the whole view
    (the simulator computes them once for every fold); cost_model: a kind or an already fitted
    CostModel (latency fits use no labels, so the simulator fits one for the whole bundle);
    single_feature_report: compute each tier's best single feature for the report;
    prior_strength: the tables' empirical-Bayes prior (None: Beta(1, 1) in every bin);
    n_prompt_bins: stage-0 bins (default `default_prompt_bins`);
    p_hat_weight: the weight of each calibration row's out-of-fold p̂ against its label in its
    bin's acceptance (`engine.tables.build_tables`; see DEFAULT_P_HAT_WEIGHT);
    n_bins / pool_bins: tier bins, and how many neighbours each bin's statistics pool (None: with
    n_bins None, `default_tier_bins`; with n_bins given, 0 — the bins as asked);
    routed_stage0: with stage0 on three or more tiers, fit the prompt-only routing rows so that
    each solve may route (engine `Policy.route_threshold`); False: stage 0 is the prompt bins'
    start table alone;
    prompt_text: with stage0, fit `prompt_text.fit_prompt_text` on the calibration prompts and give
    stage 0 its per-tier logits beside the prompt features (out of fold on these rows; the model
    itself travels in meta["prompt_text"]); prompt_tokens: the view's prompts already counted,
    every row (`PromptTokens`: the simulator counts a bundle once for all its folds); sketch_ids:
    record a sketch of the rows' request ids in meta, by which `asd check` tells replays of them
    (None: only when `rows` is not given, a policy of its own)."""
    view = bundle if isinstance(bundle, TraceView) else load_view(bundle)
    require_ladder(view)
    if predictor not in PREDICTORS:
        raise ConfigError(f"predictor {predictor!r}: use one of {', '.join(PREDICTORS)}")
    if predictor not in ("logistic", "mlp"):
        raise ConfigError(f"predictor {predictor!r} is an offline reference: a policy needs logistic or mlp "
                          "(compare them with `asd calibrate --predictor gbt-reference --json`)")
    if not (cost_model is None or isinstance(cost_model, CostModel) or cost_model in COST_MODELS):
        # refused before the minutes of fitting, not after them
        raise ConfigError(f"unknown cost model {cost_model!r}; choose one of {', '.join(COST_MODELS)}")
    if sketch_ids is None:  # a policy of its own; the simulator's per-fold fits (rows given) need none
        sketch_ids = rows is None
    if rows is None:
        rows, data_used = split_rows(view, split)
    else:
        rows = np.asarray(rows, dtype=np.int64)
        data_used = f"{rows.size} of {view.n_requests} requests"
        names = set(view.split[rows].tolist()) if view.has_split else set()
        split = names.pop() if len(names) == 1 else None  # what the rows are: they override `split`
    n, n_tiers = rows.size, view.n_tiers
    require_folds(view, n, folds)
    fs = features if features is not None else compute_features(view, groups)
    bins, default_pool = default_tier_bins(n) if n_bins is None else (int(n_bins), 0)
    pool_bins = default_pool if pool_bins is None else pool_bins
    if bins < 1:
        raise ConfigError(f"--bins {n_bins}: must be a positive integer")
    if n < bins:
        raise ConfigError(f"{view.path}: {n} requests to calibrate on, fewer than {bins} bins (use --bins)")

    y = view.acceptable[rows]
    request = np.arange(n)
    fits, p_climb, p_cold = fit_tier_stages(predictor, fs, rows, y, stage0, folds, seed)
    prompt_fit, p_prompt, route_fits = None, None, []
    prompt_x, text_model, text_oof = stage0_inputs(view, fs, rows, y, stage0 and prompt_text, folds, seed,
                                                   prompt_tokens)
    if stage0:
        # Stage 0 decides whether to skip the cheap tier: running it pays off when its answer
        # will do, so the prompt predicts tier 0's acceptance. (The share of tiers acceptable,
        # used before, mixes in whether deeper tiers succeed, which a skip does not hinge on:
        # pooled 5-fold GPU saved at <= 2 % loss, mean of 3 fold seeds, went from -14.8 to -6.1
        # points on AlpacaEval Llama-2-chat and 6.5 to 9.9 on MMLU-Pro Llama-2; within 0.4
        # either way on the other real ladders.)
        prompt_fit = fit_stage(predictor, prompt_x, y[:, 0], request, folds=folds, seed=seed)
        p_prompt = prompt_fit.oof_p
        # The routed stage 0 (engine `Policy`) starts a request at the first tier whose prompt-only
        # P(acceptable) reaches a threshold, where that replays better than the prompt bins: it
        # needs that score for tiers 1..L−2 too (tier 0's is the prompt stage's). Only with a middle
        # tier: on two tiers it would be a finer cut of the prompt bins' own score, which they keep
        # coarse on purpose (see default_prompt_bins); with three or more it says which tier a
        # prompt needs, which that one score cannot.
        routed_stage0 = routed_stage0 and n_tiers >= 3
        route_fits = [fit_stage(predictor, prompt_x, y[:, s], request, folds=folds, seed=seed)
                      for s in range(1, n_tiers - 1)] if routed_stage0 else []

    cal_view = view.subset(rows)
    if isinstance(cost_model, CostModel):
        model = cost_model
    else:
        model = fit_cost_model(cal_view, default_cost_model(view) if cost_model is None else cost_model)
    costs = model.grid(cal_view)
    engine_predictor = stack_predictor(prompt_fit, fits, predictor, route_fits)
    settings = {"split": split if view.has_split else None, "data": data_used, "predictor": predictor,
                "stage0": bool(stage0), "bins": bins, "pool_bins": pool_bins, "p_hat_weight": p_hat_weight}

    def build_report() -> dict:
        report = _report(view, fs, fits, p_climb, prompt_fit, rows, y, model, risk, settings, single_feature_report,
                         groups)
        report["cost_note"] = costs.note  # the model's, how drafts are priced, and any token count filled
        report["prompt_text"] = None if text_model is None else _text_report(text_model, text_oof, y, folds, seed)
        report["p_hat_weight"], report["pool_bins"] = settings["p_hat_weight"], settings["pool_bins"]
        report["route_metrics"] = [
            {"name": view.tier_names[s], **{k: f.metrics.get(k) for k in ("auroc", "brier", "ece")}}
            for s, f in enumerate(route_fits, start=1)]
        return report

    meta = {
        "features": fs.spec.to_dict(),
        "cost_model": model.to_dict(),
        "bundle": {"path": view.path, "content_hash": view.content_hash, "tiers": view.manifest.get("tiers"),
                   "n_requests": view.n_requests},
        "calibration": dict(settings)
        | {"seed": int(seed)}  # it draws the folds of the out-of-fold p̂ the tables are built from
        # stage 0 learnt from prompt text where there was some: a bundle without any is refused
        # for it (`fixed_policy_features`), not replayed on the prompt features' fill values
        | {"prompt_share": float(pd.notna(view.prompts[rows]).mean()) if n else 0.0}
        | ({"request_id_sketch": request_id_sketch(view.request_ids[rows])} if sketch_ids else {}),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "asd_version": __version__,
    }
    if text_model is not None:
        meta["prompt_text"] = text_model.to_dict()
    stage0_arrays = dict(prompt_x=prompt_x, oof_prompt_p=p_prompt, cold_x=fs.cold_x[rows], oof_cold_p=p_cold,
                         oof_route_p=(np.column_stack([f.oof_p for f in route_fits]) if route_fits
                                      else np.zeros((n, 0))) if stage0 and routed_stage0 else None,
                         n_prompt_bins=min(bins, default_prompt_bins(n) if n_prompt_bins is None
                                           else int(n_prompt_bins))) if stage0 else {}
    policy = Policy.from_calibration(engine_predictor, fs.tier_x[rows], y, costs.cost_cont, oof_p=p_climb,
                                     start_costs=costs.cost, n_bins=bins, lam=lam, risk=risk,
                                     prior_strength=prior_strength, empirical_start=bool(stage0),
                                     p_hat_weight=p_hat_weight, pool_bins=pool_bins,
                                     tier_names=view.tier_names, meta=meta, **stage0_arrays)
    attach_prompt_text(policy, text_model)
    return Calibration(policy, view, fs, model, rows, p_climb, p_cold, p_prompt, costs, fits, prompt_fit,
                       build_report, text_model, prompt_x, route_fits)


def _text_report(model: PromptTextModel, oof: np.ndarray, y: np.ndarray, folds: int, seed: int) -> dict:
    """How many terms the text model keeps (the policy file stores them) and its out-of-fold
    AUROC per tier, the mean over its folds as for every stage (None where a tier's labels have
    one class)."""
    fold = group_folds(np.arange(len(y)), folds, seed)  # the folds fit_prompt_text used
    return {"terms": len(model.vocabulary), "auroc": [auroc(y[:, s], oof[:, s], fold) for s in range(y.shape[1])]}


def _report(view, fs, fits, p_climb, prompt_fit, rows, y, model, risk, settings, single_feature_report=True,
            groups=None) -> dict:
    """The fitted stages' metrics (out of fold) and what shaped them (`settings`: as the policy's meta)."""
    tiers = []
    for i, fit in enumerate(fits):
        labelled = ~np.isnan(y[:, i])
        best, best_auc = (best_single_feature(fs.tier_x[rows][labelled, i], y[labelled, i], list(fs.names))
                          if single_feature_report else (None, None))
        m = climbed_metrics(fit, y[:, i], p_climb[:, i])
        tiers.append({"name": view.tier_names[i], "auroc": m.get("auroc"), "brier": m.get("brier"),
                      "ece": m.get("ece"), "n": m.get("n"), "best_feature": best,
                      "best_feature_auroc": best_auc, "notes": list(fit.notes)})
    return {
        "bundle": view.path, "split": settings["split"], "data": settings["data"], "predictor": settings["predictor"],
        "features": list(fs.names), "feature_groups": list(fs.groups), "missing_groups": missing_noted(fs, groups),
        "cost_model": model.kind, "stage0": settings["stage0"],
        "stage0_metrics": None if prompt_fit is None else dict(prompt_fit.metrics),
        "bins": settings["bins"], "risk": risk if risk in ("mean", None) else f"lcb:{float(risk):g}", "tiers": tiers,
        "metrics_note": "out of fold (K-fold grouped by request; AUROC the mean over folds; ECE with 10 equal-width bins)",
    }


def missing_noted(fs: FeatureSet, groups) -> dict[str, str]:
    """The missing feature groups a report notes: by default (every group the trace supports)
    each one the trace lacks; with groups named (--features) only those among them, as the
    others were not asked for (`--features length` noted "no format features: no output text
    in trace")."""
    if groups is None:
        return dict(fs.missing_groups)
    named = set(parse_groups(groups))
    return {g: why for g, why in fs.missing_groups.items() if g in named}


def save_reliability(cal: Calibration, path) -> None:
    """The reliability diagram of every tier's out-of-fold p̂ (PNG)."""
    curves = {name: fit.curve(len(cal.rows)) for name, fit in zip(cal.view.tier_names, cal.fits)}
    reliability_plot(curves, path, title="out-of-fold reliability per tier")


def calibrate_to_file(bundle, out, *, predictor="logistic", groups=None, n_bins=None, risk="mean", stage0=True,
                      cost_model=None, split="calibration", lam=1.0, seed=0, plots=None, prompt_text=True) -> dict:
    """`asd calibrate`: fit, write the policy file, optionally the reliability diagram; the report.
    `gbt-reference` fits the offline reference for its metrics and writes no policy."""
    if isinstance(groups, str):
        groups = [g.strip() for g in groups.split(",") if g.strip()]
    view = load_view(bundle)
    require_labels(view, split_rows(view, split)[0], "asd calibrate")
    if predictor == "gbt-reference":
        return dict(reference_report(view, groups=groups, split=split, seed=seed, plots=plots, stage0=stage0,
                                     prompt_text=prompt_text), bundle=str(bundle))  # as named, as the policy's report
    cal = calibrate(view, predictor=predictor, groups=groups, n_bins=n_bins, risk=risk, stage0=stage0,
                    cost_model=cost_model, split=split, lam=lam, seed=seed, prompt_text=prompt_text)
    path = cal.policy.save(out)
    report = dict(cal.report, policy_path=str(path), bundle=str(bundle), policy_lambda=float(cal.policy.lam),
                  cost_unit=cal.costs.unit)
    if plots:
        from asd.simulator.plots import PLOT_FILES, plots_dir

        report["plots"] = [str(plots_dir(plots) / PLOT_FILES["calibrate"][0])]
        save_reliability(cal, report["plots"][0])
    return report


def reference_report(bundle, *, groups=None, split="calibration", seed=0, plots=None, stage0=True,
                     prompt_text=True) -> dict:
    """Out-of-fold metrics of gradient-boosted trees on the same features, beside the logistic
    predictor's fitted as `calibrate` fits it (same rows, folds, cold copies, stage 0's prompt
    text): the offline yardstick for a policy's predictors (no policy is written). A large AUROC
    gap says the features hold signal a linear model misses. `plots`: a directory for the
    boosted trees' reliability diagram per tier."""
    view = bundle if isinstance(bundle, TraceView) else load_view(bundle)
    rows, data_used = split_rows(view, split)
    fs = compute_features(view, groups)
    y = view.acceptable[rows]
    folds = DEFAULT_FOLDS
    require_folds(view, rows.size, folds)
    prompt_x = stage0_inputs(view, fs, rows, y, stage0 and prompt_text, folds, seed)[0] if stage0 else None
    tiers = [{"name": name} for name in view.tier_names]
    stage0_row = {"name": "stage 0 (prompt only, P(tier 0 acceptable))"} if stage0 else None
    curves = {}
    for kind, prefix in (("gbt-reference", ""), ("logistic", "logistic_")):
        fits, p_climb, _ = fit_tier_stages(kind, fs, rows, y, stage0, folds, seed)
        metrics = [climbed_metrics(fit, y[:, i], p_climb[:, i]) for i, fit in enumerate(fits)]
        if stage0:
            metrics.append(fit_stage(kind, prompt_x, y[:, 0], np.arange(rows.size), folds=folds, seed=seed).metrics)
        for row, m in zip(tiers + ([stage0_row] if stage0 else []), metrics):
            row.update({prefix + k: m.get(k) for k in ("auroc", "brier", "ece", "n") if prefix + k != "logistic_n"})
        if kind == "gbt-reference":
            curves = {name: fit.curve(rows.size) for name, fit in zip(view.tier_names, fits)}
    report = {"bundle": view.path, "data": data_used, "predictor": "gbt-reference", "tiers": tiers,
              "stage0_metrics": stage0_row, "features": list(fs.names), "feature_groups": list(fs.groups),
              "missing_groups": missing_noted(fs, groups),
              "metrics_note": "out of fold (K-fold grouped by request; AUROC the mean over folds; ECE with 10 equal-width bins)",
              "note": "offline reference: no policy written"}
    if plots:  # was silently ignored
        from asd.simulator.plots import PLOT_FILES, plots_dir

        report["plots"] = [str(plots_dir(plots) / PLOT_FILES["calibrate"][0])]
        reliability_plot({name: curves[name] for name in view.tier_names}, report["plots"][0],
                         title="out-of-fold reliability per tier, boosted trees (offline reference)")
    return report


