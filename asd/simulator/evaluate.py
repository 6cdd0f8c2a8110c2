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

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from asd.calibration.costs import CostGrid, CostModel, fit_cost_model
from asd.calibration.features import FEATURE_GROUPS, FeatureSet, FeatureSpec, compute_features, tiers_lacking
from asd.calibration.id_sketch import calibration_share
from asd.calibration.prompt_text import PromptTokens, fit_prompt_text, policy_prompt_text, with_prompt_text
from asd.calibration.views import TraceView, load_view
from asd.engine import Policy
from asd.errors import ConfigError, PolicyError, whole_number
from asd.simulator import baselines as B
from asd.simulator.outcomes import LadderArrays, Outcomes, walk_outcomes
from asd.simulator.replay import ReplayInputs, bin_dtype, replay

if TYPE_CHECKING:
    from asd.calibration.calibrate import Calibration

DEFAULT_SEED = 0
DEFAULT_FOLDS = 5  # = asd.calibration.calibrate.DEFAULT_FOLDS; calibration (scikit-learn) is imported only when used,
                   # so `asd check` on a given policy starts without it
# Above this many calibration requests a fold's policy (its predictors, tables, and the
# threshold/router baselines tuned on calibration rows) is fitted on a seeded subsample of them;
# held-out evaluation always covers every request. The tables need a few thousand rows (≤ 20
# bins per tier); fitting 4 tiers × 2 states × 6 logistic fits on 800k rows per fold would not.
MAX_CALIBRATION_ROWS = 25_000
# Feature tensors (N, L, F) larger than this are stored as float32 (computed in float64,
# rounded once; each consumer upcasts the rows it uses): 10^6 × 4 tiers × 19 features is
# 0.6 GB per state in float64.
FLOAT32_FEATURES_ABOVE_BYTES = 256 * 2**20
# Requests whose features are upcast to float64 and binned at a time (a whole fold's at once
# would be a 0.2 GB temporary at 10^6 requests, this many 20 MB).
BIN_CHUNK_ROWS = 16_384
# Up to this many requests, the bundle's prompts are counted once (`PromptTokens`) for every
# fold's text model and every scoring of its rows; above, each fit and each chunk counts its own
# prompts as `asd calibrate` does (the same numbers), so memory stays that of one fold's rows.
PROMPT_TOKENS_MAX_ROWS = 100_000
# A given policy's replay is called in-sample when at least this share of the replayed requests
# were among its calibration requests (estimated from the id sketch in its meta).
IN_SAMPLE_SHARE = 0.05


