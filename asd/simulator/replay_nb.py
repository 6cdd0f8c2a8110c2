"""Numba kernels for replay without contention: walk each request up the ladder under a policy's
solved tables and charge the cost, latency and quality of the path it takes.

Arrays: tiers 0-based, N requests, L tiers, B bins, B0 prompt bins. prompt_bins (N,) of any
integer dtype (ReplayInputs stores the narrowest that holds the bins, uint8 up to 256);
tier_bins (N, L), the bin after tier i in the climbed state (tiers ≤ i seen); cold_bins
(N, L), the bin at tier s when the request started there cold (stage 0 skipped the tiers
below; may equal tier_bins); start_table (B0,) int64; stop_table (L, B) uint8, the climbed
state's; stop_cold_table (L, B) uint8, the cold state's (Policy.stop_cold_table; equal to
stop_table for a policy without cold-start tables). Per (request,
tier) float64, finite: cost/latency_ms for the tier run cold (the start tier) and cost_cont/
latency_cont_ms for the tier continuing from the previous tier's draft (every later tier),
quality (N, L) of the answer the request stops with; any layout, column-major (ReplayInputs)
is fastest: a request reads one or two tiers of each grid, so row-major rows would pull every
tier through memory. The start tier reads cold_bins, every later tier tier_bins; the last tier
always stops. Outputs are preallocated; nothing allocates per request.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


# Serial on purpose (as walk_bins_nb): a request is a few ns, a parallel region costs ms on a
# shared machine. Parallelism lives in replay_grid_stats_nb, over λ.
# The walk is written out in both kernels, walk and sums fused in one loop (each row touched once;
# the sums run left to right like reference.walk_path): the same code in an inline helper
# returning a tuple measured 5-8x slower. The climb has no branch on where a request stops (data:
# a branch on it mispredicts about once per request; LLVM turns float selects back into branches):
# every tier's charge is added times 1.0 (ran) or 0.0 (did not) — exact for finite charges, since
# x·1 = x and t + 0·x = t (a −0.0 total aside, which ReplayInputs never holds) — 1.5x faster.
@njit(cache=True)
def replay_requests_nb(prompt_bins, tier_bins, cold_bins, start_table, stop_table, stop_cold_table,
                       cost, cost_cont, latency_ms, latency_cont_ms, quality,
                       out_start, out_stop, out_cost, out_latency, out_quality):
    """Per request: start and stop tier, total cost, total latency, quality where it stops."""
    n_tiers = tier_bins.shape[1]
    last = n_tiers - 1
    for r in range(tier_bins.shape[0]):
        s = start_table[prompt_bins[r]]
        total_cost = cost[r, s]
        total_latency = latency_ms[r, s]
        if s == 0:
            stop_here = stop_table[0, tier_bins[r, 0]]
        else:
            stop_here = stop_cold_table[s, cold_bins[r, s]]
        climbing = (s < last) & (stop_here == 0)  # going on up from the tier below i
        k = s
        for i in range(1, n_tiers):
            runs = climbing & (i > s)
            ran = np.float64(runs)
            total_cost += cost_cont[r, i] * ran
            total_latency += latency_cont_ms[r, i] * ran
            k += runs
            climbing = climbing & ((i <= s) | (stop_table[i, tier_bins[r, i]] == 0))
        out_start[r] = s
        out_stop[r] = k
        out_cost[r] = total_cost
        out_latency[r] = total_latency
        out_quality[r] = quality[r, k]


@njit(cache=True, inline="always")
def sorted_percentile_nb(sorted_values, q):
    """numpy's default ('linear') percentile q in [0, 100] of an ascending array."""
    n = sorted_values.shape[0]
    pos = q / 100.0 * (n - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


@njit(cache=True, parallel=True)
def replay_grid_stats_nb(prompt_bins, tier_bins, cold_bins, start_tables, stop_tables, stop_cold_tables,
                         cost, cost_cont, latency_ms, latency_cont_ms, quality, quantiles,
                         out_mean_cost, out_mean_latency, out_mean_quality, out_start_counts,
                         out_stop_counts, out_latency_q):
    """Replay every λ of a grid: start_tables (G, B0), stop_tables and stop_cold_tables (G, L, B). Per λ: means (G,),
    start/stop counts per tier (G, L) int64, latency percentiles (G, Q) at `quantiles` (0..100).
    prange over λ; each λ fills and partitions its own (N,) latency buffer (allocations per λ, none per request)."""
    n = tier_bins.shape[0]
    n_tiers = tier_bins.shape[1]
    last = n_tiers - 1
    # order statistics each percentile interpolates between: a partition finds just these
    # (a full sort per λ costs 4x more)
    n_q = quantiles.shape[0]
    kth = np.empty(2 * n_q, dtype=np.int64)
    for j in range(n_q):
        pos = quantiles[j] / 100.0 * (n - 1)
        kth[2 * j] = int(np.floor(pos))
        kth[2 * j + 1] = min(kth[2 * j] + 1, n - 1)
    for g in prange(start_tables.shape[0]):
        lat = np.empty(n)
        sum_cost = 0.0
        sum_latency = 0.0
        sum_quality = 0.0
        for i in range(n_tiers):
            out_start_counts[g, i] = 0
            out_stop_counts[g, i] = 0
        start_table = start_tables[g]
        stop_table = stop_tables[g]
        stop_cold_table = stop_cold_tables[g]
        for r in range(n):  # the walk of replay_requests_nb
            s = start_table[prompt_bins[r]]
            path_cost = cost[r, s]
            latency = latency_ms[r, s]
            if s == 0:
                stop_here = stop_table[0, tier_bins[r, 0]]
            else:
                stop_here = stop_cold_table[s, cold_bins[r, s]]
            climbing = (s < last) & (stop_here == 0)
            k = s
            for i in range(1, n_tiers):
                runs = climbing & (i > s)
                ran = np.float64(runs)
                path_cost += cost_cont[r, i] * ran
                latency += latency_cont_ms[r, i] * ran
                k += runs
                climbing = climbing & ((i <= s) | (stop_table[i, tier_bins[r, i]] == 0))
            out_start_counts[g, s] += 1
            out_stop_counts[g, k] += 1
            sum_cost += path_cost
            lat[r] = latency
            sum_latency += latency
            sum_quality += quality[r, k]
        out_mean_cost[g] = sum_cost / n
        out_mean_latency[g] = sum_latency / n
        out_mean_quality[g] = sum_quality / n
        # order statistics at kth are where a full sort would put them, so the sorted-array
        # interpolation reads the right values
        ordered = np.partition(lat, kth) if n_q > 0 else lat
        for j in range(n_q):
            out_latency_q[g, j] = sorted_percentile_nb(ordered, quantiles[j])
