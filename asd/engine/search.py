"""λ search: bisection on a statistic that is non-decreasing in λ (larger λ → deeper requests
→ more latency/cost, more requests reaching the last tier), to find the largest λ that keeps it
within a target τ_max. Statistic from a callback, or from per-request arrays with a Policy.

Stage 0 and soundness: from any FIXED start table, every request's depth is non-decreasing in λ
(dp_nb), so the statistic is monotone and bisection is exact; the optimal start table itself
is not monotone in λ. `search_lambda` therefore bisects with the start table pinned (to the
one optimal at a reference λ), re-solves the start table at the λ found and keeps it when it is
the same table (a fixed point: the plain optimum at λ); otherwise it re-pins at the new λ and
repeats, and after MAX_PINS rounds returns, among the pinned candidates, the one with the
highest expected acceptance under the tables (`start_lam` != `lam`, `warning` set). Either way
the returned policy's statistic was evaluated on the data and is <= τ_max, and λ is the largest
(to rel_tol) for the start table it uses.

Quality targets: quality is not monotone in λ, so `search_lambda_quality` enumerates every
distinct policy (`distinct_policies`: the stop/start tables are piecewise constant in λ) and
returns the cheapest one meeting the target.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np

from typing import NamedTuple

from asd.engine.dp_nb import TIE_HIGH, TIE_LOW, path_totals_nb, walk_bins_cold_nb, walk_bins_nb
from asd.errors import PolicyError, real_number, whole_number

LAMBDA_CAP = 1e15  # beyond this, a λ that still fits means the limit does not bind
MAX_PINS = 4  # rounds of "pin the start table, bisect, re-solve the start table" before settling


@dataclass(frozen=True)
class LambdaSearch:
    """status: "ok" (target binds), "infeasible" (even the cheapest λ = 0 exceeds it: `lam` is
    0), "slack" (the statistic stays within the target up to LAMBDA_CAP: `lam` is the λ the
    growing bracket reached, at or beyond the cap, where the deepest policy is solved).
    `statistic` is the value at `lam`; `evaluations` counts statistic calls. start_lam: the λ
    whose stage-0 start table the found policy uses (== lam: the plain optimum at lam; else
    `policy.solve(lam, start_lam=start_lam)` reproduces it). warning: set when the start table
    stayed pinned, or when the unpinned statistic was seen to fall as λ rose."""

    lam: float
    statistic: float
    target: float
    status: str
    evaluations: int
    lam_infeasible: float | None = None
    always_first: float | None = None
    always_last: float | None = None
    start_lam: float | None = None
    warning: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _check_rel_tol(rel_tol) -> None:
    # NaN compared false: the bisection stopped at once and reported λ = 0 as found
    rel_tol = real_number("rel_tol", rel_tol, PolicyError)
    if not 0.0 < rel_tol < 1.0:
        raise PolicyError(f"rel_tol={rel_tol}: must lie in (0, 1)")


def bisect_lambda(statistic: Callable[[float], float], target: float, *, lam_hi: float | None = None,
                  rel_tol: float = 1e-6, max_evaluations: int = 200) -> LambdaSearch:
    """Largest λ with statistic(λ) <= target, for a statistic non-decreasing in λ.

    The bracket grows by quadrupling from lam_hi (default 1, finite) until the statistic exceeds
    the target; if it never does up to LAMBDA_CAP, the target is slack.
    """
    target = real_number("target", target, PolicyError)
    if not math.isfinite(target):
        raise PolicyError(f"target {target}: must be a finite number")
    _check_rel_tol(rel_tol)
    evaluations = 0

    def stat(lam):
        nonlocal evaluations
        evaluations += 1
        value = float(statistic(lam))
        if math.isnan(value):
            raise PolicyError(f"statistic at λ={lam} is NaN")
        return value

    at_zero = stat(0.0)
    if at_zero > target:
        return LambdaSearch(0.0, at_zero, target, "infeasible", evaluations, lam_infeasible=0.0)
    lo, lo_value = 0.0, at_zero
    hi = 1.0 if lam_hi is None else real_number("lam_hi", lam_hi, PolicyError)
    if not 0 < hi < math.inf:  # an infinite bracket never narrows: it reported λ = 0 as found
        raise PolicyError(f"lam_hi={lam_hi}: must be a finite number > 0")
    max_evaluations = whole_number("max_evaluations", max_evaluations, 1, PolicyError)
    while True:
        hi_value = stat(hi)
        if hi_value > target:
            break
        if hi >= LAMBDA_CAP:
            return LambdaSearch(hi, hi_value, target, "slack", evaluations)
        lo, lo_value = hi, hi_value
        hi *= 4.0
    while hi - lo > rel_tol * hi and evaluations < max_evaluations:
        mid = 0.5 * (lo + hi) if lo > 0 else hi / 64.0
        if mid <= lo or mid >= hi:
            break
        mid_value = stat(mid)
        if mid_value <= target:
            lo, lo_value = mid, mid_value
        else:
            hi = mid
    return LambdaSearch(lo, lo_value, target, "ok", evaluations, lam_infeasible=hi)


STATISTICS = ("mean", "share_last", "pNN (a percentile, e.g. p95)")


def _reducer(statistic):
    """mean / share of requests stopping at the last tier / percentile q (float or 'p95')."""
    if statistic in ("mean", "share_last"):
        return statistic, None
    q = statistic
    if isinstance(q, str) and q.startswith("p"):
        q = q[1:]
    try:
        q = float(q)
    except (TypeError, ValueError):
        raise PolicyError(f"statistic {statistic!r}: use one of {', '.join(STATISTICS)}") from None
    if not 0.0 <= q <= 100.0:
        raise PolicyError(f"percentile {q}: must lie in [0, 100]")
    return "percentile", q


class ArrayStatistic:
    """statistic(λ) over N requests whose bins are known: solve the policy at λ, walk each
    request, reduce its per-tier values (N, L) summed over the tiers it ran. Reuses buffers."""

    def __init__(self, policy, prompt_bins, tier_bins, tier_values=None, statistic="mean", cold_bins=None,
                 route_scores=None):
        self.policy = policy
        self.prompt_bins, self.tier_bins, self.cold_bins = policy.check_bins(prompt_bins, tier_bins, cold_bins)
        self.route_scores = route_scores  # `Policy.route_scores`: needed at any λ where stage 0 routes
        self.start_lam = None  # None: start table optimal at each λ; else pinned to this λ's
        n, n_tiers = self.tier_bins.shape
        if n == 0:
            raise PolicyError("no requests to search λ over")
        self.kind, self.q = _reducer(statistic)
        if self.kind != "share_last":
            if tier_values is None:
                raise PolicyError(f"statistic {statistic!r} needs per-request tier values (latency or cost)")
            tier_values = np.ascontiguousarray(tier_values, dtype=np.float64)
            if tier_values.shape != (n, n_tiers):
                raise PolicyError(f"tier values have shape {tier_values.shape}: expected ({n}, {n_tiers})")
            if not np.isfinite(tier_values).all() or (tier_values < 0).any():
                raise PolicyError("tier values must be finite and >= 0")
        self.tier_values = tier_values
        self.out_start = np.empty(n, dtype=np.int64)
        self.out_stop = np.empty(n, dtype=np.int64)
        self.totals = np.empty(n)
        self._seen: dict[bytes, float] = {}  # decision tables -> statistic: λ's between breakpoints repeat

    def reduce(self, totals: np.ndarray) -> float:
        if self.kind == "mean":
            return float(totals.mean())
        return float(np.percentile(totals, self.q))

    def __call__(self, lam: float) -> float:
        p = self.policy.solve(lam, start_lam=self.start_lam)
        key = _decision_key(p)[0]
        if key not in self._seen:
            self._seen[key] = self._evaluate(p)
        return self._seen[key]

    def at(self, lam: float, start_lam: float | None) -> float:
        """The statistic with the start table pinned to start_lam's (None: λ's own)."""
        self.start_lam = start_lam
        try:
            return self(lam)
        finally:
            self.start_lam = None

    def _evaluate(self, p) -> float:
        prompt_bins, start_table = p.stage0_lookup(self.prompt_bins, self.route_scores, self.tier_bins)
        if self.cold_bins is None:
            walk_bins_nb(prompt_bins, self.tier_bins, start_table, p.stop_table, self.out_start, self.out_stop)
            p.refuse_climbed_bins_for_cold_starts(self.out_start)
        else:
            walk_bins_cold_nb(prompt_bins, self.tier_bins, self.cold_bins, start_table, p.stop_table,
                              p.stop_cold_table, self.out_start, self.out_stop)
        if self.kind == "share_last":
            return float(np.count_nonzero(self.out_stop == self.policy.n_tiers - 1)) / self.out_stop.shape[0]
        path_totals_nb(self.out_start, self.out_stop, self.tier_values, self.totals)
        return self.reduce(self.totals)

    def expected_acceptance(self, lam: float, start_lam: float | None) -> float:
        """Mean posterior acceptance q_mean at each request's stopping (tier, bin) under the
        policy at (lam, start_lam): the tables' estimate of quality, comparable across policies."""
        p = self.policy.solve(lam, start_lam=start_lam)
        self._evaluate(p)
        stop = self.out_stop
        rows = np.arange(stop.shape[0])
        q = p.q_mean[stop, self.tier_bins[rows, stop]]
        if self.cold_bins is not None:
            at_start = (stop == self.out_start) & (stop > 0)
            q = np.where(at_start, p.q_mean_cold[stop, self.cold_bins[rows, stop]], q)
        return float(q.mean())

    def fixed_tier(self, first: bool) -> float:
        """The statistic if every request ran only tier 0 (first) or every tier (not first)."""
        if self.kind == "share_last":
            return 0.0 if first else 1.0
        totals = self.tier_values[:, 0] if first else self.tier_values.sum(axis=1)
        return self.reduce(totals)


