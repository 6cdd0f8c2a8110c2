"""The DP kernel: parity with the reference, brute-force optimality, monotonicity in λ, risk."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.engine import reference
from asd.engine.dp_nb import path_totals_nb, solve_dp_nb, walk_bins_nb
from tests.strategies import dp_instances, lambdas


def solve(kernel, inst, lam):
    n_tiers, n_bins = inst["q_mean"].shape
    n_prompt_bins = inst["c0"].shape[1]
    out = {
        "stop": np.zeros((n_tiers, n_bins), dtype=np.uint8), "value": np.zeros((n_tiers, n_bins)),
        "cont": np.zeros((n_tiers, n_bins)), "vmean": np.zeros((n_tiers, n_bins)),
        "start": np.zeros(n_prompt_bins, dtype=np.int64), "value0": np.zeros(n_prompt_bins),
    }
    kernel(lam, inst["q_stop"], inst["q_mean"], inst["trans"], inst["cnext"], inst["trans0"], inst["c0"],
           out["stop"], out["value"], out["cont"], out["vmean"], out["start"], out["value0"])
    return out


def neutral(inst):
    return {**inst, "q_stop": inst["q_mean"]}


def all_paths(n_bins, n_tiers):
    paths = list(itertools.product(range(n_bins), repeat=n_tiers))
    return np.array(paths, dtype=np.int64).reshape(len(paths), n_tiers)


@settings(max_examples=60, deadline=None)
@given(dp_instances(max_tiers=5, max_bins=6), lambdas)
def test_solve_dp_numba_equals_reference_exactly(inst, lam):
    fast, slow = solve(solve_dp_nb, inst, lam), solve(reference.solve_dp, inst, lam)
    for key in fast:
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)


def brute_force(inst, lam):
    """Minimum expected loss per prompt bin over every start tier and every stop table,
    computed by enumerating all bin paths (no recursion, no DP)."""
    q, trans, cnext, trans0, c0 = inst["q_mean"], inst["trans"], inst["cnext"], inst["trans0"], inst["c0"]
    n_tiers, n_bins = q.shape
    best0 = np.full(c0.shape[1], np.inf)
    best_tier0 = None
    for s in range(n_tiers):
        depth = n_tiers - s
        paths = all_paths(n_bins, depth)                       # (P, depth) bins at tiers s..L-1
        prob = np.ones(len(paths))                             # P(path | its first bin)
        step_cost = np.zeros((len(paths), depth))              # cost paid to go on from step j
        for j in range(depth - 1):
            prob *= trans[s + j, paths[:, j], paths[:, j + 1]]
            step_cost[:, j] = cnext[s + j, paths[:, j]]
        paid_before = np.concatenate([np.zeros((len(paths), 1)), np.cumsum(step_cost, axis=1)[:, :-1]], axis=1)
        stop_loss = paid_before + lam * (1.0 - q[np.arange(s, n_tiers)[None, :], paths])
        n_free = (depth - 1) * n_bins                          # free bits: tiers s..L-2, every bin
        bits = list(itertools.product([0, 1], repeat=n_free))
        tables = np.array(bits, dtype=bool).reshape(len(bits), depth - 1, n_bins)
        stops = np.ones((len(tables), len(paths), depth), dtype=bool)
        for j in range(depth - 1):
            stops[:, :, j] = tables[:, j, :][:, paths[:, j]]
        k = stops.argmax(axis=2)                               # first stop along the path
        loss = np.take_along_axis(np.broadcast_to(stop_loss, stops.shape), k[..., None], axis=2)[..., 0]
        # expected loss from tier s in first bin b, for each table: (tables, B)
        expected = np.stack([(loss[:, paths[:, 0] == b] * prob[paths[:, 0] == b]).sum(axis=1)
                             for b in range(n_bins)], axis=1)
        if s == 0:
            best_tier0 = expected.min(axis=0)
        start_value = c0[s][None, :] + expected @ trans0[s].T  # (tables, B0): one table for all b0
        best0 = np.minimum(best0, start_value.min(axis=0))
    return best0, best_tier0


@settings(max_examples=25, deadline=None)
@given(dp_instances(max_tiers=4, max_bins=3, max_prompt_bins=2), lambdas)
def test_dp_value_equals_brute_force_over_all_stopping_policies(inst, lam):
    inst = neutral(inst)
    out = solve(solve_dp_nb, inst, lam)
    best0, best_tier0 = brute_force(inst, lam)
    np.testing.assert_allclose(out["value0"], best0, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["value"][0], best_tier0, rtol=1e-9, atol=1e-9)


def test_dp_value_equals_brute_force_on_four_tiers_four_bins_with_stage0():
    rng = np.random.default_rng(7)
    n_tiers, n_bins, n_prompt_bins = 4, 4, 2
    trans = rng.random((n_tiers - 1, n_bins, n_bins)) + 1e-3
    trans0 = rng.random((n_tiers, n_prompt_bins, n_bins)) + 1e-3
    q = np.sort(rng.random((n_tiers, n_bins)), axis=0)
    inst = {"q_mean": q, "q_stop": q, "trans": trans / trans.sum(-1, keepdims=True),
            "cnext": rng.random((n_tiers - 1, n_bins)) * 2, "trans0": trans0 / trans0.sum(-1, keepdims=True),
            "c0": np.cumsum(rng.random((n_tiers, n_prompt_bins)) * 2, axis=0)}
    for lam in (0.0, 1.0, 5.0, 20.0, 200.0):
        out = solve(solve_dp_nb, inst, lam)
        best0, best_tier0 = brute_force(inst, lam)
        np.testing.assert_allclose(out["value0"], best0, rtol=1e-12)
        np.testing.assert_allclose(out["value"][0], best_tier0, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(dp_instances(max_tiers=5, max_bins=5), lambdas, lambdas, st.booleans())
def test_every_requests_stop_tier_is_non_decreasing_in_lambda_from_any_start(inst, lam_a, lam_b, risk_averse):
    inst = inst if risk_averse else neutral(inst)
    lo, hi = sorted((lam_a, lam_b))
    n_tiers, n_bins = inst["q_mean"].shape
    paths = all_paths(n_bins, n_tiers)
    for s in range(n_tiers):                                   # every start tier stage 0 may pick
        depth = []
        for lam in (lo, hi):
            out = solve(solve_dp_nb, inst, lam)
            start = np.full(1, s, dtype=np.int64)
            first, stop = np.empty(len(paths), np.int64), np.empty(len(paths), np.int64)
            walk_bins_nb(np.zeros(len(paths), np.int64), paths, start, out["stop"], first, stop)
            depth.append(stop)
        assert (depth[1] >= depth[0]).all()


@settings(max_examples=60, deadline=None)
@given(dp_instances(max_tiers=5, max_bins=5), lambdas)
def test_risk_averse_never_stops_where_risk_neutral_continues(inst, lam):
    averse, neutral_out = solve(solve_dp_nb, inst, lam), solve(solve_dp_nb, neutral(inst), lam)
    assert not (averse["stop"].astype(bool) & ~neutral_out["stop"].astype(bool)).any()
    np.testing.assert_array_equal(averse["start"], neutral_out["start"])
    # the risk-averse policy is never better than the optimum under the posterior mean
    assert (averse["value"] >= neutral_out["value"] - 1e-9 * (1 + np.abs(neutral_out["value"]))).all()


def test_stage0_start_tier_can_fall_as_lambda_rises_so_depth_monotonicity_covers_fixed_starts():
    """Documented limit: the optimal start tier is not monotone in λ. Here skipping to tier 1
    wins at moderate λ, but at large λ starting at tier 0 wins because tier 0 is the better
    answer in one bin and only starting there keeps that option."""
    q = np.array([[0.95, 0.0], [0.6, 0.6]])
    inst = {"q_mean": q, "q_stop": q, "trans": np.full((1, 2, 2), 0.5), "cnext": np.full((1, 2), 1.0),
            "trans0": np.full((2, 1, 2), 0.5), "c0": np.array([[1.0], [1.0]])}
    starts = [int(solve(solve_dp_nb, inst, lam)["start"][0]) for lam in (0.0, 2.0, 100.0)]
    assert starts == [0, 1, 0]
    depth = []
    for lam in (2.0, 100.0):  # a request whose tier-0 answer lands in bin 0
        out = solve(solve_dp_nb, inst, lam)
        first, stop = np.empty(1, np.int64), np.empty(1, np.int64)
        walk_bins_nb(np.zeros(1, np.int64), np.array([[0, 0]]), out["start"], out["stop"], first, stop)
        depth.append(int(stop[0]))
    assert depth == [1, 0]
    for lam in (2.0, 100.0):
        np.testing.assert_allclose(solve(solve_dp_nb, inst, lam)["value0"], brute_force(inst, lam)[0])


@settings(max_examples=30, deadline=None)
@given(dp_instances(max_tiers=4, max_bins=4), lambdas, st.integers(0, 2**31 - 1))
def test_walk_and_path_totals_numba_equal_reference(inst, lam, seed):
    rng = np.random.default_rng(seed)
    out = solve(solve_dp_nb, inst, lam)
    n_tiers, n_bins = inst["q_mean"].shape
    n = 50
    prompt_bins = rng.integers(0, inst["c0"].shape[1], n)
    tier_bins = rng.integers(0, n_bins, (n, n_tiers))
    values = rng.random((n, n_tiers))
    results = []
    for walk, totals in ((walk_bins_nb, path_totals_nb), (reference.walk_bins, reference.path_totals)):
        first, stop, total = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n)
        walk(prompt_bins, tier_bins, out["start"], out["stop"], first, stop)
        totals(first, stop, values, total)
        results.append((first, stop, total))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_last_tier_always_stops_and_lambda_zero_stops_everywhere():
    rng = np.random.default_rng(3)
    inst = {"q_mean": rng.random((3, 4)), "trans": np.full((2, 4, 4), 0.25), "cnext": rng.random((2, 4)),
            "trans0": np.full((3, 1, 4), 0.25), "c0": np.array([[1.0], [2.0], [3.0]])}
    inst["q_stop"] = inst["q_mean"]
    out = solve(solve_dp_nb, inst, 0.0)
    assert out["stop"].all() and out["start"][0] == 0
    assert solve(solve_dp_nb, inst, 1e6)["stop"][-1].all()


@pytest.mark.parametrize("lam", [1.0, 50.0])
def test_single_prompt_bin_starts_at_tier0_when_that_is_best(lam):
    """With one prompt bin and start costs that make skipping pure waste, stage 0 reduces to
    'always start at tier 1' (index 0)."""
    q = np.array([[0.7, 0.9], [0.95, 0.97]])
    inst = {"q_mean": q, "q_stop": q, "trans": np.full((1, 2, 2), 0.5), "cnext": np.full((1, 2), 2.0),
            "trans0": np.full((2, 1, 2), 0.5), "c0": np.array([[1.0], [3.0]])}  # skipping costs the same tier 1
    assert solve(solve_dp_nb, inst, lam)["start"][0] == 0


@settings(max_examples=40, deadline=None)
@given(dp_instances(max_tiers=4, max_bins=4), st.floats(1e300, 1.7e308))
def test_solve_dp_numba_equals_reference_at_lambdas_near_the_float_limit(inst, lam):
    """Policy.solve takes any finite λ: where every start option exceeds 1e308 the kernel still
    takes the true argmin (it had started from a 1e308 sentinel and so kept tier 0)."""
    fast, slow = solve(solve_dp_nb, inst, lam), solve(reference.solve_dp, inst, lam)
    for key in fast:
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)


def test_stage0_takes_the_true_argmin_when_every_start_value_exceeds_1e308():
    q = np.array([[0.0, 0.0], [0.0, 0.3]])
    inst = dict(q_stop=q, q_mean=q, trans=np.full((1, 2, 2), 0.5), cnext=np.zeros((1, 2)),
                trans0=np.array([[[1.0, 0.0]], [[0.0, 1.0]]]), c0=np.zeros((2, 1)))
    fast, slow = solve(solve_dp_nb, inst, 1.6e308), solve(reference.solve_dp, inst, 1.6e308)
    assert fast["start"][0] == slow["start"][0] == 1  # tier 1 misses less: 0.7·λ against 1.0·λ
    assert fast["value0"][0] == slow["value0"][0] == pytest.approx(0.7 * 1.6e308)
