"""Discrete-event simulation of a cascade under load (Python side): arrival processes, the
replica pools, input checks, the result object with latency/utilisation summaries and a
Chrome-trace export. The event loop itself is des_nb.simulate_cascade_nb (see it for the model).

GPU-seconds of a tier = busy time of its replicas × tensor-parallel degree (GPUs held by a
replica while it runs iterations); `provisioned_gpu_s` counts every replica for the whole run.
Utilisation = busy time / (run length × replicas). The run starts at t = 0 and ends at its last event.
"""

from __future__ import annotations

import heapq
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asd.errors import ConfigError, real_number
from asd.fsutil import atomic_write
from asd.simulator.des_nb import T_ITERATIONS, T_MAX_BATCH, T_MAX_KV, T_MAX_QUEUE, simulate_cascade_nb
from asd.simulator.enums import ARRIVAL_PROCESSES
from asd.simulator.latency import check_coefficients
from asd.simulator.replay import integer_values, percentile_of

LATENCIES = ("e2e", "ttft")  # DesResult.latency's `which`


def _positive(value) -> bool:
    """Finite and > 0, as a real number (`real_number`: a string or bool is not one)."""
    try:
        return 0.0 < real_number("value", value) < math.inf
    except ConfigError:
        return False


def arrival_times(n: int, *, process: str = "poisson", rate: float | None = None, cv: float = 1.0,
                  offsets_s=None, seed: int = 0) -> np.ndarray:
    """Arrival times in ms (N,) from t = 0: Poisson at `rate` req/s, bursty gamma gaps with
    coefficient of variation `cv` (cv = 1 is Poisson), or the trace's offsets (seconds)."""
    if process not in ARRIVAL_PROCESSES:
        raise ConfigError(f"arrival process {process!r}: use one of {', '.join(ARRIVAL_PROCESSES)}")
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
        raise ConfigError(f"arrival count n={n!r}: must be an integer >= 0")
    if process == "trace":
        if offsets_s is None:
            raise ConfigError("arrival process 'trace' needs the trace's arrival offsets")
        offsets = np.asarray(offsets_s, dtype=np.float64)
        if offsets.shape != (n,) or not np.isfinite(offsets).all():
            raise ConfigError(f"arrival offsets: need {n} finite values (the trace has nulls or the wrong count)")
        return _fine_enough((offsets - offsets.min()) * 1e3 if n else offsets, "the trace's offsets")
    if not _positive(rate):
        raise ConfigError(f"arrival rate {rate!r}: must be a finite number > 0 requests per second")
    rng = np.random.default_rng(seed)
    if process == "poisson":
        gaps = rng.exponential(1.0 / rate, n)
    else:
        if not _positive(cv):
            raise ConfigError(f"burstiness cv={cv!r}: must be a finite number > 0")
        if cv < 1e-8:  # gaps equal to the last bit; 1/cv² would overflow below about 1e-154
            gaps = np.full(n, 1.0 / rate)
        else:
            shape = 1.0 / cv**2
            gaps = rng.gamma(shape, 1.0 / (rate * shape), n)
    return _fine_enough(np.cumsum(gaps) * 1e3, f"rate {rate:g} req/s")


ARRIVAL_RESOLUTION_MS = 1e-3


def _fine_enough(arrival_ms: np.ndarray, what: str) -> np.ndarray:
    """Refuse arrival times so far out that a float64's step there (a latency is a difference of
    such times) exceeds 1 µs: at 1e-12 req/s the built-in trace's 600 arrivals reach 6e17 ms,
    where the step is 128 ms, and every latency came out 0. The largest time is checked: a
    trace's offsets come in the trace's order, not sorted."""
    span = float(np.abs(arrival_ms).max()) if arrival_ms.size else 0.0
    if np.spacing(span) > ARRIVAL_RESOLUTION_MS:
        raise ConfigError(f"arrivals at {what}: {arrival_ms.size} requests span {span / 3.6e6:.3g} hours, so far "
                          f"that a time's float step there ({np.spacing(span):.3g} ms) rounds latencies away; use a "
                          "higher rate (for latencies without queueing, --mode replay)")
    return arrival_ms