def _non_monotone_note(history) -> str | None:
    """A pair of evaluated λ where the larger λ gave a smaller statistic, if any."""
    seen = sorted(set(history))
    for (lam_a, a), (lam_b, b) in zip(seen, seen[1:]):
        if b < a:
            return f"statistic fell from {a:.6g} at λ={lam_a:.6g} to {b:.6g} at λ={lam_b:.6g}"
    return None


def search_pinned(policy, statistic: Callable[[float, float | None], float], target: float, *,
                  lam_hi: float | None = None, rel_tol: float = 1e-6,
                  quality: Callable[[float, float | None], float] | None = None) -> LambdaSearch:
    """Largest λ within target for a policy with a stage 0 (see the module docstring):
    bisection with the start table pinned, repeated until the start table optimal at the λ
    found is the pinned one. statistic(lam, start_lam) must evaluate the policy as
    `policy.solve(lam, start_lam=start_lam)` leaves it (start_lam None: unpinned) and be
    non-decreasing in lam for a fixed start_lam (depth is, from any fixed start table).
    quality(lam, start_lam), optional, ranks candidates when no fixed point is reached (else
    the one using most of the target). Leaves the policy solved at the result."""
    history: list[tuple[float, float]] = []

    def unpinned(lam):
        value = statistic(lam, None)
        history.append((float(lam), float(value)))
        return value

    naive = bisect_lambda(unpinned, target, lam_hi=lam_hi, rel_tol=rel_tol)
    evaluations = naive.evaluations
    if naive.status == "infeasible":  # λ = 0: every request stops where it starts, cheapest starts
        policy.solve(0.0)
        return replace(naive, start_lam=0.0)
    falling = _non_monotone_note(history)
    ref = naive.lam
    candidates = []
    for _ in range(MAX_PINS):
        pinned_start = policy.solve(ref).start_table.copy()
        found = bisect_lambda(lambda lam, ref=ref: statistic(lam, ref), target, lam_hi=lam_hi, rel_tol=rel_tol)
        evaluations += found.evaluations
        if found.status == "infeasible":  # this start table is too deep even at λ = 0
            ref = 0.0
            continue
        found = replace(found, start_lam=ref)
        candidates.append(found)
        if np.array_equal(policy.solve(found.lam).start_table, pinned_start):
            found = replace(found, start_lam=found.lam)  # a fixed point: the plain optimum at λ
            break
        ref = found.lam
    else:  # no fixed point: every candidate meets the target; take the best expected answer
        rank = ((lambda c: (quality(c.lam, c.start_lam), -c.statistic)) if quality is not None
                else (lambda c: (c.statistic, c.lam)))
        found = max(candidates, key=rank)
        note = (f"start table pinned to the one optimal at λ={found.start_lam:.6g}: the optimal start table "
                f"at λ={found.lam:.6g} differs (stage 0 is not monotone in λ)")
        found = replace(found, warning=note if falling is None else f"{note}; {falling}")
    policy.solve(found.lam, start_lam=found.start_lam)
    if found.warning is None and falling is not None:
        found = replace(found, warning=f"unpinned search saw the {falling}; the result pins nothing")
    return replace(found, evaluations=evaluations)


