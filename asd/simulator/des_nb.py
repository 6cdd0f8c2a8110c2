"""Numba discrete-event simulation of a cascade under load: one replica pool per tier,
continuous batching at iteration level (as Vidur and vLLM schedule), FIFO or priority queues,
KV-cache limits.

Arrays: N requests, L tiers, R replicas in all (replica k serves tier replica_tier[k]; a tier's
replicas are contiguous, first_replica (L+1,)). Per request: arrival_ms (N,), arrival_order (N,)
(indices by arrival time, ties by index), start/stop tier (N,) from the replay walk, after_start
(N,) the tier entered after the start tier (start + 1; the stop tier where the path skips the
tiers between, as fixed-2stage's draft → verify on 3+ tiers). Per (request,
tier) int64 token counts: n_prompt/n_decode when the tier runs cold (the start tier), and
n_prompt_cont/n_decode_cont when it continues from the previous tier's draft (prompt + draft
tokens to verify; output tokens minus the accepted prefix), and n_kv_cont the KV a continuation
decodes from after its verify pass (prompt + accepted prefix: the rejected draft tokens are dropped),
as the closed form in latency.py has it. coeffs (L, 4) ms: one iteration
takes c0 + c1·prefill_tokens + c2·decode_seqs + c3·kv_tokens (latency_nb.iteration_ms_nb).

Scheduling (one iteration per replica at a time): at the start of an iteration the replica admits
requests from the head of its tier's queue while the batch has room (max_batch) and the
request's peak KV (prompt + every token it will generate at this tier) fits next to what the batch
has reserved (kv_capacity): reserving the peak means no preemption is ever needed (vLLM preempts
instead). Admitted requests prefill their whole prompt in that iteration (no chunking) and get
their first token; running ones decode one token. kv_tokens of a request in an iteration = its
prompt (a continuation's: prompt + accepted prefix, n_kv_cont) + tokens generated before the
iteration. When a request has all its tokens it frees its
KV and either finishes (its stop tier) or joins the next tier's queue at that instant. Events sit
in an array binary heap ordered by (time, kind, argument): arrivals before iteration ends, then by
arrival number or replica. The heap never holds two events with one key (one arrival, one
iteration per replica), so they leave it in the same order whatever order they were pushed in.
There is no randomness inside: arrivals come from the caller (des.arrival_times, seeded).

Simultaneous events (as Vidur orders them): every event at an instant t (arrivals, iteration ends,
moves to the next tier) is processed before any batch forms at t. Then, in each tier, the replicas
free at t (their iteration ended at t, or idle) form their batches in replica order, each
admitting from the queue head as above, the requests waiting shared out evenly over those with
a free slot (the first take the odd ones; a full batch takes none; the end of
simulate_cascade_nb's loop). So requests arriving together
share an iteration on a single free replica and are spread over several (as a load balancer
would), and an arrival at exactly an iteration's end joins the next iteration whatever order
the two events were pushed in. The requests that join one tier at one instant (arrivals, moves
up from any of the replicas below) enter its queue in request-index order, not in the order their
events left the heap: a run depends on the requests, not on how their events were scheduled.

Queues: FIFO, or with by_priority each tier's queue is a binary heap ordered by (priority[r, tier],
instant of joining, request index), lowest first, so equal keys leave in the FIFO queue's order.
The head is still admitted only while it fits (no overtaking by a smaller request behind it). The FIFO path is the plain array it
always was (the DES hour runs within 2% of the kernel before priority queues). `asd simulate
--scheduler difficulty` (job.difficulty_priority) keys each request by its predicted chance of
failing at the tier it joins: the protocol's difficulty batching (its extension 4), as a
shortest-expected-remaining-work rule.

TTFT: from arrival to the end of the prefill iteration at the request's stop tier (the first
token of the answer it is served with). End-to-end: arrival to the last token at the stop tier.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from asd.simulator.enums import ARRIVAL, ITERATION_END
from asd.simulator.latency_nb import iteration_ms_nb

# Per-replica state replica_state (R, 8): batch size, KV reserved, busy flag, index of its next
# iteration, and over the requests in its batch Σ prompt tokens and Σ admission iteration — so an
# iteration's kv_tokens = Σ (prompt + generated) is O(1): generated = iteration − admission —,
# how many were admitted by the running iteration (the batch's tail: only they can see a first
# token) and the earliest final iteration in the batch (no scan of the batch until then).
REP_BATCH, REP_KV, REP_BUSY, REP_ITER, REP_SUM_PROMPT, REP_SUM_ADMIT, REP_NEW, REP_MIN_FINAL = range(8)
NEVER = 2**62
# replica_state[k, REP_BUSY]: idle (no batch; its queue was empty when it last formed one),
# running an iteration, or due: its iteration ended at the current instant and it forms its next
# batch once every event at that instant is in.
IDLE, RUNNING, DUE = 0, 1, 2
# pending [due replicas, tiers joined] at the current instant: counts of the lists due_replicas
# (R,) and joined_tiers (L,), flagged per tier by tier_pending (L, 3) [joined?, due replicas,
# FIFO queue tail before the instant's first join: where its joins, to be sorted, begin].
P_DUE, P_JOINED = range(2)
# Per-slot state slots (5, R, max_batch): request, admission iteration (its prefill), final
# iteration (prefill + max(n_decode, 1) − 1), prompt tokens, peak KV (prompt + n_decode).
S_REQ, S_ADMIT, S_FINAL, S_PROMPT, S_PEAK = range(5)
# Per-tier counters tier_counts (L, 4).
T_ITERATIONS, T_MAX_QUEUE, T_MAX_KV, T_MAX_BATCH = range(4)
# Heap integer columns heap_int (capacity, 2); heap_state = [size].
H_KIND, H_ARG = range(2)


@njit(cache=True, inline="always")
def _event_before(heap_time, heap_int, i, t, kind, arg):
    """Does heap slot i leave before the event (t, kind, arg): time, then kind, then argument?"""
    ti = heap_time[i]
    if ti != t:
        return ti < t
    ki = heap_int[i, H_KIND]
    return ki < kind or (ki == kind and heap_int[i, H_ARG] < arg)


@njit(cache=True, inline="always")
def heap_push_nb(heap_time, heap_int, heap_state, t, kind, arg):
    """Push an event (t, kind, arg)."""
    i = heap_state[0]
    heap_state[0] = i + 1
    while i > 0:
        parent = (i - 1) >> 1
        if _event_before(heap_time, heap_int, parent, t, kind, arg):
            break
        heap_time[i] = heap_time[parent]
        heap_int[i, H_KIND] = heap_int[parent, H_KIND]
        heap_int[i, H_ARG] = heap_int[parent, H_ARG]
        i = parent
    heap_time[i] = t
    heap_int[i, H_KIND] = kind
    heap_int[i, H_ARG] = arg


@njit(cache=True, inline="always")
def heap_pop_nb(heap_time, heap_int, heap_state):
    """Remove the earliest event (time, kind, arg); returns it."""
    t, kind, arg = heap_time[0], heap_int[0, H_KIND], heap_int[0, H_ARG]
    size = heap_state[0] - 1
    heap_state[0] = size
    if size > 0:
        lt, lkind, larg = heap_time[size], heap_int[size, H_KIND], heap_int[size, H_ARG]
        i = 0
        while True:
            child = 2 * i + 1
            if child >= size:
                break
            right = child + 1
            if right < size and _event_before(heap_time, heap_int, right, heap_time[child], heap_int[child, H_KIND],
                                              heap_int[child, H_ARG]):
                child = right
            if not _event_before(heap_time, heap_int, child, lt, lkind, larg):
                break
            heap_time[i] = heap_time[child]
            heap_int[i, H_KIND] = heap_int[child, H_KIND]
            heap_int[i, H_ARG] = heap_int[child, H_ARG]
            i = child
        heap_time[i] = lt
        heap_int[i, H_KIND] = lkind
        heap_int[i, H_ARG] = larg
    return t, kind, arg


@njit(cache=True, inline="always")
def note_queue_nb(tier, t, queue_ends, queue_area, queue_since):
    """Accumulate the time-weighted queue length up to t before the queue changes."""
    queue_area[tier] += (queue_ends[tier, 1] - queue_ends[tier, 0]) * (t - queue_since[tier])
    queue_since[tier] = t


@njit(cache=True, inline="always")
def _precedes(key_a, seq_a, r_a, key_b, seq_b, r_b):
    """Does request r_a leave a priority queue before r_b: key, then instant of joining, then
    request index (the order a FIFO queue gives them)?"""
    return key_a < key_b or (key_a == key_b and (seq_a < seq_b or (seq_a == seq_b and r_a < r_b)))


@njit(cache=True, inline="always")
def _heap_put(queue, queue_order, tier, i, r, key, seq):
    queue[tier, i] = r
    queue_order[tier, i, 0] = key
    queue_order[tier, i, 1] = seq


@njit(cache=True)
def heap_queue_push_nb(tier, r, key, seq, size, queue, queue_order):
    """r joins tier's priority queue (a heap of `size` in slots 0..size-1) with (key, seq)."""
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        pk, ps, pr = queue_order[tier, parent, 0], queue_order[tier, parent, 1], queue[tier, parent]
        if _precedes(pk, ps, pr, key, seq, r):
            break
        _heap_put(queue, queue_order, tier, i, pr, pk, ps)
        i = parent
    _heap_put(queue, queue_order, tier, i, r, key, seq)


