"""Held-out evaluation that a small test set cannot fool.

Two designs, one interface: `--split test` (one policy calibrated on the calibration split,
replayed on the test split) and `--folds K` (K policies, each calibrated on K−1 folds by
request and replayed on its own fold; the held-out outcomes pooled over every request at each
λ). Everything a report shows — the policy at a λ, every baseline, the frontier — is replayed
on the same pooled held-out requests. Features are computed once for the whole bundle (they
are causal per request, so no fold sees another's labels through them).

A GIVEN policy file (`Evaluation(policy=...)`, `asd simulate/sweep --policy`, `asd check`) runs
the same code path: every fold's policy walk uses that policy (features computed with its own
feature spec, after `fixed_policy_features` has refused a policy the bundle cannot serve), on
the test split when the bundle has one, else on every request (folds then only tune the
baselines that need calibration data: `threshold`, `router`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Callable

import numpy as np

from asd.calibration.costs import CostModel, fit_cost_model
from asd.calibration.features import FeatureSet, FeatureSpec, compute_features
from asd.calibration.views import TraceView, load_view
from asd.engine import Policy
from asd.errors import ConfigError, PolicyError
from asd.simulator import baselines as B
from asd.simulator.outcomes import LadderArrays, Outcomes, walk_outcomes

if TYPE_CHECKING:
    from asd.calibration.calibrate import Calibration

DEFAULT_SEED = 0
DEFAULT_FOLDS = 5  # = asd.calibration.calibrate.DEFAULT_FOLDS; calibration (scikit-learn) is imported only when used,
                   # so `asd check` on a given policy starts without it


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
    """One policy and the held-out requests it is judged on (view rows `held`), with the rows
    `cal` the baselines are tuned on. `calibration` is the fold's own fit (None when a given
    policy is replayed); cal_bins are the calibration rows' (prompt, climbed, cold) bins:
    out of fold for a fold's own fit, through the given policy otherwise."""

    policy: Policy
    cal: np.ndarray
    held: np.ndarray
    held_arrays: LadderArrays
    make_cal_arrays: Callable[[], LadderArrays] = field(repr=False)
    prompt_bins: np.ndarray
    tier_bins: np.ndarray
    cold_bins: np.ndarray
    cal_bins: tuple[np.ndarray, np.ndarray, np.ndarray]
    p_cal: np.ndarray         # (Nc, L) calibrated p̂ of the calibration rows (the threshold baseline's input)
    p_held: np.ndarray        # (Nh, L) calibrated p̂ after each tier, climbed state
    calibration: Calibration | None = None
    route: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # (route_cal, route_held), lazily

    @cached_property
    def cal_arrays(self) -> LadderArrays:
        """The calibration rows' replay arrays, built the first time a baseline is tuned (a check
        without tuned baselines never copies them)."""
        return self.make_cal_arrays()

    def walk(self, lam: float) -> Outcomes:
        """The held-out requests under the policy at λ: the engine's numba walk (cold-start
        stop table at a skipped-to start tier), then the path charges."""
        policy = self.policy.solve(lam)
        w = policy.walk(self.prompt_bins, self.tier_bins, cold_bins=self.cold_bins)
        return walk_outcomes(w.start, w.stop, self.held_arrays)

    def walk_calibration(self, lam: float) -> Outcomes:
        """The policy at λ on its calibration rows, through their bins."""
        policy = self.policy.solve(lam)
        prompt, tier, cold = self.cal_bins
        w = policy.walk(prompt, tier, cold_bins=cold)
        return walk_outcomes(w.start, w.stop, self.cal_arrays)


def load_policy(policy) -> Policy:
    """A Policy, or the path of a policy file (refused with one line when unreadable or of
    another format version)."""
    return policy if isinstance(policy, Policy) else Policy.load(policy)


def fixed_policy_features(policy: Policy, view: TraceView, where: str = "policy") -> FeatureSet:
    """The bundle's features in the policy's own column layout — after refusing, with one
    PolicyError line saying what differs, a policy this bundle cannot serve: another ladder
    (tier names, parameter counts: `Policy.check_compatible`), a feature spec of another
    version or layout, or a feature group the policy uses that the bundle cannot provide (it
    would be replayed on fill values, not on what the policy was calibrated with)."""
    try:
        policy.check_compatible(view)
    except PolicyError as exc:
        raise PolicyError(f"{where} does not fit {view.path}: {str(exc).removeprefix('policy does not fit this ladder: ')}") from None
    spec_dict = policy.meta.get("features")
    if spec_dict is None:
        raise PolicyError(f"{where} records no feature spec (meta['features']): it was not written by "
                          "`asd calibrate`; recalibrate")
    try:
        spec = FeatureSpec.from_dict(spec_dict)
    except ConfigError as exc:
        raise PolicyError(f"{where}: {exc} (written by asd {policy.meta.get('asd_version', '?')}; recalibrate "
                          "with this asd)") from None
    prompt_width = policy.predictor.n_prompt_features if policy.predictor.has_prompt else len(spec.prompt_names)
    if len(spec.names) != policy.predictor.n_features or len(spec.prompt_names) != prompt_width:
        raise PolicyError(f"{where}: its feature spec names {len(spec.names)} tier / {len(spec.prompt_names)} prompt "
                          f"features but its predictor reads {policy.predictor.n_features} / "
                          f"{policy.predictor.n_prompt_features}")
    features = compute_features(view, spec=spec)
    if features.missing_groups:
        what = "; ".join(f"{g} ({why})" for g, why in features.missing_groups.items())
        raise PolicyError(f"{where} uses feature groups {view.path} cannot provide: {what}; recalibrate without "
                          "them (asd calibrate --features ...) or record them")
    return features


