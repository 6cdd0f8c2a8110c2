"""The routed stage 0: a request starts at the first tier whose prompt-only P(acceptable) reaches a
threshold, chosen at each solve by replaying the calibration requests, where that beats the prompt
bins' start table on them. Kernel parity with its plain-Python twin, the totals against a brute
walk, the decision kernels against the Python path, persistence, λ enumeration, and the simulator's
replay of it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.calibration.calibrate import calibrate
from asd.calibration.views import load_view
from asd.engine import Policy, distinct_policies, reference
from asd.engine import decide_nb as K
from asd.engine.dp_nb import (TIE_LOW, evidence_sums_nb, routed_totals_nb, solve_cold_start_nb, solve_dp_nb,
                              walk_bins_cold_nb)
from asd.engine.policy import route_thresholds
from asd.errors import PolicyError
from asd.simulator.evaluate import Evaluation
from asd.simulator.replay import ReplayInputs, policy_tables, replay
from asd.traces.synth import write_synthetic_bundle
from tests.engine.test_cold_start import solve_cold, with_cold
from tests.engine.test_empirical_start import evidence, sums_of, walk_value
from tests.strategies import dp_instances, lambdas


def routed_inputs(inst, seed, n=40, n_thresholds=6):
    ev = evidence(inst, seed, n=n)
    rng = np.random.default_rng(seed + 7)
    n_tiers = inst["q_mean"].shape[0]
    ev["route_p"] = rng.random((n, n_tiers - 1))
    ev["thresholds"] = np.unique(np.concatenate([rng.random(n_thresholds), [2.0]]))
    ev["start"] = rng.integers(0, n_tiers, inst["c0"].shape[1])
    return ev


def totals_of(kernels, solved, inst, ev, lam):
    """routed_totals at λ from evidence_sums' sums: the numba pair or the twins."""
    sums_kernel, totals_kernel = kernels
    start_cost, start_miss, route_cost, route_miss = sums_of(sums_kernel, solved, inst, ev, inst["c0"].shape[1],
                                                             ev["route_p"], ev["thresholds"])
    out = np.empty(ev["thresholds"].size + 1)
    totals_kernel(lam, start_cost, start_miss, ev["start"], route_cost, route_miss, out)
    return out


NUMBA = (evidence_sums_nb, routed_totals_nb)
TWINS = (reference.evidence_sums, reference.routed_totals)


@settings(max_examples=50, deadline=None)
@given(dp_instances(max_tiers=5, max_bins=5, max_prompt_bins=4), lambdas, st.integers(0, 2**31 - 1))
def test_routed_totals_numba_equal_reference_exactly(inst, lam, seed):
    inst = with_cold(inst, seed)
    solved = solve_cold(solve_dp_nb, solve_cold_start_nb, inst, lam)
    ev = routed_inputs(inst, seed)
    np.testing.assert_array_equal(totals_of(NUMBA, solved, inst, ev, lam), totals_of(TWINS, solved, inst, ev, lam))


@settings(max_examples=30, deadline=None)
@given(dp_instances(max_tiers=4, max_bins=4, max_prompt_bins=3), lambdas, st.integers(0, 2**31 - 1))
def test_each_total_is_the_walk_of_its_starts_on_the_evidence(inst, lam, seed):
    """totals[g]: every request started where threshold g routes it, walked by the simulator's own
    walk kernel (each request its own "prompt bin" under an identity start table); totals[G]: the
    start table by prompt bin."""
    inst = with_cold(inst, seed)
    solved = solve_cold(solve_dp_nb, solve_cold_start_nb, inst, lam)
    ev = routed_inputs(inst, seed, n=30)
    n_tiers, n = inst["q_mean"].shape[0], ev["prompt_bins"].size
    totals = totals_of(NUMBA, solved, inst, ev, lam)
    for g, t in enumerate(ev["thresholds"]):
        reached = np.concatenate([ev["route_p"] >= t, np.ones((n, 1), bool)], axis=1)  # the last tier takes the rest
        starts = reached.argmax(axis=1)
        routed = dict(ev, prompt_bins=starts)
        expected = walk_value(inst, solved, routed, np.arange(n_tiers), lam) * n
        assert totals[g] == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert totals[-1] == pytest.approx(walk_value(inst, solved, ev, ev["start"], lam) * n, rel=1e-9, abs=1e-9)


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    """A real calibration (`asd calibrate`'s path) on a seeded 3-tier synthetic ladder: prompt
    stage, routing row for tier 1, start evidence."""
    path = tmp_path_factory.mktemp("routed") / "synth3"
    write_synthetic_bundle(path, 600, 3, 11, informativeness=0.7)
    view = load_view(path)
    cal = calibrate(view, cost_model="params")
    return cal, view