@njit(cache=True)
def heap_queue_pop_nb(tier, size, queue, queue_order):
    """Remove slot 0 of tier's priority queue (a heap of `size`, at least 1): the last slot
    sifts down from the root."""
    size -= 1
    if size == 0:
        return
    r, key, seq = queue[tier, size], queue_order[tier, size, 0], queue_order[tier, size, 1]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _precedes(queue_order[tier, child + 1, 0], queue_order[tier, child + 1, 1],
                                          queue[tier, child + 1], queue_order[tier, child, 0],
                                          queue_order[tier, child, 1], queue[tier, child]):
            child += 1
        ck, cs, cr = queue_order[tier, child, 0], queue_order[tier, child, 1], queue[tier, child]
        if _precedes(key, seq, r, ck, cs, cr):
            break
        _heap_put(queue, queue_order, tier, i, cr, ck, cs)
        i = child
    _heap_put(queue, queue_order, tier, i, r, key, seq)


@njit(cache=True, inline="always")
def sort_joins_nb(queue, tier, lo, hi):
    """Sort queue[tier, lo:hi] (one instant's joins) by request index. Insertion sort: the
    joins come in runs already sorted (arrivals; a batch admitted from a sorted queue), so it
    is near linear, and it allocates nothing."""
    for a in range(lo + 1, hi):
        r = queue[tier, a]
        b = a - 1
        while b >= lo and queue[tier, b] > r:
            queue[tier, b + 1] = queue[tier, b]
            b -= 1
        queue[tier, b + 1] = r


