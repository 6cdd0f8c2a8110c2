"""Every distinct policy over a λ range (the stop/start tables are piecewise constant in λ),
checked against a dense λ grid; the quality-target search picks the cheapest policy that
meets the target among them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.engine import distinct_policies, search_lambda_quality
from asd.engine.policy import Policy, Predictor
from asd.engine.tables import build_tables
from asd.errors import PolicyError


def small_policy(seed, with_prompt=True, risk="mean"):
    rng = np.random.default_rng(seed)
    n, n_tiers = 400, 3
    p_hat = rng.random((n, n_tiers)) ** np.array([1.5, 1.0, 0.6])
    accepted = (rng.random((n, n_tiers)) < p_hat).astype(float)
    prompt_p = np.clip(p_hat[:, 0] + rng.normal(0, 0.2, n), 0, 1)
    costs = np.array([1.0, 2.0, 4.0]) * (0.5 + rng.random(3))
    tables = build_tables(p_hat, accepted, costs, prompt_p=prompt_p if with_prompt else None, n_bins=4,
                          n_prompt_bins=3 if with_prompt else None, start_costs=costs * [1.0, 1.3, 1.1])
    policy = Policy(tables, Predictor.identity(n_tiers, has_prompt=with_prompt), lam=3.0, risk=risk)
    prompt_bins = policy.prompt_bins(prompt_p[:, None]) if with_prompt else None
    return policy, prompt_bins, policy.tier_bins(p_hat[:, :, None]), accepted, rng


def tables_at(policy, lam):
    policy.solve(lam)
    return policy.stop_table.tobytes() + policy.start_table.tobytes()


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.booleans(), st.sampled_from(["mean", 0.8]))
def test_distinct_policies_match_a_dense_lambda_grid(seed, with_prompt, risk):
    policy, *_ = small_policy(seed, with_prompt, risk)
    lam_hi = 200.0
    pieces = distinct_policies(policy, 0.0, lam_hi)
    assert policy.lam == 3.0  # left as it was
    assert pieces[0].lam_lo == 0.0 and pieces[-1].lam_hi == lam_hi
    for a, b in zip(pieces, pieces[1:]):  # ordered, adjacent, and each one a real change
        assert a.lam_hi < b.lam_lo and b.lam_lo - a.lam_hi <= 1e-9 * b.lam_lo + 1e-12
        assert not (np.array_equal(a.stop_table, b.stop_table) and np.array_equal(a.start_table, b.start_table))
    keys = [p.stop_table.tobytes() + p.start_table.tobytes() for p in pieces]
    grid = np.concatenate([[0.0], np.geomspace(1e-4, lam_hi, 3000)])
    for lam in grid:
        k = int(np.searchsorted([p.lam_lo for p in pieces], lam, side="right")) - 1
        piece = pieces[k]
        if lam <= piece.lam_hi:  # inside a verified piece: the grid sees the same tables
            assert tables_at(policy, lam) == keys[k], lam
        else:  # in a gap (< rel_tol wide): one of its two neighbours
            assert tables_at(policy, lam) in (keys[k], keys[k + 1]), lam
    # every table the grid sees is one of the pieces
    assert {tables_at(policy, lam) for lam in grid} <= set(keys)
    # the default range (up to LAMBDA_CAP) finds the same pieces below lam_hi
    wide = distinct_policies(policy)
    assert [p.stop_table.tobytes() + p.start_table.tobytes() for p in wide[:len(pieces)]] == keys
    assert wide[len(pieces) - 1].lam_hi >= lam_hi or len(wide) == len(pieces)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.3, 0.9))
def test_quality_search_is_the_cheapest_policy_meeting_the_target_against_a_grid(seed, target):
    policy, prompt_bins, tier_bins, accepted, rng = small_policy(seed)
    quality = np.nan_to_num(accepted)
    cost = rng.random(tier_bins.shape) + [1.0, 2.0, 4.0]
    found = search_lambda_quality(policy, prompt_bins, tier_bins, quality, target, cost_values=cost, lam_hi=500.0)
    assert found.n_policies == len(found.policies) >= 1
    assert policy.lam == found.lam
    walk = policy.walk(prompt_bins, tier_bins)
    assert quality[np.arange(len(quality)), walk.stop].mean() == pytest.approx(found.quality)
    assert walk.totals(cost).mean() == pytest.approx(found.cost)
    best_grid = np.inf
    for lam in np.concatenate([[0.0], np.geomspace(1e-3, 500.0, 600)]):
        w = policy.solve(lam).walk(prompt_bins, tier_bins)
        if quality[np.arange(len(quality)), w.stop].mean() >= target:
            best_grid = min(best_grid, w.totals(cost).mean())
    if found.status == "ok":
        assert found.quality >= target and found.cost <= best_grid + 1e-12
    else:
        assert best_grid == np.inf and found.quality == max(p["quality"] for p in found.policies)


def test_quality_search_defaults_to_the_tables_costs_and_reports_infeasible_targets():
    policy, prompt_bins, tier_bins, accepted, _ = small_policy(3)
    quality = np.nan_to_num(accepted)
    found = search_lambda_quality(policy, prompt_bins, tier_bins, quality, 0.0, lam_hi=500.0)
    assert found.status == "ok" and found.cost_source.startswith("tables")
    assert found.cost == min(p["cost"] for p in found.policies)
    impossible = search_lambda_quality(policy, prompt_bins, tier_bins, quality, 1.01, lam_hi=500.0)
    assert impossible.status == "infeasible" and impossible.to_dict()["policies"]
    with pytest.raises(PolicyError, match="quality values have shape"):
        search_lambda_quality(policy, prompt_bins, tier_bins, quality[:, :2], 0.5)
    with pytest.raises(PolicyError, match="finite"):
        search_lambda_quality(policy, prompt_bins, tier_bins, accepted * np.nan, 0.5)
    with pytest.raises(PolicyError, match="λ range"):
        distinct_policies(policy, 5.0, 1.0)


def test_distinct_policies_and_quality_search_cover_the_cold_stop_table():
    rng = np.random.default_rng(5)
    n, n_tiers = 600, 3
    p_hat = rng.random((n, n_tiers)) ** np.array([1.5, 1.0, 0.6])
    cold_p = np.clip(p_hat + rng.normal(0, 0.2, p_hat.shape), 0, 1)
    accepted = (rng.random((n, n_tiers)) < p_hat).astype(float)
    prompt_p = np.clip(p_hat[:, 0] + rng.normal(0, 0.2, n), 0, 1)
    tables = build_tables(p_hat, accepted, [1.0, 2.0, 4.0], prompt_p=prompt_p, start_p_hat=cold_p, n_bins=4,
                          n_prompt_bins=3, start_costs=[1.0, 2.5, 4.5])
    policy = Policy(tables, Predictor.identity(n_tiers, has_prompt=True), lam=3.0)
    prompt_bins, tier_bins = policy.prompt_bins(prompt_p[:, None]), policy.tier_bins(p_hat[:, :, None])
    cold_bins = policy.cold_tier_bins(cold_p[:, :, None])
    pieces = distinct_policies(policy, 0.0, 300.0)
    key = lambda stop, start, cold: stop.tobytes() + start.tobytes() + cold.tobytes()  # noqa: E731
    keys = {key(*p[2:]) for p in pieces}
    for lam in np.geomspace(1e-3, 300.0, 800):
        policy.solve(lam)
        assert key(policy.stop_table, policy.start_table, policy.stop_cold_table) in keys
    found = search_lambda_quality(policy, prompt_bins, tier_bins, np.nan_to_num(accepted), 0.6, cold_bins=cold_bins,
                                  lam_hi=300.0)
    walk = policy.walk(prompt_bins, tier_bins, cold_bins)
    assert np.nan_to_num(accepted)[np.arange(n), walk.stop].mean() == pytest.approx(found.quality)
    with pytest.raises(PolicyError, match="pass cold_bins"):
        search_lambda_quality(policy, prompt_bins, tier_bins, np.nan_to_num(accepted), 0.6, lam_hi=300.0)
