"""Plain-Python twins of the engine kernels (same names minus `_nb`, same arguments and
outputs): the ground truth of the parity tests and the baseline of benchmarks/bench_engine.py.
"""

from __future__ import annotations

import math

from asd.engine.decide_nb import (
    IDENTITY, KIND, LOGISTIC, OFF_FEATURE_COUNTS,
    N_BINS, N_EDGES, N_FEATURES, N_HIDDEN, N_KNOTS_MAX, N_PROMPT_BINS, N_ROWS,
    NON_FINITE, N_TIERS, OFF_B1, OFF_B2, OFF_BIN_COUNTS, OFF_EDGES, OFF_ISO_X, OFF_ISO_Y, OFF_KNOT_COUNTS,
    OFF_ROUTE, OFF_START, OFF_STOP, OFF_W1, OFF_W2,
)
from asd.engine.dp_nb import TIE_HIGH, TIE_LOW


def solve_dp(lam, q_stop, q_mean, trans, cnext, trans0, c0, stop, value, cont, vmean, start, value0):
    n_tiers, n_bins = q_mean.shape
    last = n_tiers - 1
    for b in range(n_bins):
        stop[last, b] = 1
        cont[last, b] = 1e300
        vmean[last, b] = lam * (1.0 - q_mean[last, b])
        value[last, b] = vmean[last, b]
    for i in range(last - 1, -1, -1):
        for b in range(n_bins):
            ahead_mean = 0.0  # explicit loop: builtin sum() compensates, the kernel does not
            ahead_played = 0.0
            for b2 in range(n_bins):
                ahead_mean += trans[i, b, b2] * vmean[i + 1, b2]
                ahead_played += trans[i, b, b2] * value[i + 1, b2]
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
    for b0 in range(c0.shape[1]):
        options = []
        for s in range(n_tiers):
            w = c0[s, b0]
            for b in range(n_bins):  # same summation order as the kernel: parity is exact
                w += trans0[s, b0, b] * vmean[s, b]
            options.append(w)
        best_s = min(range(n_tiers), key=lambda s: (options[s], s))
        start[b0] = best_s
        played = c0[best_s, b0]
        for b in range(n_bins):
            played += trans0[best_s, b0, b] * value[best_s, b]
        value0[b0] = played


def solve_cold_start(lam, q_stop_cold, q_mean_cold, trans_cold, cnext_cold, trans0, c0,
                     stop, value, vmean, stop_cold, value_cold, vmean_cold, start, value0):
    n_tiers, n_bins = q_mean_cold.shape
    stop_cold[0], value_cold[0], vmean_cold[0] = stop[0], value[0], vmean[0]
    for s in range(1, n_tiers):
        for b in range(n_bins):
            stop_mean = lam * (1.0 - q_mean_cold[s, b])
            if s == n_tiers - 1:
                stop_cold[s, b], value_cold[s, b], vmean_cold[s, b] = 1, stop_mean, stop_mean
                continue
            ahead_mean = ahead_played = 0.0
            for b2 in range(n_bins):
                ahead_mean += trans_cold[s, b, b2] * vmean[s + 1, b2]
                ahead_played += trans_cold[s, b, b2] * value[s + 1, b2]
            c = cnext_cold[s, b] + ahead_mean
            vmean_cold[s, b] = stop_mean if stop_mean * TIE_LOW <= c * TIE_HIGH else c
            stops = lam * (1.0 - q_stop_cold[s, b]) * TIE_LOW <= c * TIE_HIGH
            stop_cold[s, b] = 1 if stops else 0
            value_cold[s, b] = stop_mean if stops else cnext_cold[s, b] + ahead_played
    for b0 in range(c0.shape[1]):
        options = []
        for s in range(n_tiers):
            w = c0[s, b0]
            for b in range(n_bins):
                w += trans0[s, b0, b] * vmean_cold[s, b]
            options.append(w)
        best_s = min(range(n_tiers), key=lambda s: (options[s], s))
        start[b0] = best_s
        played = c0[best_s, b0]
        for b in range(n_bins):
            played += trans0[best_s, b0, b] * value_cold[best_s, b]
        value0[b0] = played


def walk_charges(r, s, stop, stop_cold, q_mean, q_mean_cold, tier_bins, cold_bins, accepted, cost, cost_cont):
    n_tiers = stop.shape[0]
    k = next((i for i in range(s, n_tiers - 1)
              if (stop_cold[i, cold_bins[r, i]] if i == s > 0 else stop[i, tier_bins[r, i]])), n_tiers - 1)
    total = cost[r, s]
    for i in range(s + 1, k + 1):  # same summation order as the kernel: parity is exact
        total += cost_cont[r, i]
    a = accepted[r, k]
    if math.isnan(a):
        a = q_mean_cold[k, cold_bins[r, k]] if k == s > 0 else q_mean[k, tier_bins[r, k]]
    return total, 1.0 - a


