"""`asd simulate`: the main job. Replay a trace under a cascade policy on held-out requests,
find the λ with the best quality whose latency statistic stays within τ_max (`search_tau`), and
put every baseline beside it at the same τ_max, with the research protocol's success criteria.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np

from asd.engine import bisect_lambda
from asd.engine.policy import check_policy_target
from asd.calibration.calibrate import require_labels
from asd.calibration.views import TraceView, load_view
from asd.errors import ConfigError, real_number
from asd.simulator import baselines as B
from asd.simulator.evaluate import Evaluation, last_tier_labelled
from asd.simulator.outcomes import PERCENTILES, STATISTICS, Outcomes, latency_stat, summarize

# The research protocol's §6.1 goals, judged against `fixed-2stage`.
GOALS = {
    "latency_change": (-0.50, -0.30),  # latency 30–50 % below fixed-2stage
    "quality_loss": 0.02,              # quality within 2 % of fixed-2stage
    "gpu_change": -0.40,               # GPU time 40 % below fixed-2stage
}


def _lam_scale(ev: Evaluation) -> float:
    """A λ of the order of a request's whole-ladder cost: where the bracket starts growing."""
    return float(ev.arrays.cost.sum(axis=1).mean()) or 1.0


UNLIMITED_KV = 10**9  # KV-cache tokens per replica where --kv-tokens is not given (the DES's default)
HALVINGS = 16  # where not every distinct policy is replayed: λ below bisection's limit also tried
# Request walks the choice of λ may spend (a DES run counts as DES_WALK_COST walks): every
# distinct pooled policy is replayed where they fit in it. Finding them all costs seconds on a
# 4-tier ladder whatever its size, so it is done only where the budget leaves room for at least
# ENUMERATE_AT_LEAST of them (up to 4·10^4 requests); past that, a λ grid.
MAX_CANDIDATE_WALKS = 4e7
DES_WALK_COST = 10
ENUMERATE_AT_LEAST = 1000
MIN_CANDIDATES = 32
GRID_DECADES = (-4.0, 6.0)  # the grid's λ range, in decades around the mean whole-ladder cost


def enumerates(ev: Evaluation) -> bool:
    """Whether λ is chosen among distinct policies found first (up to 4·10^4 held-out requests):
    finding them costs seconds whatever the bundle's size, worth it where the budget then
    replays at least ENUMERATE_AT_LEAST of them. It goes by the requests, not by what trying
    one costs (a DES run or a walk), and holds for the deployment rule too, whose calibration
    rows are capped (25,000): a 10^6-request run had spent 10 s there."""
    return MAX_CANDIDATE_WALKS // max(ev.held.size, 1) >= ENUMERATE_AT_LEAST


def last_policy_change(ev: Evaluation) -> float:
    """The largest λ at which some fold's policy still changes: above it every fold plays the
    policy it plays at any larger λ."""
    return max(pieces[-1].lam_lo for pieces in ev.policy_pieces)


@dataclass(frozen=True)
class TauSearch:
    """How `search_tau` chose λ. status "ok" (τ_max binds), "slack" (every policy tried meets
    it), "infeasible" (none does: λ = 0 is shown); `lam_limit` the largest λ tried within τ_max
    (0 when none), `statistic` the latency statistic at the λ chosen; `tried` how many distinct
    pooled policies were replayed; `distinct` how many there are where every one was tried
    (`exhaustive`), else None; `intervals` the λ intervals between fold policy changes (each
    holds one pooled policy, some the same one; None: not enumerated, too many requests)."""

    status: str
    lam: float
    lam_limit: float
    statistic: float
    tried: int
    distinct: int | None
    exhaustive: bool
    intervals: int | None = None

    def note(self) -> str:
        if self.exhaustive:
            return f"the best quality among every distinct policy ({self.distinct}) within τ_max"
        spread = (f"an even spread over the {self.intervals} λ intervals between fold policy changes"
                  if self.intervals is not None
                  else "a log grid of λ (too many requests to replay every distinct policy)")
        return (f"the best quality among {self.tried} policies within τ_max: {spread}, bisection's largest λ "
                f"within τ_max and {HALVINGS} halvings of it")


