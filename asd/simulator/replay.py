"""Replay without contention: where each request starts and stops under a policy's tables, and
what it costs, how long it takes and what quality it ends with — for one λ or a whole λ grid.

Inputs are arrays only (bins from the engine, cost/latency from the cost model's CostGrid,
quality from the trace); `ReplayInputs` checks them once and is reused across λ.
"""

from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from asd.errors import PolicyError
from asd.simulator.replay_nb import replay_grid_stats_nb, replay_requests_nb

QUANTILES = (50.0, 95.0, 99.0)


def _grid(name, a, shape, nan_ok=False, column_major=True, high=math.inf):
    a = np.asarray(a, dtype=np.float64)
    if a.shape != shape:
        raise PolicyError(f"{name} has shape {a.shape}: expected {shape}")
    if not (np.isfinite(a) | (nan_ok & np.isnan(a))).all():
        r, i = (int(x) for x in np.argwhere(~np.isfinite(a))[0])
        raise PolicyError(f"{name}[{r}, {i}] is {a[r, i]!r}: replay needs finite values on every (request, tier)")
    outside = (a < 0.0) | (a > high)  # NaN (allowed above) is neither
    if outside.any():
        r, i = (int(x) for x in np.argwhere(outside)[0])
        want = ">= 0" if high == math.inf else f"in [0, {high:g}]"
        raise PolicyError(f"{name}[{r}, {i}] is {float(a[r, i])!r}: must be {want}")
    # + 0.0 makes a −0.0 charge 0.0 (nothing else changes), so the kernels' branch-free sums
    # are exact. Column-major: the kernels read a request's start tier and the tiers it climbs,
    # so a row-major grid streams every tier of every request through memory (1.4x slower).
    if column_major:
        out = np.empty(shape, order="F")
        np.add(a, 0.0, out=out)
        return out
    zero = a == 0.0
    return a + 0.0 if zero.any() and np.signbit(a[zero]).any() else a


def bin_dtype(n_bins: int) -> np.dtype:
    """The narrowest unsigned integer that holds bins 0..n_bins−1 (uint8 up to 256 bins): the
    kernels stream bins for every request, and a quarter of an int64's bytes is spare bandwidth."""
    return np.min_scalar_type(max(int(n_bins) - 1, 0))


def integer_values(name, a, error=PolicyError) -> np.ndarray:
    """`a` as an array of an integer (or bool) dtype: as given, or whole-number floats cast to
    int64; non-integral, non-finite or non-numeric values are an `error` naming `name` (a cast
    would truncate them silently)."""
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_):
        return a
    if a.dtype.kind != "f":
        raise error(f"{name} has dtype {a.dtype}: expected integers")
    bad = ~(np.isfinite(a) & (a == np.trunc(a)))
    if bad.any():
        raise error(f"{name} holds {a[bad].flat[0].item()!r}: expected integers (whole numbers)")
    return a.astype(np.int64)


def _bins(name, a, shape, n_bins):
    a = np.asarray(a)
    if a.shape != shape:
        raise PolicyError(f"{name} has shape {a.shape}: expected {shape}")
    a = integer_values(name, a)
    if a.size and (a.min() < 0 or a.max() >= n_bins):
        raise PolicyError(f"{name} holds bins outside 0..{n_bins - 1}")
    return np.ascontiguousarray(a, dtype=bin_dtype(n_bins))


