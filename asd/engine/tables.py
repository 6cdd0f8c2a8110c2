"""Engine tables from calibration data: bin edges, Beta posteriors of acceptance per
(tier, bin), Dirichlet-smoothed transition kernels (tier to tier, and prompt bin to each
start tier), expected next-tier costs. Risk quantiles (scipy) are computed here, outside numba.

Conventions: tiers are 0-based (0 = the smallest model), L tiers, B bins per tier, B0 prompt
bins. A value p falls in bin b when edges[b] <= p < edges[b+1] (the last bin includes 1).

Two states per tier: "climbed" (tier i has seen the answers of tiers < i; p_hat) and "cold"
(the request started at tier s, skipping the tiers below: no agreement or draft evidence;
start_p_hat). Stage 0 starts requests cold, so its kernel trans0 maps prompt bins to cold bins.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from asd.errors import PolicyError, real_number

BINNINGS = ("quantile", "fixed")
COLD_FIELDS = ("alpha_cold", "beta_cold", "n_obs_cold", "trans_cold", "cnext_cold")
# The calibration requests' own outcomes, kept for an empirical stage 0 (see `build_tables`).
EVIDENCE_FIELDS = ("evidence_prompt_bins", "evidence_tier_bins", "evidence_cold_bins", "evidence_accepted",
                   "evidence_cost", "evidence_cost_cont")
DEFAULT_MAX_PROMPT_BINS = 10  # prompt-only scores are weak: few, well-filled bins by default


@dataclass(frozen=True)
class EngineTables:
    """Everything the DP needs, estimated once from a calibration set.

    edges (L, B+1), edges0 (B0+1,), alpha/beta (L, B) Beta posterior parameters,
    n_obs (L, B) labelled observations, trans (L-1, B, B), trans0 (L, B0, B),
    cnext (L-1, B) expected cost of tier i+1 given bin b at tier i, c0 (L, B0) expected cost
    of starting at tier s given prompt bin b0. `notes` lists fallbacks taken (e.g. prior only).
    cold_start: built with start_p_hat, so trans0 maps prompt bins to cold-start bins, and
    the cold state has its own alpha_cold/beta_cold/n_obs_cold (L, B) (acceptance by cold bin),
    trans_cold (L-1, B, B) (cold bin at s → climbed bin at s+1) and cnext_cold (L-1, B); walks
    must be given each request's cold bins at its start tier. Without start_p_hat the cold
    arrays are copies of the climbed ones (tier 0 is the same state either way).
    evidence_* (built with empirical_start=True, else None): per calibration request its prompt
    bin (N,), climbed and cold bins (N, L), acceptance (N, L, NaN = unlabelled), cost of starting
    at each tier and of continuing to it (N, L); the solve then picks stage 0 by replaying them.
    pool_bins: each tier bin's posterior, transition row and next-tier cost pool the requests of
    the bins up to pool_bins away (`pooling_weights`); `Policy.update` spreads an online outcome
    the same way. n_obs counts each bin's own labelled requests.
    evidence_route_p (N, L−1), with the other evidence or None: per calibration request its
    out-of-fold prompt-only P(acceptable at tier s) for s < L−1, which the routed stage 0
    (`Policy`) thresholds.
    """

    @property
    def has_route_evidence(self) -> bool:
        return self.evidence_route_p is not None

    edges: np.ndarray
    edges0: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    n_obs: np.ndarray
    trans: np.ndarray
    trans0: np.ndarray
    cnext: np.ndarray
    c0: np.ndarray
    prior_alpha: float | tuple = 1.0  # one value for every tier, or (L,) (the empirical-Bayes prior)
    prior_beta: float | tuple = 1.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    cold_start: bool = False
    alpha_cold: np.ndarray | None = None
    beta_cold: np.ndarray | None = None
    n_obs_cold: np.ndarray | None = None
    trans_cold: np.ndarray | None = None
    cnext_cold: np.ndarray | None = None
    evidence_prompt_bins: np.ndarray | None = None
    evidence_tier_bins: np.ndarray | None = None
    evidence_cold_bins: np.ndarray | None = None
    evidence_accepted: np.ndarray | None = None
    evidence_cost: np.ndarray | None = None
    evidence_cost_cont: np.ndarray | None = None
    pool_bins: int = 0
    evidence_route_p: np.ndarray | None = None  # (N, L−1): the routed stage 0's evidence (see build_tables)

    @property
    def has_start_evidence(self) -> bool:
        return self.evidence_prompt_bins is not None

    def __post_init__(self):
        check_pool_bins(self.pool_bins)
        object.__setattr__(self, "pool_bins", int(self.pool_bins))
        for name in COLD_FIELDS:  # absent: the cold state is priced like the climbed one
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.array(getattr(self, name.removesuffix("_cold")), dtype=np.float64))
        self._check_shapes()

    def _check_shapes(self) -> None:
        """The shapes the class docstring states, and finite posteriors: the DP kernels index
        these arrays unchecked (a (1, 1, 1) `trans` read past it and solved garbage)."""
        alpha = np.asarray(self.alpha)
        if alpha.ndim != 2 or 0 in alpha.shape:
            raise PolicyError(f"tables: alpha has shape {alpha.shape}: expected (tiers, bins)")
        n_tiers, n_bins = alpha.shape
        n_prompt = np.asarray(self.edges0).shape[0] - 1 if np.asarray(self.edges0).ndim == 1 else -1
        if n_prompt < 1:
            raise PolicyError(f"tables: edges0 has shape {np.asarray(self.edges0).shape}: expected (prompt bins + 1,)")
        expected = {"edges": (n_tiers, n_bins + 1), "beta": (n_tiers, n_bins), "n_obs": (n_tiers, n_bins),
                    "trans": (n_tiers - 1, n_bins, n_bins), "trans0": (n_tiers, n_prompt, n_bins),
                    "cnext": (n_tiers - 1, n_bins), "c0": (n_tiers, n_prompt), "alpha_cold": (n_tiers, n_bins),
                    "beta_cold": (n_tiers, n_bins), "n_obs_cold": (n_tiers, n_bins),
                    "trans_cold": (n_tiers - 1, n_bins, n_bins), "cnext_cold": (n_tiers - 1, n_bins)}
        for name, shape in expected.items():
            got = np.shape(getattr(self, name))
            if got != shape:
                raise PolicyError(f"tables: {name} has shape {got}: expected {shape} ({n_tiers} tiers, {n_bins} bins, "
                                  f"{n_prompt} prompt bins)")
        for state in ("", "_cold"):  # a posterior of certainty (α or β 0) is allowed, no mass at all is not
            a, b = (np.asarray(getattr(self, name + state), dtype=np.float64) for name in ("alpha", "beta"))
            if not (np.isfinite(a).all() and np.isfinite(b).all() and (a >= 0).all() and (b >= 0).all()
                    and (a + b > 0).all()):
                raise PolicyError(f"tables: alpha{state}/beta{state} must be finite, >= 0 and not both 0 "
                                  "(Beta posterior parameters)")

    def quality_cold(self, risk: str | float = "mean") -> tuple[np.ndarray, np.ndarray]:
        """(q_stop, q_mean) of the cold-start state."""
        return risk_quality(self.alpha_cold, self.beta_cold, risk)

    @property
    def n_tiers(self) -> int:
        return self.alpha.shape[0]

    @property
    def n_bins(self) -> int:
        return self.alpha.shape[1]

    @property
    def n_prompt_bins(self) -> int:
        return self.edges0.shape[0] - 1

    def quality(self, risk: str | float = "mean") -> tuple[np.ndarray, np.ndarray]:
        """(q_stop, q_mean) for the DP; see `risk_quality`."""
        return risk_quality(self.alpha, self.beta, risk)


def parse_risk(risk: str | float) -> float | None:
    """None for the posterior mean, else the credible level γ in [0.5, 1)."""
    if isinstance(risk, str):
        if risk == "mean":
            return None
        try:
            risk = float(risk)
        except ValueError:
            raise PolicyError(f"risk mode {risk!r}: use 'mean' or a credible level γ in [0.5, 1)") from None
    gamma = real_number("risk", risk, PolicyError)  # None or a list: one line, not float()'s TypeError
    if not (0.5 <= gamma < 1.0):
        raise PolicyError(f"risk level γ={gamma}: must lie in [0.5, 1) (a lower credible bound)")
    return gamma


def risk_quality(alpha: np.ndarray, beta: np.ndarray, risk: str | float = "mean"):
    """Acceptance used in the stop term, and the posterior mean.

    risk="mean": both are the posterior mean α/(α+β). risk=γ: the stop term uses the lower
    credible bound at level γ (the (1-γ)-quantile of the Beta posterior), never above the mean,
    so a risk-averse policy needs more evidence before stopping on the answer it holds.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    q_mean = alpha / (alpha + beta)
    gamma = parse_risk(risk)
    if gamma is None:
        return q_mean.copy(), q_mean
    from scipy import stats  # here, not at import: scipy.stats costs ~1 s of every `asd` start (asd check in CI)

    q_low = stats.beta.ppf(1.0 - gamma, alpha, beta)
    return np.ascontiguousarray(np.minimum(q_low, q_mean)), q_mean


