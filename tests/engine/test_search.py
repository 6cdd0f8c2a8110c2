"""λ search: the found λ meets τ_max and a slightly larger one does not; infeasible and slack
limits are reported; percentiles, callback and target-share modes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from asd.engine.search import ArrayStatistic, bisect_lambda, search_lambda, search_lambda_share, search_pinned
from asd.engine.tables import build_tables
from asd.errors import PolicyError
from tests.engine.test_policy import make_policy


@pytest.fixture(scope="module")
def ladder():
    rng = np.random.default_rng(11)
    policy, features, prompt_features = make_policy(rng, lam=10.0, with_prompt=False)
    tier_bins = policy.tier_bins(features)
    latency = np.abs(rng.normal([100.0, 180.0, 400.0, 800.0], [10.0, 20.0, 40.0, 80.0], size=(len(features), 4)))
    return policy, tier_bins, latency


@pytest.mark.parametrize("statistic", ["mean", "p95", 50.0])
def test_found_lambda_meets_tau_max_and_a_larger_lambda_exceeds_it(ladder, statistic):
    policy, tier_bins, latency = ladder
    stat = ArrayStatistic(policy, None, tier_bins, latency, statistic)
    tau_max = 0.5 * (stat(0.0) + stat(1e9))
    found = search_lambda(policy, None, tier_bins, latency, tau_max, statistic=statistic)
    assert found.status == "ok"
    stat.start_lam = found.start_lam  # the start table the search settled on (pinned or not)
    assert found.statistic <= tau_max and stat(found.lam) == found.statistic
    assert stat(found.lam_infeasible) > tau_max
    assert found.lam_infeasible - found.lam <= 1e-6 * found.lam_infeasible
    assert found.always_first <= tau_max <= found.always_last


def test_statistic_is_non_decreasing_in_lambda_without_stage0(ladder):
    policy, tier_bins, latency = ladder
    stat = ArrayStatistic(policy, None, tier_bins, latency, "p90")
    values = [stat(lam) for lam in np.geomspace(1e-3, 1e4, 60)]
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_infeasible_when_even_lambda_zero_exceeds_tau_max(ladder):
    policy, tier_bins, latency = ladder
    found = search_lambda(policy, None, tier_bins, latency, 50.0)
    assert found.status == "infeasible" and found.lam == 0.0 and found.statistic > 50.0
    assert found.always_first > 50.0


def test_slack_when_the_deepest_policy_fits(ladder):
    policy, tier_bins, latency = ladder
    found = search_lambda(policy, None, tier_bins, latency, 1e6)
    assert found.status == "slack" and found.statistic <= found.always_last <= 1e6


def test_target_share_mode_caps_the_share_reaching_the_last_tier(ladder):
    policy, tier_bins, _ = ladder
    found = search_lambda_share(policy, None, tier_bins, 0.2)
    assert found.status == "ok" and found.statistic <= 0.2
    reach_last = (policy.walk(None, tier_bins).stop == 3).mean()
    assert reach_last == found.statistic
    stat = ArrayStatistic(policy, None, tier_bins, None, "share_last")
    stat.start_lam = found.start_lam
    assert stat(found.lam_infeasible) > 0.2


def test_callback_mode_bisects_any_monotone_statistic():
    found = bisect_lambda(lambda lam: np.floor(lam), 41.5)
    assert found.status == "ok" and 41.0 <= found.lam < 42.0 and found.statistic == 41.0
    assert bisect_lambda(lambda lam: 1.0 + lam, 0.5).status == "infeasible"
    assert bisect_lambda(lambda lam: min(lam, 3.0), 10.0).status == "slack"


def test_bad_search_input_raises_policy_error(ladder):
    policy, tier_bins, latency = ladder
    with pytest.raises(PolicyError, match="statistic 'median'"):
        search_lambda(policy, None, tier_bins, latency, 100.0, statistic="median")
    with pytest.raises(PolicyError, match="percentile 120"):
        search_lambda(policy, None, tier_bins, latency, 100.0, statistic="p120")
    with pytest.raises(PolicyError, match="tier values have shape"):
        search_lambda(policy, None, tier_bins, latency[:, :2], 100.0)
    with pytest.raises(PolicyError, match="max_share=1.5"):
        search_lambda_share(policy, None, tier_bins, 1.5)
    with pytest.raises(PolicyError, match="tier bins must lie"):
        search_lambda(policy, None, tier_bins + 100, latency, 100.0)
    with pytest.raises(PolicyError, match="NaN"):
        bisect_lambda(lambda lam: float("nan"), 1.0)
    for rel_tol in (float("nan"), -1.0, 0.0, 1.0):  # NaN stopped at once with λ = 0 reported as found
        with pytest.raises(PolicyError, match=rf"rel_tol={rel_tol}: must lie in \(0, 1\)"):
            search_lambda(policy, None, tier_bins, latency, 100.0, rel_tol=rel_tol)


# -- stage 0: the start choice is not monotone in λ; the search pins it while bisecting --------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from asd.engine.policy import Policy, Predictor  # noqa: E402
from asd.engine.tables import EngineTables  # noqa: E402


def counterexample_policy():
    """tests/engine/test_dp.py's case as a Policy: skipping to tier 1 wins at moderate λ, but
    at large λ starting at tier 0 wins again (tier 0 is the better answer in its bin 0)."""
    q = np.array([[0.95, 0.0], [0.6, 0.6]])
    tables = EngineTables(edges=np.tile([0.0, 0.5, 1.0], (2, 1)), edges0=np.array([0.0, 1.0]),
                          alpha=q * 1e6, beta=(1 - q) * 1e6, n_obs=np.full((2, 2), 1e6),
                          trans=np.full((1, 2, 2), 0.5), trans0=np.full((2, 1, 2), 0.5),
                          cnext=np.full((1, 2), 1.0), c0=np.array([[1.0], [1.0]]))
    return Policy(tables, Predictor.identity(2), lam=1.0)


def test_stage0_search_returns_a_policy_that_meets_tau_max_where_the_start_choice_is_not_monotone():
    policy = counterexample_policy()
    tier_bins = np.array([[0, 0], [1, 0]] * 50)
    latency = np.tile([1.0, 3.0], (100, 1))  # tier 1 is slow: starting there costs 3, climbing 1 (+3)
    stat = ArrayStatistic(policy, None, tier_bins, latency, "mean")
    lams = [0.0, 2.0, 100.0]
    assert [int(policy.solve(lam).start_table[0]) for lam in lams] == [0, 1, 0]
    values = [stat(lam) for lam in lams]
    assert values[1] > values[2]  # the unpinned statistic falls as λ rises: bisection would be unsound
    for tau_max in (1.5, 2.5, 3.0):
        found = search_lambda(policy, None, tier_bins, latency, tau_max)
        assert found.status in ("ok", "slack")
        # re-evaluate the returned policy independently: it meets τ_max
        check = counterexample_policy().solve(found.lam, start_lam=found.start_lam)
        walk = check.walk(None, tier_bins)
        assert walk.totals(latency).mean() == found.statistic <= tau_max
        assert np.array_equal(policy.start_table, check.start_table) and policy.start_lam == found.start_lam
        if found.status == "ok":  # the boundary holds for the start table it uses
            pinned = ArrayStatistic(counterexample_policy(), None, tier_bins, latency, "mean")
            pinned.start_lam = found.start_lam
            assert pinned(found.lam_infeasible) > tau_max
        if found.start_lam != found.lam:
            assert "pinned" in found.warning


def test_a_pinned_start_table_survives_save_and_load(tmp_path):
    policy = counterexample_policy().solve(100.0, start_lam=2.0)
    assert int(policy.start_table[0]) == 1 and policy.start_lam == 2.0
    loaded = Policy.load(policy.save(tmp_path / "p.npz"))
    assert loaded.start_lam == 2.0 and loaded.lam == 100.0
    np.testing.assert_array_equal(loaded.start_table, policy.start_table)
    np.testing.assert_array_equal(loaded.stop_table, policy.stop_table)
    np.testing.assert_allclose(loaded.value0, policy.value0)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 0.95), st.sampled_from(["mean", "p90"]))
def test_stage0_search_result_meets_tau_max_and_is_the_boundary_for_its_start_table(seed, where, statistic):
    rng = np.random.default_rng(seed)
    n, n_tiers = 300, 3
    p_hat = rng.random((n, n_tiers))
    accepted = (rng.random((n, n_tiers)) < p_hat).astype(float)
    prompt_p = np.clip(p_hat[:, 0] + rng.normal(0, 0.2, n), 0, 1)
    costs = rng.random(n_tiers) * 3 + 0.1
    tables = build_tables(p_hat, accepted, costs, prompt_p=prompt_p, n_bins=4, n_prompt_bins=3,
                          start_costs=costs * rng.random(n_tiers) * 1.5)
    policy = Policy(tables, Predictor.identity(n_tiers, has_prompt=True), lam=1.0)
    prompt_bins, tier_bins = policy.prompt_bins(prompt_p[:, None]), policy.tier_bins(p_hat[:, :, None])
    latency = rng.random((n, n_tiers)) * [1.0, 2.0, 4.0]
    stat = ArrayStatistic(policy, prompt_bins, tier_bins, latency, statistic)
    low, high = stat(0.0), max(stat(lam) for lam in np.geomspace(1e-2, 1e4, 30))
    tau_max = low + where * (high - low)
    found = search_lambda(policy, prompt_bins, tier_bins, latency, tau_max, statistic=statistic)
    assert found.status in ("ok", "slack")
    stat.start_lam = found.start_lam
    assert stat(found.lam) == found.statistic <= tau_max
    if found.status == "ok":
        assert stat(found.lam_infeasible) > tau_max


def test_search_pinned_takes_any_statistic_callback_that_solves_with_the_pinned_start():
    """The simulator's form: a callback that replays at (λ, start_lam) itself."""
    policy = counterexample_policy()
    tier_bins = np.array([[0, 0], [1, 0]] * 50)
    latency = np.tile([1.0, 3.0], (100, 1))
    calls = []

    def replay_mean_latency(lam, start_lam):
        calls.append(start_lam)
        return policy.solve(lam, start_lam=start_lam).walk(None, tier_bins).totals(latency).mean()

    found = search_pinned(policy, replay_mean_latency, 1.5, lam_hi=4.0)
    assert any(c is not None for c in calls)  # it did pin
    assert found.status == "ok" and found.statistic <= 1.5 and found.start_lam != found.lam
    assert policy.lam == found.lam and policy.start_lam == found.start_lam
    assert policy.walk(None, tier_bins).totals(latency).mean() == found.statistic
    assert replay_mean_latency(found.lam_infeasible, found.start_lam) > 1.5


def test_bisect_refuses_an_infinite_bracket_and_arguments_that_are_not_numbers():
    """lam_hi=inf never narrowed and reported λ = 0 as found ("ok"); a string rel_tol or
    max_evaluations was a TypeError."""
    from asd.engine import bisect_lambda

    for kwargs, message in ((dict(lam_hi=float("inf")), "lam_hi=inf: must be a finite number > 0"),
                            (dict(rel_tol="a"), "rel_tol='a': must be a number"),
                            (dict(max_evaluations="a"), "max_evaluations='a': must be a whole number >= 1")):
        with pytest.raises(PolicyError, match=re.escape(message)):
            bisect_lambda(lambda lam: lam, target=1.0, **kwargs)
    assert bisect_lambda(lambda lam: lam, target=1.0, lam_hi=1e300).lam == pytest.approx(1.0, rel=1e-5)