@dataclass(frozen=True)
class ReplayInputs:
    """Per-request arrays for replay (N requests, L tiers), as the kernels read them fastest:
    bins in the narrowest unsigned dtype (`bin_dtype`), float64 grids column-major (unless built
    with column_major=False). cold_bins
    default to tier_bins and the *_cont arrays to their cold counterparts (regeneration: no
    drafts); prompt_bins to 0 (only for tables with one prompt bin: `has_prompt_bins`). Costs and
    latencies are finite and >= 0, quality in [0, 1]; quality may hold NaN
    (an unlabelled answer) only when built with unlabelled_ok=True: per-request results carry
    it through, grid means over such requests are NaN."""

    prompt_bins: np.ndarray
    tier_bins: np.ndarray
    cold_bins: np.ndarray
    cost: np.ndarray
    cost_cont: np.ndarray
    latency_ms: np.ndarray
    latency_cont_ms: np.ndarray
    quality: np.ndarray
    n_bins: int
    n_prompt_bins: int
    has_prompt_bins: bool = True  # False: built without prompt_bins (all 0), refused by a stage 0

    @classmethod
    def build(cls, tier_bins, *, cost, latency_ms, quality, prompt_bins=None, cold_bins=None,
              cost_cont=None, latency_cont_ms=None, n_bins=None, n_prompt_bins=None,
              unlabelled_ok=False, column_major=True) -> ReplayInputs:
        """column_major=False keeps a float64 grid where it lies, in its own layout (the
        kernels take any): for callers that replay row slices of large arrays they keep."""
        tier_bins = np.asarray(tier_bins)
        if tier_bins.ndim != 2 or tier_bins.shape[0] == 0 or tier_bins.shape[1] == 0:
            raise PolicyError(f"tier_bins has shape {tier_bins.shape}: expected (requests >= 1, tiers >= 1)")
        n, n_tiers = tier_bins.shape
        n_bins = int(tier_bins.max()) + 1 if n_bins is None else int(n_bins)
        tier_bins = _bins("tier_bins", tier_bins, (n, n_tiers), n_bins)
        cold_bins = tier_bins if cold_bins is None else _bins("cold_bins", cold_bins, (n, n_tiers), n_bins)
        has_prompt_bins = prompt_bins is not None
        if not has_prompt_bins:
            prompt_bins = np.zeros(n, dtype=np.int64)
        n_prompt_bins = int(np.max(prompt_bins)) + 1 if n_prompt_bins is None else int(n_prompt_bins)
        prompt_bins = _bins("prompt_bins", prompt_bins, (n,), n_prompt_bins)
        grid = lambda name, a: _grid(name, a, (n, n_tiers), False, column_major)  # noqa: E731
        cost = grid("cost", cost)
        latency_ms = grid("latency_ms", latency_ms)
        cost_cont = cost if cost_cont is None else grid("cost_cont", cost_cont)
        latency_cont_ms = latency_ms if latency_cont_ms is None else grid("latency_cont_ms", latency_cont_ms)
        quality = _grid("quality", quality, (n, n_tiers), unlabelled_ok, column_major, high=1.0)
        return cls(prompt_bins, tier_bins, cold_bins, cost, cost_cont, latency_ms, latency_cont_ms, quality,
                   n_bins, n_prompt_bins, has_prompt_bins)

    @property
    def n_requests(self) -> int:
        return self.tier_bins.shape[0]

    @property
    def n_tiers(self) -> int:
        return self.tier_bins.shape[1]

    @property
    def has_cold_bins(self) -> bool:
        """Were cold-state bins given (not defaulted to tier_bins)?"""
        return self.cold_bins is not self.tier_bins

    def check_tables(self, start_table, stop_table, stop_cold_table=None, *, cold_start=None):
        """Tables as the kernels take them (the cold stop table defaults to the stop table: a
        policy without cold-start tables), or a PolicyError naming the mismatch. cold_start:
        whether the cold stop table is a cold-start policy's, read on cold bins (so the inputs
        need them where a request skips a tier); None: whenever one is given that is not the
        stop table object itself (`policy_tables` gives the stop tables for a policy without)."""
        if cold_start is None:  # a cold stop table of its own (not the stop table object itself)
            cold_start = stop_cold_table is not None and stop_cold_table is not stop_table
        start_table = np.ascontiguousarray(start_table, dtype=np.int64)
        stop_table = np.ascontiguousarray(stop_table, dtype=np.uint8)
        stop_cold_table = (stop_table if stop_cold_table is None
                           else np.ascontiguousarray(stop_cold_table, dtype=np.uint8))
        lead = stop_table.shape[:-2]
        if stop_table.ndim < 2 or stop_table.shape[-2] != self.n_tiers or stop_table.shape[-1] < self.n_bins:
            raise PolicyError(f"stop table has shape {stop_table.shape[-2:]}: expected ({self.n_tiers}, "
                              f">= {self.n_bins}) for these bins")
        if stop_cold_table.shape != stop_table.shape:
            raise PolicyError(f"cold stop table has shape {stop_cold_table.shape}: expected {stop_table.shape} "
                              "(the stop table's)")
        if start_table.shape[:-1] != lead or start_table.shape[-1] < self.n_prompt_bins:
            raise PolicyError(f"start table has shape {start_table.shape}: expected {lead + (self.n_prompt_bins,)}")
        if start_table.size and (start_table.min() < 0 or start_table.max() >= self.n_tiers):
            raise PolicyError(f"start table names tiers outside 0..{self.n_tiers - 1}")
        # as Policy.walk: a stage 0 needs each request's prompt bin, a cold-start one its cold bins
        if not self.has_prompt_bins and start_table.shape[-1] > 1:
            raise PolicyError(f"prompt_bins: the start table has {start_table.shape[-1]} prompt bins (a stage 0) "
                              "but these inputs were built without prompt_bins, so every request would start from "
                              "prompt bin 0: pass ReplayInputs.build(..., prompt_bins=policy.prompt_bins(prompt_x))")
        if cold_start and not self.has_cold_bins and self._some_request_skips(start_table):
            raise PolicyError("cold_bins: these are cold-start tables (a stage 0 built for cold starts, start_p_hat), "
                              "read on a request's cold bins at a skipped-to tier, and some requests skip tiers, "
                              "but these inputs were built without cold_bins: pass ReplayInputs.build(..., "
                              "cold_bins=policy.cold_tier_bins(cold_x))")
        return start_table, stop_table, stop_cold_table

    def _some_request_skips(self, start_table) -> bool:
        """Does any request start above tier 0 under these (possibly stacked) start tables?"""
        present = np.bincount(self.prompt_bins, minlength=self.n_prompt_bins) > 0
        return bool((start_table[..., :self.n_prompt_bins][..., present] > 0).any())