def bin_index(p, edges) -> np.ndarray:
    """Bin of each p for one tier's edges (B+1 values from 0 to 1): the number of inner edges
    <= p, the same rule as the numba kernels."""
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2:
        raise PolicyError(f"edges have shape {edges.shape}: expected (bins + 1,) for one tier")
    p = np.asarray(p, dtype=np.float64)
    if np.isnan(p).any():  # searchsorted puts NaN past every edge: the top bin, silently
        raise PolicyError("p̂ holds NaN: a bin needs a probability")
    return np.searchsorted(edges[1:-1], p, side="right").astype(np.int64)


def make_edges(p, n_bins: int, binning: str = "quantile") -> np.ndarray:
    """B+1 non-decreasing edges from 0 to 1: equal-width ("fixed"), or quantiles of p."""
    p = np.asarray(p, dtype=np.float64)
    if binning not in BINNINGS:
        raise PolicyError(f"binning {binning!r}: use one of {', '.join(BINNINGS)}")
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise PolicyError(f"n_bins={n_bins!r}: must be a positive integer")
    if binning == "fixed" or p.size == 0:
        return np.linspace(0.0, 1.0, n_bins + 1)
    _check_probabilities("p", p)  # a NaN score made NaN edges, which bin_index then refused
    edges = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
    edges[0], edges[-1] = 0.0, 1.0
    return np.maximum.accumulate(np.clip(edges, 0.0, 1.0))