MAX_REPLICAS = 10_000  # per tier: beyond any real pool, and 10^8 of them filled the memory


@dataclass(frozen=True)
class Pools:
    """One replica pool per tier (L,) each: replicas, tensor-parallel degree, max batch size,
    KV-cache token capacity per replica; coeffs (L, 4) iteration coefficients in ms."""

    replicas: np.ndarray
    tensor_parallel: np.ndarray
    max_batch: np.ndarray
    kv_capacity: np.ndarray
    coeffs: np.ndarray

    @classmethod
    def build(cls, coeffs, *, replicas=1, tensor_parallel=1, max_batch=256, kv_capacity=10**9) -> Pools:
        coeffs = check_coefficients(coeffs)
        n_tiers = coeffs.shape[0]
        arrays = {}
        for name, value in (("replicas", replicas), ("tensor_parallel", tensor_parallel),
                            ("max_batch", max_batch), ("kv_capacity", kv_capacity)):
            a = np.broadcast_to(np.asarray(value), (n_tiers,)) if np.ndim(value) == 0 else np.asarray(value)
            if a.shape != (n_tiers,):
                raise ConfigError(f"{name}: need one value per tier ({n_tiers}), got {np.ravel(a).tolist()}")
            if not np.issubdtype(a.dtype, np.integer) or (a < 1).any():
                raise ConfigError(f"{name} = {np.ravel(a).tolist()}: must be integers >= 1")
            if name == "replicas" and (a > MAX_REPLICAS).any():
                raise ConfigError(f"replicas = {np.ravel(a).tolist()}: at most {MAX_REPLICAS} per tier (each one "
                                  "is simulated, and its state held in memory)")
            arrays[name] = np.ascontiguousarray(a, dtype=np.int64)
        return cls(coeffs=coeffs, **arrays)

    @property
    def n_tiers(self) -> int:
        return self.coeffs.shape[0]


