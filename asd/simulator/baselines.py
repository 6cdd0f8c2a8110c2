"""Baselines, replayed on the same held-out requests as the policy and named exactly so in every
table and JSON: `always-<tier>`, `fixed-2stage`, `pipeline`, `threshold`, `router`, `random`,
`protocol`, `oracle`.

Fixed baselines need no data to tune. `threshold` (FrugalGPT-style per-tier thresholds on the
same calibrated p̂ the policy uses) and `router` (RouteLLM-style: one tier chosen from the
prompt alone) are families of rules; each fold picks its member on its own calibration rows
under the same constraint the policy meets (a latency limit or a cost budget), and only then is
it replayed on the held-out rows — exactly as the policy's λ is treated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asd.engine.policy import quantile_thresholds, route_thresholds
from asd.engine.protocol import ProtocolPolicy
from asd.simulator.outcomes import LadderArrays, Outcomes, latency_stat, walk_outcomes

FIXED = ("fixed-2stage", "pipeline", "protocol", "oracle")
TUNED = ("threshold", "router")
UPPER_BOUND = "oracle"
MAX_CANDIDATES = 300      # threshold combinations per family: enough to trace a frontier, cheap to score
MAX_TUNING_ROWS = 50_000  # calibration rows used to pick a member (a seeded subsample beyond this)


def baseline_names(tier_names) -> list[str]:
    """Every baseline in report order."""
    return [f"always-{t}" for t in tier_names] + ["fixed-2stage", "pipeline", "threshold", "router",
                                                   "random", "protocol", "oracle"]


# -- fixed rules -----------------------------------------------------------------------------------
def always(arrays: LadderArrays, tier: int) -> Outcomes:
    """Every request runs tier `tier` alone (the tiers below it skipped)."""
    k = np.full(arrays.n_requests, tier, dtype=np.int64)
    return walk_outcomes(k, k, arrays)


def pipeline(arrays: LadderArrays) -> Outcomes:
    """PipeSpec-style fixed full depth: every tier in turn, each continuing from the one below."""
    n = arrays.n_requests
    return walk_outcomes(np.zeros(n, dtype=np.int64), np.full(n, arrays.n_tiers - 1, dtype=np.int64), arrays)


def fixed_two_stage(arrays: LadderArrays) -> Outcomes:
    """The protocol's FixedDepthBaseline: the first tier drafts, the last tier answers. With two
    tiers the last continues from the draft (speculative where the trace has drafts); on longer
    ladders the pair is not adjacent, so the last tier regenerates, as the protocol's code does."""
    n, last = arrays.n_requests, arrays.n_tiers - 1
    if last == 1:
        return pipeline(arrays)
    rows = np.arange(n)
    return Outcomes(np.zeros(n, dtype=np.int64), np.full(n, last, dtype=np.int64),
                    arrays.cost[:, 0] + arrays.cost[:, last],
                    arrays.latency_ms[:, 0] + arrays.latency_ms[:, last], arrays.score[rows, last],
                    after_start=np.full(n, last, dtype=np.int64))  # the DES runs these two tiers only


def oracle(arrays: LadderArrays, judged: np.ndarray | None = None) -> Outcomes:
    """Upper bound: each request sent straight to its cheapest acceptable tier (tiers below it
    skipped); when no tier is acceptable, to its cheapest tier. Where an answer is not judged (a
    partly labelled bundle), the request goes where the labels it lacks could make it cheapest:
    an unjudged tier counts as acceptable when some judged tier is; with none, the cheapest
    tier, as if every unjudged answer failed. So the oracle's cost stays a lower bound whatever
    the missing labels say. A tier judged nowhere stays unacceptable: nothing says it ever
    suffices. `judged`: the tiers labelled somewhere in the bundle (default: in `arrays`), so a
    test split with no label at a tier the calibration rows judge still counts it as unjudged."""
    acceptable = arrays.acceptable
    ok = acceptable == 1.0
    some_ok = ok.any(axis=1)
    if judged is None:
        judged = ~np.isnan(acceptable).all(axis=0)
    unjudged = np.isnan(acceptable) & np.asarray(judged, dtype=bool)
    cost_if_ok = np.where(ok | (unjudged & some_ok[:, None]), arrays.cost, np.inf)
    tier = np.where(some_ok, np.argmin(cost_if_ok, axis=1), np.argmin(arrays.cost, axis=1))
    return walk_outcomes(tier, tier, arrays)


