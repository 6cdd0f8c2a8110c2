"""Plain-Python twins of the simulator kernels (same names minus `_nb`, same arguments and
outputs): the ground truth of the parity tests and the baseline of benchmarks/bench_simulator.py.
"""

from __future__ import annotations

import heapq
import math

from asd.simulator.enums import ARRIVAL, ITERATION_END

IDLE, RUNNING, DUE = 0, 1, 2  # a replica: no batch, an iteration in flight, its iteration ended now


# -- latency_nb ---------------------------------------------------------------------------------
def iteration_ms(coeffs, tier, prefill_tokens, decode_seqs, kv_tokens):
    return (coeffs[tier, 0] + coeffs[tier, 1] * prefill_tokens + coeffs[tier, 2] * decode_seqs
            + coeffs[tier, 3] * kv_tokens)


def prefill_ms(coeffs, tier, n_prompt):
    return coeffs[tier, 0] + (coeffs[tier, 1] + coeffs[tier, 3]) * n_prompt


def request_latency_ms(coeffs, tier, n_prompt, n_out):
    steps = max(n_out, 1) - 1
    return (prefill_ms(coeffs, tier, n_prompt)
            + steps * (coeffs[tier, 0] + coeffs[tier, 2] + coeffs[tier, 3] * n_prompt)
            + coeffs[tier, 3] * (steps * (steps + 1) / 2.0))


def latency_grid(coeffs, n_prompt, n_out, out):
    for r in range(n_prompt.shape[0]):
        for i in range(n_prompt.shape[1]):
            out[r, i] = request_latency_ms(coeffs, i, int(n_prompt[r, i]), int(n_out[r, i]))


# -- replay_nb ----------------------------------------------------------------------------------
def walk_path(r, prompt_bins, tier_bins, cold_bins, start_table, stop_table, stop_cold_table, cost, cost_cont,
              latency_ms, latency_cont_ms):
    """Walk first, then sum the path (the kernel fuses both; same order of additions)."""
    last = tier_bins.shape[1] - 1
    s = int(start_table[prompt_bins[r]])
    k = last
    stop_here = stop_table[0, tier_bins[r, 0]] if s == 0 else stop_cold_table[s, cold_bins[r, s]]
    if s >= last or stop_here:
        k = s
    else:
        for i in range(s + 1, last):
            if stop_table[i, tier_bins[r, i]]:
                k = i
                break
    total_cost, total_latency = cost[r, s], latency_ms[r, s]
    for i in range(s + 1, k + 1):
        total_cost += cost_cont[r, i]
        total_latency += latency_cont_ms[r, i]
    return s, k, total_cost, total_latency


def replay_requests(prompt_bins, tier_bins, cold_bins, start_table, stop_table, stop_cold_table, cost, cost_cont,
                    latency_ms, latency_cont_ms, quality, out_start, out_stop, out_cost, out_latency,
                    out_quality):
    for r in range(tier_bins.shape[0]):
        s, k, total_cost, total_latency = walk_path(r, prompt_bins, tier_bins, cold_bins, start_table, stop_table,
                                                    stop_cold_table, cost, cost_cont, latency_ms, latency_cont_ms)
        out_start[r] = s
        out_stop[r] = k
        out_cost[r] = total_cost
        out_latency[r] = total_latency
        out_quality[r] = quality[r, k]


