"""`asd sweep`: the quality / cost / latency frontier of the policy and of every baseline on
held-out requests. The DP's policy is piecewise constant in λ, so the policy's frontier is
every distinct policy (the breakpoints of all folds' policies, pooled), not a fixed grid.
Also the comparison a user decides on: the GPU saved at ≤ 2 % quality loss against always-last,
by the policy, the best simple policy and the oracle.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from asd.calibration.views import load_view
from asd.errors import ConfigError
from asd.fsutil import atomic_file
from asd.simulator import baselines as B
from asd.simulator.evaluate import Evaluation, check_split, last_tier_labelled
from asd.simulator.outcomes import summarize

QUALITY_SLACK = 0.02   # "≤ 2 % quality loss against always-last", relative
# The policy's cost at each of these losses, and their mean: one level reads one step of the
# frontier, which a few requests move on a ladder of hundreds; three levels average that out.
LOSS_LEVELS = (0.01, 0.02, 0.03)
BUDGET_LEVELS = 24     # cost budgets up to always-last's the tuned baselines are picked at
EXTRA_BUDGET_LEVELS = 8  # and beyond it, up to the cost of climbing every tier


def _point(out, ev, lam=None, timed=None) -> dict:
    """A frontier point; timed: outcomes → outcomes with latencies under load (`job.des_latency`)."""
    s = summarize(out if timed is None else timed(out), ev.cost_last, ev.view.n_tiers)
    return ({"lambda": lam} if lam is not None else {}) | s


def policy_frontier(ev: Evaluation, timed=None) -> list[dict]:
    """One point per distinct pooled policy, in λ order: the union of every fold policy's λ
    breakpoints; a λ inside each interval between consecutive breakpoints represents it, and an
    outcome met again at a larger λ is not listed again. timed: outcomes →
    outcomes with latencies under load (`job.des_latency`); None: replay's."""
    # A policy outcome can come back at a larger λ (with stage 0 the start tier need not move
    # monotonically in λ): each is listed once, at the smallest λ giving it.
    points, seen = [], set()
    for lam in ev.distinct_policy_lambdas():
        out = ev.policy_outcomes(lam)
        key = out.walk_key()
        if key in seen:
            continue
        seen.add(key)
        points.append(_point(out, ev, lam, timed))
    return points


def baseline_frontiers(ev: Evaluation, lam_for_protocol: float = 1.0, timed=None) -> dict[str, list[dict]]:
    """Fixed baselines as one point each; `threshold` and `router` picked per fold on calibration
    rows at a ladder of cost budgets; `random` at the mean cost of each single tier mix. timed:
    as in policy_frontier."""
    def point(o):
        return _point(o, ev, timed=timed)

    out = {name: [point(o)] for name, o in ev.fixed_baselines(lam_for_protocol).items()}
    # The budgets span the single tiers' costs densely (a router mixes single tiers), then on to
    # the pipeline's: a threshold cascade may cost more than any tier alone (every tier climbed).
    # From always-first's cost to always-last's only, a ladder whose first tier is the dearer
    # (the built-in one) got 24 budgets at 1.0 and a router of 2 points where it has a dozen.
    singles = ev.arrays.cost.sum(axis=0) / ev.cost_last if ev.cost_last > 0 else np.zeros(ev.view.n_tiers)
    lo, hi = float(min(singles.min(), 1.0)), float(max(singles.max(), 1.0))
    budgets = np.linspace(lo, 1.0, BUDGET_LEVELS)
    if hi > 1.0:  # a single tier dearer than always-last: as densely up to it
        budgets = np.concatenate([budgets, np.linspace(1.0, hi, BUDGET_LEVELS)[1:]])
    top = out["pipeline"][0]["cost_rel"]
    if top > hi:
        budgets = np.concatenate([budgets, np.linspace(hi, top, EXTRA_BUDGET_LEVELS + 1)[1:]])
    for name in B.TUNED:
        pts, seen = [], set()
        for b in budgets:
            o = ev.tuned_baseline(name, cost_rel=float(b))
            key = o.stop.tobytes() + o.start.tobytes()
            if key in seen:
                continue
            seen.add(key)
            pts.append(point(o) | {"budget": float(b)})
        out[name] = sorted(pts, key=lambda p: p["cost_rel"])
    mean_costs = ev.arrays.cost.mean(axis=0)
    out["random"] = [point(ev.random_baseline(float(c))) for c in np.linspace(mean_costs.min(), mean_costs.max(), 9)]
    order = B.baseline_names(ev.view.tier_names)
    return {name: out[name] for name in order}


