"""λ search: the found λ meets τ_max and a slightly larger one does not; infeasible and slack
limits are reported; percentiles, callback and target-share modes."""

from __future__ import annotations

import numpy as np
import pytest

from asd.engine.search import ArrayStatistic, bisect_lambda, search_lambda, search_lambda_share
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
