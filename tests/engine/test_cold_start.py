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
from asd.engine.dp_nb import solve_cold_start_nb, solve_dp_nb, walk_bins_cold_nb, walk_bins_nb
from asd.engine.policy import Policy, Predictor
from asd.engine.tables import bin_index, build_tables
from asd.errors import PolicyError
from tests.engine.test_dp import solve
from tests.strategies import dp_instances, lambdas


def with_cold(inst, seed):
    """Add cold-state tables to a DP instance: q_cold, trans_cold (cold bin at s → climbed bin
    at s+1), cnext_cold; rows for tier 0 equal the climbed ones (the same state)."""
    rng = np.random.default_rng(seed)
    n_tiers, n_bins = inst["q_mean"].shape
    q_mean_cold = rng.random((n_tiers, n_bins))
    q_mean_cold[0] = inst["q_mean"][0]
    q_stop_cold = q_mean_cold * rng.random((n_tiers, n_bins))
    q_stop_cold[0] = inst["q_stop"][0]
    trans_cold = rng.random(inst["trans"].shape) + 1e-3
    trans_cold /= trans_cold.sum(axis=-1, keepdims=True)
    cnext_cold = rng.random(inst["cnext"].shape) * 5
    if n_tiers > 1:
        trans_cold[0], cnext_cold[0] = inst["trans"][0], inst["cnext"][0]
    return {**inst, "q_stop_cold": q_stop_cold, "q_mean_cold": q_mean_cold, "trans_cold": trans_cold,
            "cnext_cold": cnext_cold}


def solve_cold(kernel, cold_kernel, inst, lam):
    out = solve(kernel, inst, lam)
    n_tiers, n_bins = inst["q_mean"].shape
    out.update(stop_cold=np.zeros((n_tiers, n_bins), np.uint8), value_cold=np.zeros((n_tiers, n_bins)),
               vmean_cold=np.zeros((n_tiers, n_bins)))
    cold_kernel(lam, inst["q_stop_cold"], inst["q_mean_cold"], inst["trans_cold"], inst["cnext_cold"], inst["trans0"],
                inst["c0"], out["stop"], out["value"], out["vmean"], out["stop_cold"], out["value_cold"],
                out["vmean_cold"], out["start"], out["value0"])
    return out


@settings(max_examples=40, deadline=None)
@given(dp_instances(max_tiers=5, max_bins=5), lambdas | st.floats(1e300, 1.7e308), st.integers(0, 2**31 - 1))
def test_cold_start_solve_numba_equals_reference_exactly(inst, lam, seed):
    """Exact, λ near the float limit included (Policy.solve takes any finite λ)."""
    inst = with_cold(inst, seed)
    fast = solve_cold(solve_dp_nb, solve_cold_start_nb, inst, lam)
    slow = solve_cold(reference.solve_dp, reference.solve_cold_start, inst, lam)
    for key in fast:
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)


@settings(max_examples=40, deadline=None)
@given(dp_instances(max_tiers=4, max_bins=4), lambdas, st.integers(0, 2**31 - 1))
def test_cold_walk_numba_equals_reference_and_equals_the_climbed_walk_when_states_agree(inst, lam, seed):
    rng = np.random.default_rng(seed)
    out = solve_cold(solve_dp_nb, solve_cold_start_nb, with_cold(inst, seed), lam)
    n_tiers, n_bins = inst["q_mean"].shape
    n = 60
    prompt_bins = rng.integers(0, inst["c0"].shape[1], n)
    tier_bins = rng.integers(0, n_bins, (n, n_tiers))
    cold_bins = rng.integers(0, n_bins, (n, n_tiers))
    results = []
    for walk in (walk_bins_cold_nb, reference.walk_bins_cold):
        first, stop = np.empty(n, np.int64), np.empty(n, np.int64)
        walk(prompt_bins, tier_bins, cold_bins, out["start"], out["stop"], out["stop_cold"], first, stop)
        results.append((first, stop))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    climbed = np.empty(n, np.int64), np.empty(n, np.int64)
    walk_bins_nb(prompt_bins, tier_bins, out["start"], out["stop"], *climbed)
    same = np.empty(n, np.int64), np.empty(n, np.int64)
    walk_bins_cold_nb(prompt_bins, tier_bins, tier_bins, out["start"], out["stop"], out["stop"], *same)
    np.testing.assert_array_equal(climbed[1], same[1])