def cheapest_within(points: list[dict], min_quality: float) -> dict | None:
    ok = [p for p in points if p["quality"] is not None and p["quality"] >= min_quality - 1e-12]
    return min(ok, key=lambda p: p["cost_rel"]) if ok else None


def quality_check(policy_points, baselines, tier_names) -> dict:
    """At ≤ 2 % quality loss against always-last: the cheapest policy point, the best simple
    policy (the threshold cascade, or a single tier meeting it alone), the oracle; the GPU the
    policy saves beyond the simple one (points of cost) and the share of the simple-to-oracle gap
    it closes; and whether any threshold or router point lies above the policy's frontier, how
    far (in quality at its cost and in the cost the policy pays to match it) and against which
    policy point (`paired_noise` adds how far in paired standard errors)."""
    last = baselines[f"always-{tier_names[-1]}"][0]
    if last["quality"] is None:  # an unlabelled bundle (e.g. Spec-Bench's): no quality to trade against cost
        raise ConfigError(f"asd sweep compares quality at a cost, but always-{tier_names[-1]} has no quality "
                          "label on the held-out requests (an unlabelled bundle): use asd simulate for cost and latency")
    floor = last["quality"] * (1.0 - QUALITY_SLACK)
    # the policy's cheapest point at each loss level; the check's own level is one of them
    at_loss = {loss: cheapest_within(policy_points, last["quality"] * (1.0 - loss))
               for loss in sorted({*LOSS_LEVELS, QUALITY_SLACK})}
    policy = at_loss[QUALITY_SLACK]
    simple_candidates = {"threshold": cheapest_within(baselines["threshold"], floor)}
    for t in tier_names:
        simple_candidates[f"always-{t}"] = cheapest_within(baselines[f"always-{t}"], floor)
    simple_name, simple = min(((k, v) for k, v in simple_candidates.items() if v is not None),
                              key=lambda kv: kv[1]["cost_rel"])
    oracle = baselines["oracle"][0]
    at_losses = {f"{loss:g}": None if at_loss[loss] is None else at_loss[loss]["cost_rel"] for loss in LOSS_LEVELS}
    saved = None if policy is None else simple["cost_rel"] - policy["cost_rel"]
    gap = simple["cost_rel"] - oracle["cost_rel"]
    closed = None if policy is None or gap <= 0 else saved / gap
    dominated = []
    for name in ("threshold", "router"):
        for p in baselines[name]:
            if _above(p, policy_points):
                compared = _best_no_dearer(p, policy_points)
                dominated.append({"baseline": name, "quality": p["quality"], "cost_rel": p["cost_rel"],
                                  "budget": p.get("budget"),
                                  "quality_above": _quality_above(p, policy_points),
                                  "policy_extra_cost": _extra_cost(p, policy_points),
                                  # the policy point it is above (None: none costs no more), and the
                                  # paired standard error of that margin (`paired_noise`; None until then)
                                  "policy_lambda": None if compared is None else compared.get("lambda"),
                                  "quality_above_se": None, "quality_above_z": None})
    return {
        "notes": _check_notes(baselines, tier_names, last, oracle, closed),
        "quality_floor": floor, "always_last_quality": last["quality"],
        "policy": policy, "best_simple": {"name": simple_name, **simple}, "oracle": oracle,
        "saved_vs_simple_points": None if saved is None else 100.0 * saved,
        "gap_closed": closed, "baseline_points_above_policy": dominated,
        "policy_cost_at_loss": at_losses,
        "policy_cost_at_losses_mean": (None if None in at_losses.values()
                                       else float(np.mean(list(at_losses.values())))),
        "goals": {"saved_points": 3.0, "gap_closed": 0.25},
        "met": bool(saved is not None and saved * 100 >= 3.0 and closed is not None and closed >= 0.25 and not dominated),
    }