def _refuse_first(name: str, a: np.ndarray, bad: np.ndarray, rule: str) -> None:
    """PolicyError naming the index and value of the first `bad` entry of `a`, if any."""
    if bad.any():
        idx = np.argwhere(bad)[0]
        where = ", ".join(str(int(i)) for i in idx)
        raise PolicyError(f"{name}[{where}] = {float(a[tuple(idx)])!r}: {rule}")


def _check_probabilities(name: str, a: np.ndarray, allow_nan: bool = False) -> None:
    bad = ~np.isfinite(a) if not allow_nan else np.isinf(a)
    bad |= (a < 0.0) | (a > 1.0)
    _refuse_first(name, a, bad, "must be a probability in [0, 1]" + ("" if allow_nan else " (NaN not allowed)"))


def _check_costs(name: str, a: np.ndarray) -> None:
    _refuse_first(name, a, ~np.isfinite(a) | (a < 0.0), "costs must be finite and >= 0")


def check_evidence(tables: EngineTables) -> None:
    """PolicyError naming the first start-evidence array that does not fit the tables (a
    damaged or hand-made file must not index past a table in the kernel): all or none present,
    (N,) prompt bins and (N, L) grids, bins within the tables', acceptance NaN or in [0, 1],
    costs finite and >= 0."""
    missing = [k for k in EVIDENCE_FIELDS if getattr(tables, k) is None]
    if missing:
        raise PolicyError(f"start evidence is incomplete: {', '.join(missing)} missing")
    n = np.asarray(tables.evidence_prompt_bins).shape[0]
    grid = (n, tables.n_tiers)
    for name, shape, bound in (("evidence_prompt_bins", (n,), tables.n_prompt_bins),
                               ("evidence_tier_bins", grid, tables.n_bins), ("evidence_cold_bins", grid, tables.n_bins),
                               ("evidence_accepted", grid, None), ("evidence_cost", grid, None),
                               ("evidence_cost_cont", grid, None)):
        a = np.asarray(getattr(tables, name))
        if a.shape != shape:
            raise PolicyError(f"{name} has shape {a.shape}: expected {shape}")
        if bound is not None:
            _refuse_first(name, a, (a < 0) | (a >= bound), f"bins must lie in 0..{bound - 1}")
        elif name == "evidence_accepted":
            _check_probabilities(name, a.astype(np.float64), allow_nan=True)
        else:
            _check_costs(name, a.astype(np.float64))
    if tables.evidence_route_p is not None:
        route = np.asarray(tables.evidence_route_p)
        if route.shape != (n, tables.n_tiers - 1):
            raise PolicyError(f"evidence_route_p has shape {route.shape}: expected {(n, tables.n_tiers - 1)}")
        _check_probabilities("evidence_route_p", route.astype(np.float64))


