"""Every baseline on a tiny trace whose results are computed by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.simulator import baselines as B
from asd.simulator.outcomes import STATISTICS, LadderArrays, Outcomes, latency_stat, summarize, walk_outcomes

# Three requests, three tiers. Cold costs 1, 2, 6 (ms and cost alike); a continuation costs
# 1.5 at tier 1 and 5 at tier 2 (the previous tier's draft saves some work).
#   request 0: every tier acceptable          (scores 1, 1, 1)
#   request 1: only tiers 1 and 2 acceptable  (scores 0, 1, 1)
#   request 2: only tier 2 acceptable         (scores 0, 0, 1)
SCORE = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
COST = np.tile([1.0, 2.0, 6.0], (3, 1))
CONT = np.tile([1.0, 1.5, 5.0], (3, 1))
TINY = LadderArrays(SCORE, SCORE.copy(), COST, CONT, COST.copy(), CONT.copy())


def test_always_tier_runs_that_tier_alone():
    out = B.always(TINY, 1)
    assert out.cost.tolist() == [2.0, 2.0, 2.0]
    assert out.quality.tolist() == [1.0, 1.0, 0.0]


def test_pipeline_climbs_every_tier_with_continuation_costs():
    out = B.pipeline(TINY)
    assert out.cost.tolist() == [7.5, 7.5, 7.5]  # 1 + 1.5 + 5
    assert out.stop.tolist() == [2, 2, 2]


def test_fixed_two_stage_regenerates_the_last_tier_on_a_longer_ladder():
    out = B.fixed_two_stage(TINY)
    assert out.cost.tolist() == [7.0, 7.0, 7.0]  # 1 + 6: tiers 0 and 2 are not adjacent
    two = TINY.take(np.arange(3))
    two = LadderArrays(*(a[:, [0, 2]] for a in (two.score, two.acceptable, two.cost, two.cost_cont,
                                                 two.latency_ms, two.latency_cont_ms)))
    assert B.fixed_two_stage(two).cost.tolist() == [6.0, 6.0, 6.0]  # 1 + 5: two tiers continue the draft


def test_oracle_takes_the_cheapest_acceptable_tier_and_skips_the_rest():
    out = B.oracle(TINY)
    assert out.stop.tolist() == [0, 1, 2]
    assert out.start.tolist() == [0, 1, 2]
    assert out.cost.tolist() == [1.0, 2.0, 6.0]
    assert out.quality.tolist() == [1.0, 1.0, 1.0]


def test_oracle_without_an_acceptable_tier_takes_the_cheapest():
    bad = LadderArrays(*(np.array(a) for a in (SCORE[2:] * 0, SCORE[2:] * 0, COST[2:], CONT[2:], COST[2:], CONT[2:])))
    assert B.oracle(bad).stop.tolist() == [0]


def test_oracle_with_unjudged_answers_costs_the_least_any_label_could_make_it():
    # request 0: tier 0 unjudged, tier 1 acceptable -> tier 0 (it might suffice, and is cheaper)
    # request 1: tier 0 rejected, tier 1 unjudged, tier 2 rejected -> tier 0 (no tier known to suffice:
    #            the cheapest, as if tier 1 failed too); request 2: tier 2 unjudged everywhere -> not taken
    acc = np.array([[np.nan, 1.0, np.nan], [0.0, np.nan, np.nan], [0.0, 0.0, np.nan]])
    arrays = LadderArrays(acc, acc.copy(), COST, CONT, COST.copy(), CONT.copy())
    assert B.oracle(arrays).stop.tolist() == [0, 0, 0]
    acc[1, 2] = 1.0  # tier 2 now judged acceptable for request 1: the unjudged tier 1 is cheaper
    acc[2, 1] = np.nan
    arrays = LadderArrays(acc, acc.copy(), COST, CONT, COST.copy(), CONT.copy())
    assert B.oracle(arrays).stop.tolist() == [0, 1, 0]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_oracle_cost_is_a_lower_bound_over_every_completion_of_missing_labels(n, n_tiers, seed):
    """Brute force: fill the unjudged answers every possible way; the oracle on the partly
    labelled requests costs no more, request by request, than on any completion."""
    import itertools

    rng = np.random.default_rng(seed)
    acc = (rng.random((n, n_tiers)) < 0.4).astype(float)
    acc[rng.random((n, n_tiers)) < 0.3] = np.nan
    acc[0, 0] = 1.0  # every tier keeps a label somewhere only by chance; tier 0 keeps one
    cost = rng.uniform(0.1, 5.0, (n, n_tiers))
    partly = B.oracle(LadderArrays(acc, acc.copy(), cost, cost.copy(), cost.copy(), cost.copy())).cost
    judged_somewhere = ~np.isnan(acc).all(axis=0)
    holes = [ij for ij in zip(*np.nonzero(np.isnan(acc))) if judged_somewhere[ij[1]]]
    for fill in itertools.product([0.0, 1.0], repeat=min(len(holes), 10)):
        full = acc.copy()
        for (i, j), v in zip(holes, fill):
            full[i, j] = v
        full[np.isnan(full)] = 0.0  # a tier judged nowhere (or past the 10 holes tried) fails
        complete = B.oracle(LadderArrays(full, full.copy(), cost, cost.copy(), cost.copy(), cost.copy())).cost
        assert (partly <= complete + 1e-12).all()


def test_protocol_rule_always_stops_at_the_first_tier():
    p_hat = np.array([[0.1, 0.5, 0.9], [0.9, 0.9, 0.9], [0.5, 0.2, 0.3]])
    out = B.protocol(TINY, p_hat, [1.0, 2.0, 6.0], lam=100.0)
    assert out.stop.tolist() == [0, 0, 0]
    assert out.cost.tolist() == [1.0, 1.0, 1.0]


def test_random_matches_the_target_mean_cost():
    many = TINY.take(np.repeat(np.arange(3), 4000))
    out = B.random_matched(many, target_cost=4.0, seed=1)  # halfway between tiers 1 (2) and 2 (6)
    assert set(np.unique(out.stop)) == {1, 2}
    assert out.cost.mean() == pytest.approx(4.0, abs=0.1)


def test_threshold_family_stops_at_the_first_confident_tier():
    p_hat = np.array([[0.9, 0.9, 0.9], [0.2, 0.8, 0.9], [0.2, 0.3, 0.9]])
    fam = B.Family("threshold", np.array([[0.5, 0.5]]))
    start, stop = fam.start_stop(p_hat, 0)
    assert start.tolist() == [0, 0, 0]
    assert stop.tolist() == [0, 1, 2]
    out = walk_outcomes(start, stop, TINY)
    assert out.cost.tolist() == [1.0, 2.5, 7.5]  # 1; 1 + 1.5; 1 + 1.5 + 5
    assert out.quality.tolist() == [1.0, 1.0, 1.0]


def test_router_goes_straight_to_the_cheapest_tier_predicted_acceptable():
    route = np.array([[0.9, 0.9, 0.9], [0.2, 0.8, 0.9], [0.2, 0.3, 0.9]])
    start, stop = B.Family("router", np.array([[0.5]])).start_stop(route, 0)
    assert start.tolist() == stop.tolist() == [0, 1, 2]
    assert walk_outcomes(start, stop, TINY).cost.tolist() == [1.0, 2.0, 6.0]


def test_pick_chooses_the_best_quality_within_the_budget():
    p_hat = np.array([[0.9, 0.9, 0.9], [0.2, 0.8, 0.9], [0.2, 0.3, 0.9]])
    fam = B.Family("threshold", np.array([[2.0, 2.0], [0.5, 0.5], [0.1, 0.1]]))
    # members: always climb to the end (cost 22.5, quality 1), stop when confident (cost 11,
    # quality 1), stop at tier 0 (cost 3, quality 1/3). Always-last costs 18.
    assert B.pick(fam, p_hat, TINY, cost_rel=1.5) == 1      # both top members fit; ties → cheaper
    assert B.pick(fam, p_hat, TINY, cost_rel=0.5) == 2      # only the cheap one fits
    assert B.pick(fam, p_hat, TINY, latency=("mean", 3.0)) == 2
    assert B.pick(fam, p_hat, TINY, latency=("mean", 0.5)) == 2  # none fits: the cheapest


def pick_by_replaying_every_member(family, scores, arrays, *, latency=None, cost_rel=None):
    """The rule `pick` implements, member by member: the first member with the best (quality,
    −cost) among those within the constraint, else the first cheapest."""
    cost_last = float(arrays.cost[:, -1].sum())
    best, best_key, cheapest, cheapest_cost = 0, None, 0, np.inf
    for c in range(family.size):
        out = walk_outcomes(*family.start_stop(scores, c), arrays)
        cost = float(out.cost.sum()) / cost_last
        if cost < cheapest_cost:
            cheapest, cheapest_cost = c, cost
        if latency is not None and latency_stat(out.latency_ms, latency[0]) > latency[1]:
            continue
        if cost_rel is not None and cost > cost_rel + 1e-12:
            continue
        labelled = ~np.isnan(out.quality)
        key = (float(out.quality[labelled].mean()) if labelled.any() else 0.0, -cost)
        if best_key is None or key > best_key:
            best, best_key = c, key
    return best if best_key is not None else cheapest


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["threshold", "router"]), st.integers(2, 4))
def test_members_scored_once_pick_as_replaying_every_member_under_every_constraint(seed, name, n_tiers):
    """A sweep picks each family at two dozen budgets from one `ScoredMembers`: the same member
    as replaying all of them under each constraint, ties (coarse labels and costs) included."""
    rng = np.random.default_rng(seed)
    n = 60
    score = rng.integers(0, 2, (n, n_tiers)).astype(float)
    score[rng.random((n, n_tiers)) < 0.1] = np.nan
    cost = np.cumsum(rng.integers(1, 4, (n, n_tiers)).astype(float), axis=1)
    cont = rng.integers(0, 3, (n, n_tiers)).astype(float)
    arrays = LadderArrays(score, score.copy(), cost, cont, cost.copy(), cont.copy())
    scores = np.round(rng.random((n, n_tiers)), 1)  # coarse: many members tie
    family = B.threshold_family(scores) if name == "threshold" else B.router_family(scores)
    scored = B.ScoredMembers(family, scores, arrays)
    for budget in np.linspace(0.0, 1.6, 9):
        assert scored.choose(cost_rel=budget) == pick_by_replaying_every_member(family, scores, arrays, cost_rel=budget)
    for stat in ("mean", "p95"):
        for tau in np.quantile(scored.latency(stat), [0.0, 0.3, 0.7, 1.0]) + np.array([-1.0, 0.0, 0.0, 0.0]):
            assert scored.choose(latency=(stat, tau)) == pick_by_replaying_every_member(family, scores, arrays,
                                                                                       latency=(stat, tau))


def test_summary_figures():
    s = summarize(B.oracle(TINY), cost_last=18.0, n_tiers=3)
    assert s["quality"] == 1.0
    assert s["cost_rel"] == pytest.approx(9.0 / 18.0)
    assert s["latency_ms"]["mean"] == pytest.approx(3.0)
    assert s["stop_fractions"] == pytest.approx([1 / 3, 1 / 3, 1 / 3])


def test_baseline_names_are_in_report_order():
    assert B.baseline_names(["a", "b"]) == ["always-a", "always-b", "fixed-2stage", "pipeline", "threshold",
                                            "router", "random", "protocol", "oracle"]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_oracle_bounds_every_single_path(n, n_tiers, seed):
    """No walk (any start, any stop) beats the oracle's quality, and under regeneration none
    reaches an acceptable answer more cheaply. (With speculative continuation a climb can cost
    less than its last tier run cold, so the oracle bounds quality, not always cost.)"""
    rng = np.random.default_rng(seed)
    acc = (rng.random((n, n_tiers)) < 0.5).astype(float)
    cost = rng.uniform(0.1, 5.0, (n, n_tiers))
    arrays = LadderArrays(acc, acc.copy(), cost, cost.copy(), cost.copy(), cost.copy())
    orc = B.oracle(arrays)
    start = rng.integers(0, n_tiers, n)
    stop = np.minimum(start + rng.integers(0, n_tiers, n), n_tiers - 1)
    walk = walk_outcomes(start, stop, arrays)
    assert (orc.quality >= walk.quality).all()
    # among requests where the walk ends acceptable, the oracle is no dearer
    ok = walk.quality == 1.0
    assert (orc.cost[ok] <= walk.cost[ok] + 1e-12).all()


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 60), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_path_charges_are_walk_outcomes_bit_for_bit(n, n_tiers, seed):
    """pick scores members through PathCharges: every path's outcomes must be exactly
    walk_outcomes' (values spread over magnitudes, so any change of summation order shows)."""
    rng = np.random.default_rng(seed)
    grid = lambda: rng.random((n, n_tiers)) * 10.0 ** rng.integers(-6, 7, (n, n_tiers))  # noqa: E731
    score = np.where(rng.random((n, n_tiers)) < 0.2, np.nan, rng.random((n, n_tiers)))
    arrays = LadderArrays(score, score.copy(), grid(), grid(), grid(), grid())
    start = rng.integers(0, n_tiers, n)
    stop = np.minimum(start + rng.integers(0, n_tiers, n), n_tiers - 1)
    got, want = B.PathCharges(arrays).outcomes(start, stop), walk_outcomes(start, stop, arrays)
    for field in ("start", "stop", "cost", "latency_ms", "quality"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(1, 5), st.sampled_from(["threshold", "router"]), st.integers(0, 2**31 - 1))