def _check_notes(baselines, tier_names, last, oracle, closed) -> list[str]:
    """Where the check's yardsticks mislead, said with it: a tier better than the last one makes
    the floor (2 % below always-last) lenient and the saving large; and the oracle bounds quality,
    not the cost of merely reaching the floor, so a gap closed above 1 is no contradiction."""
    notes = []
    best = max(tier_names[:-1], key=lambda t: baselines[f"always-{t}"][0]["quality"] or -1.0, default=None)
    best_quality = None if best is None else baselines[f"always-{best}"][0]["quality"]
    if best_quality is not None and best_quality > last["quality"]:
        notes.append(f"always-{best} ({best_quality:.3f}) has a higher quality than always-{tier_names[-1]} "
                     f"({last['quality']:.3f}): the floor, the saving and the gap are measured against the last "
                     f"tier, as the targets define them, so a saving can be large; read the frontier at always-"
                     f"{best}'s quality too")
    if closed is not None and closed > 1.0:
        notes.append(f"gap closed above 1: the oracle ({oracle['cost_rel']:.3f}) reaches quality "
                     f"{oracle['quality']:.3f}, well above the floor, and the policy reaches the floor for less; "
                     "the oracle bounds quality, not the cost of just meeting the floor")
    return notes


def _above(point: dict, frontier: list[dict]) -> bool:
    """Is `point` strictly better in quality than the policy's frontier at its cost (the
    frontier's best quality among points costing no more; none that cheap: above)?"""
    if point["quality"] is None:
        return False
    by = _quality_above(point, frontier)
    return by is None or by > 1e-9


# How far above the policy's frontier a point lies, two ways: where the frontier is steep a
# sliver of cost is a lot of quality, where it is flat a sliver of quality is a lot of cost, so
# each alone overstates one end. The reader judges them against the noise of a held-out mean.
def _quality_above(point: dict, frontier: list[dict]) -> float | None:
    """`point`'s quality less the policy's best at no more cost; None: no policy point is that cheap."""
    best = _best_no_dearer(point, frontier)
    return None if best is None else float(point["quality"] - best["quality"])


def _best_no_dearer(point: dict, frontier: list[dict]) -> dict | None:
    """The policy point `_quality_above` measures `point` against: the best quality costing no
    more (of equal ones, the cheapest); None: no policy point is that cheap."""
    cheaper = [p for p in frontier if p["cost_rel"] <= point["cost_rel"] + 1e-12 and p["quality"] is not None]
    return min(cheaper, key=lambda p: (-p["quality"], p["cost_rel"])) if cheaper else None


def _extra_cost(point: dict, frontier: list[dict]) -> float | None:
    """What the policy pays beyond `point`'s cost (relative to always-last) for at least its
    quality; None: no policy point reaches that quality."""
    reaching = [p["cost_rel"] for p in frontier if p["quality"] is not None and p["quality"] >= point["quality"] - 1e-9]
    return float(min(reaching) - point["cost_rel"]) if reaching else None


def paired_se(a: np.ndarray, b: np.ndarray) -> float | None:
    """Standard error of the mean of a − b over the requests labelled in both (NaN: unlabelled):
    two methods judged on the same requests differ on a few of them, and the spread of those
    per-request differences, not of each mean alone, is the noise of their difference. None
    below two such requests."""
    both = ~np.isnan(a) & ~np.isnan(b)
    d = a[both] - b[both]
    return None if d.size < 2 else float(d.std(ddof=1) / np.sqrt(d.size))


def paired_noise(ev: Evaluation, check: dict) -> dict:
    """`check` (quality_check's, of `ev`'s frontiers) with each threshold or router point above
    the policy given `quality_above_se`, the paired standard error of its margin over the policy
    point it is measured against (both replayed again on the same held-out requests), and
    `quality_above_z`, the margin in those units; `baseline_above_z_max` the largest. A point a
    few requests above on a ladder of hundreds is within the noise of a held-out mean, and with
    a couple of dozen points compared, noise alone puts the largest up to about 2 standard errors
    out (the expected largest of 24 independent normal draws is 1.95)."""
    policy_quality = {}  # λ → its pooled held-out quality: several points are often above the same policy point
    for entry in check["baseline_points_above_policy"]:
        lam = entry["policy_lambda"]
        if lam is None or entry["budget"] is None:  # cheaper than every policy point
            continue
        if lam not in policy_quality:
            policy_quality[lam] = ev.policy_outcomes(lam).quality
        baseline = ev.tuned_baseline(entry["baseline"], cost_rel=entry["budget"])
        se = paired_se(baseline.quality, policy_quality[lam])
        entry["quality_above_se"] = se
        entry["quality_above_z"] = float(entry["quality_above"] / se) if se else None
    check["baseline_above_z_max"] = max((p["quality_above_z"] for p in check["baseline_points_above_policy"]
                                         if p["quality_above_z"] is not None), default=None)
    return check