@njit(cache=True)
def start_iteration_nb(k, t, limit, replica_tier, coeffs, max_batch, kv_capacity, start, n_prompt, n_decode,
                       n_prompt_cont, n_decode_cont, n_kv_cont, queue, queue_order, by_priority, queue_ends,
                       queue_area, queue_since, slots, replica_state, tier_admit_ms, tier_replica, busy_ms,
                       tier_counts, heap_time, heap_int, heap_state):
    """Admit at most `limit` requests from the queue head (stop at the first that does not fit),
    then run one iteration of replica k's batch from time t; an empty batch leaves the replica idle."""
    tier = replica_tier[k]
    n_batch = replica_state[k, REP_BATCH]
    kv = replica_state[k, REP_KV]
    it = replica_state[k, REP_ITER]
    # requests already in the batch decode one token each; kv = Σ prompt + Σ (it − admission)
    decode_seqs = n_batch
    kv_tokens = replica_state[k, REP_SUM_PROMPT] + n_batch * it - replica_state[k, REP_SUM_ADMIT]
    prefill_tokens = 0
    min_final = replica_state[k, REP_MIN_FINAL]
    head, tail = queue_ends[tier, 0], queue_ends[tier, 1]
    if head < tail:
        note_queue_nb(tier, t, queue_ends, queue_area, queue_since)
    admitted = 0
    while head < tail and n_batch < max_batch[tier] and admitted < limit:
        r = queue[tier, 0] if by_priority else queue[tier, head]  # a priority queue's head is its heap root
        if tier == start[r]:
            p, d = n_prompt[r, tier], n_decode[r, tier]
            base = p
        else:  # the verify pass prefills prompt + draft; decoding goes on from prompt + accepted
            p, d = n_prompt_cont[r, tier], n_decode_cont[r, tier]
            base = n_kv_cont[r, tier]
        if kv + p + d > kv_capacity[tier]:
            break
        if by_priority:
            heap_queue_pop_nb(tier, tail - head, queue, queue_order)
        head += 1
        kv += p + d
        slots[S_REQ, k, n_batch] = r
        slots[S_ADMIT, k, n_batch] = it
        slots[S_FINAL, k, n_batch] = it + max(d, 1) - 1
        min_final = min(min_final, it + max(d, 1) - 1)
        slots[S_PROMPT, k, n_batch] = base
        slots[S_PEAK, k, n_batch] = p + d
        replica_state[k, REP_SUM_PROMPT] += base
        replica_state[k, REP_SUM_ADMIT] += it
        n_batch += 1
        admitted += 1
        prefill_tokens += p
        kv_tokens += p
        tier_admit_ms[r, tier] = t
        tier_replica[r, tier] = k
    queue_ends[tier, 0] = head
    replica_state[k, REP_NEW] = n_batch - decode_seqs
    replica_state[k, REP_MIN_FINAL] = min_final
    replica_state[k, REP_BATCH] = n_batch
    replica_state[k, REP_KV] = kv
    if n_batch == 0:
        replica_state[k, REP_BUSY] = IDLE
        return
    dt = iteration_ms_nb(coeffs, tier, prefill_tokens, decode_seqs, kv_tokens)
    busy_ms[tier] += dt
    tier_counts[tier, T_ITERATIONS] += 1
    tier_counts[tier, T_MAX_KV] = max(tier_counts[tier, T_MAX_KV], kv)
    tier_counts[tier, T_MAX_BATCH] = max(tier_counts[tier, T_MAX_BATCH], n_batch)
    replica_state[k, REP_BUSY] = RUNNING
    heap_push_nb(heap_time, heap_int, heap_state, t + dt, ITERATION_END, k)


