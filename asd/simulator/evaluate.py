"""Held-out evaluation that a small test set cannot fool.

Two designs, one interface: `--split test` (one policy calibrated on the calibration split,
replayed on the test split) and `--folds K` (K policies, each calibrated on K−1 folds by
request and replayed on its own fold; the held-out outcomes pooled over every request at each
λ). Everything a report shows — the policy at a λ, every baseline, the frontier — is replayed
on the same pooled held-out requests. Features are computed once for the whole bundle (they
are causal per request, so no fold sees another's labels through them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asd.calibration.calibrate import DEFAULT_FOLDS, Calibration, calibrate, default_cost_model
from asd.calibration.costs import CostModel, fit_cost_model
from asd.calibration.features import compute_features
from asd.calibration.predictors import fit_stage
from asd.calibration.views import TraceView, load_view
from asd.errors import ConfigError
from asd.simulator import baselines as B
from asd.simulator.outcomes import LadderArrays, Outcomes, walk_outcomes

DEFAULT_SEED = 0


def fold_of(n_requests: int, folds: int, seed: int) -> np.ndarray:
    """Each request's fold: a seeded permutation cut into K near-equal parts."""
    order = np.random.default_rng(seed).permutation(n_requests)
    fold = np.empty(n_requests, dtype=np.int64)
    fold[order] = np.arange(n_requests) % folds
    return fold


def ladder_arrays(view: TraceView, costs, rows=None) -> LadderArrays:
    """The replay's per-(request, tier) arrays for these view rows (all by default) from the
    whole view's cost grid. Score: quality where judged, else the accepted flag."""
    rows = slice(None) if rows is None else rows
    score = np.where(np.isnan(view.quality), view.accepted, view.quality)
    return LadderArrays(*(np.ascontiguousarray(a[rows]) for a in (
        score, view.acceptable, costs.cost, costs.cost_cont, costs.latency_ms, costs.latency_cont_ms)))


@dataclass
class Fold:
    """One calibration and the held-out requests it is judged on (view rows `held`)."""

    calibration: Calibration
    held: np.ndarray
    held_arrays: LadderArrays
    cal_arrays: LadderArrays
    prompt_bins: np.ndarray
    tier_bins: np.ndarray
    cold_bins: np.ndarray
    p_held: np.ndarray        # (Nh, L) calibrated p̂ after each tier, climbed state
    route_cal: np.ndarray     # (Nc, L) out-of-fold prompt-only P(acceptable at tier s)
    route_held: np.ndarray    # (Nh, L)

    @property
    def policy(self):
        return self.calibration.policy

    def walk(self, lam: float) -> Outcomes:
        """The held-out requests under the policy at λ: the engine's numba walk (cold-start
        stop table at a skipped-to start tier), then the path charges."""
        policy = self.policy.solve(lam)
        w = policy.walk(self.prompt_bins, self.tier_bins, cold_bins=self.cold_bins)
        return walk_outcomes(w.start, w.stop, self.held_arrays)

    def walk_calibration(self, lam: float) -> Outcomes:
        """The policy at λ on its own calibration rows, through their out-of-fold bins."""
        policy = self.policy.solve(lam)
        prompt, tier, cold = self.calibration.oof_bins()
        w = policy.walk(prompt, tier, cold_bins=cold)
        return walk_outcomes(w.start, w.stop, self.cal_arrays)