def refuse_free_always_last(ev: Evaluation) -> None:
    """Every cost of a sweep is relative to always-last's: where that is 0 (a trace recording
    0 ms at the last tier, which the schema allows), no point has a cost, so there is no
    frontier to draw and no GPU saved to compare; one line, not a TypeError from the budgets."""
    if ev.cost_last > 0:
        return
    why = " (its recorded timings are 0)" if ev.cost_model.kind == "trace" else ""
    raise ConfigError(f"asd sweep: always-{ev.view.tier_names[-1]} costs 0 on the {ev.held.size} held-out requests "
                      f"under the {ev.cost_model.kind} cost model{why}, so cost relative to "
                      "always-last is undefined and there is no quality–cost frontier: use --cost-model params or "
                      "profile, or asd simulate for quality and latency")


def sweep(bundle="builtin", *, split=None, folds=None, cost_model=None, predictor="logistic", stage0=True,
          risk="mean", seed=0, groups=None, evaluation: Evaluation | None = None, progress=None, timed=None) -> dict:
    ev = evaluation or Evaluation(bundle, folds=folds, split=split, cost_model=cost_model, predictor=predictor,
                                  stage0=stage0, risk=risk, seed=seed, groups=groups, progress=progress)
    refuse_free_always_last(ev)
    policy_points = policy_frontier(ev, timed)
    baselines = baseline_frontiers(ev, timed=timed)
    return {
        "bundle": ev.view.path, "split": ev.design["split"], "folds": ev.design["folds"],
        "evaluation": ev.design["description"], "n_requests": int(ev.held.size),
        # quality's requests: fewer where some lack a label at a labelled tier (a warning says so)
        "quality_requests": int(ev.design.get("quality_requests", ev.held.size)),
        "in_sample": bool(ev.design.get("in_sample")),
        "cost_model": ev.cost_model.kind, "cost_note": ev.cost_note, "speculative": ev.speculative,
        "settings": ev.settings,
        "tiers": list(ev.view.tier_names),
        "policy": policy_points, "baselines": baselines,
        "quality_check": paired_noise(ev, quality_check(policy_points, baselines, ev.view.tier_names)),
        "features": list(ev.features.names),
        "warnings": list(ev.warnings),
    }


def ablation(ev: Evaluation, kind: str, base_points, baselines, options: dict) -> list[dict]:
    """Frontier change without each feature group (`features`), or at several risk levels
    (`risk`): the cost at ≤ 2 % quality loss against always-last, and its change in points."""
    floor = quality_check(base_points, baselines, ev.view.tier_names)["quality_floor"]
    base = cheapest_within(base_points, floor)
    variants = []
    if kind == "features":
        groups = list(ev.features.groups)
        # `stage` (tier index, cold-start flag) is part of every feature set: not ablated
        variants = [(f"without {g}", {"groups": [x for x in groups if x != g]}) for g in groups if g != "stage"]
        if any(f.calibration is not None and f.calibration.prompt_text is not None for f in ev.folds):
            variants.append(("without prompt text", {"prompt_text": False}))  # stage 0's text model (calibrate)
    else:
        # every risk mode but the run's own (its frontier is the base): the mean against lower
        # credible bounds at several levels, whichever of them the run was given
        from asd.engine.tables import parse_risk

        own = parse_risk(options.get("risk", "mean"))
        variants = [("risk mean" if g is None else f"risk lcb:{g:g}", {"risk": "mean" if g is None else g})
                    for g in (None, 0.7, 0.8, 0.9, 0.95) if g != own]
    out = []
    for name, change in variants:
        opts = {**options, **change}
        other = Evaluation(ev.view, folds=ev.design["folds"], split=ev.design["split"],
                           prompt_tokens=ev.counted_prompts(), **opts)
        point = cheapest_within(policy_frontier(other), floor)
        cost = None if point is None else point["cost_rel"]
        out.append({"name": name, "cost_rel": cost, "base_cost_rel": None if base is None else base["cost_rel"],
                    "change_points": None if cost is None or base is None else 100 * (cost - base["cost_rel"])})
    return out


