"""Numba kernels: backward induction for the stopping problem, stage 0, and walking requests.

Arrays: tiers 0-based, q_stop/q_mean (L, B), trans (L-1, B, B), cnext (L-1, B),
trans0 (L, B0, B), c0 (L, B0). Outputs are preallocated by the caller; nothing allocates.

The DP (DESIGN.md, "The decision problem, done right"): after tier i answers, its
calibrated score falls in bin b. Stopping costs λ(1 − q_i(b)) (expected unacceptable answer);
continuing costs c_{i+1}(b) + Σ_b' T_i(b, b') V_{i+1}(b'). Backward from V_{L-1}(b) =
λ(1 − q_{L-1}(b)), V_i(b) = min(stop, continue); stop iff stop <= continue. Stage 0, before
any tier, picks the start tier s from the prompt bin b0: argmin_s c0_s(b0) + Σ_b T_{0→s}(b0, b)
V_s(b), skipping tiers below s. O(L·B² + L·B0·B) per λ.

Risk-averse mode: the stop term uses the lower credible bound q_stop ≤ q_mean for the answer
in hand, while continuation is valued under the posterior mean (answers not yet seen carry
no pessimism). Near-ties (1e-12 relative) resolve to stop. So a risk-averse policy never stops where the risk-neutral one continues, and
`value` reports the mean-model expected loss of the policy actually played.

Monotonicity: continuation is concave in λ (a minimum of lines) and non-negative at λ = 0
while the stop cost is linear through 0, so each (tier, bin) stops on an interval [0, λ*]:
from any start tier, every request's stopping tier is non-decreasing in λ. The stage-0
argmin over start tiers is optimal but need not be monotone in λ (tests show a case), so
`search.search_lambda` holds the start table fixed while it bisects.

Empirical stage 0 (`empirical_start_nb`): the model's start values chain one transition per
tier climbed, and their errors add up in the comparison stage 0 makes; with the calibration
requests' own bins, acceptance and costs at hand, each start is valued by replaying them instead.
The replays depend on the stop tables alone, not on λ (a request's value is cost + λ·miss), so
`evidence_sums_nb` sums them once per distinct pair of stop tables and `empirical_start_nb` /
`routed_totals_nb` price any λ from the sums: a λ search or enumeration, which solves thousands
of λ between a few table changes, replays the calibration requests only at those changes.

Cold starts (`tables.build_tables(start_p_hat=...)`): a request that STARTED at s > 0 has no
answers from the tiers below, so it is in another state than one that climbed there. It gets its
own tables: q_cold (acceptance by cold bin), trans_cold (cold bin at s → climbed bin at s+1),
cnext_cold. `solve_cold_start_nb`, run after `solve_dp_nb`, values that state against the
climbed values one tier up (after one step the request has climbed), fills the cold stop table,
and redoes stage 0 over the cold values: trans0[s] maps prompt bins to cold bins at s.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Stop on (near-)ties: within 1e-12 relative, stop and continue are the same value, and
# rounding must not flip the choice between two λ (depth monotonicity). Scaling both sides
# keeps the rule "linear stop cost vs concave continuation", so the monotonicity proof holds.
TIE_LOW = 1.0 - 1e-12
TIE_HIGH = 1.0 + 1e-12


@njit(cache=True)
def solve_dp_nb(lam, q_stop, q_mean, trans, cnext, trans0, c0,
                stop, value, cont, vmean, start, value0):
    """Fill stop (L, B) uint8, value (L, B), cont (L, B) (inf at the last tier),
    vmean (L, B) risk-neutral optimum, start (B0,) int64, value0 (B0,)."""
    n_tiers, n_bins = q_mean.shape
    last = n_tiers - 1
    for b in range(n_bins):
        stop[last, b] = 1
        cont[last, b] = 1e300
        vmean[last, b] = lam * (1.0 - q_mean[last, b])
        value[last, b] = vmean[last, b]
    for i in range(last - 1, -1, -1):
        for b in range(n_bins):
            ahead_mean = 0.0
            ahead_played = 0.0
            for b2 in range(n_bins):
                t = trans[i, b, b2]
                ahead_mean += t * vmean[i + 1, b2]
                ahead_played += t * value[i + 1, b2]
            c = cnext[i, b] + ahead_mean
            cont[i, b] = c
            stop_mean = lam * (1.0 - q_mean[i, b])
            vmean[i, b] = stop_mean if stop_mean * TIE_LOW <= c * TIE_HIGH else c
            if lam * (1.0 - q_stop[i, b]) * TIE_LOW <= c * TIE_HIGH:
                stop[i, b] = 1
                value[i, b] = stop_mean
            else:
                stop[i, b] = 0
                value[i, b] = cnext[i, b] + ahead_played
    n_prompt_bins = c0.shape[1]
    for b0 in range(n_prompt_bins):
        best = np.inf  # not a large finite sentinel: at λ near 1e308 every option may exceed it
        best_s = 0
        for s in range(n_tiers):
            w = c0[s, b0]
            for b in range(n_bins):
                w += trans0[s, b0, b] * vmean[s, b]
            if w < best:
                best = w
                best_s = s
        start[b0] = best_s
        played = c0[best_s, b0]
        for b in range(n_bins):
            played += trans0[best_s, b0, b] * value[best_s, b]
        value0[b0] = played


@njit(cache=True)
def solve_cold_start_nb(lam, q_stop_cold, q_mean_cold, trans_cold, cnext_cold, trans0, c0,
                        stop, value, vmean, stop_cold, value_cold, vmean_cold, start, value0):
    """After solve_dp_nb at the same λ (stop, value, vmean are its outputs): fill stop_cold,
    value_cold, vmean_cold (L, B) for a request at tier s in cold bin b, and overwrite start
    (B0,) and value0 (B0,) with stage 0 over the cold values. Tier 0 is the climbed state."""
    n_tiers, n_bins = q_mean_cold.shape
    last = n_tiers - 1
    for b in range(n_bins):
        stop_cold[0, b] = stop[0, b]
        value_cold[0, b] = value[0, b]
        vmean_cold[0, b] = vmean[0, b]
    for s in range(1, n_tiers):
        for b in range(n_bins):
            stop_mean = lam * (1.0 - q_mean_cold[s, b])
            if s == last:
                stop_cold[s, b] = 1
                value_cold[s, b] = stop_mean
                vmean_cold[s, b] = stop_mean
                continue
            ahead_mean = 0.0
            ahead_played = 0.0
            for b2 in range(n_bins):
                t = trans_cold[s, b, b2]
                ahead_mean += t * vmean[s + 1, b2]
                ahead_played += t * value[s + 1, b2]
            c = cnext_cold[s, b] + ahead_mean
            vmean_cold[s, b] = stop_mean if stop_mean * TIE_LOW <= c * TIE_HIGH else c
            if lam * (1.0 - q_stop_cold[s, b]) * TIE_LOW <= c * TIE_HIGH:
                stop_cold[s, b] = 1
                value_cold[s, b] = stop_mean
            else:
                stop_cold[s, b] = 0
                value_cold[s, b] = cnext_cold[s, b] + ahead_played
    n_prompt_bins = c0.shape[1]
    for b0 in range(n_prompt_bins):
        best = np.inf  # not a large finite sentinel: at λ near 1e308 every option may exceed it
        best_s = 0
        for s in range(n_tiers):
            w = c0[s, b0]
            for b in range(n_bins):
                w += trans0[s, b0, b] * vmean_cold[s, b]
            if w < best:
                best = w
                best_s = s
        start[b0] = best_s
        played = c0[best_s, b0]
        for b in range(n_bins):
            played += trans0[best_s, b0, b] * value_cold[best_s, b]
        value0[b0] = played


@njit(cache=True)
def evidence_sums_nb(stop, stop_cold, q_mean, q_mean_cold, prompt_bins, route_p, thresholds, tier_bins, cold_bins,
                     accepted, cost, cost_cont, start_cost, start_miss, route_cost, route_miss):
    """The calibration requests replayed under the solved stop tables (cold table at a start
    s > 0), summed so that any λ's stage-0 values are a multiply-add away: a request started at s
    costs its cost up to where it stops and misses 1 − acceptance there (an unlabelled stop: the
    posterior mean of the bin it stopped in), its value at λ is cost + λ·miss, and its walk
    depends on the stop tables alone, not on λ. start_cost/start_miss (L, B0): over the requests
    of prompt bin b0 started at tier s; route_cost/route_miss (G,): over every request started
    where the routed stage 0 at thresholds[g] (ascending) sends it, the first tier s < L−1 whose
    route_p[r, s] reaches it, else the last. G may be 0 (no routing; route_p is not read). A
    request's routed start is non-decreasing in the threshold (the first tier whose running
    maximum of scores reaches it), so one pass over the thresholds finds every start. Where a
    request stops from each start comes from one backward pass over its climbed decisions:
    O(N·(L² + G)), the L² being the cost sums."""
    n_tiers, n_prompt_bins = start_cost.shape
    n_thresholds = thresholds.shape[0]
    for s in range(n_tiers):
        for b0 in range(n_prompt_bins):
            start_cost[s, b0] = 0.0
            start_miss[s, b0] = 0.0
    for g in range(n_thresholds):
        route_cost[g] = 0.0
        route_miss[g] = 0.0
    climbed_stop = np.empty(n_tiers, np.int64)  # where a request that climbed to tier i stops
    costs = np.empty(n_tiers)
    misses = np.empty(n_tiers)
    for r in range(prompt_bins.shape[0]):
        b0 = prompt_bins[r]
        climbed_stop[n_tiers - 1] = n_tiers - 1
        for i in range(n_tiers - 2, -1, -1):
            climbed_stop[i] = i if stop[i, tier_bins[r, i]] else climbed_stop[i + 1]
        for s in range(n_tiers):
            if s == 0 or s == n_tiers - 1:
                k = climbed_stop[s]
            elif stop_cold[s, cold_bins[r, s]]:
                k = s
            else:
                k = climbed_stop[s + 1]
            total = cost[r, s]
            for i in range(s + 1, k + 1):
                total += cost_cont[r, i]
            a = accepted[r, k]
            if a != a:  # unlabelled: what the bin it stopped in expects
                a = q_mean_cold[k, cold_bins[r, k]] if (k == s and s > 0) else q_mean[k, tier_bins[r, k]]
            costs[s] = total
            misses[s] = 1.0 - a
            start_cost[s, b0] += total
            start_miss[s, b0] += 1.0 - a
        if n_thresholds == 0:
            continue
        s = 0
        running = route_p[r, 0] if n_tiers > 1 else -1.0  # max score of tiers 0..s
        for g in range(n_thresholds):
            while s < n_tiers - 1 and running < thresholds[g]:
                s += 1
                if s < n_tiers - 1 and route_p[r, s] > running:
                    running = route_p[r, s]
            route_cost[g] += costs[s]
            route_miss[g] += misses[s]


@njit(cache=True)
def empirical_start_nb(lam, start_cost, start_miss, counts, model_values, prior_weight, start_values, start, value0):
    """Stage 0 by replaying the calibration requests themselves (every one ran every tier, so
    each start tier's outcome is observed, not modelled), from `evidence_sums_nb`'s sums:
    start_values[s, b0] is the mean over the requests in prompt bin b0 of the cost of starting at
    s and walking the solved stop tables plus λ(1 − acceptance where it stops), shrunk toward the
    model's value model_values[s, b0] with prior_weight pseudo-requests (an empty bin keeps the
    model's choice). start (B0,) is the argmin (ties: the lower tier), value0 its value.
    counts (B0,): requests per prompt bin. O(L·B0)."""
    n_tiers, n_prompt_bins = model_values.shape
    for b0 in range(n_prompt_bins):
        best = np.inf  # not a large finite sentinel: at λ near 1e308 every option may exceed it
        best_s = 0
        weight = counts[b0] + prior_weight
        for s in range(n_tiers):
            if weight > 0.0:
                v = ((start_cost[s, b0] + lam * start_miss[s, b0]) + prior_weight * model_values[s, b0]) / weight
            else:  # no request and no pseudo-request: the model's value alone, not 0/0
                v = model_values[s, b0]
            start_values[s, b0] = v
            if v < best:
                best = v
                best_s = s
        start[b0] = best_s
        value0[b0] = best


@njit(cache=True)
def routed_totals_nb(lam, start_cost, start_miss, start, route_cost, route_miss, totals):
    """The routed stage 0 (`Policy`) against the binned start table, on the same calibration
    requests under the same stop tables, from `evidence_sums_nb`'s sums: totals[g] (G + 1,) the
    summed value at λ of routing at thresholds[g]; totals[G] that of the start table `start` (by
    prompt bin). Nothing is shrunk: every candidate is scored on the same requests. O(G + B0)."""
    n_thresholds = route_cost.shape[0]
    for g in range(n_thresholds):
        totals[g] = route_cost[g] + lam * route_miss[g]
    binned = 0.0
    for b0 in range(start.shape[0]):
        binned += start_cost[start[b0], b0] + lam * start_miss[start[b0], b0]
    totals[n_thresholds] = binned


# Serial on purpose: a walk is a few ns per request, while launching a parallel region on a
# busy machine costs milliseconds (measured: 2 ms serial vs 20 ms prange for 100k requests
# on 2 shared cores). Sweeps parallelise over λ or traces instead.
@njit(cache=True)
def walk_bins_nb(prompt_bins, tier_bins, start, stop, out_start, out_stop):
    """Per request: start tier from its prompt bin, then the first tier whose bin says stop."""
    n_requests, n_tiers = tier_bins.shape
    for r in range(n_requests):
        s = start[prompt_bins[r]]
        k = n_tiers - 1
        for i in range(s, n_tiers - 1):
            if stop[i, tier_bins[r, i]]:
                k = i
                break
        out_start[r] = s
        out_stop[r] = k


@njit(cache=True)
def walk_bins_cold_nb(prompt_bins, tier_bins, cold_bins, start, stop, stop_cold, out_start, out_stop):
    """As walk_bins_nb, for requests whose state at a skipped-to start tier s > 0 is the cold
    one (no answers from tiers below s): the decision at s reads stop_cold[s, cold_bins[r, s]],
    every later tier stop[i, tier_bins[r, i]] (the request has climbed from s by then)."""
    n_requests, n_tiers = tier_bins.shape
    for r in range(n_requests):
        s = start[prompt_bins[r]]
        k = n_tiers - 1
        for i in range(s, n_tiers - 1):
            if i == s and s > 0:
                go_on = stop_cold[i, cold_bins[r, i]] == 0
            else:
                go_on = stop[i, tier_bins[r, i]] == 0
            if not go_on:
                k = i
                break
        out_start[r] = s
        out_stop[r] = k


@njit(cache=True)
def path_totals_nb(out_start, out_stop, tier_values, out):
    """Per request: sum of tier_values over the tiers it ran (start..stop inclusive)."""
    for r in range(tier_values.shape[0]):
        total = 0.0
        for i in range(out_start[r], out_stop[r] + 1):
            total += tier_values[r, i]
        out[r] = total