class Evaluation:
    """Policies and baselines replayed on held-out requests of one bundle."""

    def __init__(self, bundle, *, folds: int | None = None, split: str | None = None,
                 predictor: str = "logistic", groups=None, risk="mean", stage0: bool = True,
                 cost_model: str | None = None, n_bins: int | None = None, seed: int = DEFAULT_SEED,
                 progress=None):
        view = bundle if isinstance(bundle, TraceView) else load_view(bundle)
        self.view = view
        has_split = any(s is not None for s in view.split)
        if split is not None and folds is not None:
            raise ConfigError("--split and --folds are alternatives: give one")
        if split is None and folds is None:
            folds = None if has_split else DEFAULT_FOLDS
            split = "test" if has_split else None
        if split is not None:
            if not has_split:
                raise ConfigError(f"{view.path}: no split column; run `asd traces split` or use --folds K")
            held = np.flatnonzero(view.split == split)
            cal = np.flatnonzero((view.split != split) & (view.split != None))  # noqa: E711
            if held.size == 0 or cal.size == 0:
                raise ConfigError(f"{view.path}: split {split!r} leaves {held.size} held-out and {cal.size} "
                                  "calibration requests; both must be non-empty")
            plan = [(cal, held)]
            self.design = {"split": split, "folds": None,
                           "description": f"calibrated on {cal.size} requests, replayed on split {split!r} ({held.size})"}
        else:
            if folds < 2:
                raise ConfigError(f"--folds {folds}: need at least 2")
            if view.n_requests < 2 * folds:
                raise ConfigError(f"{view.path}: {view.n_requests} requests are too few for {folds} folds")
            fold = fold_of(view.n_requests, folds, seed)
            plan = [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(folds)]
            self.design = {"split": None, "folds": folds,
                           "description": f"pooled {folds}-fold cross-fitting over {view.n_requests} requests "
                                          f"(each policy calibrated on {folds - 1} folds, replayed on its own)"}
        self.features = compute_features(view, groups)
        # Latency and cost fits read timings and token counts, never labels: one for the bundle.
        self.cost_model = cost_model if isinstance(cost_model, CostModel) else fit_cost_model(
            view, cost_model or default_cost_model(view))
        self.costs = self.cost_model.grid(view)
        self.options = dict(predictor=predictor, groups=groups, risk=risk, stage0=stage0,
                            cost_model=self.cost_model, n_bins=n_bins, seed=seed)
        self.folds = []
        for k, (cal, held) in enumerate(plan):
            if progress is not None:
                progress(k, len(plan))
            self.folds.append(self._fold(cal, held))
        self.held = np.concatenate([f.held for f in self.folds])
        self.arrays = LadderArrays.concat([f.held_arrays for f in self.folds])
        self.cost_last = float(self.arrays.cost[:, -1].sum())
        self.speculative = bool(self.costs.speculative)

    def _fold(self, cal: np.ndarray, held: np.ndarray) -> Fold:
        o = self.options
        c = calibrate(self.view, rows=cal, predictor=o["predictor"], risk=o["risk"], stage0=o["stage0"],
                      cost_model=o["cost_model"], n_bins=o["n_bins"], seed=o["seed"], features=self.features,
                      single_feature_report=False)
        fs, policy = self.features, c.policy
        held_arrays = ladder_arrays(self.view, self.costs, held)
        cal_arrays = ladder_arrays(self.view, self.costs, cal)
        prompt_bins = (policy.prompt_bins(fs.prompt_x[held]) if policy.predictor.has_prompt
                       else np.zeros(held.size, dtype=np.int64))
        tier_bins = policy.tier_bins(fs.tier_x[held])
        cold_bins = policy.cold_tier_bins(fs.cold_x[held])
        p_held = np.stack([fit.predict(fs.tier_x[held, i]) for i, fit in enumerate(c.fits)], axis=1)
        route_cal, route_held = self._router_scores(cal, held)
        return Fold(c, held, held_arrays, cal_arrays, prompt_bins, tier_bins, cold_bins, p_held, route_cal, route_held)

    def _router_scores(self, cal, held):
        """Prompt-only P(acceptable at tier s), per tier: out of fold on the calibration rows,
        from the final model on the held-out rows (the router baseline's input)."""
        x = self.features.prompt_x
        y = self.view.acceptable
        route_cal = np.empty((cal.size, self.view.n_tiers))
        route_held = np.empty((held.size, self.view.n_tiers))
        for s in range(self.view.n_tiers):
            fit = fit_stage("logistic", x[cal], y[cal, s], np.arange(cal.size), seed=self.options["seed"])
            route_cal[:, s], route_held[:, s] = fit.oof_p, fit.predict(x[held])
        return route_cal, route_held

    # -- the policy ------------------------------------------------------------------------------
    def policy_outcomes(self, lam: float) -> Outcomes:
        return Outcomes.concat([f.walk(lam) for f in self.folds])

    # -- baselines -------------------------------------------------------------------------------
    def fixed_baselines(self, lam: float) -> dict[str, Outcomes]:
        a = self.arrays
        out = {f"always-{name}": B.always(a, i) for i, name in enumerate(self.view.tier_names)}
        out["fixed-2stage"] = B.fixed_two_stage(a)
        out["pipeline"] = B.pipeline(a)
        tier_costs = a.cost.mean(axis=0)
        out["protocol"] = Outcomes.concat([B.protocol(f.held_arrays, f.p_held, tier_costs, lam) for f in self.folds])
        out["oracle"] = B.oracle(a)
        return out

    def tuned_baseline(self, name: str, *, latency=None, cost_rel=None) -> Outcomes:
        """`threshold` or `router`, each fold's member picked on its calibration rows under the
        same constraint, replayed on its held-out rows and pooled."""
        parts = []
        for f in self.folds:
            if name == "threshold":
                family, cal_scores, held_scores = B.threshold_family(f.calibration.p_climb), f.calibration.p_climb, f.p_held
            else:
                family, cal_scores, held_scores = B.router_family(f.route_cal), f.route_cal, f.route_held
            c = B.pick(family, cal_scores, f.cal_arrays, latency=latency, cost_rel=cost_rel, seed=self.options["seed"])
            parts.append(walk_outcomes(*family.start_stop(held_scores, c), f.held_arrays))
        return Outcomes.concat(parts)

    def random_baseline(self, target_cost_mean: float) -> Outcomes:
        return B.random_matched(self.arrays, target_cost_mean, seed=self.options["seed"])