def routing_lambdas(policy):
    """λ (from the policy's distinct pieces) at which stage 0 routes, and at which it does not."""
    on, off = [], []
    for piece in distinct_policies(policy, 0.0, None, rel_tol=1e-6):
        policy.solve(piece.lam_lo)
        (on if policy.route_threshold is not None else off).append(piece.lam_lo)
    return on, off


def test_calibration_fits_a_routing_row_per_middle_tier_and_routes_at_some_lambda(routed):
    cal, view = routed
    policy = cal.policy
    assert policy.predictor.n_rows == view.n_tiers + 1 + (view.n_tiers - 2)
    assert policy.tables.evidence_route_p.shape == (view.n_requests, view.n_tiers - 1)
    np.testing.assert_array_equal(policy.tables.evidence_route_p[:, 0], cal.p_prompt)  # tier 0's is the prompt stage's
    on, off = routing_lambdas(policy)
    assert on and off  # each rule wins somewhere on this ladder


def test_the_solve_routes_exactly_where_the_best_threshold_beats_the_start_table(routed):
    policy = routed[0].policy
    t = policy.tables
    thresholds = route_thresholds(t.evidence_route_p)
    for lam in np.geomspace(1.0, 1e6, 25):
        policy.solve(lam)
        ev = {"prompt_bins": t.evidence_prompt_bins, "tier_bins": t.evidence_tier_bins, "cold_bins": t.evidence_cold_bins,
              "accepted": t.evidence_accepted, "cost": t.evidence_cost, "cost_cont": t.evidence_cost_cont,
              "route_p": t.evidence_route_p, "thresholds": thresholds, "start": policy.start_table}
        totals = totals_of(TWINS, {"stop": policy.stop_table, "stop_cold": policy.stop_cold_table},
                           {"q_mean": policy.q_mean, "q_mean_cold": policy.q_mean_cold, "c0": t.c0}, ev, lam)
        g = int(np.argmin(totals[:-1]))
        if totals[g] < totals[-1] * TIE_LOW:
            assert policy.route_threshold == thresholds[g]
        else:
            assert policy.route_threshold is None