def search_tau(ev: Evaluation, tau_max: float, stat: str, latency=None) -> TauSearch:
    """λ for τ_max: the best pooled held-out quality (then the lower cost, then the smaller λ)
    among the distinct pooled policies whose latency statistic stays within τ_max. Every one of
    them is replayed where that takes at most MAX_CANDIDATE_WALKS request walks; past that an
    even spread of them in λ order (a log grid, on bundles too large to enumerate them), plus
    bisection's largest λ within τ_max and HALVINGS halvings of it. Neither latency nor quality
    is monotone in λ (stage 0 moves start tiers; a deeper tier can be worse): bisection alone
    missed better policies within τ_max beyond a λ where the statistic first crossed it.
    `latency(outcomes)` replaces the replay's latencies (the DES)."""
    def outcomes(lam):
        out = ev.policy_outcomes(lam)
        return out if latency is None else latency(out)

    enumerate_them = enumerates(ev)
    walk_cost = max(ev.held.size * (1 if latency is None else DES_WALK_COST), 1)
    budget = max(MIN_CANDIDATES, int(MAX_CANDIDATE_WALKS // walk_cost))
    distinct = ev.distinct_policy_lambdas() if enumerate_them else None
    exhaustive = distinct is not None and len(distinct) <= budget
    if exhaustive:
        lams = distinct
    else:
        found = bisect_lambda(lambda lam: latency_stat(outcomes(lam).latency_ms, stat), tau_max,
                              lam_hi=_lam_scale(ev))
        if distinct is not None:
            spread = [distinct[k] for k in np.unique(np.linspace(0, len(distinct) - 1, budget).round().astype(int))]
            top = min(found.lam, last_policy_change(ev))
        else:
            spread = [0.0, *(_lam_scale(ev) * np.logspace(*GRID_DECADES, budget - 1))]
            top = min(found.lam, spread[-1])
        halvings = [top / 2.0**k for k in range(HALVINGS + 1)] if found.status != "infeasible" else []
        lams = sorted(set(spread).union(halvings))
    best, best_key, best_stat, limit, n_meet, seen = 0.0, None, None, 0.0, 0, {}
    for lam in lams:
        out = None  # dropped before the next λ's outcomes are made (40 MB at 10^6 requests)
        out = ev.policy_outcomes(lam)
        walk = out.walk_key()
        if walk in seen:  # an outcome met again at a larger λ: simulated once, still within τ_max or not
            if seen[walk] <= tau_max:
                limit = lam
            continue
        out = out if latency is None else latency(out)
        value = seen[walk] = latency_stat(out.latency_ms, stat)
        if lam == 0.0 and best_stat is None:
            best_stat = value  # what an infeasible search shows
        if value > tau_max:
            continue
        n_meet += 1
        limit = lam
        key = out.preference()
        if best_key is None or key > best_key:
            best, best_key, best_stat = lam, key, value
    status = "infeasible" if n_meet == 0 else "slack" if n_meet == len(seen) else "ok"
    return TauSearch(status, best, limit, float(best_stat), len(seen), len(seen) if exhaustive else None, exhaustive,
                     None if distinct is None else len(distinct))


def criteria(chosen: dict, reference: dict, stat: str) -> dict:
    """The protocol's success criteria for the chosen policy against `fixed-2stage`."""
    def change(a, b):
        return None if a is None or b in (None, 0) else a / b - 1.0
    lat = change(chosen["latency_ms"][stat], reference["latency_ms"][stat])
    loss = (None if chosen["quality"] is None or not reference["quality"]
            else (reference["quality"] - chosen["quality"]) / reference["quality"])
    gpu = change(chosen["cost_rel"], reference["cost_rel"])
    # against a reference of quality 0 a relative loss is undefined, and no loss is possible
    no_loss = chosen["quality"] is not None and reference["quality"] == 0
    return {
        "against": "fixed-2stage",
        "latency_change": {"value": lat, "goal": "-30% to -50%", "bound": GOALS["latency_change"][1],
                           "met": lat is not None and lat <= GOALS["latency_change"][1]},
        "quality_loss": {"value": loss, "goal": "< 2%", "bound": GOALS["quality_loss"],
                         "met": no_loss or (loss is not None and loss < GOALS["quality_loss"])},
        "gpu_change": {"value": gpu, "goal": "-40%", "bound": GOALS["gpu_change"],
                       "met": gpu is not None and gpu <= GOALS["gpu_change"]},
    }


# λ as deployed: kept within τ_max minus a one-sided 95 % prediction margin for the statistic
# over the next window of requests (a held-out fold's size), from a bootstrap of the
# calibration rows at the λ chosen without it (see `deployed_lambda`).
DEPLOY_Z = 1.645
BOOTSTRAP_RESAMPLES = 200


def prediction_margin(latency_ms: np.ndarray, stat: str, n_window: int, seed: int = 0) -> float:
    """How far above its calibration estimate the latency statistic over a next window of
    `n_window` requests may lie, at one-sided 95 %: DEPLOY_Z × SD × sqrt(1 + n / n_window), SD
    the bootstrap standard deviation of the statistic over the n calibration latencies (the
    estimate's own error; a window's statistic varies as n / n_window times that variance)."""
    n = latency_ms.size
    if n < 2 or n_window < 1:
        return 0.0
    rng = np.random.default_rng(seed)
    samples = latency_ms[rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))]
    values = samples.mean(axis=1) if stat == "mean" else np.percentile(samples, PERCENTILES[stat], axis=1)
    return float(DEPLOY_Z * values.std(ddof=1) * np.sqrt(1.0 + n / n_window))


@dataclass(frozen=True)
class Pick:
    """A λ chosen among distinct policies on calibration rows (`deployed_lambda`'s rule where it
    does not bisect): status as `LambdaSearch`'s ("slack": every one of them fits), `statistic`
    its value on those rows."""

    lam: float
    statistic: float
    status: str