def evidence_sums(stop, stop_cold, q_mean, q_mean_cold, prompt_bins, route_p, thresholds, tier_bins, cold_bins,
                  accepted, cost, cost_cont, start_cost, start_miss, route_cost, route_miss):
    n_tiers = stop.shape[0]
    start_cost[:], start_miss[:], route_cost[:], route_miss[:] = 0.0, 0.0, 0.0, 0.0
    for r in range(len(prompt_bins)):
        charges = [walk_charges(r, s, stop, stop_cold, q_mean, q_mean_cold, tier_bins, cold_bins, accepted, cost,
                                cost_cont) for s in range(n_tiers)]
        for s, (c, m) in enumerate(charges):
            start_cost[s, prompt_bins[r]] += c
            start_miss[s, prompt_bins[r]] += m
        for g, t in enumerate(thresholds):  # the first tier whose score reaches t, else the last
            s = next((i for i in range(n_tiers - 1) if route_p[r, i] >= t), n_tiers - 1)
            route_cost[g] += charges[s][0]
            route_miss[g] += charges[s][1]


def empirical_start(lam, start_cost, start_miss, counts, model_values, prior_weight, start_values, start, value0):
    n_tiers, n_prompt_bins = model_values.shape
    for b0 in range(n_prompt_bins):
        weight = counts[b0] + prior_weight
        options = [((start_cost[s, b0] + lam * start_miss[s, b0]) + prior_weight * model_values[s, b0]) / weight
                   if weight > 0 else model_values[s, b0] for s in range(n_tiers)]
        for s in range(n_tiers):
            start_values[s, b0] = options[s]
        best_s = min(range(n_tiers), key=lambda s: (options[s], s))
        start[b0] = best_s
        value0[b0] = options[best_s]


def routed_totals(lam, start_cost, start_miss, start, route_cost, route_miss, totals):
    for g in range(len(route_cost)):
        totals[g] = route_cost[g] + lam * route_miss[g]
    binned = 0.0
    for b0, s in enumerate(start):
        binned += start_cost[s, b0] + lam * start_miss[s, b0]
    totals[len(route_cost)] = binned


def walk_bins(prompt_bins, tier_bins, start, stop, out_start, out_stop):
    n_requests, n_tiers = tier_bins.shape
    for r in range(n_requests):
        s = start[prompt_bins[r]]
        k = next((i for i in range(s, n_tiers - 1) if stop[i, tier_bins[r, i]]), n_tiers - 1)
        out_start[r] = s
        out_stop[r] = k


def walk_bins_cold(prompt_bins, tier_bins, cold_bins, start, stop, stop_cold, out_start, out_stop):
    n_requests, n_tiers = tier_bins.shape
    for r in range(n_requests):
        s = start[prompt_bins[r]]
        says_stop = [stop_cold[i, cold_bins[r, i]] if (i == s and s > 0) else stop[i, tier_bins[r, i]]
                     for i in range(n_tiers)]
        k = next((i for i in range(s, n_tiers - 1) if says_stop[i]), n_tiers - 1)
        out_start[r] = s
        out_stop[r] = k


def path_totals(out_start, out_stop, tier_values, out):
    for r in range(tier_values.shape[0]):
        total = 0.0
        for i in range(out_start[r], out_stop[r] + 1):
            total += tier_values[r, i]
        out[r] = total


def sigmoid(z):
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def predict_raw(features, r, row, kind, w1, b1, w2, b2, n_features):
    if kind == IDENTITY:
        return min(max(features[r, 0], 0.0), 1.0)
    if kind == LOGISTIC:
        z = b1[row, 0]
        for f in range(n_features):
            z += w1[row, 0, f] * features[r, f]
        return sigmoid(z)
    z = b2[row]
    for h in range(w1.shape[1]):
        a = b1[row, h]
        for f in range(n_features):
            a += w1[row, h, f] * features[r, f]
        if a > 0.0:
            z += w2[row, h] * a
    return sigmoid(z)


def isotonic(p, knots_x, knots_y, row, n_knots):
    xs, ys = knots_x[row], knots_y[row]
    if p <= xs[0]:
        return ys[0]
    if p >= xs[n_knots - 1]:
        return ys[n_knots - 1]
    hi = next(j for j in range(1, n_knots) if xs[j] > p)
    lo = hi - 1
    dx = xs[hi] - xs[lo]
    if dx <= 0.0:
        return ys[hi]
    return ys[lo] + (ys[hi] - ys[lo]) * (p - xs[lo]) / dx