def subsample_rows(rows: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """At most `limit` of `rows` (sorted), chosen by a seeded generator; all of them below it."""
    if limit is None or rows.size <= limit:
        return rows
    return np.sort(np.random.default_rng([seed, rows.size]).choice(rows, int(limit), replace=False))


def check_split(view: TraceView, split: str) -> None:
    """`--split NAME` needs a split column (before any calibration: other checks assume one)."""
    if not view.has_split:
        raise ConfigError(f"{view.path}: no split column; run `asd traces split` or use --folds K")


def last_tier_labelled(view: TraceView) -> bool:
    """Whether any request has a quality label at the last tier: without one there is no quality
    to fit a policy on or to trade against cost (an unlabelled bundle, e.g. Spec-Bench's)."""
    return not np.isnan(view.acceptable[:, -1]).all()


def fold_of(n_requests: int, folds: int, seed: int) -> np.ndarray:
    """Each request's fold: a seeded permutation cut into K near-equal parts."""
    order = np.random.default_rng(seed).permutation(n_requests)
    fold = np.empty(n_requests, dtype=np.int64)
    fold[order] = np.arange(n_requests) % folds
    return fold


def _cross_fitted(view: TraceView, rows: np.ndarray, folds: int, seed: int) -> list:
    """(calibration, held-out) row pairs of K-fold cross-fitting over `rows`."""
    if rows.size < 2 * folds:
        raise ConfigError(f"{view.path}: {rows.size} requests are too few for {folds} folds")
    fold = fold_of(rows.size, folds, seed)
    return [(rows[fold != k], rows[fold == k]) for k in range(folds)]


def _fixed_policy_folds(view: TraceView, n_rows: int) -> int:
    """Folds for the tuned baselines beside a given policy, which itself needs none: the default,
    fewer on a small bundle (each fold at least 2 requests), refused below 4 requests."""
    if n_rows < 4:
        raise ConfigError(f"{view.path}: {n_rows} request{'s are' if n_rows != 1 else ' is'} too few to tune the "
                          "threshold and router baselines beside the policy (at least 4)")
    return min(DEFAULT_FOLDS, n_rows // 2)


def ladder_arrays(view: TraceView, costs, rows=None) -> LadderArrays:
    """The replay's per-(request, tier) arrays for these view rows (all by default) from the
    whole view's cost grid. Score: quality where judged, else the accepted flag."""
    rows = slice(None) if rows is None else rows
    quality = view.quality[rows]
    score = np.where(np.isnan(quality), view.accepted[rows], quality)
    return LadderArrays(*(np.ascontiguousarray(a) for a in (
        score, view.acceptable[rows], costs.cost[rows], costs.cost_cont[rows], costs.latency_ms[rows],
        costs.latency_cont_ms[rows])))


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
    cal_arrays: LadderArrays = field(repr=False)  # the calibration rows' replay arrays (tuned baselines)
    prompt_bins: np.ndarray
    tier_bins: np.ndarray
    cold_bins: np.ndarray
    cal_bins: tuple[np.ndarray, np.ndarray, np.ndarray]
    p_cal: np.ndarray         # (Nc, L) calibrated p̂ of the calibration rows (the threshold baseline's input)
    p_held: np.ndarray        # (Nh, L) calibrated p̂ after each tier, climbed state
    calibration: Calibration | None = None
    route: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # (route_cal, route_held), lazily
    # the policy's own routed-stage-0 scores (`Policy.route_scores`) of the held-out and the
    # calibration rows; None when the policy has no routed stage 0
    stage0_route: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    # `threshold` / `router` members scored once on the calibration rows (`B.ScoredMembers`):
    # a sweep picks each at two dozen cost budgets
    tuned: dict = field(default_factory=dict, repr=False)
    timers: dict = field(default_factory=dict, repr=False)  # per tuned baseline: its rows' timer under a load

    def walk(self, lam: float, out=None) -> Outcomes:
        """The held-out requests under the policy at λ: the simulator's numba replay (walk and
        path charges fused; the cold stop table at a skipped-to start tier, as Policy.walk),
        quality NaN where the answer it stops with is unlabelled. out: arrays to write into
        (`replay`'s)."""
        return self.walk_solved(self.policy.solve(lam), out)

    def walk_solved(self, policy: Policy, out=None) -> Outcomes:
        """The held-out requests under `policy` as it is solved now."""
        return _outcomes(replay(*_routed(policy, self._held_inputs, self.stage0_route, 0), out))

    def walk_calibration(self, lam: float) -> Outcomes:
        """The policy at λ on its calibration rows, through their bins."""
        return _outcomes(replay(*_routed(self.policy.solve(lam), self._cal_inputs, self.stage0_route, 1)))

    @cached_property
    def _held_inputs(self) -> ReplayInputs:
        return _replay_inputs(self.policy, self.prompt_bins, self.tier_bins, self.cold_bins, self.held_arrays)

    @cached_property
    def _cal_inputs(self) -> ReplayInputs:
        return _replay_inputs(self.policy, *self.cal_bins, self.cal_arrays)


def _replay_inputs(policy, prompt_bins, tier_bins, cold_bins, arrays: LadderArrays) -> ReplayInputs:
    t = policy.tables
    # the held-out grids are row slices of the pooled arrays: replayed where they lie, not copied
    return ReplayInputs.build(tier_bins, prompt_bins=prompt_bins, cold_bins=cold_bins, cost=arrays.cost,
                              cost_cont=arrays.cost_cont, latency_ms=arrays.latency_ms,
                              latency_cont_ms=arrays.latency_cont_ms, quality=arrays.score,
                              n_bins=t.n_bins, n_prompt_bins=t.n_prompt_bins, unlabelled_ok=True,
                              column_major=False)


def _routed(policy: Policy, inputs: ReplayInputs, scores, which: int):
    """(inputs, tables) to replay `policy` as solved: its own tables, or, where it routes at
    stage 0, each request's routed start as its own prompt "bin" under an identity start table
    (the replay kernels unchanged)."""
    if policy.route_threshold is None:
        return inputs, policy
    starts, identity = policy.stage0_lookup(None, scores[which], inputs.tier_bins)
    return (replace(inputs, prompt_bins=starts.astype(bin_dtype(policy.n_tiers)), n_prompt_bins=policy.n_tiers),
            (identity, policy.stop_table, policy.stop_cold_table))


def _rows_of(arrays: LadderArrays, rows: slice) -> LadderArrays:
    return LadderArrays(*(getattr(arrays, f)[rows] for f in LadderArrays.__dataclass_fields__))


def _outcomes(r) -> Outcomes:
    return Outcomes(r.start, r.stop, r.cost, r.latency_ms, r.quality)


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
        text = policy_prompt_text(policy)
    except ConfigError as exc:
        raise PolicyError(f"{where}: {exc} (written by asd {policy.meta.get('asd_version', '?')}; recalibrate "
                          "with this asd)") from None
    n_prompt = len(spec.prompt_names) + (0 if text is None else text.tiers)  # the text model's logits follow
    prompt_width = policy.predictor.n_prompt_features if policy.predictor.has_prompt else n_prompt
    if len(spec.names) != policy.predictor.n_features or n_prompt != prompt_width:
        raise PolicyError(f"{where}: its feature spec names {len(spec.names)} tier / {n_prompt} prompt "
                          f"features but its predictor reads {policy.predictor.n_features} / "
                          f"{policy.predictor.n_prompt_features}")
    features = compute_features(view, spec=spec)
    if features.missing_groups:
        what = "; ".join(f"{g} ({why})" for g, why in features.missing_groups.items())
        raise PolicyError(f"{where} uses feature groups {view.path} cannot provide: {what}; recalibrate without "
                          "them (asd calibrate --features ...) or record them")
    saw_prompts = text is not None or (policy.meta.get("calibration") or {}).get("prompt_share", 0) > 0
    if policy.predictor.has_prompt and saw_prompts and not pd.notna(view.prompts).any():
        # stage 0 would start every request from the prompt features' fill values (prompt_missing 1)
        raise PolicyError(f"{where}'s stage 0 reads the prompts, and {view.path} records none; record them, or "
                          "recalibrate without stage 0 (asd calibrate --no-stage0)")
    return features


class Evaluation:
    """Policies and baselines replayed on held-out requests of one bundle.

    policy: a Policy or a policy file to replay as it is (no calibration; see the module
    docstring; policy_name names it in refusals); `policy_lam` is the λ it was saved at,
    `warnings` says when the replay is in-sample. check_held: called with the held-out rows (pooled,
    in replay order) once they are drawn, before any features or fits (`job.arrivals_check`)."""

    def __init__(self, bundle, *, folds: int | None = None, split: str | None = None,
                 predictor: str = "logistic", groups=None, risk="mean", stage0: bool = True,
                 cost_model: str | None = None, n_bins: int | None = None, seed: int = DEFAULT_SEED,
                 progress=None, policy=None, policy_name: str | None = None,
                 max_calibration_rows: int | None = MAX_CALIBRATION_ROWS, prompt_tokens: PromptTokens | None = None,
                 fit: bool = True, check_held=None, **calibrate_options):
        view = bundle if isinstance(bundle, TraceView) else load_view(bundle)
        from asd.calibration.calibrate import require_ladder

        require_ladder(view)
        self.view = view
        if prompt_tokens is not None and len(prompt_tokens) != view.n_requests:
            raise ValueError(f"prompt_tokens counts {len(prompt_tokens)} prompts, the view has {view.n_requests}")
        self._given_tokens = prompt_tokens  # another evaluation of this view counted them (`counted_prompts`)
        self.warnings: list[str] = []
        self.fixed = None if policy is None else load_policy(policy)
        if policy_name is None and (isinstance(policy, str) or hasattr(policy, "__fspath__")):
            policy_name = str(policy)
        where = "policy" if policy_name is None else f"policy {policy_name}"
        self.policy_name = policy_name
        if self.fixed is not None:  # compatibility before anything is computed
            self.features = fixed_policy_features(self.fixed, view, where)
            for group in self.features.groups:  # a group the bundle has, but not at every tier
                lacking = tiers_lacking(view, group)
                if lacking:
                    self.warnings.append(
                        f"tier {', '.join(lacking)} has no {group} data in {view.path}: the {where}'s {group} "
                        "features are replayed there on their fill values, for every request")
            self.policy_lam = float(self.fixed.lam)
            self.policy_start_lam = float(self.fixed.start_lam)
        has_split = view.has_split
        folds = None if folds is None else whole_number("folds", folds, 2)
        folds_given = folds
        seed = whole_number("seed", seed, 0)
        if split is not None and folds is not None:
            raise ConfigError("--split and --folds are alternatives: give one")
        if not fit and policy is not None:
            raise ConfigError("fit=False replays the methods that need no policy: give no policy")
        if not fit:  # what shapes a fitted policy shapes nothing here: said, not silently dropped
            unused = [o for o, given in (("--predictor", predictor != "logistic"),
                                         ("--risk", risk not in ("mean", None)), ("--no-stage0", not stage0)) if given]
            if unused:
                verb = "they have" if len(unused) > 1 else "it has"
                self.warnings.append(f"{', '.join(unused)}: no policy is fitted, so {verb} no effect")
        if not fit and split is None:  # nothing is calibrated, so nothing needs holding out
            if folds is not None:
                self.warnings.append(f"--folds {folds}: no policy is fitted, so every request is replayed once")
            folds = None
        elif split is None and folds is None:
            folds = None if has_split else DEFAULT_FOLDS
            split = "test" if has_split else None
        if not fit:
            if split is not None:
                check_split(view, split)
            held = np.flatnonzero(view.split == split) if split is not None else np.arange(view.n_requests)
            if held.size == 0:
                raise ConfigError(f"{view.path}: split {split!r} has no requests")
            plan = []
            where = f"the {held.size} requests of split {split!r}" if split is not None else "every request"
            self.design = {"split": split, "folds": None,
                           "description": f"no policy fitted; {where} replayed under the methods that need no "
                                          "quality labels"}
        elif split is not None:
            check_split(view, split)
            held = np.flatnonzero(view.split == split)
            cal = np.flatnonzero((view.split != split) & (view.split != None))  # noqa: E711
            if held.size and not cal.size and self.fixed is not None:
                # a given policy needs no calibration rows (a held-out bundle checked in CI): only the
                # tuned baselines do, and they are cross-fitted among the held-out requests
                plan = _cross_fitted(view, held, _fixed_policy_folds(view, held.size), seed)
            elif held.size == 0 or cal.size == 0:
                raise ConfigError(f"{view.path}: split {split!r} leaves {held.size} held-out and {cal.size} "
                                  "calibration requests; both must be non-empty")
            else:
                plan = [(cal, held)]
            self.design = {"split": split, "folds": None,
                           "description": f"calibrated on {cal.size} requests, replayed on split {split!r} ({held.size})"}
        else:
            if self.fixed is not None and folds_given is None:  # only the tuned baselines are cross-fitted
                folds = _fixed_policy_folds(view, view.n_requests)
            plan = _cross_fitted(view, np.arange(view.n_requests), folds, seed)
            self.design = {"split": None, "folds": folds,
                           "description": f"pooled {folds}-fold cross-fitting over {view.n_requests} requests "
                                          f"(each policy calibrated on {folds - 1} folds, replayed on its own)"}
        self.fitted = fit
        if fit and self.fixed is None:  # as asd calibrate: a fit there knows nothing of that tier's answers
            from asd.calibration.calibrate import require_labels

            used = np.zeros(view.n_requests, dtype=bool)  # the folds' rows, united (np.unique: 2 s at 10^6)
            for cal, _ in plan:
                used[cal] = True
            require_labels(view, np.flatnonzero(used), "calibrating the policy")
        full_cal = int(sum(cal.size for cal, _ in plan))
        plan = [(subsample_rows(cal, max_calibration_rows, seed), held) for cal, held in plan]
        if sum(cal.size for cal, _ in plan) < full_cal:
            self.design["description"] += (f"; each policy fitted on a seeded subsample of at most "
                                           f"{max_calibration_rows} of its calibration requests")
        self.design["max_calibration_rows"] = max_calibration_rows
        if plan:
            held = np.concatenate([held for _, held in plan])
        if check_held is not None:  # what would fail on the held-out rows only after the fits, refused before them
            check_held(held)
        if not fit:
            self.features = None
        elif self.fixed is None:
            n_features = sum(len(names) for names in FEATURE_GROUPS.values())  # an upper bound
            dtype = (np.float32 if 8 * view.n_requests * view.n_tiers * n_features > FLOAT32_FEATURES_ABOVE_BYTES
                     else np.float64)
            self.features = compute_features(view, groups, dtype=dtype)
            self.design["feature_storage"] = np.dtype(dtype).name
            if dtype == np.float32:
                self.design["description"] += "; features stored as float32"
        else:
            self._describe_fixed(split, plan)
        # Latency and cost fits read timings and token counts, never labels: one for the bundle.
        # A given policy brings the cost model it was calibrated with (its unit, its coefficients;
        # the `trace` kind still charges this bundle's recorded timings where it has them).
        policy_model = cost_model is None and self.fixed is not None and bool(self.fixed.meta.get("cost_model"))
        if policy_model:
            try:
                cost_model = CostModel.from_dict(self.fixed.meta["cost_model"])
            except PolicyError as exc:
                raise PolicyError(f"{where}: {exc} (written by asd {self.fixed.meta.get('asd_version', '?')}; "
                                  "recalibrate with this asd)") from None
        if not isinstance(cost_model, CostModel):
            from asd.calibration.calibrate import default_cost_model

            cost_model = fit_cost_model(view, default_cost_model(view) if cost_model is None else cost_model)
        self.cost_model = cost_model
        if policy_model and cost_model.kind == "trace":
            untimed = [n for i, n in enumerate(view.tier_names)
                       if not (np.isfinite(view.e2e_ms[:, i]).any() or np.isfinite(view.ttft_ms[:, i]).any())]
            if untimed:  # a trace model fitted here prices such a tier by the hardware profile, and says so
                self.warnings.append(
                    f"{view.path} records no timings at {', '.join(untimed)}: latencies there are the policy's trace "
                    "model (fitted on its calibration bundle) applied to this bundle's token counts, not measured")
        self.options = dict(predictor=predictor, groups=groups, risk=risk, stage0=stage0,
                            cost_model=self.cost_model, n_bins=n_bins, seed=seed, extra=calibrate_options)
        # the pooled held-out arrays once; each fold's are row slices of them (views, no copy).
        # The cost grid is kept only as the rows replayed (see `costs`) and dropped before the
        # folds are fitted.
        costs = self.cost_model.grid(view)
        self.speculative = bool(costs.speculative)
        self.cost_note = costs.note  # the model's note, how drafts are priced, and any token count filled
        costs = CostGrid(costs.cost, costs.cost_cont, costs.latency_ms, costs.latency_cont_ms, costs.speculative,
                         costs.unit)  # the charges alone: its four token-count grids go now
        self.held = held
        self.arrays = ladder_arrays(view, costs, self.held)
        self._judge_on_complete_labels()
        cal_arrays = [ladder_arrays(view, costs, cal) for cal, _ in plan]
        del costs
        bounds = np.cumsum([0] + [held.size for _, held in plan])
        self.folds = []
        self._fixed_rows = None
        for k, (cal, held) in enumerate(plan):
            if progress is not None and self.fixed is None:
                progress(k, len(plan))
            self.folds.append(self._fold(cal, held, _rows_of(self.arrays, slice(bounds[k], bounds[k + 1])),
                                         cal_arrays[k]))
        self.cost_last = float(self.arrays.cost[:, -1].sum())

    def _judge_on_complete_labels(self) -> None:
        """Every method's quality is a mean over the held-out requests it is labelled on. Where
        some requests lack a label at a tier that others have one at, each method would be judged
        on its own subset (always-last on the 10% labelled there, the oracle on all: the "upper
        bound" fell below always-last). So quality is judged on the requests labelled at every
        tier that is labelled at all, the same for every method; cost and latency stay over all."""
        a = self.arrays
        self.labelled_score = a.score  # every label, for fitting on held-out rows (the fitted-Q reference)
        labelled = ~np.isnan(a.score)
        # tiers labelled anywhere in the bundle: a test split with no label at a tier the
        # calibration rows have labels at is as partly labelled as one with a few
        view = self.view
        judged = ~np.isnan(view.acceptable).all(axis=0)
        complete = labelled[:, judged].all(axis=1)
        if self.fitted and judged.any() and not judged.all():  # a given policy: a tier labelled nowhere is unknown
            self.warnings.append(
                f"{view.path} has no quality label at tier {', '.join(np.asarray(view.tier_names)[~judged])}: a "
                "request a method stops at there is left out of that method's quality")
        if not judged.any() or complete.all():
            return
        if not complete.any():  # no request to judge every method on: each keeps its own, and says so
            self.warnings.append(
                f"no {'held-out' if self.fitted else 'replayed'} request is labelled at every tier that is labelled: "
                "each method's quality is measured on the requests labelled where it stops, so they are not "
                "compared on the same requests")
            return
        self.labelled_score = a.score.copy()
        # quality only: `acceptable` keeps every label, so the oracle still sends each request to
        # its cheapest acceptable tier (its cost and stops over all requests, as every method's)
        a.score[~complete] = np.nan
        self.design["quality_requests"] = int(complete.sum())
        self.warnings.append(
            f"{int((~complete).sum())} of {complete.size} {'held-out' if self.fitted else 'replayed'} requests lack a "
            f"quality label at some tier the others are labelled at: every method's quality is measured on the "
            f"{int(complete.sum())} labelled at every such tier, so all are judged on the same requests (cost and "
            "latency on all)")

    @property
    def settings(self) -> dict:
        """What shaped the fitted policies (a report's JSON records it, to rerun the same):
        predictor, risk (mean or lcb:G), stage 0, the fold seed; a given policy's own file instead."""
        if self.fixed is not None:
            return {"policy": self.policy_name, "lambda": self.policy_lam, "seed": int(self.options["seed"])}
        risk = self.options["risk"]
        return {"predictor": self.options["predictor"],
                "risk": risk if risk in ("mean", None) else f"lcb:{float(risk):g}",
                "stage0": bool(self.options["stage0"]), "seed": int(self.options["seed"])}

    @cached_property
    def costs(self) -> CostGrid:
        """The cost grid of every request (the DES reads its token counts), recomputed on first
        use: the evaluation itself keeps only the charges it replays (`arrays`, each fold's
        `cal_arrays`), not eight more (N, L) grids (0.25 GB at 10^6 requests × 4 tiers)."""
        return self.cost_model.grid(self.view)

    def _describe_fixed(self, split, plan) -> None:
        """The design sentence and the in-sample warning of a given policy's replay."""
        view, meta = self.view, self.fixed.meta
        n_held = sum(h.size for _, h in plan)
        lam = f"λ = {self.policy_lam:.4g}"
        if split is not None and len(plan) > 1:  # the bundle has no calibration rows
            what = (f"given policy ({lam}) replayed on split {split!r} ({n_held} requests); tuned baselines "
                    f"cross-fitted over {len(plan)} folds of them (no request outside split {split!r})")
        elif split is not None:
            what = (f"given policy ({lam}) replayed on split {split!r} ({n_held} requests); tuned baselines "
                    f"picked on the other {plan[0][0].size}")
        else:
            why = "--folds, not the bundle's split" if view.has_split else "the bundle has no split column"
            what = (f"given policy ({lam}) replayed on every request ({n_held}: {why}); "
                    f"tuned baselines cross-fitted over {len(plan)} folds")
        self.design["description"] = what
        self.design["policy_lambda"] = self.policy_lam
        bundle = meta.get("bundle") if isinstance(meta.get("bundle"), dict) else {}
        known = meta.get("bundle_content_hash", bundle.get("content_hash"))
        calibration = meta.get("calibration") if isinstance(meta.get("calibration"), dict) else {}
        if calibration.get("request_id_sketch") is not None:  # which requests it saw, whatever the bundle's hash
            replayed = view.request_ids[np.concatenate([held for _, held in plan])]
            found = calibration_share(calibration["request_id_sketch"], replayed)
            if found is not None:
                if found[0] >= IN_SAMPLE_SHARE:
                    self.design["in_sample"] = True
                    self.warnings.append(f"in-sample: about {100 * found[0]:.0f}% of the {len(replayed)} requests "
                                         f"replayed from {view.path} were in the policy's calibration data (by request "
                                         "id); figures are optimistic")
                return
            # too few replayed ids fall below the sketch's largest hash to estimate: the bundle hash decides
        held_out = split is not None and calibration.get("split") is not None and calibration.get("split") != split
        if known is not None and known == view.content_hash and not held_out:
            self.design["in_sample"] = True
            self.warnings.append(f"in-sample: {view.path} is the bundle the policy was calibrated on "
                                 f"(content hash {known[:12]}…) and these requests were in its calibration data; "
                                 "figures are optimistic")

    def deployment_fold(self) -> Fold:
        """The policy a deployment runs, fitted as each fold's is but on every calibration request
        (all of them under pooled folds, up to `max_calibration_rows`; the calibration split's
        otherwise). Nothing is held out: its held rows are its calibration rows, and it is meant
        for `walk_calibration` (their out-of-fold bins), as the folds' deployment check uses."""
        if self.fixed is not None:
            raise ConfigError("a given policy is replayed as it is: there is no policy to fit for deployment")
        if self.design["split"] is None:
            cal = subsample_rows(np.arange(self.view.n_requests), self.design["max_calibration_rows"],
                                 self.options["seed"])
        else:
            cal = self.folds[0].cal
        arrays = ladder_arrays(self.view, self.costs, cal)
        return self._fold(cal, cal, arrays, arrays, sketch_ids=True)

    def _fold(self, cal: np.ndarray, held: np.ndarray, held_arrays: LadderArrays, cal_arrays: LadderArrays, *,
              sketch_ids: bool = False) -> Fold:
        o, fs = self.options, self.features
        if self.fixed is None:
            from asd.calibration.calibrate import calibrate

            text = o["stage0"] and o["extra"].get("prompt_text", True)
            c = calibrate(self.view, rows=cal, predictor=o["predictor"], risk=o["risk"], stage0=o["stage0"],
                          cost_model=o["cost_model"], n_bins=o["n_bins"], seed=o["seed"], features=fs,
                          single_feature_report=False, prompt_tokens=self.prompt_tokens if text else None,
                          sketch_ids=sketch_ids, **o["extra"])
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
        stage0_route = None
        if policy.tables.has_route_evidence:  # the calibration rows' as the policy saw them (out of fold)
            route_cal = (policy.tables.evidence_route_p if c is not None
                         else policy.route_scores(self._prompt_x(policy, cal)))
            stage0_route = (policy.route_scores(self._prompt_x(policy, held)), np.asarray(route_cal, dtype=np.float64))
        return Fold(policy, cal, held, held_arrays, cal_arrays, prompt_bins, tier_bins, cold_bins, cal_bins,
                    p_cal, p_held, calibration=c, stage0_route=stage0_route)

    def _prompt_x(self, policy: Policy, rows: np.ndarray) -> np.ndarray:
        """Stage 0's input for these rows: the prompt features, then the logits of the policy's
        prompt text model where it has one (fitted on its calibration rows only)."""
        model = policy_prompt_text(policy)
        return with_prompt_text(self.features.prompt_x[rows], self.view.prompts[rows], model,
                                None if model is None else self._tokens(rows))

    @cached_property
    def prompt_tokens(self) -> PromptTokens | None:
        """Every prompt of the bundle counted once, for the text models of every fold (None above
        PROMPT_TOKENS_MAX_ROWS requests); made the first time a text model needs it."""
        if self._given_tokens is not None:
            return self._given_tokens
        return PromptTokens.of(self.view.prompts) if self.view.n_requests <= PROMPT_TOKENS_MAX_ROWS else None

    def counted_prompts(self) -> PromptTokens | None:
        """The prompts as counted so far, without counting them (None when no text model needed
        them): for another evaluation of this view (`prompt_tokens=`), as the ablations and the
        repeated checks make."""
        return self.__dict__.get("prompt_tokens")  # cached_property keeps its value here

    def _tokens(self, rows: np.ndarray) -> PromptTokens | None:
        return None if self.prompt_tokens is None else self.prompt_tokens.take(rows)

    def _bins(self, policy: Policy, rows: np.ndarray):
        """(prompt, climbed, cold) bins of these rows, in the narrowest dtype that holds them
        (`bin_dtype`: what the replay reads), BIN_CHUNK_ROWS requests at a time."""
        fs, t = self.features, policy.tables
        prompt = np.zeros(rows.size, dtype=bin_dtype(t.n_prompt_bins))
        tier = np.empty((rows.size, self.view.n_tiers), dtype=bin_dtype(t.n_bins))
        cold = np.empty_like(tier)
        for lo in range(0, rows.size, BIN_CHUNK_ROWS):
            part, out = rows[lo:lo + BIN_CHUNK_ROWS], slice(lo, lo + BIN_CHUNK_ROWS)
            if policy.predictor.has_prompt:
                prompt[out] = policy.prompt_bins(self._prompt_x(policy, part))
            climbed = fs.tier_x[part]
            tier[out] = policy.tier_bins(climbed)
            cold[out] = policy.cold_tier_bins(fs.cold_x.of_climbed(climbed))
        return prompt, tier, cold

    def _p_hat(self, policy: Policy, rows: np.ndarray) -> np.ndarray:
        """The policy's own calibrated p̂ after each tier (climbed state) for these rows."""
        x = self.features.tier_x[rows]
        return np.stack([policy.predictor.predict_proba(i + 1, x[:, i]) for i in range(self.view.n_tiers)], axis=1)

    def router_scores(self, f: Fold):
        """Prompt-only P(acceptable at tier s), per tier: out of fold on the calibration rows,
        from the final model on the held-out rows (the router baseline's input and the DES's
        difficulty scheduler's at a start tier), fitted the first time they are asked for. It reads
        what the policy's stage 0 reads: the prompt features and the prompt text model's logits
        (the fold's own, or one fitted on the calibration rows for a given policy)."""
        if f.route is None:
            from asd.calibration.predictors import fit_stage

            cal, held = f.cal, f.held
            x = self.features.prompt_x
            y = self.view.acceptable
            c = f.calibration
            if c is not None and c.prompt_text is not None:
                text, x_cal = c.prompt_text, c.prompt_x
            else:
                text, oof = fit_prompt_text(self.view.prompts[cal], y[cal], DEFAULT_FOLDS, self.options["seed"],
                                            self._tokens(cal))
                x_cal = x[cal] if text is None else np.hstack([x[cal], oof])
            x_held = with_prompt_text(x[held], self.view.prompts[held], text,
                                      None if text is None else self._tokens(held))
            route_cal = np.empty((cal.size, self.view.n_tiers))
            route_held = np.empty((held.size, self.view.n_tiers))
            # The fold's calibration fitted some of these very stages for its stage 0 (tier 0's prompt
            # stage, the routed stage 0's tiers 1..L−2) where it had the same predictor, rows, inputs
            # (the prompt text tried with the same folds), folds and seed: not fitted twice.
            o = self.options
            same = (c is not None and o["predictor"] == "logistic" and o["stage0"]
                    and o["extra"].get("prompt_text", True) and o["extra"].get("folds", DEFAULT_FOLDS) == DEFAULT_FOLDS)
            made = dict(enumerate([c.prompt_fit, *c.route_fits])) if same else {}
            for s in range(self.view.n_tiers):
                fit = made.get(s) or fit_stage("logistic", x_cal, y[cal, s], np.arange(cal.size), folds=DEFAULT_FOLDS,
                                               seed=o["seed"])
                route_cal[:, s], route_held[:, s] = fit.oof_p, fit.predict(x_held)
            f.route = (route_cal, route_held)
        return f.route

    # -- the policy ------------------------------------------------------------------------------
    @cached_property
    def _pieces(self) -> dict:
        return {}  # id(policy) → (policy, its pieces): the policy is kept, so its id is not reused

    def pieces_of(self, policy) -> list:
        """`distinct_policies` of `policy` over [0, LAMBDA_CAP], found once per policy."""
        from asd.engine.search import LAMBDA_CAP, distinct_policies

        if id(policy) not in self._pieces:
            self._pieces[id(policy)] = (policy, distinct_policies(policy, 0.0, LAMBDA_CAP, rel_tol=1e-6))
        return self._pieces[id(policy)][1]

    @property
    def policy_pieces(self) -> list[list]:
        """Per distinct fold policy, its `pieces_of` (a given policy is every fold's: once)."""
        return [self.pieces_of(p) for p in {id(f.policy): f.policy for f in self.folds}.values()]

    def distinct_policy_lambdas(self) -> list[float]:
        """One λ for each distinct pooled policy, ascending: the union of every fold policy's λ
        breakpoints, their ends and a λ inside each interval between consecutive ones (the pooled
        outcome is constant there). An outcome may come back at a larger λ (with stage 0 the start
        tier need not move monotonically in λ), so a few λ may repeat one met before."""
        edges = sorted({0.0}.union(*({piece.lam_lo, piece.lam_hi} for pieces in self.policy_pieces
                                     for piece in pieces)))
        return [edges[0]] + [0.5 * (a + b) for a, b in zip(edges, edges[1:]) if b > a] + [edges[-1]]

    def policy_outcomes(self, lam: float | None = None) -> Outcomes:
        """The pooled held-out outcomes at λ; lam=None: a given policy as it was saved (its λ
        and start table)."""
        if lam is None:
            if self.fixed is None:
                raise ConfigError("policy_outcomes() without λ needs a given policy (Evaluation(policy=...))")
            self.fixed.solve(self.policy_lam, start_lam=self.policy_start_lam)
        # each fold replays straight into its slice of the pooled arrays (no per-fold copies to join)
        n = self.held.size
        pooled = (np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), np.empty(n), np.empty(n), np.empty(n))
        lo = 0
        for f in self.folds:
            part = tuple(a[lo:lo + f.held.size] for a in pooled)
            if lam is None:
                f.walk_solved(self.fixed, part)
            else:
                f.walk(lam, part)
            lo += f.held.size
        return Outcomes(*pooled)

    # -- baselines -------------------------------------------------------------------------------
    def fixed_baselines(self, lam: float) -> dict[str, Outcomes]:
        return dict(self.iter_fixed_baselines(lam))

    def iter_fixed_baselines(self, lam: float):
        """(name, Outcomes) of each fixed baseline, one at a time (at 10^6 requests each is 40 MB:
        a report summarises and drops them as they come)."""
        yield from self.iter_label_free_baselines()
        a = self.arrays
        tier_costs = a.cost.mean(axis=0)
        yield "protocol", Outcomes.concat([B.protocol(f.held_arrays, f.p_held, tier_costs, lam) for f in self.folds])
        yield "oracle", B.oracle(a, judged=~np.isnan(self.view.acceptable).all(axis=0))

    def iter_label_free_baselines(self):
        """(name, Outcomes) of the baselines whose stops need no policy, p̂ or label: each tier
        alone, `fixed-2stage` and `pipeline` (all an unlabelled bundle can be replayed under)."""
        a = self.arrays
        for i, name in enumerate(self.view.tier_names):
            yield f"always-{name}", B.always(a, i)
        yield "fixed-2stage", B.fixed_two_stage(a)
        yield "pipeline", B.pipeline(a)

    def tuned_baseline(self, name: str, *, latency=None, cost_rel=None, folds=None, timer_for=None) -> Outcomes:
        """`threshold` or `router`, each fold's member picked on its calibration rows under the
        same constraint, replayed on its held-out rows and pooled (over `folds`: all by default).
        timer_for: (fold, positions of its calibration rows) → a timer of outcomes on them under a
        load (`job.tuned_latency`), so a latency limit is met under that load on the calibration
        rows too; None: replayed."""
        parts = []
        for f in self.folds if folds is None else folds:
            if name == "threshold":
                cal_scores, held_scores = f.p_cal, f.p_held
            else:
                cal_scores, held_scores = self.router_scores(f)
            scored = f.tuned.get(name)
            if scored is None:
                family = B.threshold_family(cal_scores) if name == "threshold" else B.router_family(cal_scores)
                scored = f.tuned[name] = B.ScoredMembers(family, cal_scores, f.cal_arrays, self.options["seed"])
            timer = None
            if latency is not None and timer_for is not None:
                timer = f.timers.get(name)
                if timer is None or timer.key != timer_for.key:
                    positions = np.arange(f.cal.size) if scored.rows is None else scored.rows
                    timer = f.timers[name] = timer_for(f, positions)
            c = scored.choose(latency=latency, cost_rel=cost_rel, timer=timer)
            parts.append(walk_outcomes(*scored.family.start_stop(held_scores, c), f.held_arrays))
        return Outcomes.concat(parts)

    def random_baseline(self, target_cost_mean: float) -> Outcomes:
        return B.random_matched(self.arrays, target_cost_mean, seed=self.options["seed"])
