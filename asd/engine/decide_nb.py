"""Numba kernels for decisions: predictor forward pass (logistic or small ReLU MLP), isotonic
calibration (piecewise-linear table), binning, stop/start lookup; single and batched (prange).

A policy is packed into two contiguous arrays so that a call from Python passes four
arguments and allocates nothing: `blob` (float64: weights, knots, edges, stop table) and
`layout` (int64: sizes, offsets, knot counts, bin counts, start table). Predictor rows are
stages: row 0 scores the prompt alone (stage 0), row i+1 scores tier i's answer. Rows may
read different feature counts (prompt features P, tier features F): weights are padded to the
widest row and each row reads only its own `feature_counts[row]` values.
"""

from __future__ import annotations

import math

from numba import njit, prange

LOGISTIC = 0
MLP = 1
IDENTITY = 2  # p̂ = feature 0, clipped to [0, 1]: precomputed scores, no model

# layout[...] slots: sizes, then offsets into blob, then offsets into layout itself.
KIND, N_ROWS, N_HIDDEN, N_FEATURES, N_KNOTS_MAX, N_TIERS, N_EDGES, N_BINS, N_PROMPT_BINS = range(9)
OFF_W1, OFF_B1, OFF_W2, OFF_B2, OFF_ISO_X, OFF_ISO_Y, OFF_EDGES, OFF_STOP = range(9, 17)
OFF_KNOT_COUNTS, OFF_BIN_COUNTS, OFF_START, OFF_FEATURE_COUNTS = range(17, 21)
# blob[layout[OFF_ROUTE]]: the routed stage 0's threshold, NaN when the binned start table is used
OFF_ROUTE = 21
HEADER_SIZE = 22
# Raised (as ValueError) by the single-request kernels; Policy turns it into a PolicyError.
NON_FINITE = "features contain NaN or infinite values"


@njit(cache=True, inline="always")
def sigmoid_nb(z):
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@njit(cache=True, inline="always")
def predict_raw_nb(features, r, row, kind, w1, b1, w2, b2, n_features):
    """Uncalibrated P(accept) of request r (a row of `features`, n_features read) at stage
    `row`: logistic (H = 1), one ReLU hidden layer, or identity (feature 0 is p̂). Indexes 2-d
    arrays directly: a row view per request would cost reference-count updates in the hot loop."""
    if kind == IDENTITY:
        return min(max(features[r, 0], 0.0), 1.0)
    if kind == LOGISTIC:
        z = b1[row, 0]
        for f in range(n_features):
            z += w1[row, 0, f] * features[r, f]
        return sigmoid_nb(z)
    z = b2[row]
    for h in range(w1.shape[1]):
        a = b1[row, h]
        for f in range(n_features):
            a += w1[row, h, f] * features[r, f]
        if a > 0.0:
            z += w2[row, h] * a
    return sigmoid_nb(z)


@njit(cache=True, inline="always")
def isotonic_nb(p, knots_x, knots_y, row, n_knots):
    """Piecewise-linear interpolation through the first n_knots knots of table `row`,
    clamped at the ends."""
    if p <= knots_x[row, 0]:
        return knots_y[row, 0]
    if p >= knots_x[row, n_knots - 1]:
        return knots_y[row, n_knots - 1]
    # Branch-free count instead of a binary search: tables are short, and mispredicted
    # branches cost more than a few vectorised compares. hi = first knot above p.
    hi = 0
    for k in range(n_knots):
        hi += knots_x[row, k] <= p
    lo = hi - 1
    dx = knots_x[row, hi] - knots_x[row, lo]
    if dx <= 0.0:
        return knots_y[row, hi]
    return knots_y[row, lo] + (knots_y[row, hi] - knots_y[row, lo]) * (p - knots_x[row, lo]) / dx


@njit(cache=True, inline="always")
def bin_of_nb(p, edges, row, n_bins):
    """Number of inner edges edges[row, 1 .. n_bins-1] that are <= p (branch-free count)."""
    count = 0
    for j in range(1, n_bins):
        count += edges[row, j] <= p
    return count


@njit(cache=True, inline="always")
def part_nb(source, layout, slot, size):
    """The `size` values of `source` starting at the offset stored in layout[slot]."""
    o = layout[slot]
    return source[o:o + size]