def sorted_percentile(sorted_values, q):
    n = len(sorted_values)
    pos = q / 100.0 * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def replay_grid_stats(prompt_bins, tier_bins, cold_bins, start_tables, stop_tables, stop_cold_tables, cost, cost_cont,
                      latency_ms, latency_cont_ms, quality, quantiles, out_mean_cost, out_mean_latency,
                      out_mean_quality, out_start_counts, out_stop_counts, out_latency_q):
    n, n_tiers = tier_bins.shape
    for g in range(start_tables.shape[0]):
        lat = []
        sums = [0.0, 0.0, 0.0]
        out_start_counts[g, :] = 0
        out_stop_counts[g, :] = 0
        for r in range(n):
            s, k, path_cost, latency = walk_path(r, prompt_bins, tier_bins, cold_bins, start_tables[g],
                                                 stop_tables[g], stop_cold_tables[g], cost, cost_cont, latency_ms, latency_cont_ms)
            out_start_counts[g, s] += 1
            out_stop_counts[g, k] += 1
            sums[0] += path_cost
            lat.append(latency)
            sums[1] += latency
            sums[2] += quality[r, k]
        out_mean_cost[g] = sums[0] / n
        out_mean_latency[g] = sums[1] / n
        out_mean_quality[g] = sums[2] / n
        lat.sort()
        for j, q in enumerate(quantiles):
            out_latency_q[g, j] = sorted_percentile(lat, q)