def expected_walk_cost(inst, out, lam):
    """Enumerate, per prompt bin, every (cold bin at the start tier, climbed bins after it) with
    its probability under trans0, trans_cold (first step) and trans, walk it with the cold-walk
    kernel, and price the walk: c0 at the start, cnext_cold / cnext of each step by the bin it
    leaves, λ(1 − q_mean_cold / q_mean) where it stops."""
    n_tiers, n_bins = inst["q_mean"].shape
    values = []
    for b0 in range(inst["c0"].shape[1]):
        s = int(out["start"][b0])
        paths = np.array(list(itertools.product(range(n_bins), repeat=n_tiers - s)), dtype=np.int64)
        paths = paths.reshape(len(paths), n_tiers - s)
        first_step = inst["trans_cold"] if s > 0 else inst["trans"]
        prob = inst["trans0"][s, b0, paths[:, 0]].copy()
        for j in range(1, n_tiers - s):
            kernel = first_step if j == 1 else inst["trans"]
            prob *= kernel[s + j - 1, paths[:, j - 1], paths[:, j]]
        bins = np.zeros((len(paths), n_tiers), np.int64)
        bins[:, s:] = paths
        cold = np.zeros_like(bins)
        cold[:, s] = paths[:, 0]
        climbed = bins.copy()
        if s > 0:
            climbed[:, s] = (paths[:, 0] + 1) % n_bins  # a different climbed bin at s: must not be read
        first, stop = np.empty(len(paths), np.int64), np.empty(len(paths), np.int64)
        walk_bins_cold_nb(np.full(len(paths), b0), climbed, cold, out["start"], out["stop"], out["stop_cold"],
                          first, stop)
        cost = np.full(len(paths), inst["c0"][s, b0])
        for r in range(len(paths)):
            for i in range(s, stop[r]):
                cost[r] += (inst["cnext_cold"] if (i == s and s > 0) else inst["cnext"])[i, bins[r, i]]
            q = inst["q_mean_cold"] if (stop[r] == s and s > 0) else inst["q_mean"]
            cost[r] += lam * (1.0 - q[stop[r], bins[r, stop[r]]])
        values.append(float(prob @ cost))
    return np.array(values)


@settings(max_examples=40, deadline=None)
@given(dp_instances(max_tiers=4, max_bins=3, max_prompt_bins=3), lambdas, st.booleans(), st.integers(0, 2**31 - 1))
def test_dp_stage0_value_is_the_expected_cost_of_the_cold_walk_it_prescribes(inst, lam, risk_averse, seed):
    inst = with_cold(inst, seed)
    if not risk_averse:
        inst = {**inst, "q_stop": inst["q_mean"], "q_stop_cold": inst["q_mean_cold"]}
    out = solve_cold(solve_dp_nb, solve_cold_start_nb, inst, lam)
    np.testing.assert_allclose(out["value0"], expected_walk_cost(inst, out, lam), rtol=1e-9, atol=1e-9)


