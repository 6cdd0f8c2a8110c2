"""The protocol's rule, kept as written: it always stops at tier 1; its formulas as printed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.engine.protocol import (
    ProtocolPolicy, bayesian_risk_adjustment, find_lambda_bisection, optimal_stopping_k_star, optimal_stopping_rule,
    pipeline_bayesian_adjustment, protocol_stop_tier, protocol_stop_tiers,
)
from asd.errors import PolicyError

probabilities = st.floats(0.0, 1.0, allow_nan=False)
costs = st.floats(0.0, 100.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(st.lists(probabilities, min_size=n, max_size=n),
                                                     st.lists(costs, min_size=n, max_size=n))),
       st.floats(0.0, 1e6, allow_nan=False), st.booleans())
def test_protocol_rule_called_as_its_pipeline_calls_it_always_stops_at_tier_1(case, lam, risk_adjustment):
    p_hat, stage_costs = case
    assert protocol_stop_tier(p_hat, stage_costs, lam, risk_adjustment=risk_adjustment) == 0


def test_why_it_degenerates_continuing_is_free_on_the_truncated_list():
    k_star, J = optimal_stopping_rule([0.9], [1.0], 10.0)
    assert J == [1.0, 0]          # cost_continue = C + J[1] = C, cost_stop = C + λ(1 − p) > C
    assert k_star == 0            # no stage says stop, so the default L − 1 = 0 is returned


def test_rule_on_full_lists_uses_the_cumulative_product_as_written():
    k_star, J = optimal_stopping_rule([0.5, 0.8, 1.0], [1.0, 2.0, 4.0], 10.0)
    # i=2: stop 4 + 10(1 − 0.4) = 10, continue 4 + 0 → continue; i=1: stop 2 + 6 = 8, continue 2 + 4 = 6;
    # i=0: stop 1 + 5 = 6, continue 1 + 6 = 7 → stop
    assert J == [6.0, 6.0, 4.0, 0]
    assert k_star == 0


def test_bayesian_adjustments_as_written():
    assert bayesian_risk_adjustment(0.9, 4) == pytest.approx((4 * 0.9 + 1) / (4 + 2))
    assert pipeline_bayesian_adjustment(0.9, 4) == pytest.approx(bayesian_risk_adjustment(0.9, 4))
    assert bayesian_risk_adjustment(0.5, 0, 2, 6) == pytest.approx(0.25)


def test_protocol_bisection_moves_lambda_up_when_latency_is_too_high_as_written():
    calls = []

    def latency(lambda_val):  # the real engine: larger λ → deeper → slower
        calls.append(lambda_val)
        return 100.0 + lambda_val

    lam = find_lambda_bisection(latency, tau_max=150.0)
    assert lam > 99.0             # drifts to the top of its range instead of λ ≈ 50
    assert calls[0] == pytest.approx(50.005)


def test_protocol_policy_batch_and_bad_input():
    policy = ProtocolPolicy([1.0, 2.0, 4.0], lam=100.0)
    rng = np.random.default_rng(0)
    assert (policy.stop_tiers(rng.random((200, 3))) == 0).all()
    with pytest.raises(PolicyError, match="expected \\(requests, 3\\)"):
        policy.stop_tiers(np.zeros((2, 2)))
    with pytest.raises(PolicyError, match="probabilities"):
        policy.stop_tiers(np.full((1, 3), 2.0))
    with pytest.raises(PolicyError, match="costs"):
        ProtocolPolicy([1.0, -1.0], lam=1.0)
    with pytest.raises(PolicyError, match="λ=-1"):
        ProtocolPolicy([1.0], lam=-1.0)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6).flatmap(lambda m: st.tuples(
           st.lists(st.lists(probabilities, min_size=m, max_size=m), min_size=1, max_size=12),
           st.lists(costs, min_size=m, max_size=m))),
       st.one_of(st.floats(0.0, 1e6, allow_nan=False), st.just(float("inf"))))
def test_vectorised_rule_equals_the_rule_as_written_on_every_row(case, lam):
    """optimal_stopping_k_star: the same k_star as optimal_stopping_rule on any lists (full
    lists too, where the rule does not degenerate)."""
    rows, stage_costs = case
    k_star = optimal_stopping_k_star(np.array(rows), stage_costs, lam)
    assert k_star.tolist() == [optimal_stopping_rule(row, stage_costs, lam)[0] for row in rows]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6).flatmap(lambda m: st.tuples(
           st.lists(st.lists(probabilities, min_size=m, max_size=m), min_size=1, max_size=12),
           st.lists(costs, min_size=m, max_size=m))),
       st.floats(0.0, 1e6, allow_nan=False), st.booleans())
def test_batch_stop_tiers_equal_the_per_request_pipeline(case, lam, risk_adjustment):
    rows, stage_costs = case
    got = protocol_stop_tiers(np.array(rows), stage_costs, lam, risk_adjustment=risk_adjustment)
    assert got.tolist() == [protocol_stop_tier(row, stage_costs, lam, risk_adjustment=risk_adjustment)
                            for row in rows]
    assert ProtocolPolicy(stage_costs, lam, risk_adjustment=risk_adjustment).stop_tiers(np.array(rows)).tolist() \
        == got.tolist()