@njit(cache=True, inline="always")
def unpack_nb(blob, layout):
    """Views into the packed policy (no copies)."""
    n_rows = layout[N_ROWS]
    n_hidden = layout[N_HIDDEN]
    n_features = layout[N_FEATURES]
    n_knots_max = layout[N_KNOTS_MAX]
    n_tiers = layout[N_TIERS]
    n_edges = layout[N_EDGES]
    n_bins = layout[N_BINS]
    w1 = part_nb(blob, layout, OFF_W1, n_rows * n_hidden * n_features).reshape((n_rows, n_hidden, n_features))
    b1 = part_nb(blob, layout, OFF_B1, n_rows * n_hidden).reshape((n_rows, n_hidden))
    w2 = part_nb(blob, layout, OFF_W2, n_rows * n_hidden).reshape((n_rows, n_hidden))
    b2 = part_nb(blob, layout, OFF_B2, n_rows)
    iso_x = part_nb(blob, layout, OFF_ISO_X, n_rows * n_knots_max).reshape((n_rows, n_knots_max))
    iso_y = part_nb(blob, layout, OFF_ISO_Y, n_rows * n_knots_max).reshape((n_rows, n_knots_max))
    edges = part_nb(blob, layout, OFF_EDGES, n_rows * n_edges).reshape((n_rows, n_edges))
    stop = part_nb(blob, layout, OFF_STOP, n_tiers * n_bins).reshape((n_tiers, n_bins))
    knot_counts = part_nb(layout, layout, OFF_KNOT_COUNTS, n_rows)
    bin_counts = part_nb(layout, layout, OFF_BIN_COUNTS, n_rows)
    start = part_nb(layout, layout, OFF_START, layout[N_PROMPT_BINS])
    feature_counts = part_nb(layout, layout, OFF_FEATURE_COUNTS, n_rows)
    return w1, b1, w2, b2, iso_x, iso_y, edges, stop, knot_counts, bin_counts, start, feature_counts


@njit(cache=True, inline="always")
def check_finite_nb(x):
    """Refuse NaN/inf features inside the kernel: a check from Python would cost more than the
    decision itself (NaN compares false everywhere and would land in bin 0 silently)."""
    for f in range(x.shape[0]):
        if not math.isfinite(x[f]):
            raise ValueError(NON_FINITE)


@njit(cache=True, inline="always")
def stage_bin_nb(features, r, row, kind, w1, b1, w2, b2, iso_x, iso_y, knot_counts, edges, bin_counts,
                 feature_counts):
    """Predictor → isotonic calibration → bin, for request r at stage `row`."""
    p = predict_raw_nb(features, r, row, kind, w1, b1, w2, b2, feature_counts[row])
    p = isotonic_nb(p, iso_x, iso_y, row, knot_counts[row])
    return bin_of_nb(p, edges, row, bin_counts[row])


@njit(cache=True)
def predict_packed_nb(blob, layout, row, x):
    """Calibrated P(accept) at stage `row` (0 = prompt, i+1 = after tier i)."""
    w1, b1, w2, b2, iso_x, iso_y, edges, stop, knot_counts, bin_counts, start, feature_counts = unpack_nb(blob, layout)
    p = predict_raw_nb(x.reshape((1, x.shape[0])), 0, row, layout[KIND], w1, b1, w2, b2, feature_counts[row])
    return isotonic_nb(p, iso_x, iso_y, row, knot_counts[row])


@njit(cache=True)
def stop_packed_nb(blob, layout, tier, x):
    """True when the request should stop at `tier` (0-based), given tier's features x."""
    check_finite_nb(x)
    w1, b1, w2, b2, iso_x, iso_y, edges, stop, knot_counts, bin_counts, start, feature_counts = unpack_nb(blob, layout)
    b = stage_bin_nb(x.reshape((1, x.shape[0])), 0, tier + 1, layout[KIND], w1, b1, w2, b2, iso_x, iso_y,
                     knot_counts, edges, bin_counts, feature_counts)
    return stop[tier, b] != 0.0


@njit(cache=True, inline="always")
def routed_start_of_nb(features, r, threshold, n_tiers, kind, w1, b1, w2, b2, iso_x, iso_y, knot_counts,
                       feature_counts):
    """The routed stage 0: the first tier s < L−1 whose prompt-only calibrated P(acceptable at
    s) reaches `threshold` (row 0 for tier 0, row L + s for tier s ≥ 1), else the last tier."""
    for s in range(n_tiers - 1):
        row = 0 if s == 0 else n_tiers + s
        p = predict_raw_nb(features, r, row, kind, w1, b1, w2, b2, feature_counts[row])
        if isotonic_nb(p, iso_x, iso_y, row, knot_counts[row]) >= threshold:
            return s
    return n_tiers - 1