@dataclass(frozen=True)
class DesResult:
    """Per request (N,): arrival, TTFT (to the first token at its stop tier) and end-to-end
    latency, in ms; per (request, tier) enter/admit/done times (NaN where not visited) and the
    replica; per tier (L,): busy time, iterations, utilisation, GPU-seconds, queue statistics."""

    arrival_ms: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    ttft_ms: np.ndarray
    e2e_ms: np.ndarray
    tier_enter_ms: np.ndarray
    tier_admit_ms: np.ndarray
    tier_done_ms: np.ndarray
    tier_replica: np.ndarray
    busy_ms: np.ndarray
    iterations: np.ndarray
    max_queue: np.ndarray
    mean_queue: np.ndarray
    max_kv_reserved: np.ndarray
    max_batch_seen: np.ndarray
    events: int
    end_ms: float
    pools: Pools

    @property
    def utilisation(self) -> np.ndarray:
        wall = self.end_ms * self.pools.replicas
        return np.divide(self.busy_ms, wall, out=np.zeros_like(self.busy_ms), where=wall > 0)

    @property
    def gpu_s(self) -> np.ndarray:
        return self.busy_ms * self.pools.tensor_parallel / 1e3

    @property
    def provisioned_gpu_s(self) -> np.ndarray:
        return self.end_ms * self.pools.replicas * self.pools.tensor_parallel / 1e3

    def latency(self, stat: str = "mean", which: str = "e2e") -> float:
        if which not in LATENCIES:
            raise ConfigError(f"latency which={which!r}: use one of {', '.join(LATENCIES)}")
        values = self.e2e_ms if which == "e2e" else self.ttft_ms
        q = percentile_of(stat)
        return float(values.mean() if q is None else np.percentile(values, q))

    def summary(self) -> dict:
        stats = ("mean", "p50", "p95", "p99")
        return {
            "n_requests": int(self.e2e_ms.size), "events": self.events, "duration_s": self.end_ms / 1e3,
            "latency_ms": {s: self.latency(s) for s in stats},
            "ttft_ms": {s: self.latency(s, "ttft") for s in stats},
            "utilisation": self.utilisation.tolist(), "gpu_s": self.gpu_s.tolist(),
            "mean_queue": self.mean_queue.tolist(), "max_queue": self.max_queue.tolist(),
        }

    def chrome_trace(self, path, tier_names=None, request_ids=None, limit: int | None = 100_000) -> Path:
        """Write a chrome://tracing JSON: one complete ("X") event per request per tier it ran,
        on process = tier, thread = a lane of the replica that ran it ("replica r, lane k"):
        requests batched together overlap in time, and Chrome's spans on one thread must nest,
        so each lane holds spans that do not overlap. Queueing shows as the gap after "enter"."""
        n_tiers, n = self.busy_ms.size, self.e2e_ms.size
        names = list(tier_names) if tier_names is not None else [f"tier {i}" for i in range(n_tiers)]
        if len(names) != n_tiers:
            raise ConfigError(f"tier_names has {len(names)} names: expected {n_tiers}, one per tier")
        if request_ids is not None and len(request_ids) != n:
            raise ConfigError(f"request_ids has {len(request_ids)} ids: expected {n}, one per request")
        events = [{"name": "process_name", "ph": "M", "pid": i, "args": {"name": names[i]}} for i in range(n_tiers)]
        rows, tiers = np.nonzero(~np.isnan(self.tier_done_ms))
        spans = rows.size
        if limit is not None:
            rows, tiers = rows[:limit], tiers[:limit]
        replicas = self.tier_replica[rows, tiers]
        # whole µs (the arrivals' resolution): ts + dur then lands exactly on the end, and a span
        # that starts as another ends touches it rather than overlap it by a rounding error
        admit_us = np.round(self.tier_admit_ms[rows, tiers] * 1e3)
        done_us = np.round(self.tier_done_ms[rows, tiers] * 1e3)
        lanes = span_lanes(replicas, admit_us, done_us)
        # one thread per (replica, lane), numbered in that order within its tier's process
        threads = sorted(set(zip(tiers.tolist(), replicas.tolist(), lanes.tolist())))
        tid = {}
        for i, k, lane in threads:
            tid[i, k, lane] = len(tid)
            events.append({"name": "thread_name", "ph": "M", "pid": i, "tid": tid[i, k, lane],
                           "args": {"name": f"replica {k - int(self.pools.replicas[:i].sum())}, lane {lane}"}})
        for r, i, k, lane, a, d in zip(rows.tolist(), tiers.tolist(), replicas.tolist(), lanes.tolist(),
                                       admit_us.tolist(), done_us.tolist()):
            events.append({"name": str(request_ids[r]) if request_ids is not None else f"request {r}",
                           "ph": "X", "pid": i, "tid": tid[i, k, lane], "ts": a, "dur": d - a,
                           "args": {"queued_ms": self.tier_admit_ms[r, i] - self.tier_enter_ms[r, i],
                                    "stop_tier": int(self.stop[r])}})
        # said in the file too: a trace cut at `limit` looks like a run that ended early
        other = {"spans": spans, "spans_written": int(rows.size), "spans_dropped": spans - int(rows.size)}
        if other["spans_dropped"]:
            other["note"] = (f"only the first {rows.size:,} of {spans:,} spans (by request) are written: "
                             "chrome://tracing slows past a few hundred thousand")
        return atomic_write(path, json.dumps({"traceEvents": events, "displayTimeUnit": "ms",
                                              "otherData": other}).encode())

    def spans(self) -> int:
        """(request, tier) spans the run has: what chrome_trace writes, up to its limit."""
        return int(np.count_nonzero(~np.isnan(self.tier_done_ms)))