def repeated_checks(ev: Evaluation, repeats: int, options: dict, first: dict, progress=None) -> dict:
    """The quality check over `repeats` fold draws (seeds seed, seed+1, …; the first is `first`,
    this run's): one pooled K-fold run moves the GPU saved by several points with the fold seed
    alone on a ladder of a few thousand requests, more on a few hundred; the mean and spread
    say how much of a difference is the policy's."""
    seed = options["seed"]
    checks = [first if "baseline_above_z_max" in first else paired_noise(ev, first)]
    for r in range(1, repeats):
        # "calibrating k/5" again and again said nothing of how many repeats were left
        note = None if progress is None else partial(progress, what=f"fold seed {seed + r} ({r + 1} of {repeats})")
        other = Evaluation(ev.view, folds=ev.design["folds"], policy=ev.fixed, progress=note,
                           prompt_tokens=ev.counted_prompts(), **{**options, "seed": seed + r})
        checks.append(paired_noise(other, quality_check(policy_frontier(other), baseline_frontiers(other),
                                                        ev.view.tier_names)))
    rows = [{"seed": seed + r, "policy_cost_rel": None if q["policy"] is None else q["policy"]["cost_rel"],
             "policy_cost_at_losses_mean": q["policy_cost_at_losses_mean"],
             "best_simple": q["best_simple"]["name"], "best_simple_cost_rel": q["best_simple"]["cost_rel"],
             "saved_vs_simple_points": q["saved_vs_simple_points"], "gap_closed": q["gap_closed"],
             "baseline_points_above_policy": len(q["baseline_points_above_policy"]),
             # the largest of each margin among the points above (None: no such point, or none measurable)
             **{f"baseline_above_{key}_max": max((p[key] for p in q["baseline_points_above_policy"]
                                                  if p[key] is not None), default=None)
                for key in ("quality_above", "policy_extra_cost")},
             "baseline_above_z_max": q["baseline_above_z_max"],
             "met": q["met"]}
            for r, q in enumerate(checks)]

    def spread(key):
        values = np.array([row[key] for row in rows if row[key] is not None], dtype=np.float64)
        if values.size == 0:
            return None
        return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                "min": float(values.min()), "max": float(values.max()), "n": int(values.size)}

    return {"seeds": [row["seed"] for row in rows], "checks": rows,
            "saved_vs_simple_points": spread("saved_vs_simple_points"), "gap_closed": spread("gap_closed"),
            "policy_cost_rel": spread("policy_cost_rel"),
            "policy_cost_at_losses_mean": spread("policy_cost_at_losses_mean"),
            "with_baseline_points_above": sum(row["baseline_points_above_policy"] > 0 for row in rows),
            "met": sum(row["met"] for row in rows)}


