"""Stage 0 chosen by replaying the calibration requests (`evidence_sums_nb`, then
`empirical_start_nb` at each λ): every calibration request ran every tier, so the outcome of
starting it at each tier under the solved stop tables is observed, not modelled. Parity with the
plain-Python twins, optimality against every start table on the evidence, the model's choice in an
empty prompt bin, the sums' reuse across λ, and the Policy round trip."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.engine import reference
from asd.engine.dp_nb import (empirical_start_nb, evidence_sums_nb, solve_cold_start_nb, solve_dp_nb,
                              walk_bins_cold_nb)
from asd.engine.policy import START_PRIOR_WEIGHT, Policy, Predictor
from asd.engine.tables import EVIDENCE_FIELDS, build_tables
from asd.errors import PolicyError
from tests.engine.test_cold_start import solve_cold, with_cold
from tests.strategies import dp_instances, lambdas


def evidence(inst, seed, n=40, unlabelled=0.2):
    """Random calibration requests for a DP instance: bins, 0/1 acceptance (some NaN), costs."""
    rng = np.random.default_rng(seed)
    n_tiers, n_bins = inst["q_mean"].shape
    accepted = rng.integers(0, 2, (n, n_tiers)).astype(np.float64)
    accepted[rng.random((n, n_tiers)) < unlabelled] = np.nan
    return {
        "prompt_bins": rng.integers(0, inst["c0"].shape[1], n),
        "tier_bins": rng.integers(0, n_bins, (n, n_tiers)),
        "cold_bins": rng.integers(0, n_bins, (n, n_tiers)),
        "accepted": accepted,
        "cost": rng.random((n, n_tiers)) * 5,
        "cost_cont": rng.random((n, n_tiers)) * 5,
    }


def sums_of(kernel, solved, inst, ev, n_prompt_bins, route_p=None, thresholds=None):
    """evidence_sums_nb's (or its twin's) four sums for these stop tables."""
    n_tiers = inst["q_mean"].shape[0]
    thresholds = np.zeros(0) if thresholds is None else thresholds
    out = (np.zeros((n_tiers, n_prompt_bins)), np.zeros((n_tiers, n_prompt_bins)), np.zeros(thresholds.size),
           np.zeros(thresholds.size))
    kernel(solved["stop"], solved["stop_cold"], inst["q_mean"], inst["q_mean_cold"], ev["prompt_bins"],
           np.zeros((0, 0)) if route_p is None else route_p, thresholds, ev["tier_bins"], ev["cold_bins"],
           ev["accepted"], ev["cost"], ev["cost_cont"], *out)
    return out


def run(kernels, solved, inst, ev, lam, model_values, prior_weight):
    """Stage 0 at λ through (sums kernel, start kernel): the numba pair or the twins."""
    sums_kernel, start_kernel = kernels
    n_tiers, n_prompt_bins = model_values.shape
    start_cost, start_miss, _, _ = sums_of(sums_kernel, solved, inst, ev, n_prompt_bins)
    counts = np.bincount(ev["prompt_bins"], minlength=n_prompt_bins).astype(np.float64)
    out = {"start_values": np.zeros((n_tiers, n_prompt_bins)), "start": np.zeros(n_prompt_bins, np.int64),
           "value0": np.zeros(n_prompt_bins)}
    start_kernel(lam, start_cost, start_miss, counts, model_values, prior_weight, out["start_values"], out["start"],
                 out["value0"])
    return out


NUMBA = (evidence_sums_nb, empirical_start_nb)
TWINS = (reference.evidence_sums, reference.empirical_start)


def walk_value(inst, solved, ev, start_table, lam):
    """Mean over the evidence of cost + λ(1 − acceptance) of the walk from start_table, through
    the simulator's own walk kernel (unlabelled stops: the bin's posterior mean)."""
    n = ev["prompt_bins"].shape[0]
    first, stop = np.empty(n, np.int64), np.empty(n, np.int64)
    walk_bins_cold_nb(ev["prompt_bins"], ev["tier_bins"], ev["cold_bins"], start_table, solved["stop"],
                      solved["stop_cold"], first, stop)
    total = 0.0
    for r in range(n):
        s, k = first[r], stop[r]
        cost = ev["cost"][r, s] + ev["cost_cont"][r, s + 1:k + 1].sum()
        a = ev["accepted"][r, k]
        if np.isnan(a):
            a = inst["q_mean_cold"][k, ev["cold_bins"][r, k]] if k == s > 0 else inst["q_mean"][k, ev["tier_bins"][r, k]]
        total += cost + lam * (1.0 - a)
    return total / n


@pytest.mark.filterwarnings("ignore:overflow encountered")  # λ·(a sum of misses) past 1.8e308 is inf in both
@settings(max_examples=50, deadline=None)
@given(dp_instances(max_tiers=5, max_bins=5, max_prompt_bins=4), lambdas | st.floats(1e300, 1.7e308),
       st.integers(0, 2**31 - 1), st.sampled_from([0.0, 1.0, 7.5]))
def test_empirical_start_numba_equals_reference_exactly(inst, lam, seed, prior_weight):
    inst = with_cold(inst, seed)
    solved = solve_cold(solve_dp_nb, solve_cold_start_nb, inst, lam)
    ev = evidence(inst, seed)
    model_values = np.random.default_rng(seed + 1).random(inst["c0"].shape) * 10
    fast = run(NUMBA, solved, inst, ev, lam, model_values, prior_weight)
    slow = run(TWINS, solved, inst, ev, lam, model_values, prior_weight)
    for key in fast:
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)


@settings(max_examples=30, deadline=None)
@given(dp_instances(max_tiers=3, max_bins=3, max_prompt_bins=3), lambdas, st.integers(0, 2**31 - 1))
def test_chosen_start_table_is_best_of_every_start_table_on_the_evidence(inst, lam, seed):
    """Without the model's pseudo-requests the chosen table minimises the replayed value over all
    L^B0 start tables, and value0 is that replayed value per prompt bin."""
    inst = with_cold(inst, seed)
    solved = solve_cold(solve_dp_nb, solve_cold_start_nb, inst, lam)
    ev = evidence(inst, seed, n=30)
    n_tiers, n_prompt_bins = inst["c0"].shape
    ev["prompt_bins"][:n_prompt_bins] = np.arange(n_prompt_bins)  # no empty bin: the evidence decides each
    out = run(NUMBA, solved, inst, ev, lam, np.zeros((n_tiers, n_prompt_bins)), 0.0)
    chosen = walk_value(inst, solved, ev, out["start"], lam)
    for table in itertools.product(range(n_tiers), repeat=n_prompt_bins):
        assert chosen <= walk_value(inst, solved, ev, np.array(table, np.int64), lam) + 1e-9 * (1 + abs(chosen))
    counts = np.bincount(ev["prompt_bins"], minlength=n_prompt_bins)
    np.testing.assert_allclose((out["value0"] * counts).sum() / counts.sum(), chosen, rtol=1e-9, atol=1e-9)


def test_an_empty_prompt_bin_keeps_the_models_start_and_an_observed_one_follows_its_requests():
    inst = with_cold(dict(q_stop=np.array([[0.5], [0.9]]), q_mean=np.array([[0.5], [0.9]]),
                          trans=np.ones((1, 1, 1)), cnext=np.array([[1.0]]), trans0=np.ones((2, 2, 1)),
                          c0=np.array([[1.0, 1.0], [3.0, 3.0]])), 0)
    solved = solve_cold(solve_dp_nb, solve_cold_start_nb, inst, 10.0)
    assert solved["stop"][0, 0] == 0  # λ(1 − 0.5) = 5 > 1 + λ(1 − 0.9) = 2: tier 0 climbs
    # one request, in prompt bin 0: from tier 0 it climbs (1 + 5, accepted at tier 1: 6);
    # started at tier 1 it costs 1 and is accepted (1)
    ev = {"prompt_bins": np.array([0]), "tier_bins": np.zeros((1, 2), np.int64), "cold_bins": np.zeros((1, 2), np.int64),
          "accepted": np.array([[0.0, 1.0]]), "cost": np.array([[1.0, 1.0]]), "cost_cont": np.array([[0.0, 5.0]])}
    model_values = np.array([[0.0, 0.0], [2.0, 2.0]])  # the model says: start at tier 0, everywhere
    out = run(NUMBA, solved, inst, ev, 10.0, model_values, 1.0)
    np.testing.assert_allclose(out["start_values"], [[(6.0 + 0.0) / 2, 0.0], [(1.0 + 2.0) / 2, 2.0]])
    np.testing.assert_array_equal(out["start"], [1, 0])  # bin 0 follows its request; empty bin 1, the model
    np.testing.assert_allclose(out["value0"], [1.5, 0.0])


def calibrated_policy(seed=0, n=400, n_tiers=3, empirical_start=True):
    """A Policy from build_tables with a prompt stage and cold starts on random but structured data."""
    rng = np.random.default_rng(seed)
    difficulty = rng.random(n)
    p_hat = np.clip(difficulty[:, None] * np.linspace(0.6, 1.0, n_tiers) + 0.2 * rng.random((n, n_tiers)), 0, 1)
    accepted = (rng.random((n, n_tiers)) < p_hat).astype(np.float64)
    cold_p = np.clip(p_hat + 0.1 * rng.standard_normal((n, n_tiers)), 0, 1)
    costs = np.broadcast_to(np.array([1.0, 3.0, 9.0][:n_tiers]), (n, n_tiers))
    tables = build_tables(p_hat, accepted, costs, prompt_p=np.clip(difficulty + 0.2 * rng.random(n), 0, 1),
                          start_p_hat=cold_p, n_bins=5, n_prompt_bins=4, prior_strength=2.0,
                          empirical_start=empirical_start)
    return Policy(tables, Predictor.identity(n_tiers, has_prompt=True), lam=20.0)


def test_policy_start_table_is_the_replayed_choice_and_survives_save_and_load(tmp_path):
    policy = calibrated_policy()
    model = calibrated_policy(empirical_start=False)
    t = policy.tables
    assert t.has_start_evidence and not model.tables.has_start_evidence
    for lam in (0.5, 20.0, 400.0):
        policy.solve(lam)
        model.solve(lam)
        np.testing.assert_array_equal(policy.stop_table, model.stop_table)  # stage 0 only
        e = {k.removeprefix("evidence_"): getattr(t, k) for k in EVIDENCE_FIELDS}
        out = run(NUMBA, {"stop": policy.stop_table, "stop_cold": policy.stop_cold_table},
                  {"q_mean": policy.q_mean, "q_mean_cold": policy.q_mean_cold}, e, lam, model.start_values,
                  START_PRIOR_WEIGHT)
        np.testing.assert_array_equal(policy.start_table, out["start"])
        np.testing.assert_array_equal(policy.value0, out["value0"])
    path = policy.solve(20.0).save(tmp_path / "p.npz")
    loaded = Policy.load(path)
    assert loaded.tables.has_start_evidence
    np.testing.assert_array_equal(loaded.start_table, policy.start_table)
    for k in EVIDENCE_FIELDS:
        np.testing.assert_array_equal(getattr(loaded.tables, k), getattr(t, k))
    # online updates keep the evidence (only the Beta posteriors change)
    updated = policy.update([0], [1.0], bins=[0])
    assert updated.tables.has_start_evidence


def test_evidence_is_replayed_once_per_distinct_stop_tables_and_any_lambda_priced_from_the_sums(monkeypatch):
    """A λ sweep replays the calibration requests only where the stop tables change; every other
    λ is priced from the kept sums, and gives what a fresh policy solving that λ alone gives."""
    from asd.engine import policy as policy_module

    lams = np.concatenate([np.geomspace(0.1, 1e4, 60), np.geomspace(1e4, 0.1, 60)])
    alone = {}
    for lam in lams:  # each λ solved by a fresh policy: nothing kept from other λ
        fresh = calibrated_policy().solve(lam)
        alone[lam] = {name: getattr(fresh, name).copy() for name in ("start_table", "value0", "start_values")}
    replays = []
    kernel = policy_module.evidence_sums_nb

    def counted(stop, stop_cold, *rest):
        replays.append(stop.tobytes() + stop_cold.tobytes())
        return kernel(stop, stop_cold, *rest)

    monkeypatch.setattr(policy_module, "evidence_sums_nb", counted)
    policy = calibrated_policy()  # solved at λ = 20 on construction
    seen = {policy.stop_table.tobytes() + policy.stop_cold_table.tobytes()}
    for lam in lams:
        policy.solve(lam)
        seen.add(policy.stop_table.tobytes() + policy.stop_cold_table.tobytes())
        for name, expected in alone[lam].items():
            np.testing.assert_array_equal(getattr(policy, name), expected, err_msg=f"{name} at λ={lam}")
    assert sorted(replays) == sorted(seen)  # each distinct pair of stop tables replayed exactly once
    assert 1 < len(seen) < 60


def test_pinned_start_reports_the_replayed_value_of_the_start_it_plays():
    policy = calibrated_policy()
    policy.solve(400.0, start_lam=0.5)
    pinned = policy.start_table.copy()
    np.testing.assert_array_equal(pinned, calibrated_policy().solve(0.5).start_table)
    for b0, s in enumerate(pinned):
        assert policy.value0[b0] == policy.start_values[s, b0]


def test_empirical_start_needs_a_prompt_stage_and_damaged_evidence_is_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(PolicyError, match="needs prompt_p"):
        build_tables(rng.random((20, 2)), np.ones((20, 2)), np.ones(2), empirical_start=True)
    t = calibrated_policy().tables
    from dataclasses import replace

    bad_bins = t.evidence_tier_bins.copy()
    bad_bins[0, 0] = t.n_bins
    with pytest.raises(PolicyError, match=r"evidence_tier_bins\[0, 0\] = 5.0: bins must lie in 0..4"):
        Policy(replace(t, evidence_tier_bins=bad_bins), Predictor.identity(3, has_prompt=True))
    with pytest.raises(PolicyError, match="evidence_cost has shape"):
        Policy(replace(t, evidence_cost=t.evidence_cost[:5]), Predictor.identity(3, has_prompt=True))
    with pytest.raises(PolicyError, match="evidence is incomplete"):
        Policy(replace(t, evidence_accepted=None), Predictor.identity(3, has_prompt=True))
    too_high = t.evidence_accepted.copy()
    too_high[2, 0] = 1.5
    with pytest.raises(PolicyError, match=r"evidence_accepted\[2, 0\] = 1.5: must be a probability in \[0, 1\]"):
        Policy(replace(t, evidence_accepted=too_high), Predictor.identity(3, has_prompt=True))
    negative = t.evidence_cost_cont.copy()
    negative[1, 1] = -1.0
    with pytest.raises(PolicyError, match=r"evidence_cost_cont\[1, 1\] = -1.0: costs must be finite and >= 0"):
        Policy(replace(t, evidence_cost_cont=negative), Predictor.identity(3, has_prompt=True))


@pytest.mark.parametrize("kernel", [empirical_start_nb, reference.empirical_start])
def test_a_bin_without_requests_or_prior_takes_the_models_values_not_zero_over_zero(kernel):
    """prior_weight 0 and an empty prompt bin: no evidence of either kind, so the model's values
    decide (the kernel had raised ZeroDivisionError, the twin returned NaN)."""
    model_values = np.array([[1.0], [0.5]])
    out = (np.zeros((2, 1)), np.zeros(1, np.int64), np.zeros(1))
    kernel(1.0, np.zeros((2, 1)), np.zeros((2, 1)), np.zeros(1), model_values, 0.0, *out)
    np.testing.assert_array_equal(out[0], model_values)
    assert out[1][0] == 1 and out[2][0] == 0.5


@pytest.mark.parametrize("kernel", [empirical_start_nb, reference.empirical_start])
def test_empirical_start_takes_the_true_argmin_when_every_value_exceeds_1e308(kernel):
    out = (np.zeros((2, 1)), np.zeros(1, np.int64), np.zeros(1))
    kernel(1.5e308, np.zeros((2, 1)), np.array([[1.0], [0.9]]), np.ones(1), np.zeros((2, 1)), 0.0, *out)
    assert out[1][0] == 1 and out[2][0] == pytest.approx(0.9 * 1.5e308)
