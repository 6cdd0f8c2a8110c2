"""Per-request outcomes of one method on held-out requests, and the figures every report
prints from them: quality, GPU cost relative to always-last, latency mean/p50/p95/p99 and
where requests stopped. Policies and baselines alike end up here, so they are compared on
exactly the same requests with exactly the same arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asd.errors import PolicyError

PERCENTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}
WALK_BLOCK_ROWS = 65_536  # requests charged at a time by walk_outcomes
STATISTICS = ("mean", "p50", "p95", "p99")


@dataclass(frozen=True)
class LadderArrays:
    """What a replay charges, per (request, tier), for the requests being evaluated.

    score: quality of the tier's answer in [0, 1] (NaN = not labelled); cost / latency_ms: the
    tier run cold (regenerating); cost_cont / latency_cont_ms: the tier continuing from the
    previous tier's draft (equal to the cold figures where the trace has no drafts).
    """

    score: np.ndarray
    acceptable: np.ndarray
    cost: np.ndarray
    cost_cont: np.ndarray
    latency_ms: np.ndarray
    latency_cont_ms: np.ndarray

    @property
    def n_requests(self) -> int:
        return self.score.shape[0]

    @property
    def n_tiers(self) -> int:
        return self.score.shape[1]

    def take(self, rows) -> LadderArrays:
        return LadderArrays(*(np.ascontiguousarray(getattr(self, f)[rows]) for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class Outcomes:
    """Where each request started and stopped, and what it cost, took and scored. after_start:
    the tier each request went to after its start tier, where some path skips the tiers between
    (fixed-2stage's draft → verify on 3+ tiers, the tier it skips to regenerating); None: every
    path climbs one tier at a time."""

    start: np.ndarray
    stop: np.ndarray
    cost: np.ndarray
    latency_ms: np.ndarray
    quality: np.ndarray
    after_start: np.ndarray | None = None

    def walk_key(self) -> int:
        """Equal for two outcomes of the same walk (start and stop tiers): a policy met again."""
        return hash((self.start.tobytes(), self.stop.tobytes()))

    def preference(self) -> tuple[float, float]:
        """Better first when larger: mean quality over labelled requests (none: 0), then lower
        mean cost — how a λ search ranks the policies it may choose."""
        labelled = ~np.isnan(self.quality)
        return (float(self.quality[labelled].mean()) if labelled.any() else 0.0, -float(self.cost.mean()))

    def next_tiers(self) -> np.ndarray:
        """after_start, or the tier above the start where no path skips (the stop tier at most)."""
        return np.minimum(self.start + 1, self.stop) if self.after_start is None else self.after_start

    @classmethod
    def concat(cls, parts: list[Outcomes]) -> Outcomes:
        skips = any(p.after_start is not None for p in parts)
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__
                     if f != "after_start"),
                   after_start=np.concatenate([p.next_tiers() for p in parts]) if skips else None)


def walk_outcomes(start: np.ndarray, stop: np.ndarray, arrays: LadderArrays) -> Outcomes:
    """Charge each request the tiers start..stop: the start tier cold, each later tier as a
    continuation of the one before it (speculative where the trace has drafts)."""
    start = np.asarray(start, dtype=np.int64)
    stop = np.asarray(stop, dtype=np.int64)
    n, n_tiers = arrays.score.shape
    if start.shape != (n,) or stop.shape != (n,):
        raise PolicyError(f"start/stop tiers have shapes {start.shape}/{stop.shape}: expected ({n},)")
    if n and ((start < 0).any() or (stop >= n_tiers).any() or (stop < start).any()):
        raise PolicyError("start/stop tiers must satisfy 0 <= start <= stop < tiers")
    rows = np.arange(n)
    tiers = np.arange(n_tiers)[None, :]
    cost, latency = np.empty(n), np.empty(n)
    # a block of requests at a time: the (N, L) temporaries are 32 MB each at 10^6 × 4 (every
    # request's figures are computed alone, so blocks change no number)
    for lo in range(0, n, WALK_BLOCK_ROWS):
        block = slice(lo, lo + WALK_BLOCK_ROWS)
        first, last = start[block], stop[block]
        continued = (tiers > first[:, None]) & (tiers <= last[:, None])
        cost[block] = (arrays.cost[rows[block], first]
                       + np.where(continued, arrays.cost_cont[block], 0.0).sum(axis=1))
        latency[block] = (arrays.latency_ms[rows[block], first]
                          + np.where(continued, arrays.latency_cont_ms[block], 0.0).sum(axis=1))
    return Outcomes(start, stop, cost, latency, arrays.score[rows, stop])


def latency_stat(latency_ms: np.ndarray, stat: str) -> float:
    if stat == "mean":
        return float(np.mean(latency_ms))
    if stat not in PERCENTILES:
        raise PolicyError(f"latency statistic {stat!r}: use one of {', '.join(STATISTICS)}")
    return float(np.percentile(latency_ms, PERCENTILES[stat]))


def summarize(out: Outcomes, cost_last: float, n_tiers: int) -> dict:
    """The figures of one method: quality (mean score over labelled requests), cost_rel (Σ cost /
    Σ cost of always-last), latency_ms {mean, p50, p95, p99}, stop_fractions per tier."""
    labelled = ~np.isnan(out.quality)
    latency = out.latency_ms
    if latency.size:  # the percentiles from one partition: each the value latency_stat gives alone
        quantiles = dict(zip(PERCENTILES, np.percentile(latency, list(PERCENTILES.values())).tolist()))
    else:
        quantiles = {s: latency_stat(latency, s) for s in PERCENTILES}
    return {
        "quality": float(out.quality[labelled].mean()) if labelled.any() else None,
        "cost_rel": float(out.cost.sum() / cost_last) if cost_last > 0 else None,
        "latency_ms": {"mean": latency_stat(latency, "mean"), **quantiles},
        "stop_fractions": (np.bincount(out.stop, minlength=n_tiers) / max(out.stop.size, 1)).tolist(),
    }
