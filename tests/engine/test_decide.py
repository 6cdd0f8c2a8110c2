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


def random_policy(draw, kind, n_tiers, n_features, with_prompt, n_prompt_features=None):
    """A policy with a random predictor; with a prompt stage, the prompt row may read its own
    number of features P (ragged weights, padded inside)."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_rows = n_tiers + 1
    widths = [n_prompt_features or n_features] + [n_features] * n_tiers
    iso = draw(isotonic_tables(n_rows))
    if kind == "identity":
        predictor = Predictor.identity(n_tiers, has_prompt=with_prompt, isotonic=iso)
    elif kind == "logistic":
        predictor = Predictor.logistic([rng.normal(size=w) for w in widths], rng.normal(size=n_rows),
                                       isotonic=iso, has_prompt=with_prompt)
    else:
        hidden = draw(st.integers(1, 5))
        predictor = Predictor.mlp([rng.normal(size=(hidden, w)) for w in widths], rng.normal(size=(n_rows, hidden)),
                                  rng.normal(size=(n_rows, hidden)), rng.normal(size=n_rows), isotonic=iso,
                                  has_prompt=with_prompt)
    n = 200
    p_hat = rng.random((n, n_tiers))
    accepted = (rng.random((n, n_tiers)) < p_hat).astype(float)
    tables = build_tables(p_hat, accepted, np.arange(1.0, n_tiers + 1), n_bins=draw(st.integers(1, 8)),
                          prompt_p=rng.random(n) if with_prompt else None,
                          n_prompt_bins=draw(st.integers(1, 5)) if with_prompt else None,
                          binning=draw(st.sampled_from(["quantile", "fixed"])))
    policy = Policy(tables, predictor, lam=draw(st.floats(0.0, 100.0)))
    return policy, rng


@st.composite
def policies(draw):
    kind = draw(st.sampled_from(["logistic", "mlp", "identity"]))
    with_prompt = draw(st.booleans())
    n_features = 1 if kind == "identity" else draw(st.integers(1, 6))
    n_prompt = 1 if kind == "identity" else draw(st.integers(1, 6)) if with_prompt else None
    return random_policy(draw, kind, draw(st.integers(1, 4)), n_features, with_prompt, n_prompt)


@settings(max_examples=40, deadline=None)
@given(policies())
def test_single_and_batched_decisions_numba_equal_reference(case):
    policy, rng = case
    blob, layout = policy._blob, policy._layout
    n, n_features, n_prompt = 64, policy.predictor.n_features, policy.predictor.n_prompt_features
    scale = 0.6 if policy.predictor.kind == "identity" else 2.0  # identity: p̂ = feature 0, clipped
    features = rng.normal(size=(n, n_features)) * scale + (0.5 if scale < 1 else 0.0)
    prompt_features = rng.normal(size=(n, n_prompt)) * scale + (0.5 if scale < 1 else 0.0)
    tiers = rng.integers(0, policy.n_tiers, n)
    rows = rng.integers(1, policy.n_tiers + 1, n)
    for r in range(8):
        x, tier, x0 = features[r], int(tiers[r]), prompt_features[r]
        assert decide_nb.stop_packed_nb(blob, layout, tier, x) == reference.stop_packed(blob, layout, tier, x)
        assert decide_nb.start_packed_nb(blob, layout, x0) == reference.start_packed(blob, layout, x0)
        assert decide_nb.predict_packed_nb(blob, layout, int(rows[r]), x) == reference.predict_packed(
            blob, layout, int(rows[r]), x)
        assert decide_nb.predict_packed_nb(blob, layout, 0, x0) == reference.predict_packed(blob, layout, 0, x0)
        k = int(policy.predictor.knot_counts[tier + 1])
        if (np.diff(policy.predictor.iso_x[tier + 1, :k]) > 0).all():  # np.interp agrees on distinct knots
            np.testing.assert_allclose(policy.predict(tier, x), policy.predictor.predict_proba(tier + 1, x[None])[0],
                                       rtol=1e-12, atol=1e-12)
    pairs = [
        (decide_nb.stop_batch_packed_nb, reference.stop_batch_packed, (tiers, features), np.uint8),
        (decide_nb.start_batch_packed_nb, reference.start_batch_packed, (prompt_features,), np.int64),
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
    x0 = rng.normal(size=policy.predictor.n_prompt_features)
    x0[position % x0.size] = bad
    for kernel, twin, args in ((decide_nb.stop_packed_nb, reference.stop_packed, (0, x)),
                               (decide_nb.start_packed_nb, reference.start_packed, (x0,))):
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
                                       logistic.b2, n_features)
        assert abs(got - expected) < 1e-12
        hidden_out = np.maximum(w1[row] @ x + b1[row], 0.0)
        expected = 1.0 / (1.0 + np.exp(-(w2[row] @ hidden_out + b2[row])))
        assert abs(decide_nb.predict_raw_nb(x[None, :], 0, row, decide_nb.MLP, mlp.w1, mlp.b1, mlp.w2, mlp.b2,
                                          n_features) - expected) < 1e-12


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