@njit(cache=True)
def start_packed_nb(blob, layout, x):
    """Start tier chosen at stage 0 from prompt features x: the routed rule when the solved
    policy routes (blob[layout[OFF_ROUTE]] not NaN), else the start table of its prompt bin."""
    check_finite_nb(x)
    w1, b1, w2, b2, iso_x, iso_y, edges, stop, knot_counts, bin_counts, start, feature_counts = unpack_nb(blob, layout)
    features = x.reshape((1, x.shape[0]))
    threshold = blob[layout[OFF_ROUTE]]
    if threshold == threshold:
        return routed_start_of_nb(features, 0, threshold, layout[N_TIERS], layout[KIND], w1, b1, w2, b2, iso_x,
                                  iso_y, knot_counts, feature_counts)
    b0 = stage_bin_nb(features, 0, 0, layout[KIND], w1, b1, w2, b2, iso_x, iso_y,
                      knot_counts, edges, bin_counts, feature_counts)
    return start[b0]


@njit(cache=True, parallel=True)
def stop_batch_packed_nb(blob, layout, tiers, features, out):
    """out[r] = 1 when request r stops at tiers[r] given features[r]; prange over requests."""
    w1, b1, w2, b2, iso_x, iso_y, edges, stop, knot_counts, bin_counts, start, feature_counts = unpack_nb(blob, layout)
    kind = layout[KIND]
    for r in prange(features.shape[0]):
        tier = tiers[r]
        b = stage_bin_nb(features, r, tier + 1, kind, w1, b1, w2, b2, iso_x, iso_y, knot_counts, edges,
                         bin_counts, feature_counts)
        out[r] = 1 if stop[tier, b] != 0.0 else 0


@njit(cache=True, parallel=True)
def start_batch_packed_nb(blob, layout, features, out):
    """out[r] = start tier for request r from its prompt features (as `start_packed_nb`)."""
    w1, b1, w2, b2, iso_x, iso_y, edges, stop, knot_counts, bin_counts, start, feature_counts = unpack_nb(blob, layout)
    kind = layout[KIND]
    threshold = blob[layout[OFF_ROUTE]]
    n_tiers = layout[N_TIERS]
    for r in prange(features.shape[0]):
        if threshold == threshold:
            out[r] = routed_start_of_nb(features, r, threshold, n_tiers, kind, w1, b1, w2, b2, iso_x, iso_y,
                                        knot_counts, feature_counts)
        else:
            b0 = stage_bin_nb(features, r, 0, kind, w1, b1, w2, b2, iso_x, iso_y, knot_counts, edges, bin_counts,
                              feature_counts)
            out[r] = start[b0]


@njit(cache=True, parallel=True)
def predict_batch_packed_nb(blob, layout, rows, features, out):
    """out[r] = calibrated P(accept) of request r at stage rows[r] (the kernels' own arithmetic,
    so that a threshold compared here and in `start_packed_nb` falls the same way)."""
    w1, b1, w2, b2, iso_x, iso_y, edges, stop, knot_counts, bin_counts, start, feature_counts = unpack_nb(blob, layout)
    kind = layout[KIND]
    for r in prange(features.shape[0]):
        row = rows[r]
        p = predict_raw_nb(features, r, row, kind, w1, b1, w2, b2, feature_counts[row])
        out[r] = isotonic_nb(p, iso_x, iso_y, row, knot_counts[row])


@njit(cache=True, parallel=True)
def bins_batch_packed_nb(blob, layout, rows, features, out):
    """out[r] = bin of request r at stage rows[r]; λ-independent, so search bins once."""
    w1, b1, w2, b2, iso_x, iso_y, edges, stop, knot_counts, bin_counts, start, feature_counts = unpack_nb(blob, layout)
    kind = layout[KIND]
    for r in prange(features.shape[0]):
        out[r] = stage_bin_nb(features, r, rows[r], kind, w1, b1, w2, b2, iso_x, iso_y, knot_counts, edges,
                              bin_counts, feature_counts)
