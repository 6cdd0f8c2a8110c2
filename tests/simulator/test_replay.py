"""Replay kernels: numba = plain-Python twin, λ grid = one replay per λ, latency monotone in λ."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.engine import Policy, Predictor, build_tables
from asd.engine.dp_nb import walk_bins_cold_nb
from asd.errors import PolicyError
from asd.simulator import ReplayInputs, policy_tables, replay, replay_grid
from asd.simulator import reference as ref
from asd.simulator.replay_nb import replay_grid_stats_nb, replay_requests_nb
from tests.strategies import replay_instances

ARRAYS = ("prompt_bins", "tier_bins", "cold_bins", "start_table", "stop_table", "stop_cold_table", "cost", "cost_cont",
          "latency_ms", "latency_cont_ms", "quality")


def _outputs(n):
    return (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n), np.empty(n), np.empty(n))


@settings(max_examples=200, deadline=None)
@given(replay_instances())
def test_replay_kernel_equals_reference_with_stage_0_and_cold_bins(inst):
    n = inst["tier_bins"].shape[0]
    got, want = _outputs(n), _outputs(n)
    replay_requests_nb(*(inst[k] for k in ARRAYS), *got)
    ref.replay_requests(*(inst[k] for k in ARRAYS), *want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    s, k = got[0], got[1]
    assert (s <= k).all()
    assert (s == inst["start_table"][inst["prompt_bins"]]).all()
    # the start tier is charged cold, every later tier as a continuation
    rows = np.arange(n)
    expected_cost = inst["cost"][rows, s] + np.array(
        [inst["cost_cont"][r, s[r] + 1:k[r] + 1].sum() for r in rows])
    np.testing.assert_allclose(got[2], expected_cost, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got[4], inst["quality"][rows, k])
    # the same start and stop as the engine's cold-start walk on the same tables
    first, last = np.empty(n, np.int64), np.empty(n, np.int64)
    walk_bins_cold_nb(inst["prompt_bins"], inst["tier_bins"], inst["cold_bins"], inst["start_table"],
                      inst["stop_table"], inst["stop_cold_table"], first, last)
    np.testing.assert_array_equal(s, first)
    np.testing.assert_array_equal(k, last)


def test_start_tier_stops_on_its_cold_bin_not_the_climbed_one():
    tier_bins = np.array([[0, 0, 0]])
    cold_bins = np.array([[0, 1, 0]])
    stop = np.array([[0, 0], [0, 1], [1, 1]], dtype=np.uint8)  # tier 1 stops only in bin 1
    inputs = ReplayInputs.build(tier_bins, cold_bins=cold_bins, cost=np.ones((1, 3)), latency_ms=np.ones((1, 3)),
                                quality=np.ones((1, 3)), n_bins=2)
    started_at_1 = replay(inputs, (np.array([1]), stop))
    assert (started_at_1.start[0], started_at_1.stop[0]) == (1, 1)
    climbed = replay(inputs, (np.array([0]), stop))
    assert (climbed.start[0], climbed.stop[0]) == (0, 2)
    # with a cold stop table, the start tier reads it (and only the start tier, only at s > 0)
    stop_cold = np.array([[1, 1], [1, 0], [1, 1]], dtype=np.uint8)  # cold tier 1 stops only in bin 0
    assert replay(inputs, (np.array([1]), stop, stop_cold)).stop[0] == 2
    assert replay(inputs, (np.array([0]), stop, stop_cold)).stop[0] == 2  # tier 0 is climbed: stop table
    with pytest.raises(PolicyError, match="cold stop table"):
        replay(inputs, (np.array([1]), stop, stop_cold[:2]))


def _grid_instance(inst, n_grid, seed):
    """Stack the instance's tables with random others."""
    rng = np.random.default_rng(seed)
    n_tiers, n_bins = inst["stop_table"].shape
    stops = rng.integers(0, 2, size=(n_grid, n_tiers, n_bins)).astype(np.uint8)
    stops[:, -1] = 1
    stops[0] = inst["stop_table"]
    starts = rng.integers(0, n_tiers, size=(n_grid,) + inst["start_table"].shape)
    starts[0] = inst["start_table"]
    stops_cold = rng.integers(0, 2, size=(n_grid, n_tiers, n_bins)).astype(np.uint8)
    stops_cold[:, -1] = 1
    stops_cold[0] = inst["stop_cold_table"]
    return starts, stops, stops_cold


