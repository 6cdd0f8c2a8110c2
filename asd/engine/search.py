"""λ search: bisection on a statistic that is non-decreasing in λ (larger λ → deeper requests
→ more latency/cost, more requests reaching the last tier), to find the largest λ that keeps it
within a target τ_max. Statistic from a callback, or from per-request arrays with a Policy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np

from asd.engine.dp_nb import path_totals_nb, walk_bins_nb
from asd.errors import PolicyError

LAMBDA_CAP = 1e15  # beyond this, a λ that still fits means the limit does not bind


@dataclass(frozen=True)
class LambdaSearch:
    """status: "ok" (target binds), "infeasible" (even the cheapest λ = 0 exceeds it: `lam` is
    0), "slack" (the deepest policy fits: `lam` is the λ where the statistic stopped growing).
    `statistic` is the value at `lam`; `evaluations` counts statistic calls."""

    lam: float
    statistic: float
    target: float
    status: str
    evaluations: int
    lam_infeasible: float | None = None
    always_first: float | None = None
    always_last: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def bisect_lambda(statistic: Callable[[float], float], target: float, *, lam_hi: float | None = None,
                  rel_tol: float = 1e-6, max_evaluations: int = 200) -> LambdaSearch:
    """Largest λ with statistic(λ) <= target, for a statistic non-decreasing in λ.

    The bracket grows by quadrupling from lam_hi (default 1) until the statistic exceeds the
    target; if it never does up to LAMBDA_CAP or stops changing, the target is slack.
    """
    target = float(target)
    if not math.isfinite(target):
        raise PolicyError(f"target {target}: must be a finite number")
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
    hi = 1.0 if lam_hi is None else float(lam_hi)
    if not hi > 0:
        raise PolicyError(f"lam_hi={lam_hi}: must be > 0")
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

    def __init__(self, policy, prompt_bins, tier_bins, tier_values=None, statistic="mean"):
        self.policy = policy
        self.prompt_bins, self.tier_bins = policy.check_bins(prompt_bins, tier_bins)
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
        p = self.policy.solve(lam)
        key = p.stop_table.tobytes() + p.start_table.tobytes()
        if key not in self._seen:
            self._seen[key] = self._evaluate(p)
        return self._seen[key]

    def _evaluate(self, p) -> float:
        walk_bins_nb(self.prompt_bins, self.tier_bins, p.start_table, p.stop_table, self.out_start, self.out_stop)
        if self.kind == "share_last":
            return float(np.count_nonzero(self.out_stop == self.policy.n_tiers - 1)) / self.out_stop.shape[0]
        path_totals_nb(self.out_start, self.out_stop, self.tier_values, self.totals)
        return self.reduce(self.totals)

    def fixed_tier(self, first: bool) -> float:
        """The statistic if every request ran only tier 0 (first) or every tier (not first)."""
        if self.kind == "share_last":
            return 0.0 if first else 1.0
        totals = self.tier_values[:, 0] if first else self.tier_values.sum(axis=1)
        return self.reduce(totals)


def search_lambda(policy, prompt_bins, tier_bins, tier_values, target: float, *,
                  statistic="mean", rel_tol: float = 1e-6) -> LambdaSearch:
    """Largest λ whose `statistic` (mean or percentile of per-request latency/cost summed over
    the tiers each request runs) stays <= target (τ_max). Leaves `policy` solved at that λ.
    Also reports the statistic of always-tier-0 and always-every-tier for comparison."""
    stat = ArrayStatistic(policy, prompt_bins, tier_bins, tier_values, statistic)
    scale = float(np.mean(stat.tier_values.sum(axis=1))) or 1.0
    found = bisect_lambda(stat, target, lam_hi=scale, rel_tol=rel_tol)
    policy.solve(found.lam)
    return replace(found, always_first=stat.fixed_tier(True), always_last=stat.fixed_tier(False))


def search_lambda_share(policy, prompt_bins, tier_bins, max_share: float, *,
                        rel_tol: float = 1e-6) -> LambdaSearch:
    """Target-share mode: largest λ with at most `max_share` (0..1) of requests reaching the
    last tier. Leaves `policy` solved at that λ."""
    if not 0.0 <= max_share <= 1.0:
        raise PolicyError(f"max_share={max_share}: must be a fraction in [0, 1]")
    stat = ArrayStatistic(policy, prompt_bins, tier_bins, None, "share_last")
    found = bisect_lambda(stat, max_share, lam_hi=float(np.max(policy.tables.c0)) + 1.0, rel_tol=rel_tol)
    policy.solve(found.lam)
    return found