def _fractions(counts, n):
    return counts / float(n)


def percentile_of(stat: str) -> float | None:
    """None for 'mean', else the percentile of 'p50', 'p95', … (0..100); PolicyError otherwise."""
    if stat == "mean":
        return None
    try:
        q = float(str(stat).removeprefix("p"))
    except ValueError:
        q = math.nan
    if not 0.0 <= q <= 100.0:
        raise PolicyError(f"latency statistic {stat!r}: use mean or a percentile such as p50, p95, p99")
    return q


@dataclass(frozen=True)
class ReplayResult:
    """One λ: per request start/stop tier, cost, latency (ms) and quality; summaries as properties."""

    start: np.ndarray
    stop: np.ndarray
    cost: np.ndarray
    latency_ms: np.ndarray
    quality: np.ndarray
    n_tiers: int

    @property
    def mean_cost(self) -> float:
        return float(self.cost.mean())

    @property
    def mean_quality(self) -> float:
        return float(self.quality.mean())

    def latency(self, stat: str = "mean") -> float:
        """'mean' or a percentile 'p50', 'p95', 'p99', … of per-request latency."""
        q = percentile_of(stat)
        return float(self.latency_ms.mean() if q is None else np.percentile(self.latency_ms, q))

    @property
    def stop_fractions(self) -> np.ndarray:
        return _fractions(np.bincount(self.stop, minlength=self.n_tiers), self.stop.size)

    @property
    def start_fractions(self) -> np.ndarray:
        return _fractions(np.bincount(self.start, minlength=self.n_tiers), self.start.size)

    def summary(self) -> dict:
        return {"quality": self.mean_quality, "cost": self.mean_cost,
                "latency_ms": {s: self.latency(s) for s in ("mean", "p50", "p95", "p99")},
                "stop_fractions": self.stop_fractions.tolist(), "start_fractions": self.start_fractions.tolist()}