@njit(cache=True)
def simulate_cascade_nb(arrival_ms, arrival_order, start, stop, after_start, n_prompt, n_decode, n_prompt_cont,
                        n_decode_cont, n_kv_cont, coeffs, first_replica, max_batch, kv_capacity, priority, by_priority,
                        ttft_ms, finish_ms, tier_enter_ms, tier_admit_ms, tier_done_ms, tier_replica,
                        busy_ms, queue_area, tier_counts):
    """Run the cascade to completion. Fills per request ttft_ms, finish_ms (absolute, ms) (N,),
    per (request, tier) enter/admit/done times (NaN where not visited) and replica (-1), per tier
    busy_ms (L,), queue_area (L,) (∫ queue length dt) and tier_counts (L, 4): iterations, max
    queue length, max KV reserved on one replica, max batch. Returns (events, end time in ms)."""
    n = arrival_ms.shape[0]
    n_tiers = coeffs.shape[0]
    n_replicas = first_replica[n_tiers]
    replica_tier = np.empty(n_replicas, dtype=np.int64)
    for i in range(n_tiers):
        for k in range(first_replica[i], first_replica[i + 1]):
            replica_tier[k] = i
    width = 1
    for i in range(n_tiers):
        width = max(width, max_batch[i])
    slots = np.zeros((5, n_replicas, width), dtype=np.int64)
    replica_state = np.zeros((n_replicas, 8), dtype=np.int64)
    replica_state[:, REP_MIN_FINAL] = NEVER
    queue = np.empty((n_tiers, max(n, 1)), dtype=np.int64)
    # (key, join order) per heap slot: only a priority queue reads them
    queue_order = np.empty((n_tiers, max(n, 1) if by_priority else 1, 2))
    queue_ends = np.zeros((n_tiers, 2), dtype=np.int64)
    queue_since = np.zeros(n_tiers)
    heap_time = np.empty(n_replicas + 2)
    heap_int = np.empty((n_replicas + 2, 2), dtype=np.int64)
    heap_state = np.zeros(1, dtype=np.int64)
    pending = np.zeros(2, dtype=np.int64)
    due_replicas = np.empty(n_replicas, dtype=np.int64)
    joined_tiers = np.empty(n_tiers, dtype=np.int64)
    tier_pending = np.zeros((n_tiers, 3), dtype=np.int64)
    for i in range(n_tiers):
        busy_ms[i] = 0.0
        queue_area[i] = 0.0
        for c in range(4):
            tier_counts[i, c] = 0
    for r in range(n):
        ttft_ms[r] = np.nan
        finish_ms[r] = np.nan
        for i in range(n_tiers):
            tier_enter_ms[r, i] = np.nan
            tier_admit_ms[r, i] = np.nan
            tier_done_ms[r, i] = np.nan
            tier_replica[r, i] = -1
    if n == 0:
        return 0, 0.0
    # Arrivals enter the heap one at a time (the next one when the previous pops): the heap
    # holds at most one arrival plus one iteration per replica.
    heap_push_nb(heap_time, heap_int, heap_state, arrival_ms[arrival_order[0]], ARRIVAL, 0)
    events = 0
    instant = 0  # batch formations so far: a priority queue's join order, ties by request index
    t = 0.0
    while heap_state[0] > 0:
        t, kind, arg = heap_pop_nb(heap_time, heap_int, heap_state)
        events += 1
        if kind == ARRIVAL:
            if arg + 1 < n:
                heap_push_nb(heap_time, heap_int, heap_state, arrival_ms[arrival_order[arg + 1]], ARRIVAL, arg + 1)
            r = arrival_order[arg]
            enqueue_nb(r, start[r], t, instant, by_priority, priority, queue, queue_order, queue_ends, queue_area,
                       queue_since, tier_enter_ms, pending, joined_tiers, tier_pending)
        else:
            # ITERATION_END of replica k: every request in its batch has one more token.
            k = arg
            tier = replica_tier[k]
            it = replica_state[k, REP_ITER]
            replica_state[k, REP_ITER] = it + 1
            replica_state[k, REP_BUSY] = DUE
            due_replicas[pending[P_DUE]] = k
            pending[P_DUE] += 1
            tier_pending[tier, 1] += 1
            n_batch = replica_state[k, REP_BATCH]
            for j in range(n_batch - replica_state[k, REP_NEW], n_batch):
                if tier == stop[slots[S_REQ, k, j]]:
                    ttft_ms[slots[S_REQ, k, j]] = t  # its prefill iteration gave the answer's first token
            if replica_state[k, REP_MIN_FINAL] <= it:  # someone finishes (else no scan)
                kept = 0
                min_final = NEVER
                for j in range(n_batch):
                    if slots[S_FINAL, k, j] == it:
                        r = slots[S_REQ, k, j]
                        replica_state[k, REP_KV] -= slots[S_PEAK, k, j]
                        replica_state[k, REP_SUM_PROMPT] -= slots[S_PROMPT, k, j]
                        replica_state[k, REP_SUM_ADMIT] -= slots[S_ADMIT, k, j]
                        tier_done_ms[r, tier] = t
                        if tier == stop[r]:
                            finish_ms[r] = t
                        else:
                            # the next tier: after the start tier where the path skips (fixed-2stage),
                            # else the one above
                            nxt = after_start[r] if tier == start[r] else tier + 1
                            enqueue_nb(r, nxt, t, instant, by_priority, priority, queue, queue_order, queue_ends,
                                       queue_area, queue_since, tier_enter_ms, pending, joined_tiers, tier_pending)
                    else:
                        min_final = min(min_final, slots[S_FINAL, k, j])
                        if kept != j:
                            for c in range(5):
                                slots[c, k, kept] = slots[c, k, j]
                        kept += 1
                replica_state[k, REP_MIN_FINAL] = min_final
                replica_state[k, REP_BATCH] = kept
        if heap_state[0] > 0 and heap_time[0] == t:
            continue  # another event at t: batches form once every one is in
        # Batches form at t: in each tier the replicas free at t (due, or idle where requests
        # joined) in replica order, whatever order the events came in. Written out here: a
        # function call per event, passing its 31 arrays, doubled the DES hour (3.0 s, not 1.5).
        n_due = pending[P_DUE]
        for a in range(1, n_due):  # insertion sort: usually one replica is due at a time
            k = due_replicas[a]
            b = a - 1
            while b >= 0 and due_replicas[b] > k:
                due_replicas[b + 1] = due_replicas[b]
                b -= 1
            due_replicas[b + 1] = k
        # tiers that requests joined: the requests waiting are shared out evenly over the free
        # replicas in order (as a load balancer spreads them), until the queue is empty and none is due
        for j in range(pending[P_JOINED]):
            tier = joined_tiers[j]
            if not by_priority:  # the instant's joins in request order (a priority queue's key has it)
                sort_joins_nb(queue, tier, tier_pending[tier, 2], queue_ends[tier, 1])
            # only replicas with a free slot share the queue: a full one's share would wait an
            # iteration while an earlier replica still had room
            n_free = 0
            for k in range(first_replica[tier], first_replica[tier + 1]):
                if replica_state[k, REP_BUSY] != RUNNING and replica_state[k, REP_BATCH] < max_batch[tier]:
                    n_free += 1
            for k in range(first_replica[tier], first_replica[tier + 1]):
                if queue_ends[tier, 0] == queue_ends[tier, 1] and tier_pending[tier, 1] == 0:
                    break
                state = replica_state[k, REP_BUSY]
                if state != RUNNING:
                    if state == DUE:
                        tier_pending[tier, 1] -= 1
                    share = 0  # a full batch runs its iteration and admits nobody
                    if replica_state[k, REP_BATCH] < max_batch[tier]:
                        waiting = queue_ends[tier, 1] - queue_ends[tier, 0]
                        share = (waiting + n_free - 1) // n_free  # ceil: the first free replicas take the odd ones
                        n_free -= 1
                    start_iteration_nb(k, t, share, replica_tier, coeffs, max_batch, kv_capacity, start, n_prompt,
                                       n_decode, n_prompt_cont, n_decode_cont, n_kv_cont, queue, queue_order,
                                       by_priority, queue_ends, queue_area, queue_since, slots, replica_state,
                                       tier_admit_ms, tier_replica, busy_ms, tier_counts, heap_time, heap_int,
                                       heap_state)
        # the other due replicas (tiers nobody joined), in replica order
        for j in range(n_due):
            k = due_replicas[j]
            if replica_state[k, REP_BUSY] == DUE:
                tier_pending[replica_tier[k], 1] -= 1
                start_iteration_nb(k, t, NEVER, replica_tier, coeffs, max_batch, kv_capacity, start, n_prompt, n_decode,
                                   n_prompt_cont, n_decode_cont, n_kv_cont, queue, queue_order, by_priority,
                                   queue_ends, queue_area, queue_since, slots, replica_state, tier_admit_ms,
                                   tier_replica, busy_ms, tier_counts, heap_time, heap_int, heap_state)
        # Measured after the free replicas took their share: a request admitted at once never waited.
        for j in range(pending[P_JOINED]):
            tier = joined_tiers[j]
            tier_pending[tier, 0] = 0
            tier_counts[tier, T_MAX_QUEUE] = max(tier_counts[tier, T_MAX_QUEUE],
                                                 queue_ends[tier, 1] - queue_ends[tier, 0])
        pending[P_DUE] = 0
        pending[P_JOINED] = 0
        instant += 1
    for i in range(n_tiers):
        note_queue_nb(i, t, queue_ends, queue_area, queue_since)
    return events, t


@njit(cache=True)
def enqueue_nb(r, tier, t, instant, by_priority, priority, queue, queue_order, queue_ends, queue_area, queue_since,
               tier_enter_ms, pending, joined_tiers, tier_pending):
    """Request r joins tier's queue at t; the tier's free replicas take it when batches form at t."""
    note_queue_nb(tier, t, queue_ends, queue_area, queue_since)
    tail = queue_ends[tier, 1]
    if by_priority:  # equal keys: the earlier instant first, so first come, first served
        heap_queue_push_nb(tier, r, priority[r, tier], instant, tail - queue_ends[tier, 0], queue, queue_order)
    else:
        queue[tier, tail] = r
    queue_ends[tier, 1] = tail + 1
    tier_enter_ms[r, tier] = t
    if tier_pending[tier, 0] == 0:
        tier_pending[tier, 0] = 1
        tier_pending[tier, 2] = tail
        joined_tiers[pending[P_JOINED]] = tier
        pending[P_JOINED] += 1
