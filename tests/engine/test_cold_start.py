"""Stage 0 for the state a request is really in: trans0 maps prompt bins to COLD bins at the
start tier, the walk reads cold bins at a skipped-to start tier and climbed bins after it, and
the DP value is the expected cost of exactly that walk."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.engine import reference
from asd.engine.dp_nb import solve_dp_nb, walk_bins_cold_nb, walk_bins_nb
from asd.engine.policy import Policy, Predictor
from asd.engine.tables import bin_index, build_tables
from asd.errors import PolicyError
from tests.engine.test_dp import solve
from tests.strategies import dp_instances, lambdas


@settings(max_examples=40, deadline=None)
@given(dp_instances(max_tiers=4, max_bins=4), lambdas, st.integers(0, 2**31 - 1))
def test_cold_walk_numba_equals_reference_and_equals_the_climbed_walk_when_cold_bins_are_climbed(inst, lam, seed):
    rng = np.random.default_rng(seed)
    out = solve(solve_dp_nb, inst, lam)
    n_tiers, n_bins = inst["q_mean"].shape
    n = 60
    prompt_bins = rng.integers(0, inst["c0"].shape[1], n)
    tier_bins = rng.integers(0, n_bins, (n, n_tiers))
    cold_bins = rng.integers(0, n_bins, (n, n_tiers))
    results = []
    for walk in (walk_bins_cold_nb, reference.walk_bins_cold):
        first, stop = np.empty(n, np.int64), np.empty(n, np.int64)
        walk(prompt_bins, tier_bins, cold_bins, out["start"], out["stop"], first, stop)
        results.append((first, stop))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    climbed = np.empty(n, np.int64), np.empty(n, np.int64)
    walk_bins_nb(prompt_bins, tier_bins, out["start"], out["stop"], *climbed)
    same = np.empty(n, np.int64), np.empty(n, np.int64)
    walk_bins_cold_nb(prompt_bins, tier_bins, tier_bins, out["start"], out["stop"], *same)
    np.testing.assert_array_equal(climbed[1], same[1])


def expected_walk_cost(inst, out, lam):
    """Enumerate, per prompt bin, every (cold bin at the start tier, climbed bins after it) with
    its probability under trans0/trans, walk it with the cold-walk kernel, and price the walk:
    c0 at the start, cnext of each step by the bin it leaves, λ(1 − q_mean) where it stops."""
    n_tiers, n_bins = inst["q_mean"].shape
    values = []
    for b0 in range(inst["c0"].shape[1]):
        s = int(out["start"][b0])
        paths = np.array(list(itertools.product(range(n_bins), repeat=n_tiers - s)), dtype=np.int64)
        paths = paths.reshape(len(paths), n_tiers - s)
        prob = inst["trans0"][s, b0, paths[:, 0]].copy()
        for j in range(1, n_tiers - s):
            prob *= inst["trans"][s + j - 1, paths[:, j - 1], paths[:, j]]
        bins = np.zeros((len(paths), n_tiers), np.int64)
        bins[:, s:] = paths
        cold = np.full_like(bins, 0)
        cold[:, s] = paths[:, 0]
        climbed = bins.copy()
        climbed[:, s] = (paths[:, 0] + 1) % n_bins  # a different climbed bin at s: must not be read
        first, stop = np.empty(len(paths), np.int64), np.empty(len(paths), np.int64)
        walk_bins_cold_nb(np.full(len(paths), b0), climbed if s > 0 else bins, cold, out["start"], out["stop"],
                          first, stop)
        cost = np.full(len(paths), inst["c0"][s, b0])
        for r in range(len(paths)):
            for i in range(s, stop[r]):
                cost[r] += inst["cnext"][i, bins[r, i]]
            cost[r] += lam * (1.0 - inst["q_mean"][stop[r], bins[r, stop[r]]])
        values.append(float(prob @ cost))
    return np.array(values)


@settings(max_examples=40, deadline=None)
@given(dp_instances(max_tiers=4, max_bins=3, max_prompt_bins=3), lambdas, st.booleans())
def test_dp_stage0_value_is_the_expected_cost_of_the_cold_walk_it_prescribes(inst, lam, risk_averse):
    if not risk_averse:
        inst = {**inst, "q_stop": inst["q_mean"]}
    out = solve(solve_dp_nb, inst, lam)
    np.testing.assert_allclose(out["value0"], expected_walk_cost(inst, out, lam), rtol=1e-9, atol=1e-9)


def cold_ladder(rng, n=4000):
    """Tier features: logit of the true acceptance plus, from tier 1 on, an agreement-like
    signal that only a climbed request has; a cold request sees a noisier score."""
    difficulty = rng.normal(size=n) + np.where(rng.random(n) < 0.7, 2.0, -1.0)
    logit = np.linspace(-1.0, 2.5, 3)[None, :] - difficulty[:, None]
    p_true = 1 / (1 + np.exp(-logit))
    accepted = (rng.random(p_true.shape) < p_true).astype(float)
    cold_logit = logit * 0.4  # less evidence when started cold: p̂ pulled toward 0.5
    return p_true, 1 / (1 + np.exp(-cold_logit)), accepted, difficulty


def test_trans0_counts_the_cold_bins_of_each_prompt_bin_and_tier0_stays_climbed():
    rng = np.random.default_rng(0)
    p_hat, cold_p, accepted, difficulty = cold_ladder(rng)
    prompt_p = 1 / (1 + np.exp(difficulty))
    t = build_tables(p_hat, accepted, [1.0, 2.0, 4.0], prompt_p=prompt_p, start_p_hat=cold_p, n_bins=5,
                     n_prompt_bins=4, smoothing=0.0)
    assert t.cold_start
    bins0 = bin_index(prompt_p, t.edges0)
    for s in range(3):
        source = p_hat[:, 0] if s == 0 else cold_p[:, s]
        cold_bins = bin_index(source, t.edges[s])  # tier s's edges, from the climbed p̂
        for b0 in range(4):
            counts = np.bincount(cold_bins[bins0 == b0], minlength=5)
            np.testing.assert_allclose(t.trans0[s, b0], counts / counts.sum(), rtol=1e-12)
    plain = build_tables(p_hat, accepted, [1.0, 2.0, 4.0], prompt_p=prompt_p, n_bins=5, n_prompt_bins=4)
    assert not plain.cold_start and not np.allclose(plain.trans0[1:], t.trans0[1:])
    np.testing.assert_array_equal(plain.edges, t.edges)


def test_a_cold_start_policy_walks_on_cold_bins_and_refuses_a_walk_without_them():
    rng = np.random.default_rng(1)
    p_hat, cold_p, accepted, difficulty = cold_ladder(rng)
    prompt_p = 1 / (1 + np.exp(difficulty))
    tables = build_tables(p_hat, accepted, [1.0, 1.5, 2.0], prompt_p=prompt_p, start_p_hat=cold_p, n_bins=8,
                          start_costs=[1.0, 1.5, 2.0])
    policy = Policy(tables, Predictor.identity(3, has_prompt=True), lam=40.0)
    prompt_bins = policy.prompt_bins(prompt_p[:, None])
    tier_bins, cold_bins = policy.tier_bins(p_hat[:, :, None]), policy.cold_tier_bins(cold_p[:, :, None])
    walk = policy.walk(prompt_bins, tier_bins, cold_bins)
    assert (walk.start > 0).any()
    skipped = np.flatnonzero(walk.start == 1)
    for r in skipped[:50]:  # at the start tier the cold bin decides, after it the climbed one
        stops_at_start = bool(policy.stop_table[1, cold_bins[r, 1]])
        assert (walk.stop[r] == 1) == stops_at_start
    with pytest.raises(PolicyError, match="pass cold_bins"):
        policy.walk(prompt_bins, tier_bins)
    with pytest.raises(PolicyError, match=r"cold bins have shape \(3, 3\)"):
        policy.walk(prompt_bins, tier_bins, cold_bins[:3])
    with pytest.raises(PolicyError, match=r"start_p_hat has shape \(4000, 2\)"):
        build_tables(p_hat, accepted, [1.0, 1.5, 2.0], start_p_hat=cold_p[:, :2])