def check_pool_bins(pool_bins) -> None:
    if isinstance(pool_bins, bool) or not isinstance(pool_bins, (int, np.integer)) or pool_bins < 0:
        raise PolicyError(f"pool_bins={pool_bins!r}: must be a whole number >= 0")


def pooling_weights(n_bins: int, pool_bins: int) -> np.ndarray:
    """(B, B) weights of each bin's requests in each bin's statistics: 1 − d/(pool_bins + 1) for
    bins d <= pool_bins apart, else 0 (the identity for pool_bins = 0). Symmetric, so bin b's
    pooled count of x is (W @ counts)[b]. Why: the DP can only stop or go on per bin, so finer
    bins place its cuts finer, but a bin's own few dozen requests estimate its acceptance and
    transition row loudly; pooling its neighbours lets each estimate rest on as many requests as
    a coarse bin while the decisions keep the fine edges (a kernel smoother over p̂ rank)."""
    check_pool_bins(pool_bins)
    index = np.arange(n_bins)
    distance = np.abs(index[:, None] - index[None, :])
    return np.clip(1.0 - distance / (pool_bins + 1.0), 0.0, None)


def _kernel(src_bins, dst_bins, n_src, n_dst, smoothing, weights=None):
    """Rows P(dst | src), Dirichlet-smoothed toward the smoothed marginal of dst; weights (n_src,
    n_src): source bins pooled (`pooling_weights`)."""
    counts = np.zeros((n_src, n_dst))
    np.add.at(counts, (src_bins, dst_bins), 1.0)
    if weights is not None:
        counts = weights @ counts
    marginal = (np.bincount(dst_bins, minlength=n_dst) + 1.0) / (dst_bins.size + n_dst)
    rows = counts + smoothing * marginal[None, :]
    rows[rows.sum(axis=1) == 0.0] = marginal  # unseen source bin with smoothing 0
    return rows / rows.sum(axis=1, keepdims=True)


def _binned_mean(bins, values, n_bins, smoothing, weights=None):
    """Per-bin mean, shrunk toward the overall mean with `smoothing` pseudo-observations;
    weights: bins pooled (`pooling_weights`)."""
    overall = float(values.mean()) if values.size else 0.0
    sums = np.bincount(bins, weights=values, minlength=n_bins)
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    if weights is not None:
        sums, counts = weights @ sums, weights @ counts
    weight = max(smoothing, 1e-12)
    return (sums + weight * overall) / (counts + weight)