# -- des_nb -------------------------------------------------------------------------------------
def simulate_cascade(arrival_ms, arrival_order, start, stop, after_start, n_prompt, n_decode, n_prompt_cont,
                     n_decode_cont, n_kv_cont, coeffs, first_replica, max_batch, kv_capacity, priority, by_priority, ttft_ms,
                     finish_ms, tier_enter_ms, tier_admit_ms, tier_done_ms, tier_replica, busy_ms, queue_area,
                     tier_counts):
    """The same event loop with heapq and Python lists (see des_nb for the model): a queue is a
    list read from a moving head (FIFO), or a heapq of (priority, instant of joining, request);
    events pop by (time, kind, argument); batches form once every event at an instant is in
    (form_batches), the instant's joins of a FIFO queue sorted by request first."""
    n = len(arrival_ms)
    n_tiers = coeffs.shape[0]
    replica_tier = [i for i in range(n_tiers) for _ in range(first_replica[i], first_replica[i + 1])]
    batches = [[] for _ in replica_tier]  # [request, generated, prompt, decode, new, KV base]
    kv_reserved = [0] * len(replica_tier)
    state = [IDLE] * len(replica_tier)
    due = []  # replicas whose iteration ended at the current instant
    joined = []  # tiers a request joined at the current instant, in order of first join
    first_join = [0] * n_tiers  # FIFO: where the current instant's joins of each tier begin
    instant = [0]  # batch formations so far
    queues = [[] for _ in range(n_tiers)]  # FIFO: every request that joined; priority: the heap
    heads = [0] * n_tiers  # FIFO: how many left the queue
    queue_since = [0.0] * n_tiers
    heap = []
    busy_ms[:] = 0.0
    queue_area[:] = 0.0
    tier_counts[:] = 0
    ttft_ms[:] = math.nan
    finish_ms[:] = math.nan
    tier_enter_ms[:] = math.nan
    tier_admit_ms[:] = math.nan
    tier_done_ms[:] = math.nan
    tier_replica[:] = -1

    def push(t, kind, arg):
        heapq.heappush(heap, (t, kind, arg))

    def queue_length(tier):
        return len(queues[tier]) - heads[tier]

    def queue_head(tier):
        return queues[tier][0][2] if by_priority else queues[tier][heads[tier]]

    def queue_pop(tier):
        if by_priority:
            heapq.heappop(queues[tier])
        else:
            heads[tier] += 1

    def queue_push(tier, r):
        if by_priority:
            heapq.heappush(queues[tier], (float(priority[r, tier]), instant[0], r))
        else:
            queues[tier].append(r)

    def note_queue(tier, t):
        queue_area[tier] += queue_length(tier) * (t - queue_since[tier])
        queue_since[tier] = t

    def start_iteration(k, t, limit=math.inf):
        tier = replica_tier[k]
        batch = batches[k]
        if queue_length(tier):
            note_queue(tier, t)
        admitted = 0
        while queue_length(tier) and len(batch) < max_batch[tier] and admitted < limit:
            r = queue_head(tier)
            if tier == start[r]:
                p, d = int(n_prompt[r, tier]), int(n_decode[r, tier])
                base = p
            else:  # decoding goes on from prompt + accepted prefix after the verify pass
                p, d = int(n_prompt_cont[r, tier]), int(n_decode_cont[r, tier])
                base = int(n_kv_cont[r, tier])
            if kv_reserved[k] + p + d > kv_capacity[tier]:
                break
            queue_pop(tier)
            kv_reserved[k] += p + d
            batch.append([r, 0, p, d, True, base])
            admitted += 1
            tier_admit_ms[r, tier] = t
            tier_replica[r, tier] = k
        if not batch:
            state[k] = IDLE
            return
        prefill = sum(s[2] for s in batch if s[4])
        decode = sum(1 for s in batch if not s[4])
        kv = sum(s[2] if s[4] else s[5] + s[1] for s in batch)
        dt = iteration_ms(coeffs, tier, prefill, decode, kv)
        busy_ms[tier] += dt
        tier_counts[tier, 0] += 1
        tier_counts[tier, 2] = max(tier_counts[tier, 2], kv_reserved[k])
        tier_counts[tier, 3] = max(tier_counts[tier, 3], len(batch))
        state[k] = RUNNING
        push(t + dt, ITERATION_END, k)

    def enqueue(r, tier, t):
        note_queue(tier, t)
        if tier not in joined:
            joined.append(tier)
            first_join[tier] = len(queues[tier])
        queue_push(tier, r)
        tier_enter_ms[r, tier] = t

    def form_batches(t):
        """Every free replica of a tier joined at t, the waiting requests shared out evenly over
        them (the first take the odd ones), then every other due one, in replica order."""
        for tier in joined:
            if not by_priority:
                queues[tier][first_join[tier]:] = sorted(queues[tier][first_join[tier]:])
            free = [k for k in range(first_replica[tier], first_replica[tier + 1]) if state[k] != RUNNING]
            roomy = sum(len(batches[k]) < max_batch[tier] for k in free)  # a full one takes no share
            for k in free:
                if len(batches[k]) < max_batch[tier]:
                    start_iteration(k, t, math.ceil(queue_length(tier) / roomy))
                    roomy -= 1
                else:
                    start_iteration(k, t, 0)
        for k in sorted(due):
            if state[k] == DUE:
                start_iteration(k, t)
        for tier in joined:
            tier_counts[tier, 1] = max(tier_counts[tier, 1], queue_length(tier))
        due.clear()
        joined.clear()
        instant[0] += 1

    if n == 0:
        return 0, 0.0
    push(arrival_ms[arrival_order[0]], ARRIVAL, 0)
    events, t = 0, 0.0
    while heap:
        t, kind, arg = heapq.heappop(heap)
        events += 1
        if kind == ARRIVAL:
            if arg + 1 < n:
                push(arrival_ms[arrival_order[arg + 1]], ARRIVAL, arg + 1)
            r = arrival_order[arg]
            enqueue(r, start[r], t)
        else:
            k = arg
            tier = replica_tier[k]
            state[k] = DUE
            due.append(k)
            kept = []
            for slot in batches[k]:
                r, _, p, d, new, _ = slot
                if new:
                    slot[4] = False
                    slot[1] = 1 if d >= 1 else 0
                    if tier == stop[r]:
                        ttft_ms[r] = t
                else:
                    slot[1] += 1
                if slot[1] >= d:
                    kv_reserved[k] -= p + d
                    tier_done_ms[r, tier] = t
                    if tier == stop[r]:
                        finish_ms[r] = t
                    else:
                        enqueue(r, after_start[r] if tier == start[r] else tier + 1, t)
                else:
                    kept.append(slot)
            batches[k] = kept
        if not heap or heap[0][0] > t:
            form_batches(t)
    for i in range(n_tiers):
        note_queue(i, t)
    return events, t