def test_family_stops_at_the_first_tier_that_meets_its_threshold(n, n_tiers, name, seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((n, n_tiers)), 1)  # ties with the thresholds happen
    t = np.round(rng.random(max(n_tiers - 1, 1) if name == "threshold" else 1), 1)
    start, stop = B.Family(name, t[None, :]).start_stop(scores, 0)
    want = [next((i for i in range(n_tiers - 1) if scores[r, i] >= t[i if name == "threshold" else 0]), n_tiers - 1)
            for r in range(n)]
    assert stop.tolist() == want
    assert start.tolist() == ([0] * n if name == "threshold" else want)
    assert stop.dtype == start.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 5), st.sampled_from(["threshold", "router"]), st.integers(0, 2**31 - 1))
def test_family_members_are_start_stop_of_every_member(n, n_tiers, name, seed):
    rng = np.random.default_rng(seed)
    scores = np.where(rng.random((n, n_tiers)) < 0.1, np.nan, np.round(rng.random((n, n_tiers)), 1))
    fam = B.threshold_family(np.nan_to_num(scores)) if name == "threshold" else B.router_family(np.nan_to_num(scores))
    members = list(fam.members(scores))
    assert len(members) == fam.size
    for c, (start, stop) in enumerate(members):
        want_start, want_stop = fam.start_stop(scores, c)
        np.testing.assert_array_equal(start, want_start)
        np.testing.assert_array_equal(stop, want_stop)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=1, max_size=200))
def test_summary_latency_figures_are_latency_stat_bit_for_bit(values):
    latency = np.array(values)
    n = latency.size
    out = Outcomes(np.zeros(n, np.int64), np.zeros(n, np.int64), latency.copy(), latency, np.ones(n))
    s = summarize(out, cost_last=1.0, n_tiers=1)
    assert list(s["latency_ms"]) == list(STATISTICS)
    for stat in STATISTICS:
        assert s["latency_ms"][stat] == latency_stat(latency, stat)