def bin_of(p, edges, row, n_bins):
    return sum(1 for j in range(1, n_bins) if edges[row, j] <= p)


def part(source, layout, slot, size):
    return source[layout[slot]:layout[slot] + size]


def unpack(blob, layout):
    rows, hidden, feats = layout[N_ROWS], layout[N_HIDDEN], layout[N_FEATURES]
    knots, tiers, n_edges, bins = layout[N_KNOTS_MAX], layout[N_TIERS], layout[N_EDGES], layout[N_BINS]

    def shaped(slot, shape, source=blob):
        return part(source, layout, slot, math.prod(shape)).reshape(shape)

    return (shaped(OFF_W1, (rows, hidden, feats)), shaped(OFF_B1, (rows, hidden)),
            shaped(OFF_W2, (rows, hidden)), shaped(OFF_B2, (rows,)),
            shaped(OFF_ISO_X, (rows, knots)), shaped(OFF_ISO_Y, (rows, knots)),
            shaped(OFF_EDGES, (rows, n_edges)), shaped(OFF_STOP, (tiers, bins)),
            shaped(OFF_KNOT_COUNTS, (rows,), layout), shaped(OFF_BIN_COUNTS, (rows,), layout),
            shaped(OFF_START, (layout[N_PROMPT_BINS],), layout), shaped(OFF_FEATURE_COUNTS, (rows,), layout))


def stage_bin(features, r, row, kind, w1, b1, w2, b2, iso_x, iso_y, knot_counts, edges, bin_counts, feature_counts):
    p = predict_raw(features, r, row, kind, w1, b1, w2, b2, feature_counts[row])
    p = isotonic(p, iso_x, iso_y, row, knot_counts[row])
    return bin_of(p, edges, row, bin_counts[row])


def predict_packed(blob, layout, row, x):
    w1, b1, w2, b2, iso_x, iso_y, edges, stop, knot_counts, bin_counts, start, counts = unpack(blob, layout)
    p = predict_raw(x.reshape(1, -1), 0, row, layout[KIND], w1, b1, w2, b2, counts[row])
    return isotonic(p, iso_x, iso_y, row, knot_counts[row])


def check_finite(x):
    for value in x:
        if not math.isfinite(value):
            raise ValueError(NON_FINITE)


def stop_packed(blob, layout, tier, x):
    check_finite(x)
    w1, b1, w2, b2, iso_x, iso_y, edges, stop, knot_counts, bin_counts, start, counts = unpack(blob, layout)
    b = stage_bin(x.reshape(1, -1), 0, tier + 1, layout[KIND], w1, b1, w2, b2, iso_x, iso_y, knot_counts, edges,
                  bin_counts, counts)
    return bool(stop[tier, b] != 0.0)


def start_packed(blob, layout, x):
    check_finite(x)
    w1, b1, w2, b2, iso_x, iso_y, edges, stop, knot_counts, bin_counts, start, counts = unpack(blob, layout)
    threshold = blob[layout[OFF_ROUTE]]
    if not math.isnan(threshold):  # routed: the first tier whose prompt-only p̂ reaches it
        tiers = layout[N_TIERS]
        for s in range(tiers - 1):
            if predict_packed(blob, layout, 0 if s == 0 else tiers + s, x) >= threshold:
                return s
        return tiers - 1
    b0 = stage_bin(x.reshape(1, -1), 0, 0, layout[KIND], w1, b1, w2, b2, iso_x, iso_y, knot_counts, edges, bin_counts,
                  counts)
    return int(start[b0])


def stop_batch_packed(blob, layout, tiers, features, out):
    for r in range(features.shape[0]):
        out[r] = 1 if stop_packed(blob, layout, int(tiers[r]), features[r]) else 0


def start_batch_packed(blob, layout, features, out):
    for r in range(features.shape[0]):
        out[r] = start_packed(blob, layout, features[r])


def predict_batch_packed(blob, layout, rows, features, out):
    for r in range(features.shape[0]):
        out[r] = predict_packed(blob, layout, int(rows[r]), features[r])


def bins_batch_packed(blob, layout, rows, features, out):
    w1, b1, w2, b2, iso_x, iso_y, edges, stop, knot_counts, bin_counts, start, counts = unpack(blob, layout)
    for r in range(features.shape[0]):
        out[r] = stage_bin(features, r, int(rows[r]), layout[KIND], w1, b1, w2, b2, iso_x, iso_y,
                           knot_counts, edges, bin_counts, counts)
