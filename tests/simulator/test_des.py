"""Discrete-event simulation: hand-computed cases (FIFO and priority queues), numba = plain-Python
twin (both queue kinds), equal keys = FIFO, simultaneous joins in request order whatever order
their events were pushed in, = replay at zero load, seeds reproduce, conservation
(every request finishes, KV within capacity, busy within the wall clock), queueing grows with the
arrival rate, Chrome-trace export."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.errors import ConfigError
from asd.simulator import Pools, ReplayInputs, arrival_times, latency_grid, replay, simulate
from asd.simulator import reference as ref
from asd.simulator.des import span_lanes
from asd.simulator.des_nb import heap_pop_nb, heap_push_nb, simulate_cascade_nb
from asd.simulator.latency import latency_ms
from asd.simulator.latency_nb import prefill_ms_nb
from tests.simulator.test_replay import synthetic_policy
from tests.strategies import cascade_instances

COEFFS_2 = np.array([[10.0, 1.0, 2.0, 0.5], [20.0, 2.0, 3.0, 1.0]])


def test_two_requests_batch_of_two_match_numbers_computed_by_hand():
    # One tier, one replica, batch 2. A: prompt 4, 3 tokens, arrives at 0. B: prompt 2, 2 tokens, at 5.
    # it 1 [0, 16]:      A prefill: 10 + 1·4 + 0.5·4 = 16               → A has token 1 (TTFT 16)
    # it 2 [16, 33.5]:   B prefill + A decode: 10 + 1·2 + 2·1 + 0.5·(2 + 4+1) = 17.5 → B token 1, A token 2
    # it 3 [33.5, 52]:   A, B decode: 10 + 2·2 + 0.5·((4+2) + (2+1)) = 18.5 → both done at 52
    pools = Pools.build(COEFFS_2, replicas=1, max_batch=2)
    result = simulate([0, 0], [0, 0], [[4, 4], [2, 2]], [[3, 3], [2, 2]], arrival_ms=[0.0, 5.0], pools=pools)
    np.testing.assert_allclose(result.ttft_ms, [16.0, 33.5 - 5.0])
    np.testing.assert_allclose(result.e2e_ms, [52.0, 52.0 - 5.0])
    assert result.busy_ms.tolist() == [52.0, 0.0]
    assert result.iterations.tolist() == [3, 0]
    assert result.events == 5  # 2 arrivals + 3 iterations
    assert result.max_queue.tolist() == [1, 0]  # B waited from 5 to 16
    assert result.mean_queue[0] == pytest.approx(11.0 / 52.0)
    assert result.max_kv_reserved[0] == 7 + 4
    assert result.utilisation[0] == pytest.approx(1.0)
    # batch 1: B waits for A to finish (45.5 = closed form), then runs alone (26.5)
    serial = simulate([0, 0], [0, 0], [[4, 4], [2, 2]], [[3, 3], [2, 2]], arrival_ms=[0.0, 5.0],
                      pools=Pools.build(COEFFS_2, max_batch=1))
    np.testing.assert_allclose(serial.e2e_ms, [45.5, 45.5 + 26.5 - 5.0])


def test_requests_arriving_at_one_instant_share_an_iteration():
    # c = [10, 0, 0, 0]: every iteration takes 10 ms. Two requests arrive at 0 with 3 tokens each,
    # batch 4: both prefill in [0, 10] and decode in [10, 20] and [20, 30]. The first version
    # started A's iteration as it arrived, before B's arrival at the same instant was in: [30, 40].
    pools = Pools.build([[10.0, 0.0, 0.0, 0.0]], max_batch=4)
    result = simulate([0, 0], [0, 0], [[5], [5]], [[3], [3]], arrival_ms=[0.0, 0.0], pools=pools)
    np.testing.assert_allclose(result.e2e_ms, [30.0, 30.0])
    assert result.tier_admit_ms[:, 0].tolist() == [0.0, 0.0]
    assert result.iterations.tolist() == [3] and result.max_queue.tolist() == [0]


def test_requests_arriving_at_one_instant_are_spread_over_the_free_replicas():
    # Five requests at 0, two idle replicas, batch 4: shared out as a load balancer would, 3 and 2
    # (the first replica takes the odd one), not 4 on the first and 1 on the second, nor 5 in turn.
    pools = Pools.build([[10.0, 0.0, 1.0, 0.0]], replicas=2, max_batch=4)
    result = simulate([0] * 5, [0] * 5, [[5]] * 5, [[3]] * 5, arrival_ms=[0.0] * 5, pools=pools)
    assert result.tier_replica[:, 0].tolist() == [0, 0, 0, 1, 1]
    assert result.tier_admit_ms[:, 0].tolist() == [0.0] * 5 and result.max_queue.tolist() == [0]
    # each replica: a prefill iteration (10 ms) and two decode iterations of its batch (10 + 1·n)
    np.testing.assert_allclose(result.e2e_ms, [10 + 2 * 13.0] * 3 + [10 + 2 * 12.0] * 2)
    # one replica: all four that fit share its iterations, the fifth waits for room
    one = simulate([0] * 5, [0] * 5, [[5]] * 5, [[3]] * 5, arrival_ms=[0.0] * 5,
                   pools=Pools.build([[10.0, 0.0, 1.0, 0.0]], max_batch=4))
    assert one.tier_admit_ms[:, 0].tolist() == [0.0] * 4 + [10 + 2 * 14.0]


def test_a_full_replica_takes_no_share_so_a_replica_with_room_admits_everyone_at_once():
    """At t = 1 replica 0 has three free slots and replica 1 a full batch, both due, and two
    requests arrive: replica 0 took only its share (one), replica 1 could take none, and the
    other waited an iteration (admitted at 2). Found against queueing theory by a hunt."""
    decode = np.array([100, 1, 1, 1, 100, 100, 100, 100, 5, 5])[:, None]
    n = len(decode)
    arrival = np.array([0.0] * 8 + [1.0, 1.0])
    pools = Pools.build(np.array([[1.0, 0, 0, 0]]), replicas=2, max_batch=4)
    result = simulate(np.zeros(n, int), np.zeros(n, int), np.zeros((n, 1), np.int64), decode, arrival_ms=arrival,
                      pools=pools)
    assert result.tier_replica[8:, 0].tolist() == [0, 0]
    assert result.tier_admit_ms[8:, 0].tolist() == [1.0, 1.0]
    zero, tokens = np.zeros(n, np.int64), np.zeros((n, 1), np.int64)
    got, want, _, _ = _run_both({"n_prompt": tokens, "n_decode": decode, "n_prompt_cont": tokens,
                                 "n_decode_cont": decode, "n_kv_cont": tokens, "start": zero, "stop": zero,
                                 "after_start": zero, "coeffs": np.array([[1.0, 0, 0, 0]]), "replicas": np.array([2]),
                                 "max_batch": np.array([4]), "kv_capacity": np.array([10**6]),
                                 "arrival_ms": arrival})
    for g, w in zip(got, want):  # the reference twin shares out the same way
        np.testing.assert_allclose(g, w, equal_nan=True)


def test_an_arrival_at_exactly_an_iteration_end_joins_the_next_iteration_whatever_else_happened():
    # A (5 tokens) arrives at 0; its first iteration ends at 10, when C arrives. Whether the arrival
    # event was pushed before or after that iteration's end (B's arrival at 5 reorders them), C is
    # admitted at 10, into A's second iteration. The first version admitted C at 10 in one run and
    # at 20 in the other.
    pools = Pools.build([[10.0, 0.0, 0.0, 0.0]], max_batch=4)
    alone = simulate([0, 0], [0, 0], [[5], [5]], [[5], [3]], arrival_ms=[0.0, 10.0], pools=pools)
    with_b = simulate([0, 0, 0], [0, 0, 0], [[5]] * 3, [[5], [3], [3]], arrival_ms=[0.0, 5.0, 10.0], pools=pools)
    assert alone.tier_admit_ms[1, 0] == with_b.tier_admit_ms[2, 0] == 10.0
    assert alone.e2e_ms[1] == with_b.e2e_ms[2] == 30.0


def test_a_move_to_the_next_tier_at_exactly_its_iteration_end_joins_that_iteration():
    # Tier 1's replica runs X from 0 ([0, 10], [10, 20]); A finishes tier 0 at 10 and moves up at
    # that instant, joining X's second iteration there, as an arrival at 10 would. X's iteration
    # end was pushed first: the first version formed X's batch before A had moved (A admitted at 20).
    pools = Pools.build([[10.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0]], max_batch=4)
    result = simulate([1, 0], [1, 1], [[5, 5], [5, 5]], [[5, 2], [1, 2]], arrival_ms=[0.0, 0.0], pools=pools)
    assert result.tier_enter_ms[1, 1] == result.tier_admit_ms[1, 1] == 10.0
    assert result.e2e_ms.tolist() == [20.0, 30.0]


def test_continuation_uses_the_continued_token_counts_and_moves_at_once():
    # tier 0 cold (prompt 4, 1 token: 10 + 1.5·4 = 16), then tier 1 verifies prompt + draft (6 tokens)
    # and decodes 2: prefill 20 + 3·6 = 38, one decode 20 + 3 + 1·(6+1) = 30 → 16 + 38 + 30 = 84
    pools = Pools.build(COEFFS_2)
    result = simulate([0], [1], [[4, 99]], [[1, 99]], n_prompt_cont=[[0, 6]], n_decode_cont=[[0, 2]],
                      arrival_ms=[100.0], pools=pools)
    assert result.e2e_ms[0] == pytest.approx(84.0)
    assert result.ttft_ms[0] == pytest.approx(16.0 + 38.0)
    assert result.tier_enter_ms[0, 1] == result.tier_done_ms[0, 0] == 116.0


def test_difficulty_queue_admits_the_lowest_key_first_and_equal_keys_in_arrival_order():
    # One tier, one replica, batch 1; three identical requests (prompt 4, 3 tokens: 45.5 ms alone).
    # A (key 9) arrives at 0 and runs at once; B (key 5) at 1 and C (key 1) at 2 wait. FIFO serves
    # B then C; by priority C (the lower key) goes before B. Equal keys keep the arrival order.
    tokens = dict(n_prompt=[[4]] * 3, n_decode=[[3]] * 3)
    pools = Pools.build(COEFFS_2[:1], max_batch=1)
    run = dict(arrival_ms=[0.0, 1.0, 2.0], pools=pools, **tokens)
    fifo = simulate([0, 0, 0], [0, 0, 0], **run)
    np.testing.assert_allclose(fifo.e2e_ms, [45.5, 91.0 - 1.0, 136.5 - 2.0])
    keyed = simulate([0, 0, 0], [0, 0, 0], priority=[[9.0], [5.0], [1.0]], **run)
    np.testing.assert_allclose(keyed.e2e_ms, [45.5, 136.5 - 1.0, 91.0 - 2.0])
    np.testing.assert_allclose(keyed.tier_admit_ms[:, 0], [0.0, 91.0, 45.5])
    tied = simulate([0, 0, 0], [0, 0, 0], priority=[[3.0], [2.0], [2.0]], **run)
    np.testing.assert_allclose(tied.e2e_ms, fifo.e2e_ms)
    assert keyed.max_queue.tolist() == fifo.max_queue.tolist() == [2]
    assert keyed.mean_queue[0] == pytest.approx(fifo.mean_queue[0])


def test_des_refuses_malformed_priorities():
    pools = Pools.build(COEFFS_2)
    run = dict(arrival_ms=[0.0, 1.0], pools=pools)
    with pytest.raises(ConfigError, match=r"priority: need \(2, 2\) finite keys"):
        simulate([0, 0], [1, 1], [[1, 1]] * 2, [[1, 1]] * 2, priority=[[0.0, 1.0]], **run)
    with pytest.raises(ConfigError, match="priority: need"):
        simulate([0, 0], [1, 1], [[1, 1]] * 2, [[1, 1]] * 2, priority=[[0.0, np.nan], [1.0, 1.0]], **run)


def _run_both(inst, priority=None, order=None):
    """Kernel and reference twin on one instance; order: the arrival order (default by time, ties
    by index)."""
    n, n_tiers = inst["n_prompt"].shape
    pools = Pools.build(inst["coeffs"], replicas=inst["replicas"], max_batch=inst["max_batch"],
                        kv_capacity=inst["kv_capacity"])
    first = np.concatenate([[0], np.cumsum(pools.replicas)]).astype(np.int64)
    order = np.argsort(inst["arrival_ms"], kind="stable") if order is None else order
    args = (inst["arrival_ms"], order, inst["start"], inst["stop"], inst["after_start"], inst["n_prompt"],
            inst["n_decode"], inst["n_prompt_cont"], inst["n_decode_cont"], inst["n_kv_cont"], pools.coeffs, first, pools.max_batch,
            pools.kv_capacity, np.zeros((1, 1)) if priority is None else priority, priority is not None)

    def outputs():
        return [np.empty(n), np.empty(n), np.empty((n, n_tiers)), np.empty((n, n_tiers)), np.empty((n, n_tiers)),
                np.empty((n, n_tiers), np.int64), np.empty(n_tiers), np.empty(n_tiers),
                np.empty((n_tiers, 4), np.int64)]

    got, want = outputs(), outputs()
    got_ret = simulate_cascade_nb(*args, *got)
    want_ret = ref.simulate_cascade(*args, *want)
    return got, want, got_ret, want_ret


@settings(max_examples=150, deadline=None)
@given(cascade_instances())
def test_des_kernel_equals_reference_under_load(inst):
    got, want, got_ret, want_ret = _run_both(inst)
    assert got_ret[0] == want_ret[0]
    assert got_ret[1] == pytest.approx(want_ret[1], rel=1e-12)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-9, equal_nan=True)


def _keys(inst, seed):
    """Priority keys with many ties (0, 1 or 2), so both the key and the join order decide."""
    return np.random.default_rng(seed).integers(0, 3, size=inst["n_prompt"].shape).astype(np.float64)


@settings(max_examples=150, deadline=None)
@given(cascade_instances(), st.integers(0, 2**32 - 1))
def test_des_kernel_equals_reference_with_priority_queues(inst, seed):
    got, want, got_ret, want_ret = _run_both(inst, _keys(inst, seed))
    assert got_ret[0] == want_ret[0]
    assert got_ret[1] == pytest.approx(want_ret[1], rel=1e-12)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-9, equal_nan=True)


@settings(max_examples=100, deadline=None)
@given(cascade_instances())
def test_priority_queues_with_equal_keys_are_fifo(inst):
    fifo, _, fifo_ret, _ = _run_both(inst)
    same, _, same_ret, _ = _run_both(inst, np.full(inst["n_prompt"].shape, 0.25))
    assert same_ret == fifo_ret
    for g, w in zip(same, fifo):
        np.testing.assert_array_equal(g, w)


def test_requests_that_join_a_tier_at_one_instant_enter_its_queue_in_request_order():
    # 1 ms iterations. Tier 0 (two replicas, batch 1): B (index 1) arrives at 0 on replica 0 and
    # decodes 3 tokens, A (index 0) at 1 on replica 1 and decodes 2: both finish at 3 and move up.
    # C (index 2) arrives straight at tier 1 at 3. Tier 1 (one replica, batch 1) serves them
    # A, B, C: by request index, not in the order their events left the heap (C's arrival, then
    # replica 0's end: B, then replica 1's: A, under either heap key).
    pools = Pools.build([[1.0, 0.0, 0.0, 0.0]] * 2, replicas=[2, 1], max_batch=1)
    result = simulate([0, 0, 1], [1, 1, 1], np.zeros((3, 2), np.int64), [[2, 1], [3, 1], [1, 1]],
                      arrival_ms=[1.0, 0.0, 3.0], pools=pools)
    assert result.tier_replica[:, 0].tolist() == [1, 0, -1]
    assert result.tier_enter_ms[:, 1].tolist() == [3.0, 3.0, 3.0]
    assert result.tier_admit_ms[:, 1].tolist() == [3.0, 4.0, 5.0]
    keyed = simulate([0, 0, 1], [1, 1, 1], np.zeros((3, 2), np.int64), [[2, 1], [3, 1], [1, 1]],
                     arrival_ms=[1.0, 0.0, 3.0], pools=pools, priority=np.zeros((3, 2)))
    np.testing.assert_array_equal(keyed.tier_admit_ms, result.tier_admit_ms)


@settings(max_examples=100, deadline=None)
@given(cascade_instances(), st.integers(0, 2**32 - 1), st.booleans())
def test_a_run_does_not_depend_on_the_order_simultaneous_arrivals_are_pushed_in(inst, seed, keyed):
    # The instances' arrivals tie often; shuffling the ties shuffles the push order of the arrival
    # events at an instant, and so the order of everything they start.
    arrival = inst["arrival_ms"]
    shuffled = np.lexsort((np.random.default_rng(seed).permutation(arrival.size), arrival))
    priority = _keys(inst, seed) if keyed else None
    got, want, got_ret, want_ret = _run_both(inst, priority)
    got_s, want_s, got_ret_s, want_ret_s = _run_both(inst, priority, shuffled)
    assert got_ret_s == got_ret and want_ret_s == want_ret
    for a, b in zip(got + want, got_s + want_s):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 1.0, 2.5]), st.integers(0, 1), st.integers(0, 3)), unique=True)
       .flatmap(lambda events: st.permutations(events)))
def test_events_leave_the_heap_by_time_kind_and_argument_whatever_order_they_were_pushed_in(events):
    heap_time, heap_int, heap_state = np.empty(len(events) + 1), np.empty((len(events) + 1, 2), np.int64), \
        np.zeros(1, np.int64)
    for t, kind, arg in events:
        heap_push_nb(heap_time, heap_int, heap_state, t, kind, arg)
    popped = [heap_pop_nb(heap_time, heap_int, heap_state) for _ in events]
    assert [(float(t), int(k), int(a)) for t, k, a in popped] == sorted(events)


def _latencies(inst):
    """Each request alone at each tier, cold and continued, by the cost model's closed form (a
    continuation prefills n_prompt_cont, then decodes from n_kv_cont: prompt + accepted prefix)."""
    cold = latency_grid(inst["coeffs"], inst["n_prompt"], inst["n_decode"])
    kv = inst["n_kv_cont"]
    cont = latency_ms(inst["coeffs"][None, :, :], kv, inst["n_decode_cont"], inst["n_prompt_cont"] - kv, 0)
    return cold, cont


@settings(max_examples=150, deadline=None)
@given(cascade_instances())
def test_des_equals_replay_at_zero_load(inst):
    n, n_tiers = inst["n_prompt"].shape
    cold, cont = _latencies(inst)
    # replay with the walk forced to the instance's paths: start table per request, stop at `stop`
    rows = np.arange(n)
    stop_table = np.zeros((n_tiers, n), dtype=np.uint8)
    stop_table[inst["stop"], rows] = 1
    stop_table[-1] = 1
    inputs = ReplayInputs.build(np.tile(rows[:, None], (1, n_tiers)), prompt_bins=rows, cost=cold, cost_cont=cont,
                                latency_ms=cold, latency_cont_ms=cont, quality=np.zeros((n, n_tiers)), n_bins=n,
                                n_prompt_bins=n)
    replayed = replay(inputs, (inst["start"], stop_table))
    np.testing.assert_array_equal(replayed.stop, inst["stop"])
    # arrivals so far apart that each request is alone in the system
    spacing = 2.0 * (cold.sum(axis=1) + cont.sum(axis=1)).max() + 1.0
    pools = Pools.build(inst["coeffs"], replicas=inst["replicas"], max_batch=inst["max_batch"],
                        kv_capacity=inst["kv_capacity"])
    result = simulate(inst["start"], inst["stop"], inst["n_prompt"], inst["n_decode"],
                      n_prompt_cont=inst["n_prompt_cont"], n_decode_cont=inst["n_decode_cont"],
                      n_kv_cont=inst["n_kv_cont"], arrival_ms=1000.0 + spacing * rows, pools=pools)
    np.testing.assert_allclose(result.e2e_ms, replayed.latency_ms, rtol=1e-9, atol=1e-9)
    # TTFT: every tier before the stop tier in full, then the stop tier's prefill iteration
    s, k = inst["start"], inst["stop"]
    stop_prompt = np.where(k == s, inst["n_prompt"][rows, k], inst["n_prompt_cont"][rows, k])
    before = replayed.latency_ms - np.where(k == s, cold[rows, k], cont[rows, k])
    prefill = np.array([prefill_ms_nb(inst["coeffs"], k[r], stop_prompt[r]) for r in rows])
    np.testing.assert_allclose(result.ttft_ms, before + prefill, rtol=1e-9, atol=1e-9)
    assert result.max_queue.max() == 0
    # alone in the system, the queue order cannot matter
    keyed = simulate(inst["start"], inst["stop"], inst["n_prompt"], inst["n_decode"],
                     n_prompt_cont=inst["n_prompt_cont"], n_decode_cont=inst["n_decode_cont"],
                     n_kv_cont=inst["n_kv_cont"], arrival_ms=1000.0 + spacing * rows, pools=pools,
                     priority=-_latencies(inst)[0])
    np.testing.assert_array_equal(keyed.e2e_ms, result.e2e_ms)


@settings(max_examples=100, deadline=None)
@given(cascade_instances())
def test_des_of_paths_that_skip_tiers_equals_their_sum_at_zero_load(inst):
    """A path that goes from its start tier straight to a later one (fixed-2stage's draft → verify
    on 3+ tiers) visits only those: each request alone costs its start tier cold plus each tier
    from after_start to stop as continued, and the tiers skipped are never entered."""
    n, n_tiers = inst["n_prompt"].shape
    cold, cont = _latencies(inst)
    rows, tiers = np.arange(n), np.arange(n_tiers)[None, :]
    s, k, a = inst["start"], inst["stop"], inst["after_start"]
    ran = (tiers >= a[:, None]) & (tiers <= k[:, None]) & (k > s)[:, None]
    want = cold[rows, s] + np.where(ran, cont, 0.0).sum(axis=1)
    spacing = 2.0 * (cold.sum(axis=1) + cont.sum(axis=1)).max() + 1.0
    pools = Pools.build(inst["coeffs"], replicas=inst["replicas"], max_batch=inst["max_batch"],
                        kv_capacity=inst["kv_capacity"])
    result = simulate(s, k, inst["n_prompt"], inst["n_decode"], n_prompt_cont=inst["n_prompt_cont"],
                      n_decode_cont=inst["n_decode_cont"], n_kv_cont=inst["n_kv_cont"],
                      arrival_ms=1000.0 + spacing * rows, pools=pools, after_start=a)
    np.testing.assert_allclose(result.e2e_ms, want, rtol=1e-9, atol=1e-9)
    visited = ran | (tiers == s[:, None])
    np.testing.assert_array_equal(~np.isnan(result.tier_done_ms), visited)


def test_des_refuses_a_next_tier_outside_the_path():
    pools = Pools.build(np.tile(COEFFS_2[:1], (3, 1)))
    run = dict(arrival_ms=[0.0], pools=pools)
    for after in ([0], [2]):
        with pytest.raises(ConfigError, match="after_start: each request's next tier must lie after its start"):
            simulate([0], [1], [[1, 1, 1]], [[1, 1, 1]], after_start=after, **run)
    # a request that stops where it starts has no next tier: what it says is ignored (its KV check
    # counted the tiers below the start tier, which it never visits)
    small = Pools.build(np.tile(COEFFS_2[:1], (3, 1)), kv_capacity=[1, 1, 100])
    alone = simulate([2], [2], [[50, 50, 3]], [[50, 50, 3]], arrival_ms=[0.0], pools=small, after_start=[0])
    assert np.isnan(alone.tier_done_ms[0, :2]).all() and alone.e2e_ms[0] > 0


def _loaded_run(seed=0, rate=40.0, n=400, **pool_args):
    policy, bins, latency, quality = synthetic_policy(seed=seed, n=n)
    inputs = ReplayInputs.build(bins, cost=latency, latency_ms=latency, quality=quality, n_bins=policy.tables.n_bins)
    walk = replay(inputs, policy.solve(300.0))
    rng = np.random.default_rng(seed)
    n_prompt = rng.integers(50, 800, size=(n, 4))
    n_decode = rng.integers(1, 300, size=(n, 4))
    coeffs = np.array([[5.0, 0.02, 0.05, 1e-4], [7.0, 0.03, 0.08, 2e-4], [12.0, 0.07, 0.15, 4e-4],
                       [20.0, 0.14, 0.3, 8e-4]])
    pools = Pools.build(coeffs, **{"replicas": 1, "max_batch": 8, "kv_capacity": 4000, **pool_args})
    arrivals = arrival_times(n, rate=rate, seed=seed)
    return walk, simulate(walk.start, walk.stop, n_prompt, n_decode, n_prompt_cont=n_prompt // 2,
                          n_decode_cont=n_decode // 2, arrival_ms=arrivals, pools=pools)


def test_des_is_deterministic_for_a_seed():
    _, a = _loaded_run(seed=3)
    _, b = _loaded_run(seed=3)
    for name in ("ttft_ms", "e2e_ms", "tier_admit_ms", "tier_replica", "busy_ms", "mean_queue"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.events == b.events
    np.testing.assert_array_equal(arrival_times(50, rate=3.0, seed=1), arrival_times(50, rate=3.0, seed=1))
    assert not np.array_equal(arrival_times(50, rate=3.0, seed=1), arrival_times(50, rate=3.0, seed=2))


@pytest.mark.parametrize("pool_args", [{}, {"replicas": [1, 2, 1, 3], "max_batch": [4, 2, 8, 1]},
                                       {"kv_capacity": [1100, 1100, 2500, 1100]}])
def test_des_conserves_requests_kv_and_busy_time(pool_args):
    walk, result = _loaded_run(rate=80.0, **pool_args)
    pools = result.pools
    assert np.isfinite(result.e2e_ms).all() and np.isfinite(result.ttft_ms).all()
    assert (result.ttft_ms > 0).all() and (result.ttft_ms <= result.e2e_ms).all()
    assert (result.max_kv_reserved <= pools.kv_capacity).all()
    assert (result.max_batch_seen <= pools.max_batch).all()
    assert (result.busy_ms <= result.end_ms * pools.replicas + 1e-6).all()
    assert ((0 <= result.utilisation) & (result.utilisation <= 1 + 1e-12)).all()
    n_tiers = pools.n_tiers
    visited = (np.arange(n_tiers)[None, :] >= walk.start[:, None]) & (np.arange(n_tiers)[None, :] <= walk.stop[:, None])
    assert (np.isfinite(result.tier_done_ms) == visited).all()
    assert (result.tier_admit_ms[visited] >= result.tier_enter_ms[visited]).all()
    assert (result.tier_done_ms[visited] > result.tier_admit_ms[visited]).all()
    for r in range(walk.start.size):  # a request moves on the instant it finishes a tier
        for i in range(walk.start[r], walk.stop[r]):
            assert result.tier_enter_ms[r, i + 1] == result.tier_done_ms[r, i]
    assert result.events == walk.start.size + result.iterations.sum()
    assert (result.gpu_s <= result.provisioned_gpu_s + 1e-9).all()


def test_queueing_latency_grows_with_the_arrival_rate():
    means = [_loaded_run(rate=rate, max_batch=4)[1] for rate in (0.05, 5.0, 50.0, 500.0)]
    e2e = [m.latency("mean") for m in means]
    queue = [m.mean_queue.sum() for m in means]
    assert e2e == sorted(e2e) and e2e[-1] > 2 * e2e[0]
    assert queue == sorted(queue) and queue[0] < 1e-3 < queue[-1]


def test_arrival_processes():
    gamma = np.diff(arrival_times(20000, process="gamma", rate=10.0, cv=3.0, seed=0))
    assert np.std(gamma) / np.mean(gamma) == pytest.approx(3.0, rel=0.1)
    assert 1e3 / np.mean(gamma) == pytest.approx(10.0, rel=0.1)
    np.testing.assert_allclose(arrival_times(3, process="trace", offsets_s=[5.0, 2.0, 9.5]), [3000.0, 0.0, 7500.0])
    with pytest.raises(ConfigError, match="rate"):
        arrival_times(3, rate=0.0)
    with pytest.raises(ConfigError, match="offsets"):
        arrival_times(2, process="trace", offsets_s=[1.0, np.nan])


def test_unsorted_trace_arrivals_are_served_in_time_order():
    pools = Pools.build(COEFFS_2, max_batch=1)
    result = simulate([0, 0], [0, 0], [[4, 4], [2, 2]], [[3, 3], [2, 2]], arrival_ms=[5.0, 0.0], pools=pools)
    np.testing.assert_allclose(result.e2e_ms, [26.5 + 45.5 - 5.0, 26.5])


def test_des_refuses_requests_that_cannot_fit_a_replica():
    pools = Pools.build(COEFFS_2, kv_capacity=[6, 100])
    with pytest.raises(ConfigError, match="request 0 needs 7 KV tokens at tier 0"):
        simulate([0], [0], [[4, 4]], [[3, 3]], arrival_ms=[0.0], pools=pools)
    with pytest.raises(ConfigError, match="replicas"):
        Pools.build(COEFFS_2, replicas=[1, 0])
    with pytest.raises(ConfigError, match="paths"):
        simulate([1], [0], [[4, 4]], [[3, 3]], arrival_ms=[0.0], pools=pools)


def test_chrome_trace_has_one_complete_event_per_request_and_tier(tmp_path):
    walk, result = _loaded_run(n=60)
    path = result.chrome_trace(tmp_path / "trace.json", tier_names=["8b", "13b", "34b", "70b"])
    events = json.loads(path.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert len(spans) == int((walk.stop - walk.start + 1).sum())
    assert all(e["dur"] > 0 and e["args"]["queued_ms"] >= 0 for e in spans)
    assert {e["args"]["name"] for e in events if e["name"] == "process_name"} == {"8b", "13b", "34b", "70b"}


def _partial_overlaps(spans):
    """Pairs of X events on one (pid, tid) that overlap without one holding the other."""
    found = []
    for a in spans:
        for b in spans:
            if (a["pid"], a["tid"]) == (b["pid"], b["tid"]) and a["ts"] < b["ts"] < a["ts"] + a["dur"] \
                    < b["ts"] + b["dur"]:
                found.append((a["name"], b["name"]))
    return found


def test_chrome_trace_spans_on_one_thread_never_partially_overlap(tmp_path):
    """Chrome nests the complete events of one thread: batched requests on one replica overlap,
    and all on one tid per replica drew wrong (the first version). Each gets a lane of its replica."""
    pools = Pools.build([[0.0, 1.0, 1.0, 1.0]])
    run = simulate([0, 0], [0, 0], [[4], [2]], [[3], [5]], arrival_ms=[0.0, 5.0], pools=pools)
    events = json.loads(run.chrome_trace(tmp_path / "small.json").read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert [(e["ts"], e["ts"] + e["dur"]) for e in spans] == [(0.0, 29000.0), (8000.0, 47000.0)]  # they overlap
    assert not _partial_overlaps(spans) and spans[0]["tid"] != spans[1]["tid"]
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert [threads[e["pid"], e["tid"]] for e in spans] == ["replica 0, lane 0", "replica 0, lane 1"]
    walk, loaded = _loaded_run(n=60)
    events = json.loads(loaded.chrome_trace(tmp_path / "loaded.json").read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert not _partial_overlaps(spans)
    threads = {(e["pid"], e["tid"]) for e in events if e["name"] == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in spans} == threads  # every thread named, none empty
    # no more lanes on a replica than the largest batch it ran
    for i in range(loaded.busy_ms.size):
        assert len({e["tid"] for e in spans if e["pid"] == i}) <= loaded.max_batch_seen[i] * loaded.pools.replicas[i]


def test_chrome_trace_cut_at_its_limit_says_so_in_the_file(tmp_path):
    walk, run = _loaded_run(n=60)
    total = int((walk.stop - walk.start + 1).sum())
    cut = json.loads(run.chrome_trace(tmp_path / "cut.json", limit=10).read_text())
    assert sum(e["ph"] == "X" for e in cut["traceEvents"]) == 10
    assert cut["otherData"]["spans"] == run.spans() == total
    assert cut["otherData"]["spans_written"] == 10 and cut["otherData"]["spans_dropped"] == total - 10
    assert f"only the first 10 of {total} spans" in cut["otherData"]["note"]
    whole = json.loads(run.chrome_trace(tmp_path / "whole.json").read_text())["otherData"]
    assert whole == {"spans": total, "spans_written": total, "spans_dropped": 0}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 20), st.integers(1, 10)), min_size=1, max_size=30))
def test_span_lanes_keep_the_spans_of_one_lane_apart_and_use_no_more_lanes_than_overlap(spans):
    replicas = np.array([k for k, _, _ in spans])
    start = np.array([float(a) for _, a, _ in spans])
    end = start + np.array([float(d) for _, _, d in spans])
    lanes = span_lanes(replicas, start, end)
    for a in range(len(spans)):
        for b in range(a + 1, len(spans)):
            if replicas[a] == replicas[b] and lanes[a] == lanes[b]:
                assert end[a] <= start[b] or end[b] <= start[a]
    for k in set(replicas.tolist()):  # as many lanes as spans in progress at once, at most
        mine = replicas == k
        peak = max(int(((start[mine] <= t) & (t < end[mine])).sum()) for t in start[mine])
        assert lanes[mine].max() + 1 == peak


def test_des_equals_replay_at_zero_load_on_a_policy_walk_with_drafts():
    policy, bins, _, quality = synthetic_policy(seed=5, n=300)
    rng = np.random.default_rng(5)
    n_prompt = rng.integers(20, 900, size=(300, 4))
    n_decode = rng.integers(0, 400, size=(300, 4))
    accepted = np.minimum(rng.integers(0, 200, size=(300, 4)), n_decode)
    coeffs = np.array([[6.0, 0.03, 0.05, 2e-5], [8.0, 0.05, 0.08, 3e-5], [14.0, 0.12, 0.15, 6e-5],
                       [24.0, 0.25, 0.25, 1e-4]])
    cold = latency_grid(coeffs, n_prompt, n_decode)
    cont = latency_grid(coeffs, n_prompt + accepted, n_decode - accepted)
    inputs = ReplayInputs.build(bins, cost=cold, cost_cont=cont, latency_ms=cold, latency_cont_ms=cont,
                                quality=quality, n_bins=policy.tables.n_bins)
    paths = set()
    for lam in (0.0, 1e3, 3e3, 1e4, 3e4, 1e6):
        walk = replay(inputs, policy.solve(lam))
        paths |= set(zip(walk.start.tolist(), walk.stop.tolist()))
        result = simulate(walk.start, walk.stop, n_prompt, n_decode, n_prompt_cont=n_prompt + accepted,
                          n_decode_cont=n_decode - accepted, arrival_ms=1e5 * np.arange(300),
                          pools=Pools.build(coeffs, replicas=2, max_batch=16, kv_capacity=4096))
        np.testing.assert_allclose(result.e2e_ms, walk.latency_ms, rtol=1e-9, atol=1e-9)
        assert result.summary()["latency_ms"]["p95"] == pytest.approx(walk.latency("p95"), rel=1e-9)
    assert len(paths) >= 3  # several (start, stop) paths, so cold and continued tiers both count


def test_the_packages_simulate_stays_the_des_function_after_every_simulator_module_is_imported():
    """`from asd.simulator import simulate` is the discrete-event simulation (the README's API);
    no submodule of the same name may replace it once `asd simulate` has run in the process."""
    import importlib
    import pkgutil

    import asd.simulator as package
    from asd.simulator.des import simulate as des_simulate

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"asd.simulator.{module.name}")
    assert package.simulate is des_simulate
    from asd.simulator import simulate as again

    assert again is des_simulate


def test_a_batch_limit_beyond_every_request_is_the_same_run_without_its_memory():
    """A batch never holds more than every request, so a limit of 10^12 is the run at a limit of
    N — and no longer sizes each replica's slots by it (it was a MemoryError); more replicas
    than any real pool are refused with one ConfigError."""
    _, at_n = _loaded_run(rate=80.0, n=400, max_batch=400, kv_capacity=10**9)
    _, huge = _loaded_run(rate=80.0, n=400, max_batch=10**12, kv_capacity=10**9)
    for name in ("ttft_ms", "e2e_ms", "tier_admit_ms", "tier_replica", "busy_ms", "max_batch_seen"):
        np.testing.assert_array_equal(getattr(at_n, name), getattr(huge, name))
    assert huge.pools.max_batch.tolist() == [10**12] * 4  # reported as given
    with pytest.raises(ConfigError, match=r"replicas = \[10001, 1, 1, 1\]: at most 10000 per tier"):
        Pools.build(COEFFS_2[:1].repeat(4, axis=0), replicas=[10_001, 1, 1, 1])


def test_simulate_refuses_an_empty_run_and_non_integral_paths_or_tokens():
    pools = Pools.build(COEFFS_2)
    empty = np.zeros((0, 2), np.int64)
    with pytest.raises(ConfigError, match=r"start/stop: no requests \(N = 0\)"):
        simulate([], [], empty, empty, arrival_ms=[], pools=pools)
    with pytest.raises(ConfigError, match="start holds 0.5: expected integers"):
        simulate([0.5], [1], [[4, 4]], [[3, 3]], arrival_ms=[0.0], pools=pools)
    with pytest.raises(ConfigError, match="stop holds nan"):
        simulate([0], [np.nan], [[4, 4]], [[3, 3]], arrival_ms=[0.0], pools=pools)
    with pytest.raises(ConfigError, match=r"pools: a ndarray given, expected asd.simulator.Pools \(Pools.build\)"):
        simulate([0], [0], [[4, 4]], [[3, 3]], arrival_ms=[0.0], pools=COEFFS_2)
    with pytest.raises(ConfigError, match="n_decode holds 2.5"):
        simulate([0], [0], [[4, 4]], [[2.5, 3]], arrival_ms=[0.0], pools=pools)
    # whole-number floats are the same run as integers
    as_float = simulate(np.array([0.0]), np.array([1.0]), [[4.0, 4.0]], [[3, 3]], arrival_ms=[0.0], pools=pools)
    as_int = simulate([0], [1], [[4, 4]], [[3, 3]], arrival_ms=[0.0], pools=pools)
    np.testing.assert_array_equal(as_float.e2e_ms, as_int.e2e_ms)


def test_arrival_times_refuse_a_bad_count_rate_or_burstiness():
    for n in (-1, 10.5, "3"):
        with pytest.raises(ConfigError, match=r"arrival count n=.*: must be an integer >= 0"):
            arrival_times(n, rate=20.0)
    for rate in ("20", np.inf, np.nan, None, -1.0):
        with pytest.raises(ConfigError, match="arrival rate .*: must be a finite number > 0"):
            arrival_times(3, rate=rate)
    for cv in (np.inf, np.nan, 0.0, "1"):
        with pytest.raises(ConfigError, match="burstiness cv=.*: must be a finite number > 0"):
            arrival_times(3, process="gamma", rate=20.0, cv=cv)
    assert arrival_times(np.int64(0), rate=np.float32(20.0)).shape == (0,)
    for cv in (1e-9, 1e-170, 5e-324):  # near-deterministic gaps: evenly spaced, not NaN or 1/0
        np.testing.assert_allclose(arrival_times(3, process="gamma", rate=20.0, cv=cv), [50.0, 100.0, 150.0])
    np.testing.assert_array_equal(arrival_times(np.int64(5), rate=np.array(20.0), seed=2),
                                  arrival_times(5, rate=20.0, seed=2))


def test_chrome_trace_refuses_names_or_ids_of_the_wrong_length(tmp_path):
    _, result = _loaded_run(n=20)
    with pytest.raises(ConfigError, match="tier_names has 2 names: expected 4"):
        result.chrome_trace(tmp_path / "t.json", tier_names=["a", "b"])
    with pytest.raises(ConfigError, match="request_ids has 5 ids: expected 20"):
        result.chrome_trace(tmp_path / "t.json", request_ids=[f"r{i}" for i in range(5)])
    assert not (tmp_path / "t.json").exists()
    ids = [f"r{i}" for i in range(20)]
    events = json.loads(result.chrome_trace(tmp_path / "t.json", request_ids=ids).read_text())["traceEvents"]
    assert {e["name"] for e in events if e["ph"] == "X"} <= set(ids)


def test_des_latency_refuses_an_unknown_which():
    _, result = _loaded_run(n=20)
    assert result.latency("p95", "ttft") <= result.latency("p95", "e2e")
    with pytest.raises(ConfigError, match="latency which='ttfb': use one of e2e, ttft"):
        result.latency("p95", which="ttfb")


def test_arrivals_so_far_out_that_floats_round_latencies_away_are_refused():
    """At 1e-12 req/s 600 arrivals reach 6e17 ms, where a float64's step is 128 ms: every DES
    latency came out 0 and every method 'met' τ_max. Refused; 1e-6 req/s still resolves µs."""
    with pytest.raises(ConfigError, match=r"arrivals at rate 1e-12 req/s: 600 requests span .* float step there "
                                          r"\(128 ms\) rounds latencies away"):
        arrival_times(600, rate=1e-12, seed=0)
    fine = arrival_times(600, rate=1e-6, seed=0)
    assert np.spacing(fine[-1]) <= 1e-3
    with pytest.raises(ConfigError, match="arrivals at the trace's offsets"):
        arrival_times(2, process="trace", offsets_s=[0.0, 1e16])


@pytest.mark.parametrize("offsets_s", [[0.0, 1e15], [1e15, 0.0], [5.0, 1e15, 0.0]])
def test_trace_offsets_too_far_apart_are_refused_in_any_order(offsets_s):
    """A trace's offsets are not sorted: the far one first was accepted, and the near request's
    e2e came out 0 (its arrival rounded onto the far one's float grid)."""
    with pytest.raises(ConfigError, match=rf"arrivals at the trace's offsets: {len(offsets_s)} requests span"):
        arrival_times(len(offsets_s), process="trace", offsets_s=offsets_s)
