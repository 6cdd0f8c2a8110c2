"""Decision kernels: predictor forward passes, isotonic table, binning, stop/start lookups —
numba equals the plain-Python reference, and the forward passes equal their numpy formulas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.engine import decide_nb, reference
from asd.engine.policy import Policy, Predictor
from asd.engine.tables import build_tables
from tests.strategies import isotonic_tables


def random_policy(draw, kind, n_tiers, n_features, with_prompt):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_rows = n_tiers + 1
    iso = draw(isotonic_tables(n_rows))
    if kind == "logistic":
        predictor = Predictor.logistic(rng.normal(size=(n_rows, n_features)), rng.normal(size=n_rows),
                                       isotonic=iso, has_prompt=with_prompt)
    else:
        hidden = draw(st.integers(1, 5))
        predictor = Predictor.mlp(rng.normal(size=(n_rows, hidden, n_features)), rng.normal(size=(n_rows, hidden)),
                                  rng.normal(size=(n_rows, hidden)), rng.normal(size=n_rows), isotonic=iso,
                                  has_prompt=with_prompt)
    n = 200
    p_hat = rng.random((n, n_tiers))
    accepted = (rng.random((n, n_tiers)) < p_hat).astype(float)
    tables = build_tables(p_hat, accepted, np.arange(1.0, n_tiers + 1), n_bins=draw(st.integers(1, 8)),
                          prompt_p=rng.random(n) if with_prompt else None,
                          n_prompt_bins=draw(st.integers(1, 5)), binning=draw(st.sampled_from(["quantile", "fixed"])))
    policy = Policy(tables, predictor, lam=draw(st.floats(0.0, 100.0)))
    return policy, rng


@st.composite
def policies(draw):
    kind = draw(st.sampled_from(["logistic", "mlp"]))
    return random_policy(draw, kind, draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.booleans()))


@settings(max_examples=40, deadline=None)
@given(policies())
def test_single_and_batched_decisions_numba_equal_reference(case):
    policy, rng = case
    blob, layout = policy._blob, policy._layout
    n, n_features = 64, policy.predictor.n_features
    features = rng.normal(size=(n, n_features)) * 2.0
    tiers = rng.integers(0, policy.n_tiers, n)
    rows = rng.integers(0, policy.n_tiers + 1, n)
    for r in range(8):
        x, tier = features[r], int(tiers[r])
        assert decide_nb.stop_packed_nb(blob, layout, tier, x) == reference.stop_packed(blob, layout, tier, x)
        assert decide_nb.start_packed_nb(blob, layout, x) == reference.start_packed(blob, layout, x)
        assert decide_nb.predict_packed_nb(blob, layout, int(rows[r]), x) == reference.predict_packed(
            blob, layout, int(rows[r]), x)
    pairs = [
        (decide_nb.stop_batch_packed_nb, reference.stop_batch_packed, (tiers, features), np.uint8),
        (decide_nb.start_batch_packed_nb, reference.start_batch_packed, (features,), np.int64),
        (decide_nb.bins_batch_packed_nb, reference.bins_batch_packed, (rows, features), np.int64),
    ]
    for fast, slow, args, dtype in pairs:
        a, b = np.empty(n, dtype), np.empty(n, dtype)
        fast(blob, layout, *args, a)
        slow(blob, layout, *args, b)
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(policy.decide_batch(tiers, features),
                                  [policy.decide(int(t), x) for t, x in zip(tiers, features)])


@settings(max_examples=20, deadline=None)
@given(policies(), st.sampled_from([np.nan, np.inf, -np.inf]), st.integers(0, 5))
def test_single_kernels_and_reference_both_refuse_non_finite_features(case, bad, position):
    policy, rng = case
    blob, layout = policy._blob, policy._layout
    x = rng.normal(size=policy.predictor.n_features)
    x[position % x.size] = bad
    for kernel, twin, args in ((decide_nb.stop_packed_nb, reference.stop_packed, (0, x)),
                               (decide_nb.start_packed_nb, reference.start_packed, (x,))):
        for fn in (kernel, twin):
            with pytest.raises(ValueError, match=decide_nb.NON_FINITE):
                fn(blob, layout, *args)


def test_logistic_and_mlp_forward_pass_match_numpy_formulas():
    rng = np.random.default_rng(5)
    n_rows, hidden, n_features = 3, 4, 7
    x = rng.normal(size=n_features)
    w, b = rng.normal(size=(n_rows, n_features)), rng.normal(size=n_rows)
    logistic = Predictor.logistic(w, b)
    w1, b1 = rng.normal(size=(n_rows, hidden, n_features)), rng.normal(size=(n_rows, hidden))
    w2, b2 = rng.normal(size=(n_rows, hidden)), rng.normal(size=n_rows)
    mlp = Predictor.mlp(w1, b1, w2, b2)
    for row in range(n_rows):
        expected = 1.0 / (1.0 + np.exp(-(w[row] @ x + b[row])))
        got = decide_nb.predict_raw_nb(x[None, :], 0, row, decide_nb.LOGISTIC, logistic.w1, logistic.b1, logistic.w2,
                                       logistic.b2)
        assert abs(got - expected) < 1e-12
        hidden_out = np.maximum(w1[row] @ x + b1[row], 0.0)
        expected = 1.0 / (1.0 + np.exp(-(w2[row] @ hidden_out + b2[row])))
        assert abs(decide_nb.predict_raw_nb(x[None, :], 0, row, decide_nb.MLP, mlp.w1, mlp.b1, mlp.w2, mlp.b2) - expected) < 1e-12


@settings(max_examples=100, deadline=None)
@given(isotonic_tables(1, max_knots=8), st.floats(-0.5, 1.5))
def test_isotonic_table_equals_numpy_interp_and_reference(tables, p):
    x, y = tables[0]
    got = decide_nb.isotonic_nb(p, x[None, :], y[None, :], 0, len(x))
    assert got == reference.isotonic(p, x[None, :], y[None, :], 0, len(x))
    if len(np.unique(x)) == len(x):  # np.interp agrees where knots are distinct
        assert abs(got - np.interp(p, x, y)) < 1e-12


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=0, max_size=10), st.floats(0.0, 1.0))
def test_bin_lookup_equals_searchsorted_and_reference(inner, p):
    edges = np.array([0.0] + sorted(inner) + [1.0])
    n_bins = len(edges) - 1
    got = decide_nb.bin_of_nb(p, edges[None, :], 0, n_bins)
    assert got == reference.bin_of(p, edges[None, :], 0, n_bins)
    assert got == int(np.searchsorted(edges[1:-1], p, side="right"))
    assert 0 <= got < n_bins