def search_lambda(policy, prompt_bins, tier_bins, tier_values, target: float, *,
                  statistic="mean", rel_tol: float = 1e-6, cold_bins=None, route_scores=None) -> LambdaSearch:
    """Largest λ whose `statistic` (mean or percentile of per-request latency/cost summed over
    the tiers each request runs) stays <= target (τ_max). Leaves `policy` solved at that λ
    (with the start table of `start_lam`: see the module docstring for why the start table is
    pinned while bisecting). The returned statistic is measured on these requests at the
    returned policy, so it meets τ_max. Also reports the statistic of always-tier-0 and
    always-every-tier for comparison. cold_bins: each request's bins in the cold-start state
    (`Policy.cold_tier_bins`), needed when the tables were built with start_p_hat. route_scores
    (`Policy.route_scores`): needed when the policy has a routed stage 0."""
    stat = ArrayStatistic(policy, prompt_bins, tier_bins, tier_values, statistic, cold_bins, route_scores)
    scale = float(np.mean(stat.tier_values.sum(axis=1))) or 1.0
    found = search_pinned(policy, stat.at, target, lam_hi=scale, rel_tol=rel_tol, quality=stat.expected_acceptance)
    return replace(found, always_first=stat.fixed_tier(True), always_last=stat.fixed_tier(False))


