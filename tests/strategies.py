"""Hypothesis strategies for traces and engine tables, shared by the test modules."""

from __future__ import annotations

from hypothesis import strategies as st  # noqa: F401

# --- trace strategies ---


# --- engine table strategies ---

import numpy as _np  # noqa: E402
from hypothesis.extra import numpy as _hnp  # noqa: E402

_unit = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False)
_cost = st.floats(0.0, 10.0, allow_nan=False, allow_infinity=False)


def _stochastic(draw, shape):
    """Arrays whose last axis sums to 1 (rows of a transition kernel), zeros allowed."""
    weights = draw(_hnp.arrays(_np.float64, shape, elements=_unit)) + 1e-3
    return weights / weights.sum(axis=-1, keepdims=True)


@st.composite
def dp_instances(draw, max_tiers=4, max_bins=4, max_prompt_bins=3):
    """Random DP inputs: q_stop <= q_mean (L, B), trans (L-1, B, B), cnext, trans0 (L, B0, B), c0."""
    n_tiers = draw(st.integers(1, max_tiers))
    n_bins = draw(st.integers(1, max_bins))
    n_prompt_bins = draw(st.integers(1, max_prompt_bins))
    q_mean = draw(_hnp.arrays(_np.float64, (n_tiers, n_bins), elements=_unit))
    shrink = draw(_hnp.arrays(_np.float64, (n_tiers, n_bins), elements=_unit))
    return {
        "q_stop": q_mean * shrink,
        "q_mean": q_mean,
        "trans": _stochastic(draw, (max(n_tiers - 1, 0), n_bins, n_bins)),
        "cnext": draw(_hnp.arrays(_np.float64, (max(n_tiers - 1, 0), n_bins), elements=_cost)),
        "trans0": _stochastic(draw, (n_tiers, n_prompt_bins, n_bins)),
        "c0": draw(_hnp.arrays(_np.float64, (n_tiers, n_prompt_bins), elements=_cost)),
    }


lambdas = st.floats(0.0, 1e3, allow_nan=False, allow_infinity=False)


@st.composite
def calibration_sets(draw, max_requests=60, max_tiers=4):
    """(p_hat, accepted, costs) for N requests over L tiers; accepted 0/1 or quality, some NaN."""
    n = draw(st.integers(1, max_requests))
    n_tiers = draw(st.integers(1, max_tiers))
    p_hat = draw(_hnp.arrays(_np.float64, (n, n_tiers), elements=_unit))
    accepted = draw(_hnp.arrays(_np.float64, (n, n_tiers), elements=st.sampled_from([0.0, 1.0, 0.25, _np.nan])))
    costs = draw(_hnp.arrays(_np.float64, (n, n_tiers), elements=_cost))
    return p_hat, accepted, costs


@st.composite
def isotonic_tables(draw, n_rows, max_knots=6):
    """One piecewise-linear non-decreasing table per predictor row."""
    tables = []
    for _ in range(n_rows):
        k = draw(st.integers(1, max_knots))
        x = _np.sort(draw(_hnp.arrays(_np.float64, k, elements=_unit)))
        y = _np.sort(draw(_hnp.arrays(_np.float64, k, elements=_unit)))
        tables.append((x, y))
    return tables