@dataclass(frozen=True)
class GridResult:
    """A λ grid (G values): per λ mean cost/quality/latency (G,), latency percentiles (G, Q) at
    `quantiles`, start/stop fractions (G, L)."""

    lambdas: np.ndarray
    mean_cost: np.ndarray
    mean_quality: np.ndarray
    mean_latency_ms: np.ndarray
    latency_q_ms: np.ndarray
    quantiles: tuple
    start_fractions: np.ndarray
    stop_fractions: np.ndarray

    def latency(self, stat: str = "mean") -> np.ndarray:
        q = percentile_of(stat)
        if q is None:
            return self.mean_latency_ms
        if q not in self.quantiles:
            raise PolicyError(f"latency {stat}: this grid has percentiles {', '.join(f'p{x:g}' for x in self.quantiles)}")
        return self.latency_q_ms[:, self.quantiles.index(q)]

    def point(self, g: int) -> dict:
        n = self.lambdas.size
        try:
            i = operator.index(g)
        except TypeError:
            i = None
        if i is None or not -n <= i < n:
            raise PolicyError(f"grid point g={g!r}: this grid has {n} λ values, g in 0..{n - 1}")
        return {"lambda": float(self.lambdas[g]), "quality": float(self.mean_quality[g]),
                "cost": float(self.mean_cost[g]),
                "latency_ms": {"mean": float(self.mean_latency_ms[g]),
                               **{f"p{q:g}": float(self.latency_q_ms[g, j]) for j, q in enumerate(self.quantiles)}},
                "stop_fractions": self.stop_fractions[g].tolist()}


def _tables_of(policy_or_tables):
    if isinstance(policy_or_tables, tuple):
        return policy_or_tables
    if not hasattr(policy_or_tables, "stop_table"):
        hint = " (Policy.load reads a policy file)" if isinstance(policy_or_tables, (str, os.PathLike)) else ""
        raise PolicyError(f"tables: a {type(policy_or_tables).__name__} given, expected a solved Policy "
                          f"or (start_table, stop_table[, stop_cold_table]){hint}")
    return policy_or_tables.start_table, policy_or_tables.stop_table, policy_or_tables.stop_cold_table


def replay(inputs: ReplayInputs, tables, out=None) -> ReplayResult:
    """Replay every request under one λ: `tables` is a solved Policy or (start_table,
    stop_table[, stop_cold_table]). A request that starts at s > 0 is decided there on its cold
    bins and the cold stop table, as `Policy.walk(..., cold_bins=)`; a Policy with cold-start
    tables refuses inputs without cold bins when some request skips a tier (as the engine does).
    out: (start, stop, cost, latency, quality) arrays (N,) int64, int64, float64 ×3 to write the
    result into (slices of pooled arrays, say), else new ones."""
    tables_of = _tables_of(tables)  # refuses what is neither a policy nor tables
    if not isinstance(tables, tuple) and getattr(tables, "route_threshold", None) is not None:
        raise PolicyError(f"at λ={tables.lam:.6g} this policy routes at stage 0 (a start per request, not per prompt "
                          "bin): replay (start tiers as prompt bins, np.arange(L), stop tables) with its "
                          "policy.routed_starts(policy.route_scores(prompt_x)), as Evaluation does")
    # a Policy says whether it has cold-start tables; stacked tables say it by a cold table of their own
    cold_start = None if isinstance(tables, tuple) else getattr(getattr(tables, "tables", None), "cold_start", None)
    start_table, stop_table, stop_cold_table = inputs.check_tables(*tables_of, cold_start=cold_start)
    n = inputs.n_requests
    if out is None:
        out = (np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), np.empty(n), np.empty(n), np.empty(n))
    elif [(a.shape, a.dtype) for a in out] != [((n,), np.dtype(d)) for d in (np.int64, np.int64, float, float, float)]:
        raise PolicyError(f"replay outputs must be ({n},) arrays of int64, int64, float64, float64, float64")
    out_start, out_stop, out_cost, out_latency, out_quality = out
    replay_requests_nb(inputs.prompt_bins, inputs.tier_bins, inputs.cold_bins, start_table, stop_table,
                       stop_cold_table, inputs.cost, inputs.cost_cont, inputs.latency_ms, inputs.latency_cont_ms, inputs.quality,
                       out_start, out_stop, out_cost, out_latency, out_quality)
    return ReplayResult(out_start, out_stop, out_cost, out_latency, out_quality, inputs.n_tiers)


class PolicyTables(NamedTuple):
    """A policy's tables solved at each of G λ values, stacked for replay_grid. For a policy
    without cold-start tables stop_cold_tables is the stop_tables array itself (the same values):
    replay_grid then needs no cold bins."""

    start_tables: np.ndarray      # (G, B0) int64
    stop_tables: np.ndarray       # (G, L, B) uint8, climbed state
    stop_cold_tables: np.ndarray  # (G, L, B) uint8, cold state at a skipped-to start tier