def search_lambda_share(policy, prompt_bins, tier_bins, max_share: float, *,
                        rel_tol: float = 1e-6, cold_bins=None, route_scores=None) -> LambdaSearch:
    """Target-share mode: largest λ with at most `max_share` (0..1) of requests reaching the
    last tier. Leaves `policy` solved at that λ (start table as in `search_lambda`)."""
    if not 0.0 <= max_share <= 1.0:
        raise PolicyError(f"max_share={max_share}: must be a fraction in [0, 1]")
    stat = ArrayStatistic(policy, prompt_bins, tier_bins, None, "share_last", cold_bins, route_scores)
    return search_pinned(policy, stat.at, max_share, lam_hi=float(np.max(policy.tables.c0)) + 1.0, rel_tol=rel_tol,
                         quality=stat.expected_acceptance)


# -- every distinct policy over a λ range, and the quality-target search ----------------------

class DistinctPolicy(NamedTuple):
    """One piece of λ → (stop table, start table, cold stop table): the tables are these at
    lam_lo and lam_hi (both solved) and so on all of [lam_lo, lam_hi]; the next piece starts
    within rel_tol. stop_cold_table equals stop_table unless the tables have cold starts."""

    lam_lo: float
    lam_hi: float
    stop_table: np.ndarray
    start_table: np.ndarray
    stop_cold_table: np.ndarray