def test_stage0_start_is_the_best_start_over_cold_values():
    """Each start option is c0 + trans0 · V_cold (the mean-model value of being there cold):
    the chosen start is the argmin, and its played value is value0."""
    rng = np.random.default_rng(3)
    inst = {"q_mean": rng.random((3, 3)), "trans": np.full((2, 3, 3), 1 / 3), "cnext": rng.random((2, 3)),
            "trans0": rng.dirichlet(np.ones(3), size=(3, 2)), "c0": rng.random((3, 2))}
    inst["q_stop"] = inst["q_mean"]
    inst = with_cold(inst, 4)
    inst["q_stop_cold"] = inst["q_mean_cold"]
    for lam in (0.5, 5.0, 50.0):
        out = solve_cold(solve_dp_nb, solve_cold_start_nb, inst, lam)
        options = inst["c0"] + np.einsum("sab,sb->sa", inst["trans0"], out["vmean_cold"])
        np.testing.assert_array_equal(out["start"], options.argmin(axis=0))
        np.testing.assert_allclose(out["value0"], options.min(axis=0))


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
    bins = np.stack([bin_index(p_hat[:, i], t.edges[i]) for i in range(3)], axis=1)
    cold_bins = np.stack([bins[:, 0]] + [bin_index(cold_p[:, s], t.edges[s]) for s in (1, 2)], axis=1)
    for s in range(3):  # cold-state posteriors count accepted answers by cold bin (tier 0: climbed)
        np.testing.assert_allclose(t.alpha_cold[s], 1 + np.bincount(cold_bins[:, s], accepted[:, s], minlength=5))
        np.testing.assert_allclose(t.n_obs_cold[s], np.bincount(cold_bins[:, s], minlength=5))
    counts = np.zeros((5, 5))
    np.add.at(counts, (cold_bins[:, 1], bins[:, 2]), 1)  # cold bin at 1 → climbed bin at 2
    seen = counts.sum(axis=1) > 0
    np.testing.assert_allclose(t.trans_cold[1][seen], (counts / np.maximum(counts.sum(1, keepdims=True), 1))[seen])
    np.testing.assert_array_equal(t.trans_cold[0], t.trans[0])
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
    for r in skipped[:50]:  # at the start tier the cold bin and cold stop table decide
        stops_at_start = bool(policy.stop_cold_table[1, cold_bins[r, 1]])
        assert (walk.stop[r] == 1) == stops_at_start
        assert policy.decide(1, cold_p[r, 1:2], cold=True) == stops_at_start
    with pytest.raises(PolicyError, match="pass cold_bins"):
        policy.walk(prompt_bins, tier_bins)
    with pytest.raises(PolicyError, match=r"cold bins have shape \(3, 3\)"):
        policy.walk(prompt_bins, tier_bins, cold_bins[:3])
    with pytest.raises(PolicyError, match=r"start_p_hat has shape \(4000, 2\)"):
        build_tables(p_hat, accepted, [1.0, 1.5, 2.0], start_p_hat=cold_p[:, :2])


def test_on_calibration_data_the_dp_value_matches_the_cost_the_prescribed_walks_realise():
    """Calibrated climbed, cold and prompt scores on 40k synthetic requests (the cold score sees
    the prompt features too, as a cold predictor should: else the prompt bin carries evidence the
    cold bin does not, and the bin-Markov model over-trusts skipping). The DP's stage-0 value,
    weighted by prompt-bin frequency, is within 1% of the mean realised cost + λ·(1 − accepted)
    of the walks it prescribes (cold bins at the start tier) on the same requests."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, n_tiers = 40_000, 3
    difficulty = rng.normal(size=n) + np.where(rng.random(n) < 0.7, 2.0, -1.0)
    logit = np.linspace(-1.0, 2.5, n_tiers)[None, :] - difficulty[:, None]
    accepted = (rng.random((n, n_tiers)) < 1 / (1 + np.exp(-logit))).astype(float)

    def calibrated(z, a):
        return IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(z, a).predict(z)

    prompt_z = -difficulty + rng.normal(0, 1.0, n)
    climbed = np.stack([calibrated(logit[:, i] + rng.normal(0, 0.5, n), accepted[:, i]) for i in range(n_tiers)], 1)
    cold_z = logit + rng.normal(0, 1.5, (n, n_tiers))
    cold = np.stack([calibrated(LogisticRegression().fit(x := np.c_[cold_z[:, i], prompt_z], accepted[:, i])
                                .decision_function(x), accepted[:, i]) for i in range(n_tiers)], 1)
    prompt = calibrated(prompt_z, accepted[:, -1])
    costs = np.array([1.0, 2.0, 4.0])
    tables = build_tables(climbed, accepted, costs, prompt_p=prompt, start_p_hat=cold, n_bins=20, n_prompt_bins=8)
    policy = Policy(tables, Predictor.identity(n_tiers, has_prompt=True))
    prompt_bins = policy.prompt_bins(prompt[:, None])
    tier_bins, cold_bins = policy.tier_bins(climbed[:, :, None]), policy.cold_tier_bins(cold[:, :, None])
    for lam in (5.0, 20.0):
        walk = policy.solve(lam).walk(prompt_bins, tier_bins, cold_bins)
        assert (walk.start > 0).mean() > 0.5  # most requests skip tier 0 on this hard ladder
        realised = np.mean(walk.totals(np.broadcast_to(costs, (n, n_tiers)))
                           + lam * (1 - accepted[np.arange(n), walk.stop]))
        model = np.bincount(prompt_bins, minlength=8) / n @ policy.value0
        assert abs(model / realised - 1) < 0.01, (lam, model, realised)