def policy_tables(policy, lambdas) -> PolicyTables:
    """Stacked start, stop and cold stop tables of `policy` solved at each λ; the policy is
    left solved at its original λ."""
    lambdas = np.asarray(lambdas, dtype=np.float64)
    if lambdas.ndim != 1 or lambdas.size == 0 or not np.isfinite(lambdas).all() or (lambdas < 0).any():
        raise PolicyError("λ grid must be a non-empty 1-d array of finite values >= 0")
    original = policy.lam
    starts = np.empty((lambdas.size,) + policy.start_table.shape, dtype=np.int64)
    stops = np.empty((lambdas.size,) + policy.stop_table.shape, dtype=np.uint8)
    cold_start = bool(getattr(getattr(policy, "tables", None), "cold_start", True))
    stops_cold = np.empty_like(stops) if cold_start else stops
    try:
        for g, lam in enumerate(lambdas):
            policy.solve(float(lam))
            if getattr(policy, "route_threshold", None) is not None:
                raise PolicyError(f"at λ={float(lam):.6g} this policy routes at stage 0 (a start per request, not per "
                                  "prompt bin), which stacked tables cannot hold: replay it one λ at a time "
                                  "(Evaluation.policy_outcomes, or replay() with its routed starts)")
            starts[g], stops[g] = policy.start_table, policy.stop_table
            if cold_start:
                stops_cold[g] = policy.stop_cold_table
    finally:
        if np.isfinite(original):
            policy.solve(original)
    return PolicyTables(starts, stops, stops_cold)


def replay_grid(inputs: ReplayInputs, start_tables, stop_tables, stop_cold_tables=None, *, lambdas=None,
                quantiles=QUANTILES) -> GridResult:
    """Replay every request under each of G stacked tables (prange over λ): aggregates only.
    stop_cold_tables (G, L, B) default to stop_tables (no cold-start tables); pass
    `*policy_tables(policy, lambdas)` for a policy. Cold tables of their own are a cold-start
    policy's: inputs without cold bins are refused where a request skips a tier, as by replay.
    lambdas: (G,), one per stacked table (labels only)."""
    start_tables, stop_tables, stop_cold_tables = inputs.check_tables(start_tables, stop_tables, stop_cold_tables)
    if start_tables.ndim != 2 or stop_tables.ndim != 3 or start_tables.shape[0] != stop_tables.shape[0]:
        raise PolicyError(f"stacked tables have shapes {start_tables.shape} and {stop_tables.shape}: "
                          "expected (G, B0) and (G, L, B)")
    g_count, n_tiers = start_tables.shape[0], inputs.n_tiers
    if lambdas is not None and np.shape(lambdas) != (g_count,):
        raise PolicyError(f"lambdas has shape {np.shape(lambdas)}: expected ({g_count},), one λ per stacked table")
    q = np.asarray(quantiles, dtype=np.float64)
    if q.ndim != 1 or not ((q >= 0) & (q <= 100)).all():  # NaN fails both
        raise PolicyError(f"quantiles {quantiles}: must be finite percentiles in [0, 100]")
    out_cost, out_latency, out_quality = np.empty(g_count), np.empty(g_count), np.empty(g_count)
    starts = np.empty((g_count, n_tiers), dtype=np.int64)
    stops = np.empty((g_count, n_tiers), dtype=np.int64)
    out_q = np.empty((g_count, q.size))
    replay_grid_stats_nb(inputs.prompt_bins, inputs.tier_bins, inputs.cold_bins, start_tables, stop_tables,
                         stop_cold_tables, inputs.cost, inputs.cost_cont, inputs.latency_ms, inputs.latency_cont_ms, inputs.quality,
                         q, out_cost, out_latency, out_quality, starts, stops, out_q)
    lambdas = np.full(g_count, np.nan) if lambdas is None else np.asarray(lambdas, dtype=np.float64)
    n = inputs.n_requests
    return GridResult(lambdas, out_cost, out_quality, out_latency, out_q, tuple(float(x) for x in q),
                      _fractions(starts, n), _fractions(stops, n))


def replay_statistic(inputs: ReplayInputs, policy, stat: str = "p95"):
    """statistic(λ) for `asd.engine.bisect_lambda`: solve the policy at λ, replay, reduce latency."""
    def statistic(lam: float) -> float:
        return replay(inputs, policy.solve(lam)).latency(stat)
    return statistic