class Evaluation:
    """Policies and baselines replayed on held-out requests of one bundle.

    policy: a Policy or a policy file to replay as it is (no calibration; see the module
    docstring; policy_name names it in refusals); `policy_lam` is the λ it was saved at,
    `warnings` says when the replay is in-sample."""

    def __init__(self, bundle, *, folds: int | None = None, split: str | None = None,
                 predictor: str = "logistic", groups=None, risk="mean", stage0: bool = True,
                 cost_model: str | None = None, n_bins: int | None = None, seed: int = DEFAULT_SEED,
                 progress=None, policy=None, policy_name: str | None = None, **calibrate_options):
        view = bundle if isinstance(bundle, TraceView) else load_view(bundle)
        self.view = view
        self.warnings: list[str] = []
        self.fixed = None if policy is None else load_policy(policy)
        if policy_name is None and (isinstance(policy, str) or hasattr(policy, "__fspath__")):
            policy_name = str(policy)
        where = "policy" if policy_name is None else f"policy {policy_name}"
        if self.fixed is not None:  # compatibility before anything is computed
            self.features = fixed_policy_features(self.fixed, view, where)
            self.policy_lam = float(self.fixed.lam)
            self.policy_start_lam = float(self.fixed.start_lam)
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
        if self.fixed is None:
            self.features = compute_features(view, groups)
        else:
            self._describe_fixed(split, plan)
        # Latency and cost fits read timings and token counts, never labels: one for the bundle.
        # A given policy brings the cost model it was calibrated with (its unit, its coefficients;
        # the `trace` kind still charges this bundle's recorded timings where it has them).
        if cost_model is None and self.fixed is not None and self.fixed.meta.get("cost_model"):
            try:
                cost_model = CostModel.from_dict(self.fixed.meta["cost_model"])
            except PolicyError as exc:
                raise PolicyError(f"{where}: {exc} (written by asd {self.fixed.meta.get('asd_version', '?')}; "
                                  "recalibrate with this asd)") from None
        if not isinstance(cost_model, CostModel):
            from asd.calibration.calibrate import default_cost_model

            cost_model = fit_cost_model(view, cost_model or default_cost_model(view))
        self.cost_model = cost_model
        self.costs = self.cost_model.grid(view)
        self.options = dict(predictor=predictor, groups=groups, risk=risk, stage0=stage0,
                            cost_model=self.cost_model, n_bins=n_bins, seed=seed, extra=calibrate_options)
        self.folds = []
        self._fixed_rows = None
        for k, (cal, held) in enumerate(plan):
            if progress is not None and self.fixed is None:
                progress(k, len(plan))
            self.folds.append(self._fold(cal, held))
        self.held = np.concatenate([f.held for f in self.folds])
        self.arrays = LadderArrays.concat([f.held_arrays for f in self.folds])
        self.cost_last = float(self.arrays.cost[:, -1].sum())
        self.speculative = bool(self.costs.speculative)

    def _describe_fixed(self, split, plan) -> None:
        """The design sentence and the in-sample warning of a given policy's replay."""
        view, meta = self.view, self.fixed.meta
        n_held = sum(h.size for _, h in plan)
        lam = f"λ = {self.policy_lam:.4g}"
        if split is not None:
            what = (f"given policy ({lam}) replayed on split {split!r} ({n_held} requests); tuned baselines "
                    f"picked on the other {plan[0][0].size}")
        else:
            what = (f"given policy ({lam}) replayed on every request ({n_held}: the bundle has no split column); "
                    f"tuned baselines cross-fitted over {len(plan)} folds")
        self.design["description"] = what
        self.design["policy_lambda"] = self.policy_lam
        bundle = meta.get("bundle") if isinstance(meta.get("bundle"), dict) else {}
        known = meta.get("bundle_content_hash", bundle.get("content_hash"))
        calibrated_on = (meta.get("calibration") or {}).get("split")
        held_out = split is not None and calibrated_on is not None and calibrated_on != split
        if known is not None and known == view.content_hash and not held_out:
            self.warnings.append(f"in-sample: {view.path} is the bundle the policy was calibrated on "
                                 f"(content hash {known[:12]}…) and these requests were in its calibration data; "
                                 "figures are optimistic")

    def _fold(self, cal: np.ndarray, held: np.ndarray) -> Fold:
        o, fs = self.options, self.features
        held_arrays = ladder_arrays(self.view, self.costs, held)
        cal_arrays = lambda: ladder_arrays(self.view, self.costs, cal)  # noqa: E731
        if self.fixed is None:
            from asd.calibration.calibrate import calibrate

            c = calibrate(self.view, rows=cal, predictor=o["predictor"], risk=o["risk"], stage0=o["stage0"],
                          cost_model=o["cost_model"], n_bins=o["n_bins"], seed=o["seed"], features=fs,
                          single_feature_report=False, **o["extra"])
            policy, cal_bins, p_cal = c.policy, c.oof_bins(), c.p_climb
        else:  # a given policy: bins and p̂ once for the whole bundle, each fold takes its rows
            c, policy = None, self.fixed
            if self._fixed_rows is None:
                every = np.arange(self.view.n_requests)
                self._fixed_rows = (self._bins(policy, every), self._p_hat(policy, every))
            bins, p_hat = self._fixed_rows
            cal_bins = tuple(b[cal] for b in bins)
            p_cal = p_hat[cal]
        if c is None:
            prompt_bins, tier_bins, cold_bins = (b[held] for b in self._fixed_rows[0])
            p_held = self._fixed_rows[1][held]
        else:
            prompt_bins, tier_bins, cold_bins = self._bins(policy, held)
            p_held = np.stack([fit.predict(fs.tier_x[held, i]) for i, fit in enumerate(c.fits)], axis=1)
        return Fold(policy, cal, held, held_arrays, cal_arrays, prompt_bins, tier_bins, cold_bins, cal_bins,
                    p_cal, p_held, calibration=c)

    def _bins(self, policy: Policy, rows: np.ndarray):
        fs = self.features
        prompt = (policy.prompt_bins(fs.prompt_x[rows]) if policy.predictor.has_prompt
                  else np.zeros(rows.size, dtype=np.int64))
        return prompt, policy.tier_bins(fs.tier_x[rows]), policy.cold_tier_bins(fs.cold_x[rows])

    def _p_hat(self, policy: Policy, rows: np.ndarray) -> np.ndarray:
        """The policy's own calibrated p̂ after each tier (climbed state) for these rows."""
        x = self.features.tier_x[rows]
        return np.stack([policy.predictor.predict_proba(i + 1, x[:, i]) for i in range(self.view.n_tiers)], axis=1)

    def _router_scores(self, f: Fold):
        """Prompt-only P(acceptable at tier s), per tier: out of fold on the calibration rows,
        from the final model on the held-out rows (the router baseline's input), fitted the
        first time a router is asked for."""
        if f.route is None:
            from asd.calibration.predictors import fit_stage

            cal, held = f.cal, f.held
            x = self.features.prompt_x
            y = self.view.acceptable
            route_cal = np.empty((cal.size, self.view.n_tiers))
            route_held = np.empty((held.size, self.view.n_tiers))
            for s in range(self.view.n_tiers):
                fit = fit_stage("logistic", x[cal], y[cal, s], np.arange(cal.size), seed=self.options["seed"])
                route_cal[:, s], route_held[:, s] = fit.oof_p, fit.predict(x[held])
            f.route = (route_cal, route_held)
        return f.route

    # -- the policy ------------------------------------------------------------------------------
    def policy_outcomes(self, lam: float | None = None) -> Outcomes:
        """The pooled held-out outcomes at λ; lam=None: a given policy as it was saved (its λ
        and start table)."""
        if lam is None:
            if self.fixed is None:
                raise ConfigError("policy_outcomes() without λ needs a given policy (Evaluation(policy=...))")
            self.fixed.solve(self.policy_lam, start_lam=self.policy_start_lam)
            return Outcomes.concat([self._walk_solved(f) for f in self.folds])
        return Outcomes.concat([f.walk(lam) for f in self.folds])

    @staticmethod
    def _walk_solved(f: Fold) -> Outcomes:
        w = f.policy.walk(f.prompt_bins, f.tier_bins, cold_bins=f.cold_bins)
        return walk_outcomes(w.start, w.stop, f.held_arrays)

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

    def tuned_baseline(self, name: str, *, latency=None, cost_rel=None, folds=None) -> Outcomes:
        """`threshold` or `router`, each fold's member picked on its calibration rows under the
        same constraint, replayed on its held-out rows and pooled (over `folds`: all by default)."""
        parts = []
        for f in self.folds if folds is None else folds:
            if name == "threshold":
                family, cal_scores, held_scores = B.threshold_family(f.p_cal), f.p_cal, f.p_held
            else:
                route_cal, route_held = self._router_scores(f)
                family, cal_scores, held_scores = B.router_family(route_cal), route_cal, route_held
            c = B.pick(family, cal_scores, f.cal_arrays, latency=latency, cost_rel=cost_rel, seed=self.options["seed"])
            parts.append(walk_outcomes(*family.start_stop(held_scores, c), f.held_arrays))
        return Outcomes.concat(parts)

    def random_baseline(self, target_cost_mean: float) -> Outcomes:
        return B.random_matched(self.arrays, target_cost_mean, seed=self.options["seed"])