def empirical_prior(accepted, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-tier Beta prior centred on the tier's overall acceptance rate with `strength`
    pseudo-observations: (strength·r_i, strength·(1 − r_i)), r_i = (accepted + 1) / (labelled + 2)
    (so a tier with no labels gets 1/2, and no parameter reaches 0). A thin or empty bin then
    leans toward what the tier usually achieves instead of toward 1/2."""
    accepted = np.asarray(accepted, dtype=np.float64)
    seen = ~np.isnan(accepted)
    rate = (np.where(seen, accepted, 0.0).sum(axis=0) + 1.0) / (seen.sum(axis=0) + 2.0)
    return strength * rate, strength * (1.0 - rate)


def _beta_counts(bins, accepted, n_bins, prior_alpha, prior_beta, notes=None, weights=None):
    """Beta posterior parameters and labelled counts per (tier, bin); NaN labels are skipped.
    prior_alpha/prior_beta: scalars, or (L,) one prior per tier. weights: each bin's posterior
    pools its neighbours' labels (`pooling_weights`); the counts stay each bin's own."""
    pool = (lambda x: x) if weights is None else (lambda x: weights @ x)
    n_tiers = bins.shape[1]
    alpha = np.repeat(np.broadcast_to(np.asarray(prior_alpha, dtype=np.float64), (n_tiers,))[:, None], n_bins, axis=1)
    beta = np.repeat(np.broadcast_to(np.asarray(prior_beta, dtype=np.float64), (n_tiers,))[:, None], n_bins, axis=1)
    n_obs = np.zeros((n_tiers, n_bins))
    for i in range(n_tiers):
        seen = ~np.isnan(accepted[:, i])
        if not seen.any():
            if notes is not None:
                msg = f"tier {i}: no observed acceptance; using the Beta({alpha[i, 0]:g}, {beta[i, 0]:g}) prior"
                notes.append(msg)
                warnings.warn(msg, stacklevel=3)
            continue
        b, a = bins[seen, i], accepted[seen, i]
        alpha[i] += pool(np.bincount(b, weights=a, minlength=n_bins))
        beta[i] += pool(np.bincount(b, weights=1.0 - a, minlength=n_bins))
        n_obs[i] = np.bincount(b, minlength=n_bins)
    return alpha, beta, n_obs


def build_tables(
    p_hat,
    accepted,
    costs,
    *,
    prompt_p=None,
    start_p_hat=None,
    start_costs=None,
    n_bins: int = 20,
    n_prompt_bins: int | None = None,
    binning: str = "quantile",
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
    prior_strength: float | None = None,
    smoothing: float = 1.0,
    empirical_start: bool = False,
    p_hat_weight: float = 0.0,
    pool_bins: int = 0,
    route_p=None,
) -> EngineTables:
    """Estimate the engine tables from N calibration requests over L tiers.

    p_hat (N, L): calibrated predicted acceptance after each tier. accepted (N, L): observed
    acceptance, 0/1 or quality in [0, 1]; NaN = not labelled. costs (N, L) or (L,): cost of
    running tier i. prompt_p (N,): optional prompt-only score for stage 0 (None = one prompt
    bin). n_prompt_bins: stage-0 bins, only with prompt_p; default min(n_bins, 10).
    start_p_hat (N, L): p̂ at tier s for a request that STARTED at s cold (no earlier answers:
    agreement and draft features neutral); when given, trans0[s] maps prompt bins to the bins
    of start_p_hat[:, s] under tier s's edges instead of the climbed-state bins (tier 0 is the
    same state either way). start_costs: cost of tier s when started cold, default costs.
    prior_strength: when given, each tier's Beta prior is centred on that tier's overall
    acceptance rate with this many pseudo-observations (`empirical_prior`), replacing
    prior_alpha/prior_beta (Beta(1, 1) puts a thin bin at 1/2 whatever the tier).
    empirical_start: keep each request's bins, acceptance and costs (the evidence_* fields), so
    that stage 0 is chosen by replaying these requests from every start tier under the solved
    stop tables (`dp_nb.empirical_start_nb`) instead of through the transition model; needs
    prompt_p. Why: the model chains one Markov transition per tier climbed, and its errors add
    up in exactly the comparison stage 0 makes (climb from tier 0, or skip to a deeper tier).
    p_hat_weight: w in [0, 1]; each labelled request adds (1 − w)·its label + w·its p̂ to its
    bin's Beta posterior (start_p_hat in the cold state; unlabelled requests are skipped, and the
    start evidence keeps the labels). 0 counts labels only. For calibrated out-of-fold p̂ both
    estimate the bin's rate: labels without bias but loudly (a bin of 50 moves by ±0.07, and the
    DP stops wherever chance made a bin look good), p̂ quietly (its isotonic map pools every
    label) but with the calibration map's own error in that bin. w = 1/2 is a prior centred on
    the model, as strong as the bin's own data.
    pool_bins: each tier bin's acceptance posterior, transition row and next-tier cost pool the
    requests of the bins up to pool_bins away, weighted 1 − d/(pool_bins + 1) (climbed and cold
    state; prompt bins are not pooled). With n_bins k times a count whose bins rest on enough
    requests and pool_bins = k, the DP cuts at k times finer p̂ while each estimate rests on about
    as many requests as before (`asd calibrate` does this with k = 4). 0: each bin alone.
    route_p (N, L−1): with empirical_start, each request's out-of-fold prompt-only P(acceptable
    at tier s) for s < L−1, kept as evidence for the routed stage 0 (column 0 is prompt_p's own
    score when the prompt stage predicts tier 0's acceptance, as `asd calibrate`'s does).
    """
    p_hat = np.asarray(p_hat, dtype=np.float64)
    accepted = np.asarray(accepted, dtype=np.float64)
    if p_hat.ndim != 2:
        raise PolicyError(f"p_hat has shape {p_hat.shape}: expected (requests, tiers)")
    n, n_tiers = p_hat.shape
    if n == 0:
        raise PolicyError("calibration set is empty: need at least one request")
    if n_tiers == 0:
        raise PolicyError("p_hat has no tiers: need at least one")
    if accepted.shape != p_hat.shape:
        raise PolicyError(f"accepted has shape {accepted.shape}, p_hat has {p_hat.shape}: must match")
    costs = np.asarray(costs, dtype=np.float64)
    if costs.ndim == 1:
        if costs.shape[0] != n_tiers:
            raise PolicyError(f"costs has {costs.shape[0]} tiers, p_hat has {n_tiers}: must match")
        costs = np.broadcast_to(costs, (n, n_tiers))
    elif costs.shape != p_hat.shape:
        raise PolicyError(f"costs has shape {costs.shape}, p_hat has {p_hat.shape}: must match")
    start_costs = costs if start_costs is None else np.asarray(start_costs, dtype=np.float64)
    if start_costs.ndim == 1 and start_costs.shape[0] == n_tiers:
        start_costs = np.broadcast_to(start_costs, (n, n_tiers))
    if start_costs.shape != p_hat.shape:
        raise PolicyError(f"start_costs has shape {start_costs.shape}, p_hat has {p_hat.shape}: must match")
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise PolicyError(f"n_bins={n_bins!r}: must be a positive integer")
    if binning not in BINNINGS:
        raise PolicyError(f"binning {binning!r}: use one of {', '.join(BINNINGS)}")
    # finite numbers: an infinite prior or smoothing made NaN tables that never stop, even at λ = 0
    prior_alpha, prior_beta = (real_number(name, v, PolicyError) for name, v in
                               (("prior_alpha", prior_alpha), ("prior_beta", prior_beta)))
    if not (0 < prior_alpha < math.inf and 0 < prior_beta < math.inf):
        raise PolicyError(f"Beta prior ({prior_alpha}, {prior_beta}): both parameters must be finite and > 0")
    if prior_strength is not None:
        prior_strength = real_number("prior_strength", prior_strength, PolicyError)
        if not 0 < prior_strength < math.inf:
            raise PolicyError(f"prior_strength={prior_strength}: must be a finite number > 0 of pseudo-observations")
    smoothing = real_number("smoothing", smoothing, PolicyError)
    if not 0 <= smoothing < math.inf:
        raise PolicyError(f"smoothing={smoothing}: must be finite and >= 0")
    if not isinstance(p_hat_weight, (int, float, np.integer, np.floating)) or not 0.0 <= p_hat_weight <= 1.0:
        raise PolicyError(f"p_hat_weight={p_hat_weight!r}: must lie in [0, 1]")
    check_pool_bins(pool_bins)
    pool = pooling_weights(n_bins, pool_bins) if pool_bins else None
    _check_probabilities("p_hat", p_hat)
    _check_probabilities("accepted", accepted, allow_nan=True)
    _check_costs("costs", costs)
    _check_costs("start_costs", start_costs)

    if prior_strength is not None:
        prior_alpha, prior_beta = empirical_prior(accepted, float(prior_strength))
    notes: list[str] = []
    edges = np.stack([make_edges(p_hat[:, i], n_bins, binning) for i in range(n_tiers)])
    bins = np.stack([bin_index(p_hat[:, i], edges[i]) for i in range(n_tiers)], axis=1)

    def counted(p):  # what the bins' Beta posteriors count (see p_hat_weight); NaN stays unlabelled
        return accepted if p_hat_weight == 0.0 else (1.0 - p_hat_weight) * accepted + p_hat_weight * p

    alpha, beta, n_obs = _beta_counts(bins, counted(p_hat), n_bins, prior_alpha, prior_beta, notes, pool)

    trans = np.zeros((max(n_tiers - 1, 0), n_bins, n_bins))
    cnext = np.zeros((max(n_tiers - 1, 0), n_bins))
    for i in range(n_tiers - 1):
        trans[i] = _kernel(bins[:, i], bins[:, i + 1], n_bins, n_bins, smoothing, pool)
        cnext[i] = _binned_mean(bins[:, i], costs[:, i + 1], n_bins, smoothing, pool)

    if prompt_p is None:
        if n_prompt_bins is not None and n_prompt_bins != 1:
            raise PolicyError(f"n_prompt_bins={n_prompt_bins!r} without prompt_p: stage-0 bins need a "
                              "prompt-only score per request (pass prompt_p, or drop n_prompt_bins)")
        edges0 = np.array([0.0, 1.0])
        bins0 = np.zeros(n, dtype=np.int64)
    else:
        prompt_p = np.asarray(prompt_p, dtype=np.float64)
        if prompt_p.shape != (n,):
            raise PolicyError(f"prompt_p has shape {prompt_p.shape}: expected ({n},), one per request")
        _check_probabilities("prompt_p", prompt_p)
        b0 = min(n_bins, DEFAULT_MAX_PROMPT_BINS) if n_prompt_bins is None else n_prompt_bins
        if not isinstance(b0, (int, np.integer)) or b0 < 1:
            raise PolicyError(f"n_prompt_bins={b0!r}: must be a positive integer")
        edges0 = make_edges(prompt_p, b0, binning)
        bins0 = bin_index(prompt_p, edges0)
    start_bins = bins
    optional = {}  # cold-state tables, start evidence
    if start_p_hat is not None:
        start_p_hat = np.asarray(start_p_hat, dtype=np.float64)
        if start_p_hat.shape != p_hat.shape:
            raise PolicyError(f"start_p_hat has shape {start_p_hat.shape}, p_hat has {p_hat.shape}: must match")
        _check_probabilities("start_p_hat", start_p_hat)
        start_bins = np.stack([bins[:, 0]] + [bin_index(start_p_hat[:, s], edges[s]) for s in range(1, n_tiers)],
                              axis=1)
        optional["alpha_cold"], optional["beta_cold"], optional["n_obs_cold"] = _beta_counts(
            start_bins, counted(start_p_hat), n_bins, prior_alpha, prior_beta, weights=pool)
        optional["trans_cold"] = trans.copy()
        optional["cnext_cold"] = cnext.copy()
        for i in range(1, n_tiers - 1):  # tier 0 is the climbed state: its rows stay
            optional["trans_cold"][i] = _kernel(start_bins[:, i], bins[:, i + 1], n_bins, n_bins, smoothing, pool)
            optional["cnext_cold"][i] = _binned_mean(start_bins[:, i], costs[:, i + 1], n_bins, smoothing, pool)
    if empirical_start:
        if prompt_p is None:
            raise PolicyError("empirical_start picks the stage-0 start per prompt bin: it needs prompt_p")
        optional["evidence_prompt_bins"] = bins0.astype(np.int32)
        optional["evidence_tier_bins"] = bins.astype(np.int32)
        optional["evidence_cold_bins"] = start_bins.astype(np.int32)
        optional["evidence_accepted"] = accepted.copy()
        optional["evidence_cost"] = np.array(start_costs, dtype=np.float64)
        optional["evidence_cost_cont"] = np.array(costs, dtype=np.float64)
    if route_p is not None:
        if not empirical_start:
            raise PolicyError("route_p is evidence for the routed stage 0, which replays the calibration requests: "
                              "it needs empirical_start=True")
        route_p = np.asarray(route_p, dtype=np.float64)
        if route_p.shape != (n, n_tiers - 1):
            raise PolicyError(f"route_p has shape {route_p.shape}: expected ({n}, {n_tiers - 1}), one per request "
                              "and tier below the last")
        _check_probabilities("route_p", route_p)
        optional["evidence_route_p"] = route_p.copy()
    n_b0 = edges0.shape[0] - 1
    trans0 = np.stack([_kernel(bins0, start_bins[:, s], n_b0, n_bins, smoothing) for s in range(n_tiers)])
    c0 = np.stack([_binned_mean(bins0, start_costs[:, s], n_b0, smoothing) for s in range(n_tiers)])

    return EngineTables(
        edges=np.ascontiguousarray(edges), edges0=np.ascontiguousarray(edges0),
        alpha=alpha, beta=beta, n_obs=n_obs, trans=np.ascontiguousarray(trans),
        trans0=np.ascontiguousarray(trans0), cnext=np.ascontiguousarray(cnext),
        c0=np.ascontiguousarray(c0), prior_alpha=_prior_value(prior_alpha),
        prior_beta=_prior_value(prior_beta), notes=tuple(notes), cold_start=start_p_hat is not None,
        pool_bins=int(pool_bins),
        **{k: np.ascontiguousarray(v) for k, v in optional.items()},
    )


def _prior_value(prior):
    """A scalar prior as a float, a per-tier one as a tuple of floats (JSON-able in the header)."""
    prior = np.asarray(prior, dtype=np.float64)
    return float(prior) if prior.ndim == 0 else tuple(float(v) for v in prior)