def calibration_lambdas(ev: Evaluation, policy, n_rows: int) -> list[float] | None:
    """One λ per distinct policy of `policy` (each piece's middle), where `enumerates(ev)` and
    replaying every one on `n_rows` calibration rows fits MAX_CANDIDATE_WALKS and leaves room for
    ENUMERATE_AT_LEAST; else None (the deployment rule bisects)."""
    budget = int(MAX_CANDIDATE_WALKS // max(n_rows, 1))
    if budget < ENUMERATE_AT_LEAST or not enumerates(ev):
        return None
    pieces = ev.pieces_of(policy)
    return None if len(pieces) > budget else [0.0] + [0.5 * (p.lam_lo + p.lam_hi) for p in pieces]


def _best_on_calibration(walk_calibration, lams, tau_max: float, stat: str, n_window: int, seed: int):
    """`deployed_lambda` over distinct policies: the best quality (then the lower cost, then the
    smaller λ) on the calibration rows among those whose statistic there stays within the limit."""
    scored, seen = [], set()
    for lam in lams:
        out = walk_calibration(lam)
        walk = out.walk_key()
        if walk in seen:
            continue
        seen.add(walk)
        scored.append((lam, latency_stat(out.latency_ms, stat), *out.preference()))

    def best(limit, value=lambda row: row[1]):
        fits = [row for row in scored if value(row) <= limit]
        if not fits:
            return Pick(0.0, scored[0][1], "infeasible")
        row = max(fits, key=lambda r: (r[2], r[3], -r[0]))
        return Pick(row[0], row[1], "slack" if len(fits) == len(scored) else "ok")

    found = best(tau_max)
    margin = prediction_margin(walk_calibration(found.lam).latency_ms, stat, n_window, seed)
    kept = best(tau_max - margin) if margin > 0 else found
    if kept.status == "infeasible" and found.status != "infeasible":
        own = {row[0]: prediction_margin(walk_calibration(row[0]).latency_ms, stat, n_window, seed)
               for row in scored if row[1] <= tau_max}
        by_own = best(tau_max, lambda row: row[1] + own.get(row[0], np.inf))
        if by_own.status != "infeasible":
            kept, margin = by_own, own[by_own.lam]
    return found, kept, margin


def deployed_lambda(walk_calibration, tau_max: float, stat: str, n_window: int, seed: int, lam_hi: float,
                    lams: list[float] | None = None):
    """λ as deployed for one policy, on its calibration rows (`walk_calibration(λ)`, through
    their out-of-fold bins). With `lams` (one per distinct policy, `calibration_lambdas`): the
    best quality there among those whose statistic stays within τ_max minus
    `prediction_margin` for a next window of `n_window` requests, the margin measured at the best
    within τ_max itself, as the report picks among held-out policies. Without (too many rows to
    replay them all): the largest λ within τ_max minus that margin, by bisection. Where the
    statistic jumps there, the margin can be so wide that nothing fits though something meets
    τ_max with its own margin (p99 on a few hundred requests): then each λ's own margin.
    (search at τ_max, search kept — its `statistic` the calibration rows' at its λ, without the
    margin — and the margin its rule used)."""
    if lams is not None:
        return _best_on_calibration(walk_calibration, lams, tau_max, stat, n_window, seed)

    def on_calibration(lam):
        return latency_stat(walk_calibration(lam).latency_ms, stat)

    def with_own_margin(lam):
        latency = walk_calibration(lam).latency_ms
        return latency_stat(latency, stat) + prediction_margin(latency, stat, n_window, seed)

    found = bisect_lambda(on_calibration, tau_max, lam_hi=lam_hi)
    margin = prediction_margin(walk_calibration(found.lam).latency_ms, stat, n_window, seed)
    kept = bisect_lambda(on_calibration, tau_max - margin, lam_hi=lam_hi) if margin > 0 else found
    if kept.status == "infeasible" and found.status != "infeasible":
        own = bisect_lambda(with_own_margin, tau_max, lam_hi=lam_hi)
        if own.status != "infeasible":
            statistic = on_calibration(own.lam)
            kept, margin = replace(own, statistic=statistic), own.statistic - statistic
    return found, kept, margin


def slack_choice(walk_calibration, kept, margin: float, tau_max: float, stat: str, held_out_choice):
    """(λ, its statistic on the calibration rows, chosen_by) as deployed: the rule's λ, except
    where the rule bisected and τ_max is slack on those rows — its "largest λ" is then only the
    search bracket's top (the deepest policy, not the best) — and `held_out_choice` (the λ the
    report chose by pooled held-out quality, as cross-validation picks a setting before the
    refit) also fits within τ_max less the margin there. A rule that compared every distinct
    policy already took the best."""
    if kept.status == "slack" and held_out_choice is not None and not isinstance(kept, Pick):
        at_choice = latency_stat(walk_calibration(held_out_choice).latency_ms, stat)
        if at_choice <= tau_max - margin:
            return float(held_out_choice), at_choice, "held-out quality"
    return kept.lam, kept.statistic, "rule"


def deployment_check(ev: Evaluation, tau_max: float, stat: str, held_out_choice: float | None = None) -> dict:
    """λ as it would be deployed (`deployed_lambda`, `slack_choice`), chosen on each fold's own
    calibration rows, then judged on that fold's held-out rows — how often it met τ_max; and the
    same without the margin (λ at τ_max itself), which a fold misses about half the time when the
    limit binds."""
    seed = ev.options["seed"]
    plain, margined = {"lambdas": [], "held_out_statistic": [], "met": 0}, {"lambdas": [], "held_out_statistic": [], "met": 0}
    margins = []
    for k, f in enumerate(ev.folds):
        found, kept, margin = deployed_lambda(f.walk_calibration, tau_max, stat, f.held.size, seed + k, _lam_scale(ev),
                                              calibration_lambdas(ev, f.policy, f.cal.size))
        margins.append(margin)
        deployed = slack_choice(f.walk_calibration, kept, margin, tau_max, stat, held_out_choice)[0]
        for record, lam in ((plain, found.lam), (margined, deployed)):
            value = latency_stat(f.walk(lam).latency_ms, stat)
            record["lambdas"].append(lam)
            record["held_out_statistic"].append(value)
            record["met"] += int(value <= tau_max)
    return {**margined, "of": len(ev.folds), "margin_ms": margins, "without_margin": plain, "latency": "replay",
            "note": (f"kept within τ_max minus a one-sided 95% prediction margin for a fold's statistic, mean "
                     f"{_readable_ms(np.mean(margins))} ms; without the margin {plain['met']} of {len(ev.folds)}")}


def _readable_ms(value: float) -> str:
    """3 significant digits, and 0 for float noise (a margin of 2.1e-13 ms where the statistic
    never moves: every request has the same recorded latency)."""
    return "0" if abs(value) < 1e-6 else f"{value:.3g}"


def save_deployment_policy(ev: Evaluation, tau_max: float, stat: str, path, held_out_choice: float | None = None) -> dict:
    """`asd simulate --save-policy`: the policy fitted on every calibration request
    (`Evaluation.deployment_fold`), solved at the λ the deployment check's rule picks on those
    requests (`deployed_lambda`, the margin for a window of one held-out fold's size), written to
    `path` with that choice in its meta. asd check, live and serve run it at that λ.
    Where τ_max is slack on those requests, the rule's "largest λ" is only the top of the search
    bracket (the deepest policy, not the best), so `held_out_choice` — the λ the report chose by
    pooled held-out quality, as cross-validation picks a setting before the refit — is taken
    instead when its statistic there is also within τ_max less the margin."""
    f = ev.deployment_fold()
    window = max(1, round(ev.held.size / len(ev.folds)))
    seed = ev.options["seed"]
    _, kept, margin = deployed_lambda(f.walk_calibration, tau_max, stat, window, seed, _lam_scale(ev),
                                      calibration_lambdas(ev, f.policy, f.cal.size))
    lam, statistic, chosen_by = slack_choice(f.walk_calibration, kept, margin, tau_max, stat, held_out_choice)
    by_quality = isinstance(kept, Pick)
    info = {"lambda": lam, "status": kept.status, "chosen_by": chosen_by, "tau_max_ms": float(tau_max), "stat": stat,
            "rule": "best quality among distinct policies" if by_quality else "largest λ (bisection)",
            "margin_ms": margin, "calibration_requests": int(f.cal.size), "calibration_statistic_ms": statistic,
            "deepest_statistic_ms": kept.statistic if kept.status == "slack" and not by_quality else None}
    policy = f.policy.solve(lam)
    policy.meta["deployment"] = info
    return {"path": str(policy.save(path)), **info}


MODES = ("replay", "des")
SCHEDULERS = ("fifo", "difficulty")
ARRIVALS = ("poisson", "gamma", "trace")
CHROME_TRACE_SPANS = 100_000  # (request, tier) spans written: chrome://tracing slows past a few hundred thousand


TRACE_DES_NOTE = ("under the trace cost model the DES times each request by the iteration coefficients fitted "
                  "from the trace (its tier's TTFT + TPOT fit, exact at the tier's mean prompt length), replay by "
                  "its recorded e2e where it has one: even alone a request's DES latency is not its replayed one "
                  "(under profile and params it is)")


def describe_load(rate, arrivals: str, cv: float, scheduler: str) -> dict:
    """A DES load as every report's JSON names it: cv only for gamma arrivals, no rate for the
    trace's own offsets (`asd simulate` fills in the rate they imply)."""
    return {"rate": None if arrivals == "trace" else rate, "arrivals": arrivals,
            "cv": cv if arrivals == "gamma" else None, "scheduler": scheduler}


def trace_rate(arrival_ms: np.ndarray) -> dict:
    """The rate the trace's offsets imply, {"rate": req/s}: n arrivals span n − 1 gaps. With
    none to measure (one request, or all at one instant) {"rate": None, "rate_note": why}."""
    n, span_s = arrival_ms.size, float(np.ptp(arrival_ms)) / 1e3 if arrival_ms.size else 0.0
    if n > 1 and span_s > 0:
        return {"rate": (n - 1) / span_s}
    why = "a single arrival" if n < 2 else f"all {n} arrivals at one instant"
    return {"rate": None, "rate_note": f"{why}: no rate"}


def _arrival_offsets(bundle) -> tuple[str, np.ndarray]:
    """(the bundle's path, requests.arrival_s in seconds, NaN where not recorded)."""
    from asd.traces.bundle import open_bundle

    opened = open_bundle(bundle)
    return str(opened.path), opened.to_pandas("requests", ["arrival_s"])["arrival_s"].to_numpy(np.float64)


def trace_offsets(ev: Evaluation, rows: np.ndarray | None = None) -> np.ndarray:
    """The held-out requests' (or view `rows`') recorded arrival offsets (requests.arrival_s,
    seconds), in the pooled order the DES runs them in; a trace without them is a ConfigError
    naming it."""
    if ev.view.path is None:
        raise ConfigError("this trace: --arrivals trace needs a bundle with requests.arrival_s")
    where, offsets = _arrival_offsets(ev.view.path)
    offsets = offsets[ev.held if rows is None else rows]
    missing = int(np.isnan(offsets).sum())
    if missing:
        raise ConfigError(f"{where}: --arrivals trace needs requests.arrival_s; {missing} of {offsets.size} "
                          "held-out requests have none (use --rate R for Poisson or gamma arrivals)")
    return offsets


def difficulty_priority(ev: Evaluation, out: Outcomes) -> np.ndarray:
    """(N, L) queue keys for the DES's difficulty scheduler: the predicted chance that tier i's
    answer will NOT do, as known when the request joins tier i's queue — from the prompt alone
    at its start tier (the router's per-tier prompt models), from the previous tier's bin after
    a climb (its fold policy's transition row times the tier's acceptance by bin). Easy requests
    are likely to leave the cascade at this tier, so serving them first is a shortest-expected-
    remaining-work rule: lower mean and median latency, a longer tail for the hard ones."""
    keys = np.empty((ev.held.size, ev.view.n_tiers))
    lo = 0
    for f in ev.folds:
        rows = np.arange(lo, lo + f.held.size)
        lo += f.held.size
        keys[rows] = _difficulty_keys(f.policy, ev.router_scores(f)[1], f.tier_bins, f.cold_bins, out.start[rows])
    return keys


def calibration_priority(ev: Evaluation, fold, positions: np.ndarray, out: Outcomes) -> np.ndarray:
    """`difficulty_priority` for the calibration rows `fold.cal[positions]` (a tuned baseline's,
    picked under the same load and scheduler as the policy's λ): their out-of-fold prompt
    scores and bins, through the fold's policy."""
    _, tier_bins, cold_bins = fold.cal_bins
    return _difficulty_keys(fold.policy, ev.router_scores(fold)[0][positions], tier_bins[positions],
                            cold_bins[positions], out.start)


def _difficulty_keys(policy, prompt_p: np.ndarray, tier_bins: np.ndarray, cold_bins: np.ndarray,
                     start: np.ndarray) -> np.ndarray:
    """1 − expected acceptance at each tier as a request joins its queue (see difficulty_priority)."""
    t = policy.tables
    expected = np.empty_like(prompt_p)
    expected[:, 0] = prompt_p[:, 0]
    for i in range(1, prompt_p.shape[1]):
        climbed = t.trans[i - 1] @ policy.q_mean[i]  # E[acceptance at i | bin at i − 1]
        expected[:, i] = climbed[tier_bins[:, i - 1]]
        if t.cold_start and i - 1 > 0:  # climbed from a cold start at i − 1: its cold bin and row
            cold = (t.trans_cold[i - 1] @ policy.q_mean[i])[cold_bins[:, i - 1]]
            expected[:, i] = np.where(start == i - 1, cold, expected[:, i])
    at_start = np.arange(start.size)
    expected[at_start, start] = prompt_p[at_start, start]
    return 1.0 - expected


def des_latency(ev: Evaluation, *, rate: float | None, replicas=1, max_batch: int = 256, seed: int = 0,
                scheduler: str = "fifo", arrivals: str = "poisson", cv: float = 1.0, rows: np.ndarray | None = None,
                fold=None, positions: np.ndarray | None = None, kv_tokens=None):
    """outcomes → the same outcomes with latencies from the discrete-event simulation over the
    pooled held-out requests (or the view's `rows`, in that order): arrivals Poisson at `rate`
    req/s, gamma gaps with coefficient of variation `cv` at that rate (bursty for cv > 1), or the
    trace's recorded offsets; one pool per tier (`replicas`, TP from the cost model,
    `max_batch`, `kv_tokens` of KV cache per replica, None: unlimited), iteration times from the
    cost model's coefficients; queues FIFO or by predicted difficulty (`scheduler`, see
    difficulty_priority; for `rows` other than the held-out ones, the calibration rows
    `fold.cal[positions]` of a fold, calibration_priority). The function's `key` names the load,
    for `tuned_latency`. A request alone gets its replayed
    latency under the profile and params cost models, whose replay is the same iteration model;
    not under trace, where replay charges the recorded e2e (else the TTFT + TPOT fit) and the
    iteration coefficients reproduce that fit only at the tier's mean prompt (TRACE_DES_NOTE)."""
    from asd.simulator.des import Pools, arrival_times
    from asd.simulator.des import simulate as run_des

    if rows is not None and scheduler != "fifo" and fold is None:
        raise ConfigError("des_latency: the difficulty scheduler's keys for rows other than the held-out ones "
                          "are a fold's calibration rows (give fold and positions)")
    c, rows = ev.costs, ev.held if rows is None else rows
    n_prompt, n_out = np.rint(c.n_prompt_tokens[rows]), np.rint(c.n_output_tokens[rows])
    n_draft, n_acc = np.rint(c.n_draft_tokens[rows]), np.rint(c.n_accepted[rows])
    tokens = dict(n_prompt=n_prompt.astype(np.int64), n_decode=n_out.astype(np.int64),
                  n_prompt_cont=(n_prompt + n_draft).astype(np.int64),
                  n_decode_cont=np.maximum(n_out - n_acc, 0).astype(np.int64),
                  n_kv_cont=(n_prompt + n_acc).astype(np.int64))  # the closed form's: rejected draft dropped
    pools = Pools.build(ev.cost_model.iteration_coefficients(), replicas=replicas,
                        tensor_parallel=ev.cost_model.gpus.astype(np.int64), max_batch=max_batch,
                        kv_capacity=UNLIMITED_KV if kv_tokens is None else kv_tokens)
    if kv_tokens is not None:  # any request may run at any tier, cold or continuing: each must fit there
        peak = np.maximum(tokens["n_prompt"] + tokens["n_decode"], tokens["n_prompt_cont"] + tokens["n_decode_cont"])
        over = peak > pools.kv_capacity[None, :]
        if over.any():
            r, i = (int(x) for x in np.argwhere(over)[0])
            need = ",".join(str(int(v)) for v in np.maximum(peak.max(axis=0), 1))
            raise ConfigError(f"--kv-tokens {','.join(map(str, pools.kv_capacity.tolist()))}: request "
                              f"{ev.view.request_ids[rows[r]]!r} needs {int(peak[r, i])} KV tokens (prompt, draft and "
                              f"output) at tier {ev.view.tier_names[i]}, more than a replica holds; every request "
                              f"fits with --kv-tokens {need}")
    if arrivals == "trace":
        arrival = arrival_times(rows.size, process="trace", offsets_s=trace_offsets(ev, rows))
    else:
        arrival = arrival_times(rows.size, process=arrivals, rate=rate, cv=cv, seed=seed)

    def latency(out: Outcomes) -> Outcomes:
        priority = None
        if scheduler == "difficulty":
            priority = (difficulty_priority(ev, out) if fold is None
                        else calibration_priority(ev, fold, positions, out))
        path = tokens
        if out.after_start is not None:  # a path skipping tiers: the tier it skips to regenerates, as replayed
            skip = np.flatnonzero(out.after_start > out.start + 1)
            to = out.after_start[skip]
            path = dict(tokens)
            for cont, cold in (("n_prompt_cont", "n_prompt"), ("n_decode_cont", "n_decode"), ("n_kv_cont", "n_prompt")):
                path[cont] = tokens[cont].copy()
                path[cont][skip, to] = tokens[cold][skip, to]
        run = run_des(out.start, out.stop, arrival_ms=arrival, pools=pools, priority=priority,
                      after_start=out.after_start, **path)
        latency.last = run
        return Outcomes(out.start, out.stop, out.cost, run.e2e_ms, out.quality, out.after_start)
    latency.pools = pools
    latency.key = _load_key(rate, replicas, max_batch, seed, arrivals, cv, scheduler, kv_tokens)
    return latency


def _load_key(rate, replicas, max_batch, seed, arrivals, cv, scheduler, kv_tokens=None) -> tuple:
    kv = None if kv_tokens is None else tuple(np.atleast_1d(kv_tokens).tolist())
    return ("des", rate, tuple(np.atleast_1d(replicas).tolist()), max_batch, seed, arrivals, cv, scheduler, kv)


def kv_tokens_list(pools) -> list[int] | None:
    """The load section's `kv_tokens`: per tier, None where unlimited (not set)."""
    values = pools.kv_capacity.tolist()
    return None if all(v >= UNLIMITED_KV for v in values) else values


def tuned_latency(ev: Evaluation, *, rate, replicas=1, max_batch=256, seed=0, arrivals="poisson", cv=1.0,
                  scheduler="fifo", kv_tokens=None):
    """(fold, positions of its calibration rows) → their timer under the same load and queues
    (`des_latency`): the tuned baselines pick their member by the latency this load gives on
    their calibration rows, as the policy's λ is searched under it; replayed latencies chose
    members the load then pushed past τ_max (p95 626 → 1624 ms for threshold on the built-in
    trace at 6 req/s), and FIFO queues under `--scheduler difficulty` others than the held-out
    run's. Arrivals at the same rate, so the calibration rows meet the same load as the held-out
    ones."""
    def timer_for(fold, positions: np.ndarray):
        return des_latency(ev, rate=rate, replicas=replicas, max_batch=max_batch, seed=seed, arrivals=arrivals,
                           cv=cv, rows=fold.cal[positions], scheduler=scheduler, fold=fold, positions=positions,
                           kv_tokens=kv_tokens)
    timer_for.key = _load_key(rate, replicas, max_batch, seed, arrivals, cv, scheduler, kv_tokens)
    return timer_for


def check_options(tau_max: float, stat: str, mode: str, rate: float | None, scheduler: str = "fifo",
                  arrivals: str = "poisson", cv: float = 1.0, bundle=None) -> None:
    """`asd simulate`'s limit, statistic and mode, checked before any calibration."""
    if stat not in STATISTICS:
        raise ConfigError(f"--stat {stat!r}: use one of {', '.join(STATISTICS)}")
    if not (tau_max > 0 and math.isfinite(tau_max)):
        raise ConfigError(f"--tau-max {tau_max}: must be a positive number of milliseconds")
    check_load_options(mode, rate, scheduler, arrivals, cv, bundle)


def check_load_options(mode: str, rate: float | None, scheduler: str = "fifo", arrivals: str = "poisson",
                       cv: float = 1.0, bundle=None) -> None:
    """The mode and the DES's load (`asd simulate`, `asd sweep`, `asd check`), checked before any
    work; with `bundle` (a path or "builtin"), --arrivals trace is refused where no request
    recorded an arrival offset, before any calibration."""
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    rate = None if rate is None else real_number("rate", rate)  # from Python: "2" or True
    cv = real_number("cv", cv)
    if arrivals not in ARRIVALS:
        raise ConfigError(f"--arrivals {arrivals!r}: use one of {', '.join(ARRIVALS)}")
    if mode == "des" and arrivals != "trace" and not (rate is not None and rate > 0):
        raise ConfigError("--mode des needs --rate R (requests per second, > 0), or --arrivals trace")
    # a value the mode ignores (the CLI warns so) is not refused as well
    if mode == "des" and arrivals != "trace" and rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ConfigError(f"--rate {rate}: must be a positive, finite number of requests per second")
    if mode == "des" and arrivals == "gamma" and not (cv > 0 and math.isfinite(cv)):
        raise ConfigError(f"--cv {cv}: the gaps' coefficient of variation must be a positive number (1 = Poisson)")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler {scheduler!r}: use one of {', '.join(SCHEDULERS)}")
    if mode == "des" and arrivals == "trace" and isinstance(bundle, (str, os.PathLike)):
        where, offsets = _arrival_offsets(bundle)
        if np.isnan(offsets).all():
            raise ConfigError(f"{where}: --arrivals trace needs requests.arrival_s, and no request has one "
                              "(use --rate R for Poisson or gamma arrivals)")


def arrivals_check(mode: str, rate, arrivals: str = "poisson", cv: float = 1.0, seed: int = 0):
    """Evaluation's `check_held` under a DES load at --rate: the held-out requests' arrivals made
    as des_latency makes them, so a rate too low to time them (`des.arrival_times`: --rate
    1e-300) is refused in the same words before the calibration rather than after it; None
    where no rate is drawn from."""
    if mode != "des" or arrivals == "trace":
        return None
    from asd.simulator.des import arrival_times

    return lambda held: arrival_times(held.size, process=arrivals, rate=rate, cv=cv, seed=seed)


def check_view_options(view, *, mode: str = "replay", replicas=1, explain_id: str | None = None,
                       split: str | None = None, folds: int | None = None, kv_tokens=None) -> None:
    """What needs the bundle's tiers or request ids, checked once it is read and before any
    calibration (which takes minutes on a large ladder): --replicas and --kv-tokens per tier,
    --explain's request."""
    for option, value in (("--replicas", replicas), ("--kv-tokens", kv_tokens)):
        if mode == "des" and isinstance(value, (list, tuple)) and len(value) != view.n_tiers:
            raise ConfigError(f"{option} {','.join(map(str, value))}: {view.path} has {view.n_tiers} tiers "
                              f"({' → '.join(view.tier_names)}); give one count, or one per tier")
    if explain_id is None:
        return
    matches = _request_rows(view, explain_id)
    held_split = split if split is not None else ("test" if view.has_split and folds is None else None)
    if held_split is not None and view.split[matches[0]] != held_split:
        raise ConfigError(f"--explain {explain_id!r}: the request is in split {view.split[matches[0]]!r}, not the "
                          f"held-out split {held_split!r} (--explain shows a request the policy did not see)")


def refuse_label_free_options(view, *, explain_id=None, plots=None, scheduler="fifo", policy=None) -> None:
    """The options that show or use the chosen policy, refused on a bundle with no quality label
    at its last tier (where `simulate` chooses none), before any work."""
    if policy is not None:  # its λ would be searched for a quality no request has
        raise ConfigError(f"--policy: λ is searched for the best quality within τ_max, but {view.path} has no "
                          f"quality label at its last tier {view.tier_names[-1]}; `asd check POLICY BUNDLE "
                          "--max-latency p95=MS --max-cost-rel C` replays the policy at its saved λ for cost and "
                          "latency")
    what = {"--explain": "shows the chosen policy's walk of a request", "--plots": "draws the chosen policy's "
            "latency and stops", "--scheduler difficulty": "orders the queues by the policy's predicted difficulty"}
    given = [o for o, v in (("--explain", explain_id), ("--plots", plots),
                            ("--scheduler difficulty", scheduler == "difficulty")) if v]
    if given:
        raise ConfigError(f"{given[0]} {what[given[0]]}, but {view.path} has no quality label at its last tier "
                          f"{view.tier_names[-1]}, so no policy is chosen (label the bundle first)")


def simulate(bundle="builtin", *, tau_max: float, stat: str = "p95", mode: str = "replay", rate: float | None = None,
             replicas=1, max_batch: int = 256, split: str | None = None, folds: int | None = None,
             cost_model: str | None = None, predictor: str = "logistic", stage0: bool = True, risk="mean",
             seed: int = 0, evaluation: Evaluation | None = None, progress=None, scheduler: str = "fifo",
             arrivals: str = "poisson", cv: float = 1.0, chrome_trace=None, kv_tokens=None) -> dict:
    """Everything `asd simulate` prints and writes with --json. chrome_trace: under --mode des, a
    path for the chosen policy's run as a chrome://tracing file."""
    check_options(tau_max, stat, mode, rate, scheduler, arrivals, cv)
    ev = evaluation
    if ev is None:
        view = bundle if isinstance(bundle, TraceView) else load_view(bundle)
        ev = Evaluation(view, folds=folds, split=split, cost_model=cost_model, predictor=predictor, stage0=stage0,
                        risk=risk, seed=seed, progress=progress, fit=last_tier_labelled(view),
                        check_held=arrivals_check(mode, rate, arrivals, cv, seed))
    if not ev.fitted or not last_tier_labelled(ev.view):  # nothing fitted, or a given policy: the refusals
        refuse_label_free_options(ev.view, scheduler=scheduler if mode == "des" else "fifo", policy=ev.fixed)
    n_tiers = ev.view.n_tiers
    latency = (des_latency(ev, rate=rate, replicas=replicas, max_batch=max_batch, seed=seed, scheduler=scheduler,
                           arrivals=arrivals, cv=cv, kv_tokens=kv_tokens)
               if mode == "des" else None)
    timed = (lambda out: out) if latency is None else latency
    timer_for = (tuned_latency(ev, rate=rate, replicas=replicas, max_batch=max_batch, seed=seed, arrivals=arrivals,
                               cv=cv, scheduler=scheduler, kv_tokens=kv_tokens) if mode == "des" else None)
    if not ev.fitted:
        return _simulate_label_free(ev, tau_max, stat, mode, latency,
                                    lambda: _load(ev, latency, rate, arrivals, cv, scheduler, max_batch, chrome_trace))
    found = search_tau(ev, tau_max, stat, latency)
    lam = found.lam
    chosen_out = timed(ev.policy_outcomes(lam))
    chosen = {"lambda": lam, **summarize(chosen_out, ev.cost_last, n_tiers)}
    chosen_cost = float(chosen_out.cost.mean())  # what `random` matches; the outcomes go now
    del chosen_out
    feasible = found.status != "infeasible"
    load = _load(ev, latency, rate, arrivals, cv, scheduler, max_batch, chrome_trace)
    if load is not None:
        load["run"] = "policy"  # whose run the utilisation, queues, TTFT and chrome trace are

    def outcomes_of_baselines():  # one at a time: summarised and dropped (40 MB each at 10^6 requests)
        yield from ev.iter_fixed_baselines(lam)
        for name in B.TUNED:
            yield name, ev.tuned_baseline(name, latency=(stat, tau_max), timer_for=timer_for)
        yield "random", ev.random_baseline(chosen_cost)

    summaries = {}
    for name, out in outcomes_of_baselines():
        s = summarize(timed(out), ev.cost_last, n_tiers)
        s["meets_tau"] = s["latency_ms"][stat] <= tau_max
        if name == B.UPPER_BOUND:
            s["upper_bound"] = True
        summaries[name] = s
        del out
    baselines = {name: summaries[name] for name in B.baseline_names(ev.view.tier_names)}

    return _header(ev, tau_max, stat, mode) | {
        "search": {"status": found.status, "evaluations": found.tried, "statistic": found.statistic,
                   "lambda_limit": found.lam_limit, "lambda": lam, "distinct_policies": found.distinct,
                   "lambda_intervals": found.intervals, "exhaustive": found.exhaustive, "note": found.note()},
        "load": load,
        "feasible": feasible,
        "chosen": chosen,
        "baselines": baselines,
        "criteria": criteria(chosen, baselines["fixed-2stage"], stat),
        "deployment": deployment_check(ev, tau_max, stat, held_out_choice=lam),
        "warnings": list(ev.warnings) + _load_warnings(load),
    }


def _header(ev: Evaluation, tau_max: float, stat: str, mode: str) -> dict:
    """The keys every `asd simulate` result starts with: what was replayed, how, and how priced."""
    return {"bundle": ev.view.path, "tau_max_ms": float(tau_max), "stat": stat, "mode": mode,
            "split": ev.design["split"], "folds": ev.design["folds"], "evaluation": ev.design["description"],
            "n_requests": int(ev.held.size), "in_sample": bool(ev.design.get("in_sample")),
            "labelled": last_tier_labelled(ev.view), "speculative": ev.speculative,
            "cost_model": ev.cost_model.kind, "cost_note": ev.cost_note, "tiers": list(ev.view.tier_names),
            "settings": ev.settings}


def _load(ev: Evaluation, latency, rate, arrivals, cv, scheduler, max_batch, chrome_trace) -> dict | None:
    """The DES's load section for its last run (None in replay mode), writing that run as a
    chrome://tracing file where asked."""
    if latency is None:
        return None
    run = latency.last
    load = describe_load(rate, arrivals, cv, scheduler) | {
            "replicas": latency.pools.replicas.tolist(), "max_batch": int(max_batch),
            "kv_tokens": kv_tokens_list(latency.pools),
            "utilisation": run.utilisation.tolist(), "gpu_s": run.gpu_s.tolist(),
            "mean_queue": run.mean_queue.tolist(), "max_queue": run.max_queue.tolist(),
            "ttft_ms": {s: run.latency(s, "ttft") for s in STATISTICS}}
    if arrivals == "trace":
        load |= trace_rate(run.arrival_ms)
    if ev.cost_model.kind == "trace":
        load["latency_note"] = TRACE_DES_NOTE
    if chrome_trace is not None:
        try:
            run.chrome_trace(chrome_trace, tier_names=ev.view.tier_names, request_ids=ev.view.request_ids[ev.held],
                             limit=CHROME_TRACE_SPANS)
        except OSError as exc:
            raise ConfigError(f"{chrome_trace}: cannot write --chrome-trace ({exc.strerror or exc})") from None
        load["chrome_trace"] = str(chrome_trace)
        dropped = run.spans() - CHROME_TRACE_SPANS
        if dropped > 0:
            load["chrome_trace_spans_dropped"] = dropped
    return load


def _load_warnings(load: dict | None) -> list[str]:
    """What a DES load section should be warned about: a chrome trace cut at its span limit."""
    dropped = (load or {}).get("chrome_trace_spans_dropped")
    if not dropped:
        return []
    return [f"--chrome-trace {load['chrome_trace']}: only the first {CHROME_TRACE_SPANS:,} (request, tier) spans "
            f"are written, {dropped:,} more dropped (chrome://tracing slows past a few hundred thousand)"]


def _simulate_label_free(ev: Evaluation, tau_max: float, stat: str, mode: str, latency, load) -> dict:
    """`simulate` on a bundle with no quality label at its last tier: no policy can be chosen
    and no baseline tuned or judged on quality, so only the methods whose stops need neither
    (`Evaluation.iter_label_free_baselines`) are replayed, for their cost and latency. The DES's
    load section (and --chrome-trace) describes the always-last run."""
    last = f"always-{ev.view.tier_names[-1]}"
    baselines, last_run = {}, None
    for name, out in ev.iter_label_free_baselines():
        s = summarize(out if latency is None else latency(out), ev.cost_last, ev.view.n_tiers)
        s["meets_tau"] = s["latency_ms"][stat] <= tau_max
        baselines[name] = s
        if latency is not None and name == last:
            last_run = latency.last
    if last_run is not None:
        latency.last = last_run
    load_section = None if latency is None else load() | {"run": last}
    return _header(ev, tau_max, stat, mode) | {
        "search": None, "load": load_section, "feasible": None, "chosen": None, "baselines": baselines,
        "criteria": None, "deployment": None,
        "not_fitted": f"no quality label at the last tier {ev.view.tier_names[-1]}: no policy is chosen and no "
                      "baseline tuned on quality; shown: the methods that need no labels, for cost and latency "
                      "(label the bundle for the rest)",
        "warnings": list(ev.warnings) + _load_warnings(load_section)}


def _request_rows(view, request_id) -> np.ndarray:
    """Rows of `request_id` in the view, or a ConfigError that shows what its ids look like."""
    ids = view.request_ids.astype(str)
    matches = np.flatnonzero(ids == str(request_id))
    if matches.size == 0:
        shown = ", ".join(ids[:3]) + (", …" if ids.size > 3 else "")
        raise ConfigError(f"--explain {request_id!r}: no such request in {view.path} (its request ids: {shown})")
    return matches


def explain(ev: Evaluation, request_id: str, lam: float) -> dict:
    """The protocol's debugger for one request: its output per tier, features, p̂, bin, the
    stop and continue values and the decision, under its own fold's policy at λ."""
    matches = _request_rows(ev.view, request_id)
    row = int(matches[0])
    for f in ev.folds:
        where = np.flatnonzero(f.held == row)
        if where.size:
            break
    else:
        raise ConfigError(f"--explain {request_id!r}: the request is not among the held-out requests")
    j = int(where[0])
    policy = f.policy.solve(lam)
    w = policy.walk(f.prompt_bins[j:j + 1], f.tier_bins[j:j + 1], cold_bins=f.cold_bins[j:j + 1],
                    route_scores=None if f.stage0_route is None else f.stage0_route[0][j:j + 1])
    start, stop = int(w.start[0]), int(w.stop[0])
    fs, view = ev.features, ev.view
    tiers = []
    for i, name in enumerate(view.tier_names):
        cold = i == start and i > 0
        b = int((f.cold_bins if cold else f.tier_bins)[j, i])
        x = (fs.cold_x if cold else fs.tier_x)[row, i]
        # the cold start tier is decided on the cold-state tables, as the walk does
        stop_value = lam * (1.0 - float((policy.q_stop_cold if cold else policy.q_stop)[i, b]))
        cont = policy.continue_value(i, b, cold=cold)
        output = view.outputs[row, i]
        tiers.append({
            "tier": name, "ran": start <= i <= stop, "state": _walk_state(i, start, stop),
            "output": None if output is None else str(output)[:300],
            "acceptable": None if np.isnan(view.acceptable[row, i]) else bool(view.acceptable[row, i]),
            # a cold start is binned on its cold-state p̂ (f.p_held holds the climbed state's)
            "p_hat": float(policy.predictor.predict_proba(i + 1, x[None, :])[0]) if cold else float(f.p_held[j, i]),
            "bin": b, "stop_value": stop_value, "continue_value": cont,
            "decision": "stop" if bool((policy.stop_cold_table if cold else policy.stop_table)[i, b]) else "continue",
            "features": {n: float(v) for n, v in zip(fs.names, x)},
        })
    if policy.route_threshold is not None:
        scores = [float(v) for v in f.stage0_route[0][j]]
        stage0 = {"rule": "routed", "threshold": policy.route_threshold, "route_scores": scores}
    else:
        stage0 = {"rule": "prompt bins", "prompt_bin": int(f.prompt_bins[j])}
    return {"request_id": str(request_id), "lambda": lam, "cost_model": ev.cost_model.kind,
            "start_tier": view.tier_names[start],
            "stop_tier": view.tier_names[stop], "prompt": None if view.prompts[row] is None else str(view.prompts[row])[:300],
            "stage0": stage0, "tiers": tiers}


def _walk_state(tier: int, start: int, stop: int) -> str:
    """Where a tier sits on one request's walk: its start (cold when stage 0 skipped tiers before
    it), a climb, skipped by stage 0, or past the stop."""
    if tier == start:
        return "cold start" if tier > 0 else "start"
    if tier < start:
        return "skipped"
    return "climbed" if tier <= stop else "not reached"


def run_simulate(bundle="builtin", *, tau_max: float, stat: str = "p95", mode: str = "replay", rate=None,
                 replicas=1, max_batch=256, split=None, folds=None, cost_model=None, predictor="logistic",
                 stage0=True, risk="mean", seed=0, plots=None, explain_id=None, progress=None, policy=None,
                 scheduler="fifo", arrivals="poisson", cv=1.0, chrome_trace=None, save_policy=None,
                 kv_tokens=None) -> dict:
    """`asd simulate` end to end: evaluate, search λ, baselines, optional plots and --explain.
    policy: a given policy file whose tables are searched over λ instead of calibrating one.
    save_policy: a path for the policy to deploy (`save_deployment_policy`)."""
    check_options(tau_max, stat, mode, rate, scheduler, arrivals, cv, bundle)
    if save_policy is not None:
        if policy is not None:
            raise ConfigError("--save-policy writes a policy fitted here: with --policy there is none (the "
                              "given file is replayed as it is; `asd calibrate --lambda` re-solves one)")
        if mode == "des":
            raise ConfigError("--save-policy picks λ on replayed latencies, as the deployment line does: "
                              "run it without --mode des")
        check_policy_target(save_policy)
    view = load_view(bundle)
    check_view_options(view, mode=mode, replicas=replicas, explain_id=explain_id, split=split, folds=folds,
                       kv_tokens=kv_tokens)
    if save_policy is not None:
        require_labels(view, np.arange(view.n_requests), "--save-policy")
    fit = last_tier_labelled(view)
    if not fit:
        refuse_label_free_options(view, explain_id=explain_id, plots=plots, scheduler=scheduler, policy=policy)
    ev = Evaluation(view, folds=folds, split=split, cost_model=cost_model, predictor=predictor,
                    stage0=stage0, risk=risk, seed=seed, progress=progress, policy=policy, fit=fit,
                    check_held=arrivals_check(mode, rate, arrivals, cv, seed))
    result = simulate(bundle, tau_max=tau_max, stat=stat, mode=mode, rate=rate, replicas=replicas,
                      max_batch=max_batch, evaluation=ev, seed=seed, scheduler=scheduler, arrivals=arrivals, cv=cv,
                      chrome_trace=chrome_trace, kv_tokens=kv_tokens)
    result["bundle"] = str(bundle)  # as the user named it ("builtin", not the package path)
    if explain_id is not None:
        result["explain"] = explain(ev, explain_id, result["chosen"]["lambda"])
    if plots:
        from asd.simulator import plots as P

        out = P.plots_dir(plots)
        chosen = ev.policy_outcomes(result["chosen"]["lambda"])
        if mode == "des":
            chosen = des_latency(ev, rate=rate, replicas=replicas, max_batch=max_batch, seed=seed,
                                 scheduler=scheduler, arrivals=arrivals, cv=cv, kv_tokens=kv_tokens)(chosen)
        result["plots"] = [str(p) for p in (
            P.latency_histogram(chosen.latency_ms, out / P.PLOT_FILES["simulate"][0], tau_max=tau_max, stat=stat,
                                title=f"policy at λ={result['chosen']['lambda']:.3g}, "
                                      f"{'in sample' if result['in_sample'] else 'held out'}"),
            P.stop_distribution({"policy": result["chosen"]["stop_fractions"]}
                                | {k: v["stop_fractions"] for k, v in result["baselines"].items()
                                   if k in ("threshold", "router", "oracle")},
                                ev.view.tier_names, out / P.PLOT_FILES["simulate"][1]),
        )]
    if save_policy is not None:  # last: a run that fails before here replaces no policy file
        result["deployed_policy"] = save_deployment_policy(ev, tau_max, stat, save_policy,
                                                           held_out_choice=result["chosen"]["lambda"])
    return result