def _decision_key(policy) -> tuple[bytes, bytes]:
    """(stop + start tables, that plus the risk-neutral stop decisions behind the start choice).
    The second decides "constant between two λ": every entry of both stop tables stops on an
    interval [0, λ*], and with them fixed each start option's value is linear in λ, so the
    argmin start tier is the same at both ends only if it is the same in between."""
    mean_stop = (policy.lam * (1.0 - policy.q_mean)) * TIE_LOW <= policy.continue_table * TIE_HIGH
    mean_stop_cold = policy._vmean_cold == policy.lam * (1.0 - policy.q_mean_cold)  # the kernel's exact stop value
    # the routed stage 0's threshold (NaN: the start table) is part of the decisions: with the stop
    # tables fixed each candidate's replayed value is linear in λ too, so the argument holds
    tables = (policy.stop_table.tobytes() + policy.start_table.tobytes() + policy.stop_cold_table.tobytes()
              + policy._route.tobytes())
    return tables, tables + np.packbits(mean_stop).tobytes() + np.packbits(mean_stop_cold).tobytes()


def distinct_policies(policy, lam_lo: float = 0.0, lam_hi: float | None = None, *,
                      rel_tol: float = 1e-9) -> list[DistinctPolicy]:
    """Every distinct (stop table, start table) the DP gives for λ in [lam_lo, lam_hi], in
    order, each with the λ interval it holds on. Bisection between λ where the tables differ
    until the gap is below rel_tol·λ: exact apart from pieces narrower than that (see
    `_decision_key` for why equal tables at both ends mean no piece in between). lam_hi
    defaults to LAMBDA_CAP. The policy is left solved as it was."""
    lam_lo = real_number("lam_lo", lam_lo, PolicyError)
    lam_hi = LAMBDA_CAP if lam_hi is None else real_number("lam_hi", lam_hi, PolicyError)
    if not (0.0 <= lam_lo <= lam_hi < float("inf")):
        raise PolicyError(f"λ range [{lam_lo}, {lam_hi}]: need 0 <= lam_lo <= lam_hi < inf")
    _check_rel_tol(rel_tol)
    keep = (policy.lam, policy.start_lam)
    seen: dict[float, tuple] = {}

    def at(lam):
        if lam not in seen:
            policy.solve(lam)
            seen[lam] = (*_decision_key(policy), policy.stop_table.copy(), policy.start_table.copy(),
                         policy.stop_cold_table.copy())
        return seen[lam]

    floor = 1e-12  # an absolute λ-gap below which splitting stops (the descent toward λ = 0)
    stack = [(lam_lo, lam_hi)]
    while stack:
        a, b = stack.pop()
        if at(a)[1] == at(b)[1] or b - a <= max(rel_tol * b, floor):
            continue
        if a > 0 and b / a > 4.0:
            mid = math.sqrt(a * b)
        elif a == 0 and b > 64 * floor:
            mid = b / 64.0
        else:
            mid = 0.5 * (a + b)
        if not a < mid < b:
            continue
        at(mid)
        stack += [(mid, b), (a, mid)]
    policy.solve(keep[0], start_lam=keep[1])
    pieces: list[DistinctPolicy] = []
    for lam in sorted(seen):
        key, _, stop, start, stop_cold = seen[lam]
        if pieces and key == seen[pieces[-1].lam_lo][0]:
            pieces[-1] = pieces[-1]._replace(lam_hi=lam)
        else:
            pieces.append(DistinctPolicy(lam, lam, stop, start, stop_cold))
    return pieces


@dataclass(frozen=True)
class QualitySearch:
    """Cheapest distinct policy whose mean quality at the stopping tier meets the target.
    status "ok", or "infeasible" (no policy meets it: the highest-quality one is returned).
    lam lies in [lam_lo, lam_hi], the piece of that policy; `policies` lists every distinct
    policy as dicts (lam_lo, lam_hi, quality, cost)."""

    lam: float
    quality: float
    cost: float
    target: float
    status: str
    lam_lo: float
    lam_hi: float
    n_policies: int
    cost_source: str
    policies: tuple = ()

    def to_dict(self) -> dict:
        out = asdict(self)
        out["policies"] = [dict(p) for p in self.policies]
        return out