def run_sweep(bundle="builtin", *, split=None, folds=None, cost_model=None, predictor="logistic", stage0=True,
              risk="mean", seed=0, plots=None, ablate=None, csv_path=None, progress=None, policy=None,
              repeats: int = 1, mode: str = "replay", rate: float | None = None, arrivals: str = "poisson",
              cv: float = 1.0, scheduler: str = "fifo", replicas=1, max_batch: int = 256, kv_tokens=None) -> dict:
    """`asd sweep` end to end: frontiers, optional ablation, CSV and plots. policy: a given
    policy file whose frontier (its distinct policies over λ) is swept instead of calibrating.
    repeats: the quality check over that many fold seeds (the frontiers shown are the first's).
    mode "des": every point's latencies from the discrete-event simulation under that load (as
    `asd simulate --mode des`); quality and cost, and so the quality check, do not change."""
    from asd.simulator.job import (arrivals_check, check_load_options, check_view_options, des_latency, describe_load,
                                   kv_tokens_list)

    check_load_options(mode, rate, scheduler, arrivals, cv, bundle)
    if policy is not None and ablate:
        raise ConfigError("--ablate recalibrates without each feature group or at each risk level: it cannot "
                          "be combined with --policy (a fixed policy)")
    if repeats < 1:
        raise ConfigError(f"--repeats {repeats}: need at least 1")
    if plots:
        from asd.simulator.plots import check_plot_files

        check_plot_files(plots, "sweep")
    view = load_view(bundle)
    check_view_options(view, mode=mode, replicas=replicas, kv_tokens=kv_tokens)
    if split is not None:
        check_split(view, split)
    if not last_tier_labelled(view):  # before minutes of calibrating
        raise ConfigError(f"asd sweep compares quality at a cost, but {view.path} has no quality label at its "
                          f"last tier {view.tier_names[-1]} (an unlabelled bundle): use asd simulate for cost and "
                          "latency")
    if repeats > 1 and folds is None and (split is not None or view.has_split):
        raise ConfigError(f"--repeats draws the folds again with other seeds, but {bundle} is evaluated on its "
                          f"split {split or 'test'!r} (one fixed draw): use --folds K")
    options = dict(cost_model=cost_model, predictor=predictor, stage0=stage0, risk=risk, seed=seed)
    ev = Evaluation(view, folds=folds, split=split, progress=progress, policy=policy,
                    check_held=arrivals_check(mode, rate, arrivals, cv, seed), **options)
    timed = None
    if mode == "des":
        timed = des_latency(ev, rate=rate, replicas=replicas, max_batch=max_batch, seed=seed, scheduler=scheduler,
                            arrivals=arrivals, cv=cv, kv_tokens=kv_tokens)
    result = sweep(evaluation=ev, timed=timed)
    result["bundle"] = str(bundle)  # as the user named it ("builtin", not the package path)
    result["mode"] = mode
    result["load"] = None if timed is None else describe_load(rate, arrivals, cv, scheduler) | {
        "replicas": timed.pools.replicas.tolist(), "max_batch": int(max_batch), "kv_tokens": kv_tokens_list(timed.pools)}
    if repeats > 1:
        result["repeats"] = repeated_checks(ev, repeats, {**options, "cost_model": ev.cost_model},
                                            result["quality_check"], progress=progress)
    if ablate:
        result["ablation"] = ablation(ev, ablate, result["policy"], result["baselines"], options)
    if ablate == "features":
        # a group the bundle cannot supply is in no frontier: say so rather than skip it silently
        absent = dict(ev.features.missing_groups)
        result["ablation_groups_absent"] = absent
        if absent:
            result["warnings"].append(
                f"--ablate features: {bundle} lacks feature group{'s' if len(absent) > 1 else ''} "
                + "; ".join(f"{g} ({why})" for g, why in absent.items())
                + ": not ablated (no frontier uses them)")
    if plots:  # before the CSV: a plot that fails leaves the CSV that was there
        from asd.simulator import plots as P

        out = P.plots_dir(plots)
        result["plots"] = [str(P.frontier(result["policy"], result["baselines"], out / name, x=x,
                                          in_sample=result["in_sample"]))
                           for name, x in zip(P.PLOT_FILES["sweep"], ("cost_rel", "latency"))]
    if csv_path:
        write_csv(result, csv_path)
    return result


def write_csv(result: dict, path) -> None:
    import csv

    rows = [("policy", p) for p in result["policy"]] + [(n, p) for n, pts in result["baselines"].items() for p in pts]
    try:
        with atomic_file(path) as tmp, open(tmp, "w", newline="") as fh:  # a failed write leaves the old CSV
            w = csv.writer(fh)
            w.writerow(["method", "lambda", "quality", "cost_rel", "latency_mean_ms", "latency_p50_ms",
                        "latency_p95_ms", "latency_p99_ms"])
            for name, p in rows:
                lat = p["latency_ms"]
                w.writerow([name, p.get("lambda", ""), p["quality"], p["cost_rel"], lat["mean"], lat["p50"],
                            lat["p95"], lat["p99"]])
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write --csv ({exc.strerror or exc})") from None