def span_lanes(replicas: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Lane of each span within its replica (greedy interval partitioning): taken in order of
    start, a span goes to the lowest lane whose last span has ended by then, so spans in one lane
    never overlap (touching is fine) and a replica uses as many lanes as its largest batch."""
    lanes = np.empty(replicas.size, dtype=np.int64)
    free_lanes: dict[int, list[int]] = {}  # per replica: a heap of lanes free now
    running: dict[int, list[tuple[float, int]]] = {}  # per replica: a heap of (end, lane) in use
    for j in np.lexsort((end, start, replicas)).tolist():
        k, begins = int(replicas[j]), float(start[j])
        free, busy = free_lanes.setdefault(k, []), running.setdefault(k, [])
        while busy and busy[0][0] <= begins:
            heapq.heappush(free, heapq.heappop(busy)[1])
        lane = heapq.heappop(free) if free else len(busy)
        lanes[j] = lane
        heapq.heappush(busy, (float(end[j]), lane))
    return lanes


def _tokens(name, a, shape):
    a = np.ascontiguousarray(integer_values(name, a, ConfigError), dtype=np.int64)
    if a.shape != shape:
        raise ConfigError(f"{name} has shape {a.shape}: expected {shape}")
    if (a < 0).any():
        raise ConfigError(f"{name} has negative token counts")
    return a


def simulate(start, stop, n_prompt, n_decode, *, arrival_ms, pools: Pools, n_prompt_cont=None,
             n_decode_cont=None, priority=None, after_start=None, n_kv_cont=None) -> DesResult:
    """Run the cascade: request r runs tiers start[r]..stop[r] (from the replay walk), the start
    tier cold with (n_prompt, n_decode) tokens, later tiers continuing with (n_prompt_cont,
    n_decode_cont) (default: regeneration, the cold counts) and decoding from n_kv_cont tokens of
    KV after the verify pass (prompt + accepted prefix; default n_prompt_cont). Token arrays (N, L) int.
    after_start: (N,) the tier each request enters after its start tier (default start + 1; the
    stop tier skips the tiers between: fixed-2stage on 3+ tiers, draft then the last tier).
    priority: None for FIFO queues; else (N, L) finite keys, and each tier admits the lowest
    key of its queue first (equal keys in the order they joined; `difficulty_priority`). Requests
    that join a tier at one instant enter its queue in request-index order."""
    if not isinstance(pools, Pools):
        raise ConfigError(f"pools: a {type(pools).__name__} given, expected asd.simulator.Pools (Pools.build)")
    start = np.ascontiguousarray(integer_values("start", start, ConfigError), dtype=np.int64)
    stop = np.ascontiguousarray(integer_values("stop", stop, ConfigError), dtype=np.int64)
    n = start.shape[0] if start.ndim else 0
    n_tiers = pools.n_tiers
    shape = (n, n_tiers)
    if start.shape != (n,) or stop.shape != (n,):
        raise ConfigError(f"start/stop tiers have shapes {start.shape} and {stop.shape}: expected ({n},)")
    if n == 0:  # an empty run has no latency statistics to summarise
        raise ConfigError("start/stop: no requests (N = 0): simulate needs at least one")
    if start.min() < 0 or stop.max() >= n_tiers or (stop < start).any():
        raise ConfigError(f"paths must satisfy 0 <= start <= stop < {n_tiers}")
    if after_start is None:
        after_start = np.minimum(start + 1, stop)
    else:
        after_start = np.ascontiguousarray(integer_values("after_start", after_start, ConfigError), dtype=np.int64)
        if after_start.shape != (n,):
            raise ConfigError(f"after_start has shape {after_start.shape}: expected ({n},)")
        moving = stop > start
        if (((after_start <= start) | (after_start > stop)) & moving).any():
            raise ConfigError("after_start: each request's next tier must lie after its start tier and at most its "
                              "stop tier")
        after_start = np.where(moving, after_start, stop)  # a request that never moves on has no next tier
    n_prompt = _tokens("n_prompt", n_prompt, shape)
    n_decode = _tokens("n_decode", n_decode, shape)
    n_prompt_cont = n_prompt if n_prompt_cont is None else _tokens("n_prompt_cont", n_prompt_cont, shape)
    n_decode_cont = n_decode if n_decode_cont is None else _tokens("n_decode_cont", n_decode_cont, shape)
    n_kv_cont = n_prompt_cont if n_kv_cont is None else _tokens("n_kv_cont", n_kv_cont, shape)
    if (n_kv_cont > n_prompt_cont).any():
        raise ConfigError("n_kv_cont exceeds n_prompt_cont: a continuation keeps at most what it verified")
    arrival_ms = np.ascontiguousarray(arrival_ms, dtype=np.float64)
    if arrival_ms.shape != (n,) or not np.isfinite(arrival_ms).all() or (arrival_ms < 0).any():
        raise ConfigError(f"arrival times: need {n} finite values >= 0 (ms)")
    # Peak KV of each (request, tier) it visits must fit one replica, or it would wait forever.
    tiers = np.arange(n_tiers)
    visited = ((tiers[None, :] == start[:, None])
               | ((tiers[None, :] >= after_start[:, None]) & (tiers[None, :] <= stop[:, None])))
    cold = tiers[None, :] == start[:, None]
    peak = np.where(cold, n_prompt + n_decode, n_prompt_cont + n_decode_cont)
    too_big = visited & (peak > pools.kv_capacity[None, :])
    if too_big.any():
        r, i = (int(x) for x in np.argwhere(too_big)[0])
        raise ConfigError(f"request {r} needs {int(peak[r, i])} KV tokens at tier {i}, more than a replica "
                          f"holds (kv_capacity {int(pools.kv_capacity[i])})")
    by_priority = priority is not None
    if by_priority:
        priority = np.ascontiguousarray(priority, dtype=np.float64)
        if priority.shape != shape or not np.isfinite(priority).all():
            raise ConfigError(f"priority: need {shape} finite keys (requests × tiers), got shape {priority.shape}")
    else:
        priority = np.zeros((1, 1))
    order = np.argsort(arrival_ms, kind="stable")
    first_replica = np.concatenate([[0], np.cumsum(pools.replicas)]).astype(np.int64)
    ttft, finish = np.empty(n), np.empty(n)
    enter, admit, done = np.empty(shape), np.empty(shape), np.empty(shape)
    replica = np.empty(shape, dtype=np.int64)
    busy, area = np.empty(n_tiers), np.empty(n_tiers)
    counts = np.empty((n_tiers, 4), dtype=np.int64)
    events, end_ms = simulate_cascade_nb(arrival_ms, order, start, stop, after_start, n_prompt, n_decode, n_prompt_cont,
                                         n_decode_cont, n_kv_cont, pools.coeffs, first_replica,
                                         # a batch never holds more than every request: a larger limit
                                         # is the same run, and sizes each replica's slots by it
                                         np.minimum(pools.max_batch, max(n, 1)),
                                         pools.kv_capacity, priority, by_priority, ttft, finish, enter, admit,
                                         done, replica, busy, area, counts)
    mean_queue = area / end_ms if end_ms > 0 else np.zeros(n_tiers)
    return DesResult(arrival_ms, start, stop, ttft - arrival_ms, finish - arrival_ms, enter, admit, done, replica,
                     busy, counts[:, T_ITERATIONS], counts[:, T_MAX_QUEUE], mean_queue, counts[:, T_MAX_KV],
                     counts[:, T_MAX_BATCH], int(events), float(end_ms), pools)