def model_path_costs(policy, prompt_bins, tier_bins, cold_bins, walk) -> np.ndarray:
    """Per request, the tables' expected cost of the tiers it ran: c0 at its start (by prompt
    bin), then cnext of each step by the bin it left (cnext_cold by the cold bin when leaving
    a skipped-to start tier)."""
    t = policy.tables
    cost = t.c0[walk.start, prompt_bins].astype(np.float64)
    for i in range(policy.n_tiers - 1):
        moved = (walk.start <= i) & (walk.stop > i)
        step = t.cnext[i, tier_bins[:, i]]
        if cold_bins is not None and i > 0:
            step = np.where(walk.start == i, t.cnext_cold[i, cold_bins[:, i]], step)
        cost += np.where(moved, step, 0.0)
    return cost


def search_lambda_quality(policy, prompt_bins, tier_bins, quality_values, target_quality: float, *,
                          cold_bins=None, cost_values=None, lam_lo: float = 0.0, lam_hi: float | None = None,
                          rel_tol: float = 1e-9, route_scores=None) -> QualitySearch:
    """The cheapest policy whose mean quality (quality_values (N, L) at each request's stopping
    tier, e.g. acceptable 1/0) is >= target_quality, among ALL distinct policies for λ in
    [lam_lo, lam_hi] (quality is not monotone in λ, so no bisection). Cost: mean of
    cost_values (N, L) summed over the tiers each request ran, or the tables' expected costs
    when None. Ties go to the higher quality, then the smaller λ. Leaves `policy` solved at
    the chosen λ."""
    prompt_bins, tier_bins, cold_bins = policy.check_bins(prompt_bins, tier_bins, cold_bins)
    n = tier_bins.shape[0]
    if n == 0:
        raise PolicyError("no requests to search λ over")
    quality_values = np.ascontiguousarray(quality_values, dtype=np.float64)
    if quality_values.shape != tier_bins.shape:
        raise PolicyError(f"quality values have shape {quality_values.shape}: expected {tier_bins.shape}")
    if not np.isfinite(quality_values).all():
        raise PolicyError("quality values must be finite (impute unlabelled cells first)")
    if not math.isfinite(real_number("target_quality", target_quality, PolicyError)):
        raise PolicyError(f"target quality {target_quality}: must be a finite number")
    if cost_values is not None:
        cost_values = np.ascontiguousarray(cost_values, dtype=np.float64)
        if cost_values.shape != tier_bins.shape:
            raise PolicyError(f"cost values have shape {cost_values.shape}: expected {tier_bins.shape}")
        if not np.isfinite(cost_values).all() or (cost_values < 0).any():
            raise PolicyError("cost values must be finite and >= 0")
    rows = []
    for piece in distinct_policies(policy, lam_lo, lam_hi, rel_tol=rel_tol):
        policy.solve(piece.lam_lo)
        walk = policy.walk(prompt_bins, tier_bins, cold_bins, route_scores=route_scores)
        quality = float(quality_values[np.arange(n), walk.stop].mean())
        cost = float((walk.totals(cost_values) if cost_values is not None
                      else model_path_costs(policy, prompt_bins, tier_bins, cold_bins, walk)).mean())
        rows.append({"lam_lo": piece.lam_lo, "lam_hi": piece.lam_hi, "quality": quality, "cost": cost})
    meeting = [r for r in rows if r["quality"] >= target_quality]
    if meeting:
        best, status = min(meeting, key=lambda r: (r["cost"], -r["quality"], r["lam_lo"])), "ok"
    else:
        best, status = max(rows, key=lambda r: (r["quality"], -r["cost"])), "infeasible"
    policy.solve(best["lam_lo"])
    return QualitySearch(best["lam_lo"], best["quality"], best["cost"], float(target_quality), status,
                         best["lam_lo"], best["lam_hi"], len(rows),
                         "cost_values" if cost_values is not None else "tables (c0, cnext)", tuple(rows))