def test_start_kernels_python_path_and_twin_agree_request_by_request(routed):
    cal, view = routed
    policy = cal.policy
    prompt_x = np.ascontiguousarray(cal.features.prompt_x[:200])
    scores = policy.route_scores(prompt_x)
    on, off = routing_lambdas(policy)
    for lam in on[:3] + off[:2]:
        policy.solve(lam)
        batch = policy.start_batch(prompt_x)
        one = np.array([policy.start(x) for x in prompt_x])
        twin = np.array([reference.start_packed(policy._blob, policy._layout, x) for x in prompt_x])
        np.testing.assert_array_equal(batch, one)
        np.testing.assert_array_equal(batch, twin)
        if policy.route_threshold is not None:
            np.testing.assert_array_equal(batch, policy.routed_starts(scores))
        else:
            np.testing.assert_array_equal(batch, policy.start_table[policy.prompt_bins(prompt_x)])
    rows = np.zeros(prompt_x.shape[0], dtype=np.int64)
    out, twin_out = np.empty(rows.size), np.empty(rows.size)
    K.predict_batch_packed_nb(policy._blob, policy._layout, rows, prompt_x, out)
    reference.predict_batch_packed(policy._blob, policy._layout, rows, prompt_x, twin_out)
    np.testing.assert_allclose(out, twin_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(out, scores[:, 0])


def test_walk_needs_route_scores_where_stage_0_routes(routed):
    cal, view = routed
    policy = cal.policy
    on, _ = routing_lambdas(policy)
    policy.solve(on[0])
    prompt_bins, tier_bins, cold_bins = cal.oof_bins()
    with pytest.raises(PolicyError, match="routes at stage 0: pass route_scores"):
        policy.walk(prompt_bins, tier_bins, cold_bins)
    walk = policy.walk(prompt_bins, tier_bins, cold_bins, route_scores=policy.tables.evidence_route_p)
    np.testing.assert_array_equal(walk.start, policy.routed_starts(policy.tables.evidence_route_p))
    with pytest.raises(PolicyError, match="stacked tables cannot hold"):
        policy_tables(policy, [on[0]])
    inputs = ReplayInputs.build(tier_bins, prompt_bins=prompt_bins, cold_bins=cold_bins, cost=cal.costs.cost,
                                latency_ms=cal.costs.latency_ms, quality=np.ones(tier_bins.shape),
                                n_bins=policy.tables.n_bins, n_prompt_bins=policy.tables.n_prompt_bins)
    with pytest.raises(PolicyError, match="routes at stage 0 .*routed_starts"):
        replay(inputs, policy.solve(on[0]))  # its start table would be the wrong start


def test_routed_policy_survives_save_and_load_and_a_tampered_route_is_refused(routed, tmp_path):
    cal, view = routed
    policy = cal.policy
    on, _ = routing_lambdas(policy)
    policy.solve(on[len(on) // 2])
    path = policy.save(tmp_path / "routed.npz")
    loaded = Policy.load(path)
    assert loaded.route_threshold == policy.route_threshold
    prompt_x = np.ascontiguousarray(cal.features.prompt_x[:100])
    np.testing.assert_array_equal(loaded.start_batch(prompt_x), policy.start_batch(prompt_x))
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    assert json.loads(str(arrays["header"]))["version"] == 4
    arrays["solved.route"] = np.array([0.123456])
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(PolicyError, match="stored stage-0 route disagrees with a re-solve"):
        Policy.load(tmp_path / "tampered.npz")


def test_lambda_pieces_split_where_only_the_route_changes(routed):
    """distinct_policies keys the routed threshold with the tables: two neighbouring pieces may
    share every table and differ in the route alone."""
    policy = routed[0].policy
    pieces = distinct_policies(policy, 0.0, None, rel_tol=1e-6)
    keys = []
    for piece in pieces:
        policy.solve(piece.lam_lo)
        keys.append((policy.stop_table.tobytes(), policy.start_table.tobytes(), policy.stop_cold_table.tobytes(),
                     policy._route.tobytes()))
    assert all(a != b for a, b in zip(keys, keys[1:]))
    assert len({k[3] for k in keys}) > 2  # several thresholds along λ


def test_the_simulators_replay_plays_the_routed_start_as_the_policy_walks_it(routed, tmp_path):
    """Evaluation's fold replay (routed starts as per-request bins under an identity start table,
    the replay kernels unchanged) gives the start and stop tiers of Policy.walk on the same rows."""
    cal, view = routed
    ev = Evaluation(view, folds=3, cost_model="params", seed=0)
    f = ev.folds[0]
    on, off = routing_lambdas(f.policy)
    for lam in on[:3] + off[:1]:
        out = f.walk(lam)
        walk = f.policy.walk(f.prompt_bins, f.tier_bins, f.cold_bins, route_scores=f.stage0_route[0])
        np.testing.assert_array_equal(out.start, walk.start)
        np.testing.assert_array_equal(out.stop, walk.stop)