@settings(max_examples=60, deadline=None)
@given(replay_instances(), st.integers(1, 5), st.integers(0, 2**31))
def test_grid_replay_equals_one_replay_per_lambda_and_its_reference(inst, n_grid, seed):
    starts, stops, stops_cold = _grid_instance(inst, n_grid, seed)
    inputs = ReplayInputs.build(inst["tier_bins"], prompt_bins=inst["prompt_bins"], cold_bins=inst["cold_bins"],
                                cost=inst["cost"], cost_cont=inst["cost_cont"], latency_ms=inst["latency_ms"],
                                latency_cont_ms=inst["latency_cont_ms"], quality=inst["quality"],
                                n_bins=stops.shape[2], n_prompt_bins=starts.shape[1])
    grid = replay_grid(inputs, starts, stops, stops_cold, quantiles=(0.0, 50.0, 95.0, 99.0, 100.0))
    for g in range(n_grid):
        one = replay(inputs, (starts[g], stops[g], stops_cold[g]))
        assert grid.mean_cost[g] == pytest.approx(one.mean_cost, rel=1e-12, abs=1e-12)
        assert grid.mean_quality[g] == pytest.approx(one.mean_quality, rel=1e-12, abs=1e-12)
        assert grid.mean_latency_ms[g] == pytest.approx(one.latency("mean"), rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(grid.latency_q_ms[g], np.percentile(one.latency_ms, [0, 50, 95, 99, 100]),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grid.stop_fractions[g], one.stop_fractions)
        np.testing.assert_allclose(grid.start_fractions[g], one.start_fractions)
    # the plain-Python twin of the grid kernel agrees exactly
    n_tiers, q = inputs.n_tiers, np.array([50.0, 95.0])
    got = [np.empty(n_grid), np.empty(n_grid), np.empty(n_grid), np.empty((n_grid, n_tiers), np.int64),
           np.empty((n_grid, n_tiers), np.int64), np.empty((n_grid, 2))]
    want = [a.copy() for a in got]
    args = (inputs.prompt_bins, inputs.tier_bins, inputs.cold_bins, starts, stops, stops_cold, inputs.cost, inputs.cost_cont,
            inputs.latency_ms, inputs.latency_cont_ms, inputs.quality, q)
    replay_grid_stats_nb(*args, *got)
    ref.replay_grid_stats(*args, *want)
    for g_arr, w_arr in zip(got, want):
        np.testing.assert_allclose(g_arr, w_arr, rtol=1e-12, atol=1e-12)


def synthetic_policy(seed=0, n=3000, n_tiers=4, n_bins=10):
    """Engine tables from a synthetic calibration set whose acceptance follows p̂; latency grows
    with the tier. Returns (policy, bins, latency, quality)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(size=n)
    p_hat = 1.0 / (1.0 + np.exp(difficulty[:, None] - np.linspace(-0.5, 1.5, n_tiers)[None, :]
                                + 0.5 * rng.normal(size=(n, n_tiers))))
    accepted = (rng.random((n, n_tiers)) < p_hat).astype(float)
    latency = rng.gamma(4.0, 1.0, size=(n, n_tiers)) * np.array([100.0, 160.0, 420.0, 875.0])[:n_tiers]
    tables = build_tables(p_hat, accepted, latency, n_bins=n_bins)
    predictor = Predictor.logistic(np.zeros((n_tiers + 1, 1)), np.zeros(n_tiers + 1))
    policy = Policy(tables, predictor, lam=1.0)
    bins = np.stack([np.searchsorted(tables.edges[i, 1:-1], p_hat[:, i], side="right") for i in range(n_tiers)], 1)
    return policy, bins, latency, accepted


def test_latency_and_cost_are_monotone_in_lambda_without_stage_0():
    policy, bins, latency, quality = synthetic_policy()
    lambdas = np.concatenate([[0.0], np.geomspace(1.0, 1e6, 60)])
    starts, stops, _ = policy_tables(policy, lambdas)
    starts[:] = 0  # no stage 0: every request climbs from tier 0
    inputs = ReplayInputs.build(bins, cost=latency, latency_ms=latency, quality=quality, n_bins=policy.tables.n_bins)
    grid = replay_grid(inputs, starts, stops, lambdas=lambdas)
    for stat in ("mean", "p50", "p95", "p99"):
        assert (np.diff(grid.latency(stat)) >= -1e-9).all(), stat
    assert (np.diff(grid.mean_cost) >= -1e-9).all()
    assert grid.stop_fractions[0, 0] > 0.5 and grid.stop_fractions[-1, -1] > 0.5  # the sweep spans the ladder
    # per request, too: the stop tier never decreases as λ grows
    previous = replay(inputs, (starts[0], stops[0])).stop
    for g in range(1, lambdas.size):
        now = replay(inputs, (starts[g], stops[g])).stop
        assert (now >= previous).all()
        previous = now


def test_replay_refuses_bad_inputs_with_a_policy_error():
    bins = np.zeros((2, 3), dtype=np.int64)
    ok = dict(cost=np.ones((2, 3)), latency_ms=np.ones((2, 3)), quality=np.ones((2, 3)))
    with pytest.raises(PolicyError, match="latency_ms\\[1, 2\\]"):
        ReplayInputs.build(bins, **{**ok, "latency_ms": np.array([[1.0, 1, 1], [1, 1, np.nan]])})
    with pytest.raises(PolicyError, match="cost has shape"):
        ReplayInputs.build(bins, **{**ok, "cost": np.ones((2, 2))})
    inputs = ReplayInputs.build(bins, **ok, n_bins=2)
    with pytest.raises(PolicyError, match="stop table"):
        replay(inputs, (np.array([0]), np.ones((2, 2), dtype=np.uint8)))
    with pytest.raises(PolicyError, match="start table names tiers"):
        replay(inputs, (np.array([3]), np.ones((3, 2), dtype=np.uint8)))
    with pytest.raises(PolicyError, match="tier_bins holds bins"):
        ReplayInputs.build(bins + 5, **ok, n_bins=2)
    with pytest.raises(PolicyError, match=r"tables: a str given, expected a solved Policy.*\(Policy.load reads"):
        replay(inputs, "policy.npz")
    with pytest.raises(PolicyError, match=r"tables: a list given, expected a solved Policy or \(start_table"):
        replay(inputs, [np.array([0]), np.ones((3, 2), dtype=np.uint8)])


def test_replay_result_summary_has_latency_percentiles_and_stop_fractions():
    policy, bins, latency, quality = synthetic_policy(n=500)
    inputs = ReplayInputs.build(bins, cost=latency, latency_ms=latency, quality=quality, n_bins=policy.tables.n_bins)
    result = replay(inputs, policy.solve(500.0))
    summary = result.summary()
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"] <= summary["latency_ms"]["p99"]
    assert sum(summary["stop_fractions"]) == pytest.approx(1.0)
    assert summary["latency_ms"]["mean"] == pytest.approx(result.latency_ms.mean())


@pytest.fixture(scope="module")
def cold_start_calibration(tmp_path_factory):
    """A policy calibrated with stage 0 on a seeded synthetic ladder whose small tiers rarely
    suffice, so stage 0 skips tiers: its cold stop table differs from the climbed one."""
    from asd.calibration.calibrate import calibrate
    from asd.traces.synth import write_synthetic_bundle

    path = tmp_path_factory.mktemp("cold") / "ladder"
    write_synthetic_bundle(path, 1500, 4, 3, informativeness=0.8)
    # stage 0 on prompt bins, whose cold-start replay this exercises (routing: tests/engine/test_routed_stage0.py)
    return calibrate(path, stage0=True, single_feature_report=False, routed_stage0=False)


def test_replay_start_and_stop_equal_policy_walk_on_a_cold_start_policy(cold_start_calibration):
    cal = cold_start_calibration
    policy, fs, rows = cal.policy, cal.features, cal.rows
    assert policy.tables.cold_start
    prompt_bins = policy.prompt_bins(fs.prompt_x[rows])
    tier_bins, cold_bins = policy.tier_bins(fs.tier_x[rows]), policy.cold_tier_bins(fs.cold_x[rows])
    n_tiers = policy.n_tiers
    inputs = ReplayInputs.build(tier_bins, prompt_bins=prompt_bins, cold_bins=cold_bins, cost=cal.costs.cost,
                                cost_cont=cal.costs.cost_cont, latency_ms=cal.costs.latency_ms,
                                latency_cont_ms=cal.costs.latency_cont_ms, quality=np.ones((rows.size, n_tiers)),
                                n_bins=policy.tables.n_bins, n_prompt_bins=policy.tables.n_prompt_bins)
    lambdas = np.geomspace(1e-2, 1e8, 40) * float(cal.costs.cost.mean())
    tables = policy_tables(policy, lambdas)
    grid = replay_grid(inputs, *tables, lambdas=lambdas)
    skipped = differs = 0
    for g, lam in enumerate(lambdas):
        walk = policy.solve(float(lam)).walk(prompt_bins, tier_bins, cold_bins=cold_bins)
        one = replay(inputs, policy)
        np.testing.assert_array_equal(one.start, walk.start)
        np.testing.assert_array_equal(one.stop, walk.stop)
        np.testing.assert_allclose(grid.stop_fractions[g], one.stop_fractions)
        np.testing.assert_allclose(grid.start_fractions[g], one.start_fractions)
        skipped += int((walk.start > 0).sum())
        differs += int((policy.stop_cold_table[1:] != policy.stop_table[1:]).any())
    assert skipped > 0 and differs > 0  # the cold path was exercised, and it matters
    # without cold bins, a cold-start policy that skips tiers is refused, as by the engine
    for lam in lambdas:
        if (policy.solve(float(lam)).walk(prompt_bins, tier_bins, cold_bins=cold_bins).start > 0).any():
            plain = ReplayInputs.build(tier_bins, prompt_bins=prompt_bins, cost=cal.costs.cost,
                                       latency_ms=cal.costs.latency_ms, quality=np.ones((rows.size, n_tiers)),
                                       n_bins=policy.tables.n_bins, n_prompt_bins=policy.tables.n_prompt_bins)
            with pytest.raises(PolicyError, match="cold_bins"):
                replay(plain, policy)
            break


def test_replay_carries_unlabelled_quality_only_when_asked():
    bins = np.zeros((2, 2), dtype=np.int64)
    quality = np.array([[1.0, np.nan], [0.0, 1.0]])
    with pytest.raises(PolicyError, match="quality\\[0, 1\\]"):
        ReplayInputs.build(bins, cost=np.ones((2, 2)), latency_ms=np.ones((2, 2)), quality=quality)
    inputs = ReplayInputs.build(bins, cost=np.ones((2, 2)), latency_ms=np.ones((2, 2)), quality=quality,
                                unlabelled_ok=True)
    out = replay(inputs, (np.array([0]), np.array([[0], [1]], dtype=np.uint8)))
    assert np.isnan(out.quality[0]) and out.quality[1] == 1.0


@settings(max_examples=100, deadline=None)
@given(replay_instances())
def test_replay_inputs_narrow_bins_and_column_major_grids_change_no_result(inst):
    """ReplayInputs stores bins in the narrowest dtype and grids column-major (the kernels'
    fastest layout); the replay equals the plain-Python twin on the arrays as given."""
    n_tiers, n_bins = inst["stop_table"].shape
    inputs = ReplayInputs.build(inst["tier_bins"], prompt_bins=inst["prompt_bins"], cold_bins=inst["cold_bins"],
                                cost=inst["cost"], cost_cont=inst["cost_cont"], latency_ms=inst["latency_ms"],
                                latency_cont_ms=inst["latency_cont_ms"], quality=inst["quality"],
                                n_bins=n_bins, n_prompt_bins=inst["start_table"].size)
    assert inputs.tier_bins.dtype == inputs.cold_bins.dtype == inputs.prompt_bins.dtype == np.uint8
    assert all(a.flags.f_contiguous for a in (inputs.cost, inputs.cost_cont, inputs.latency_ms,
                                              inputs.latency_cont_ms, inputs.quality))
    got = replay(inputs, (inst["start_table"], inst["stop_table"], inst["stop_cold_table"]))
    n = inst["tier_bins"].shape[0]
    want = _outputs(n)
    ref.replay_requests(*(inst[k] for k in ARRAYS), *want)
    for g, w in zip((got.start, got.stop, got.cost, got.latency_ms, got.quality), want):
        np.testing.assert_array_equal(g, w)


def test_negative_zero_charges_are_stored_as_zero():
    inputs = ReplayInputs.build(np.zeros((1, 2), np.int64), cost=np.array([[-0.0, -0.0]]),
                                latency_ms=np.array([[-0.0, 1.0]]), quality=np.ones((1, 2)), n_bins=300)
    assert not np.signbit(inputs.cost).any() and inputs.latency_ms[0, 1] == 1.0
    assert inputs.tier_bins.dtype == np.uint16
    out = replay(inputs, (np.array([0]), np.array([[0] * 300, [1] * 300], dtype=np.uint8)))
    assert out.stop[0] == 1 and out.cost[0] == 0.0 and not np.signbit(out.cost[0])


def stage0_cold_start_policy(seed=0, n=4000):
    """A policy with a cold-start stage 0 (10 prompt bins, built with start_p_hat) whose start
    table skips tiers at λ = 200. Returns (policy, prompt_bins, tier_bins, cold_bins, cost, accepted)."""
    rng = np.random.default_rng(seed)
    n_tiers = 3
    p_hat = rng.beta(2, 2, size=(n, n_tiers))
    accepted = (rng.random((n, n_tiers)) < p_hat).astype(float)
    prompt_p = np.clip(p_hat[:, 0] + rng.normal(0, 0.1, n), 0, 1)
    start_p = np.clip(p_hat + rng.normal(0, 0.2, (n, n_tiers)), 0, 1)
    tables = build_tables(p_hat, accepted, [6, 1, 2], prompt_p=prompt_p, start_p_hat=start_p, n_bins=10)
    policy = Policy(tables, Predictor.identity(n_tiers, has_prompt=True), lam=200.0)
    binned = lambda p: np.stack([np.searchsorted(tables.edges[i, 1:-1], p[:, i], side="right")  # noqa: E731
                                 for i in range(n_tiers)], 1)
    prompt_bins = np.searchsorted(tables.edges0[1:-1], prompt_p, side="right")
    return policy, prompt_bins, binned(p_hat), binned(start_p), np.tile([6.0, 1, 2], (n, 1)), accepted


def test_a_stage_0_is_refused_on_inputs_built_without_prompt_bins():
    policy, prompt_bins, tier_bins, cold_bins, cost, accepted = stage0_cold_start_policy()
    assert policy.tables.n_prompt_bins > 1 and (policy.start_table > 0).any()
    common = dict(cold_bins=cold_bins, cost=cost, latency_ms=cost, quality=accepted, n_bins=10)
    no_prompt = ReplayInputs.build(tier_bins, **common, n_prompt_bins=policy.tables.n_prompt_bins)
    assert not no_prompt.has_prompt_bins
    lam = np.array([200.0])
    with pytest.raises(PolicyError, match="prompt_bins: the start table has 10 prompt bins"):
        replay(no_prompt, policy)
    with pytest.raises(PolicyError, match="prompt_bins: the start table has 10 prompt bins"):
        replay_grid(no_prompt, *policy_tables(policy, lam), lambdas=lam)
    # as the engine does
    with pytest.raises(PolicyError, match="prompt bins are None"):
        policy.walk(None, tier_bins, cold_bins=cold_bins)
    # with them, replay and the grid agree with the engine's walk; one prompt bin needs none
    inputs = ReplayInputs.build(tier_bins, prompt_bins=prompt_bins, **common,
                                n_prompt_bins=policy.tables.n_prompt_bins)
    walk = policy.walk(prompt_bins, tier_bins, cold_bins=cold_bins)
    np.testing.assert_array_equal(replay(inputs, policy).start, walk.start)
    start, stop, stop_cold = policy_tables(policy, lam)
    one_bin = ReplayInputs.build(tier_bins, **common)
    assert (replay(one_bin, (start[0, :1], stop[0], stop_cold[0])).start == start[0, 0]).all()


def test_replay_grid_refuses_a_cold_start_policy_on_inputs_without_cold_bins_as_replay_does():
    policy, prompt_bins, tier_bins, cold_bins, cost, accepted = stage0_cold_start_policy()
    common = dict(prompt_bins=prompt_bins, cost=cost, latency_ms=cost, quality=accepted, n_bins=10,
                  n_prompt_bins=policy.tables.n_prompt_bins)
    no_cold = ReplayInputs.build(tier_bins, **common)
    lam = np.array([200.0])
    tables = policy_tables(policy, lam)
    assert tables.stop_cold_tables is not tables.stop_tables  # a cold-start policy's own cold tables
    with pytest.raises(PolicyError, match="cold_bins: these are cold-start tables"):
        replay(no_cold, policy.solve(200.0))
    with pytest.raises(PolicyError, match="cold_bins: these are cold-start tables"):
        replay_grid(no_cold, *tables, lambdas=lam)
    with_cold = ReplayInputs.build(tier_bins, cold_bins=cold_bins, **common)
    grid = replay_grid(with_cold, *tables, lambdas=lam)
    assert grid.mean_quality[0] == pytest.approx(replay(with_cold, policy.solve(200.0)).mean_quality)
    # without a stage 0 that skips (all start at tier 0) no cold bins are read, so none are needed
    replay_grid(no_cold, np.zeros_like(tables.start_tables), tables.stop_tables, tables.stop_cold_tables)


def test_policy_tables_of_a_policy_without_cold_start_tables_need_no_cold_bins():
    policy, bins, latency, quality = synthetic_policy(n=500)
    assert not policy.tables.cold_start
    lambdas = np.geomspace(1e2, 1e6, 5)
    tables = policy_tables(policy, lambdas)
    assert tables.stop_cold_tables is tables.stop_tables
    starts = tables.start_tables.copy()
    starts[:, 0] = 1  # a request skips a tier
    inputs = ReplayInputs.build(bins, cost=latency, latency_ms=latency, quality=quality, n_bins=policy.tables.n_bins)
    replay_grid(inputs, starts, tables.stop_tables, tables.stop_cold_tables, lambdas=lambdas)
    # cold tables of their own are a cold-start policy's: they need cold bins
    with pytest.raises(PolicyError, match="cold_bins"):
        replay_grid(inputs, starts, tables.stop_tables, tables.stop_cold_tables.copy(), lambdas=lambdas)


def test_replay_inputs_refuse_negative_charges_and_quality_outside_0_1():
    bins = np.zeros((2, 3), dtype=np.int64)
    ok = dict(cost=np.ones((2, 3)), latency_ms=np.ones((2, 3)), quality=np.ones((2, 3)))
    bad = np.array([[1.0, 1, 1], [1, -2.0, 1]])
    for name in ("cost", "latency_ms", "cost_cont", "latency_cont_ms"):
        with pytest.raises(PolicyError, match=rf"{name}\[1, 1\] is -2.0: must be >= 0"):
            ReplayInputs.build(bins, **{**ok, name: bad})
    for value in (5.0, -0.5):
        quality = np.ones((2, 3))
        quality[0, 2] = value
        with pytest.raises(PolicyError, match=rf"quality\[0, 2\] is {value}: must be in \[0, 1\]"):
            ReplayInputs.build(bins, **{**ok, "quality": quality}, unlabelled_ok=True)
    # NaN stays "unlabelled" where allowed
    quality = np.array([[0.0, np.nan, 1.0], [0.5, 1.0, 0.0]])
    assert np.isnan(ReplayInputs.build(bins, **{**ok, "quality": quality}, unlabelled_ok=True).quality[0, 1])


def test_replay_inputs_refuse_non_integral_bins_and_take_whole_floats():
    ok = dict(cost=np.ones((1, 2)), latency_ms=np.ones((1, 2)), quality=np.ones((1, 2)))
    with pytest.raises(PolicyError, match="tier_bins holds 3.7: expected integers"):
        ReplayInputs.build(np.array([[0.0, 3.7]]), **ok, n_bins=5)
    with pytest.raises(PolicyError, match="cold_bins holds nan"):
        ReplayInputs.build(np.array([[0, 3]]), cold_bins=np.array([[0, np.nan]]), **ok, n_bins=5)
    with pytest.raises(PolicyError, match="prompt_bins holds 1.5"):
        ReplayInputs.build(np.array([[0, 3]]), prompt_bins=[1.5], **ok, n_bins=5)
    inputs = ReplayInputs.build(np.array([[0.0, 3.0]]), prompt_bins=[1.0], **ok, n_bins=5, n_prompt_bins=2)
    assert inputs.tier_bins.tolist() == [[0, 3]] and inputs.prompt_bins.tolist() == [1]


def test_replay_grid_refuses_mismatched_lambdas_nan_quantiles_and_points_outside_the_grid():
    policy, bins, latency, quality = synthetic_policy(n=500)
    inputs = ReplayInputs.build(bins, cost=latency, latency_ms=latency, quality=quality, n_bins=policy.tables.n_bins)
    lambdas = np.geomspace(1e2, 1e6, 8)
    tables = policy_tables(policy, lambdas)
    with pytest.raises(PolicyError, match=r"lambdas has shape \(5,\): expected \(8,\)"):
        replay_grid(inputs, *tables, lambdas=lambdas[:5])
    for q in ([50.0, np.nan], [50.0, np.inf], [101.0]):
        with pytest.raises(PolicyError, match="quantiles .*: must be finite percentiles in \\[0, 100\\]"):
            replay_grid(inputs, *tables, lambdas=lambdas, quantiles=q)
    grid = replay_grid(inputs, *tables, lambdas=lambdas)
    assert grid.point(-1) == grid.point(7) and grid.point(np.int64(0))["lambda"] == lambdas[0]
    for g in (8, -9, 1.5):
        with pytest.raises(PolicyError, match=rf"grid point g={g!r}: this grid has 8 λ values, g in 0..7"):
            grid.point(g)