def protocol(arrays: LadderArrays, p_hat: np.ndarray, tier_costs, lam: float) -> Outcomes:
    """The research protocol's own rule on the same p̂ (it always stops at the first tier:
    asd.engine.protocol explains why)."""
    stop = ProtocolPolicy(tier_costs, lam).stop_tiers(p_hat)
    return walk_outcomes(np.zeros(arrays.n_requests, dtype=np.int64), stop, arrays)


def random_matched(arrays: LadderArrays, target_cost: float, seed: int = 0) -> Outcomes:
    """Each request sent to one tier at random, mixing the two single tiers whose mean cost
    brackets `target_cost` so the expected mean cost matches it (seeded)."""
    n = arrays.n_requests
    means = arrays.cost.mean(axis=0)
    order = np.argsort(means)
    tier = np.full(n, order[0], dtype=np.int64)
    if target_cost >= means[order[-1]]:
        tier[:] = order[-1]
    elif target_cost > means[order[0]]:
        hi = int(np.searchsorted(means[order], target_cost))
        a, b = order[hi - 1], order[hi]
        share_b = (target_cost - means[a]) / (means[b] - means[a])
        tier = np.where(np.random.default_rng(seed).random(n) < share_b, b, a).astype(np.int64)
    return walk_outcomes(tier, tier, arrays)


class PathCharges:
    """What every request is charged on each path start..stop, computed once by walk_outcomes
    itself: a family's members then differ only in which path each request takes, and their
    outcomes are gathers of these numbers (exactly walk_outcomes' own, hundreds of times cheaper)."""

    def __init__(self, arrays: LadderArrays):
        n, n_tiers = arrays.n_requests, arrays.n_tiers
        self.arrays = arrays
        self.cost = np.zeros((n_tiers * n_tiers, n))  # row start·L + stop
        self.latency_ms = np.zeros((n_tiers * n_tiers, n))
        for start in range(n_tiers):
            for stop in range(start, n_tiers):
                out = walk_outcomes(np.full(n, start, dtype=np.int64), np.full(n, stop, dtype=np.int64), arrays)
                self.cost[start * n_tiers + stop], self.latency_ms[start * n_tiers + stop] = out.cost, out.latency_ms

    def outcomes(self, start: np.ndarray, stop: np.ndarray) -> Outcomes:
        """walk_outcomes(start, stop, arrays) for tiers that satisfy 0 <= start <= stop < L."""
        n, n_tiers = self.arrays.n_requests, self.arrays.n_tiers
        rows = np.arange(n)
        cell = (start * n_tiers + stop) * n + rows
        return Outcomes(start, stop, self.cost.ravel()[cell], self.latency_ms.ravel()[cell],
                        self.arrays.score[rows, stop])


