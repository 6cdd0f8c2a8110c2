"""The research protocol's own stopping rule, kept faithfully as the `protocol` baseline.

`optimal_stopping_rule`, `bayesian_risk_adjustment` and `find_lambda_bisection` follow the
protocol's code line by line; `protocol_stop_tier` calls the rule the way its pipeline's
`process_request` does (on `p[:i+1], C[:i+1]` at each stage, last stage p = 1.0, adjustment
with n_obs = number of stages). DESIGN.md explains why this always stops at tier 1 (index 0):
on the truncated lists J[L+1] = 0 makes continuing free, so no stage says stop unless p = 1,
and the default k_star = L−1 then equals the current stage. Do not "fix" it here.
"""

from __future__ import annotations

import math

import numpy as np

from asd.errors import PolicyError


def optimal_stopping_rule(p, C, lam):
    """As written in the protocol: returns (k_star, J) for acceptance p and costs C."""
    L = len(C)
    J = [0] * (L + 1)  # J[L+1] = 0 (boundary condition)
    policy = [False] * L
    p_bar = [1.0]  # cumulative products, as the protocol writes them
    for i in range(L):
        p_bar.append(p_bar[-1] * p[i])
    for i in reversed(range(L)):
        cost_stop = C[i] + lam * (1 - p_bar[i + 1])
        cost_continue = C[i] + J[i + 1]
        if cost_stop <= cost_continue:
            policy[i] = True
            J[i] = cost_stop
        else:
            policy[i] = False
            J[i] = cost_continue
    k_star = next((i for i, stop in enumerate(policy) if stop), L - 1)
    return k_star, J


def bayesian_risk_adjustment(p_hat, n_obs, prior_alpha=1, prior_beta=1):
    """Protocol §2.3.1: posterior mean of Beta(n·p̂ + α, n·(1−p̂) + β)."""
    posterior_alpha = n_obs * p_hat + prior_alpha
    posterior_beta = n_obs * (1 - p_hat) + prior_beta
    return posterior_alpha / (posterior_alpha + posterior_beta)


def pipeline_bayesian_adjustment(p_hat, n_obs, alpha=1.0, beta=1.0):
    """The pipeline's `_bayesian_adjustment` (the same formula, written out)."""
    return (n_obs * p_hat + alpha) / (n_obs + alpha + beta)


def protocol_stop_tier(p_hat, costs, lam, *, risk_adjustment=True) -> int:
    """The stage `process_request` stops at, given each stage's predicted acceptance p_hat.

    Mirrors the pipeline: at stage i append the stage cost and (for i < L−1) the adjusted
    prediction, else 1.0; call the rule on the prefixes; stop when k_star == i.
    """
    n_stages = len(costs)
    if len(p_hat) != n_stages:
        raise PolicyError(f"protocol: {len(p_hat)} predictions for {n_stages} stages")
    stage_stops = [0] * n_stages  # the pipeline's stats["stage_stops"]; n_obs = its length
    probabilities, seen_costs = [], []
    k_star = n_stages - 1
    for i in range(n_stages):
        seen_costs.append(costs[i])
        if i < n_stages - 1:
            p_accept = p_hat[i]
            if risk_adjustment:
                p_accept = pipeline_bayesian_adjustment(p_accept, len(stage_stops))
            probabilities.append(p_accept)
        else:
            probabilities.append(1.0)
        k_star, _ = optimal_stopping_rule(probabilities[: i + 1], seen_costs[: i + 1], lam)
        if k_star == i:
            break
    return k_star


def optimal_stopping_k_star(p, C, lam) -> np.ndarray:
    """`optimal_stopping_rule`'s k_star for every row at once: p (N, m) acceptance, C (m,)
    costs. The same float64 operations in the same order, one stage column at a time."""
    n, m = p.shape
    p_bar = np.empty((n, m + 1))
    p_bar[:, 0] = 1.0
    for i in range(m):
        p_bar[:, i + 1] = p_bar[:, i] * p[:, i]
    J_next = np.zeros(n)  # J[L+1] = 0
    k_star = np.full(n, m - 1, dtype=np.int64)
    for i in reversed(range(m)):
        with np.errstate(invalid="ignore"):  # λ = inf at p̄ = 1 gives NaN, as in Python: never "stop"
            cost_stop = C[i] + lam * (1 - p_bar[:, i + 1])
        cost_continue = C[i] + J_next
        stop = cost_stop <= cost_continue
        J_next = np.where(stop, cost_stop, cost_continue)
        k_star[stop] = i  # walking down, the last stop written is the first one
    return k_star


def protocol_stop_tiers(p_hat, costs, lam, *, risk_adjustment=True) -> np.ndarray:
    """`protocol_stop_tier` for every row of p_hat (N, L) at once: stage by stage on the rows
    still running, the rule on the same prefixes with the same arithmetic (results equal)."""
    p_hat = np.asarray(p_hat, dtype=np.float64)
    n, n_stages = p_hat.shape
    C = [float(c) for c in costs]
    if len(C) != n_stages:
        raise PolicyError(f"protocol: {n_stages} predictions for {len(C)} stages")
    probabilities = np.ones((n, n_stages))  # the last stage's p = 1.0
    probabilities[:, :-1] = (pipeline_bayesian_adjustment(p_hat[:, :-1], n_stages) if risk_adjustment
                             else p_hat[:, :-1])
    stop_tier = np.full(n, n_stages - 1, dtype=np.int64)
    running = np.arange(n)
    for i in range(n_stages):
        if running.size == 0:
            break
        k_star = optimal_stopping_k_star(probabilities[running, : i + 1], C[: i + 1], lam)
        stop_tier[running] = k_star  # the loop's k_star; final for rows that stop here or never do
        running = running[k_star != i]
    return stop_tier


class ProtocolPolicy:
    """The protocol's rule as a baseline policy over per-request predictions (N, L)."""

    name = "protocol"

    def __init__(self, costs, lam: float, *, risk_adjustment: bool = True):
        costs = [float(c) for c in costs]
        if not costs or any(not math.isfinite(c) or c < 0 for c in costs):
            raise PolicyError(f"protocol costs {costs}: need one finite cost >= 0 per tier")
        if not (float(lam) >= 0):
            raise PolicyError(f"λ={lam}: must be >= 0")
        self.costs, self.lam, self.risk_adjustment = costs, float(lam), risk_adjustment

    def stop_tier(self, p_hat) -> int:
        return protocol_stop_tier(list(p_hat), self.costs, self.lam, risk_adjustment=self.risk_adjustment)

    def stop_tiers(self, p_hat) -> np.ndarray:
        p_hat = np.asarray(p_hat, dtype=np.float64)
        if p_hat.ndim != 2 or p_hat.shape[1] != len(self.costs):
            raise PolicyError(f"protocol predictions have shape {p_hat.shape}: expected (requests, {len(self.costs)})")
        if np.isnan(p_hat).any() or (p_hat < 0).any() or (p_hat > 1).any():
            raise PolicyError("protocol predictions must be probabilities in [0, 1]")
        return protocol_stop_tiers(p_hat, self.costs, self.lam, risk_adjustment=self.risk_adjustment)


def find_lambda_bisection(measure_average_latency, tau_max, low=0.01, high=100.0, tol=1e-3):
    """Protocol §2.3.2 as written, including its direction: latency above τ_max raises λ,
    although a larger λ makes requests go deeper (DESIGN.md: the comment is backwards)."""
    mid = (low + high) / 2
    while high - low > tol:
        mid = (low + high) / 2
        latency = measure_average_latency(lambda_val=mid)
        if latency > tau_max:
            low = mid
        else:
            high = mid
    return mid