# -- tuned families ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """A family of rules indexed by candidate: stop tiers from a score matrix (N, L)."""

    name: str
    thresholds: np.ndarray  # (C, L-1) for threshold, (C, 1) for router

    def start_stop(self, scores: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
        n, n_tiers = scores.shape
        t = self.thresholds[c]
        # the last tier always "hits", so the first hit is the stop tier
        hit = np.empty((n, n_tiers), dtype=bool)
        hit[:, -1] = True
        if self.name == "threshold":  # climb from tier 0, stop at the first tier confident enough
            np.greater_equal(scores[:, : n_tiers - 1], t[None, :], out=hit[:, :-1])
        else:  # router: go straight to the cheapest tier predicted acceptable from the prompt
            np.greater_equal(scores[:, : n_tiers - 1], t[0], out=hit[:, :-1])
        stop = np.argmax(hit, axis=1).astype(np.int64)
        return (np.zeros(n, dtype=np.int64) if self.name == "threshold" else stop), stop

    def members(self, scores: np.ndarray):
        """start_stop(scores, c) of every member c in turn, from each tier's comparisons with its
        distinct thresholds made once (the same comparisons: the same tiers)."""
        n, n_tiers = scores.shape
        per_tier = self.thresholds if self.name == "threshold" else np.repeat(self.thresholds, n_tiers - 1, axis=1)
        reaches, which = [], np.empty((self.size, n_tiers - 1), dtype=np.intp)
        for i in range(n_tiers - 1):
            values, which[:, i] = np.unique(per_tier[:, i], return_inverse=True)
            reaches.append(scores[None, :, i] >= values[:, None])  # (thresholds, n): tier i confident enough
        zeros = np.zeros(n, dtype=np.int64)
        for c in range(self.size):
            stop = np.full(n, n_tiers - 1, dtype=np.int64)
            for i in reversed(range(n_tiers - 1)):  # the first tier that reaches its threshold wins
                stop[reaches[i][which[c, i]]] = i
            yield (zeros if self.name == "threshold" else stop), stop

    @property
    def size(self) -> int:
        return self.thresholds.shape[0]


def threshold_family(scores: np.ndarray) -> Family:
    """Per-tier thresholds on calibrated p̂, from a grid of its quantiles (plus 'never stop here'),
    every combination up to MAX_CANDIDATES."""
    n_tiers = scores.shape[1]
    if n_tiers == 1:
        return Family("threshold", np.zeros((1, 0)))
    per_tier = max(2, int(MAX_CANDIDATES ** (1.0 / (n_tiers - 1))))
    grids = [quantile_thresholds(scores[:, i], per_tier) for i in range(n_tiers - 1)]
    mesh = np.meshgrid(*grids, indexing="ij")
    return Family("threshold", np.stack([m.ravel() for m in mesh], axis=1))


def router_family(route_scores: np.ndarray) -> Family:
    """One threshold on the prompt-only P(acceptable at tier s), shared by every tier."""
    grid = route_thresholds(route_scores[:, :-1]) if route_scores.shape[1] > 1 else np.array([2.0])
    return Family("router", grid[:, None])


class ScoredMembers:
    """Every member of a family scored once on a set of (calibration) rows: its cost relative to
    always-last and its quality do not depend on the constraint it is picked under, so a ladder
    of cost budgets (`asd sweep`) or of τ_max picks from these instead of replaying every member
    again. Latency statistics are computed the first time a statistic is asked for."""

    def __init__(self, family: Family, scores: np.ndarray, arrays: LadderArrays, seed: int = 0):
        self.rows = None  # which of the given rows are scored (all, or a seeded subsample)
        if arrays.n_requests > MAX_TUNING_ROWS:
            rows = np.sort(np.random.default_rng(seed).choice(arrays.n_requests, MAX_TUNING_ROWS, replace=False))
            scores, arrays, self.rows = scores[rows], arrays.take(rows), rows
        self.family, self.scores = family, scores
        cost_last = float(arrays.cost[:, -1].sum())
        self._paths = PathCharges(arrays)
        self.cost, self.quality = np.empty(family.size), np.empty(family.size)
        for c, (start, stop) in enumerate(family.members(scores)):
            out = self._paths.outcomes(start, stop)
            self.cost[c] = float(out.cost.sum()) / cost_last if cost_last > 0 else 0.0
            labelled = ~np.isnan(out.quality)
            self.quality[c] = float(out.quality[labelled].mean()) if labelled.any() else 0.0
        self._latency: dict[tuple, np.ndarray] = {}

    def latency(self, stat: str, timer=None) -> np.ndarray:
        """(C,) each member's latency statistic `stat` on these rows: replayed, or under a load
        (`timer`: outcomes on these rows → the same with the load's latencies, a `Timer` whose
        `key` names the load)."""
        key = (stat, None if timer is None else timer.key)
        if key not in self._latency:
            timed = (lambda out: out) if timer is None else timer
            self._latency[key] = np.array([latency_stat(timed(self._paths.outcomes(start, stop)).latency_ms, stat)
                                           for start, stop in self.family.members(self.scores)])
        return self._latency[key]

    def choose(self, *, latency: tuple[str, float] | None = None, cost_rel: float | None = None,
               timer=None) -> int:
        """The member with the best quality whose latency statistic stays within `latency` =
        (stat, τ_max) — replayed, or under `timer`'s load — or whose cost stays within
        `cost_rel`; ties go to the cheaper member, then to the earlier one. When none meets the
        constraint, the cheapest member."""
        ok = np.ones(self.cost.size, dtype=bool)
        if latency is not None:
            ok &= ~(self.latency(latency[0], timer) > latency[1])
        if cost_rel is not None:
            ok &= ~(self.cost > cost_rel + 1e-12)
        if not ok.any():
            return int(np.argmin(self.cost))
        feasible = np.flatnonzero(ok)
        best = feasible[self.quality[feasible] == self.quality[feasible].max()]
        return int(best[np.argmin(self.cost[best])])  # argmin: the first of equally cheap ones


def pick(family: Family, scores: np.ndarray, arrays: LadderArrays, *, latency: tuple[str, float] | None = None,
         cost_rel: float | None = None, seed: int = 0) -> int:
    """The member with the best quality on these (calibration) rows whose latency statistic stays
    within `latency` = (stat, τ_max) or whose cost relative to always-last within `cost_rel`;
    ties go to the cheaper member. When none meets the constraint, the cheapest member. Picking
    one family on the same rows under several constraints: `ScoredMembers` once, then `choose`."""
    return ScoredMembers(family, scores, arrays, seed).choose(latency=latency, cost_rel=cost_rel)
