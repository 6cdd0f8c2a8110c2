"""A real Policy for the live tests: logistic predictors over three logprob/length features,
fitted (scikit-learn) on the built-in trace recorded with the same two models the tests serve,
and the feature function the runner calls with it. Kept small so the tests stay independent
of the calibration package; `asd serve`/`asd live` use the calibration features."""

from __future__ import annotations

import math

import numpy as np
from sklearn.linear_model import LogisticRegression

from asd.engine.policy import Policy, Predictor
from asd.live.runner import RequestState
from asd.traces.bundle import open_bundle

N_FEATURES = 3


def logprob_features(token_logprobs, n_output_tokens) -> list[float]:
    values = [float(v) for v in token_logprobs if v is not None and math.isfinite(v)]
    mean = float(np.mean(values)) if values else 0.0
    low = float(np.min(values)) if values else 0.0
    return [mean, low, math.log1p(float(n_output_tokens or 0))]


def simple_features(state: RequestState) -> np.ndarray:
    """Stage 0: log prompt length (padded); after a tier: mean/min logprob, log output tokens."""
    if state.last is None:
        return np.array([math.log1p(len(state.request.prompt)), 0.0, 0.0])
    gen = state.last.generation
    return np.array(logprob_features(gen.token_logprobs, gen.n_output_tokens))


def builtin_policy(lam: float | None = None, target_stop_share: float = 0.5, *,
                   last_tier_always_right: bool = False) -> Policy:
    """Fit on the built-in trace; λ (when not given) is the one whose tier-0 stop share is
    closest to `target_stop_share`, so the live tests see requests stop at both tiers.
    `last_tier_always_right` relabels every last-tier answer acceptable and free: a policy that
    always continues (for tests of continuation and of a failing last tier)."""
    outputs = open_bundle("builtin").to_pandas("outputs").sort_values(["request_id", "tier"])
    n_tiers = int(outputs["tier"].max()) + 1
    ids = sorted(outputs["request_id"].unique())
    x = np.zeros((len(ids), n_tiers, N_FEATURES))
    y = np.zeros((len(ids), n_tiers))
    cost = np.zeros((len(ids), n_tiers))
    index = {rid: i for i, rid in enumerate(ids)}
    for row in outputs.itertuples():
        i, t = index[row.request_id], int(row.tier)
        x[i, t] = logprob_features(row.token_logprobs if row.token_logprobs is not None else [], row.n_output_tokens)
        y[i, t] = float(row.accepted) if row.accepted is not None else float(row.quality >= 0.5)
        cost[i, t] = float(row.e2e_ms)
    if last_tier_always_right:
        y[:, -1], cost[:, -1] = 1.0, 0.0
    weights, bias, p_hat = np.zeros((n_tiers + 1, N_FEATURES)), np.zeros(n_tiers + 1), np.zeros_like(y)
    for t in range(n_tiers):
        if len(np.unique(y[:, t])) == 1:
            bias[t + 1], p_hat[:, t] = (8.0, 1.0) if y[0, t] else (-8.0, 0.0)
            continue
        model = LogisticRegression(max_iter=1000).fit(x[:, t], y[:, t])
        weights[t + 1], bias[t + 1] = model.coef_[0], model.intercept_[0]
        p_hat[:, t] = model.predict_proba(x[:, t])[:, 1]
    predictor = Predictor.logistic(weights, bias)
    names = ["smollm2-135m", "gemma3-270m"][:n_tiers]
    policy = Policy.from_calibration(predictor, x, y, cost, oof_p=p_hat, lam=1.0, tier_names=names, n_bins=10)
    if lam is None:
        best = None
        for candidate in np.geomspace(10.0, 1e5, 60):
            share = policy.solve(candidate).decide_batch(0, x[:, 0]).mean()
            if best is None or abs(share - target_stop_share) < best[0]:
                best = (abs(share - target_stop_share), candidate)
        lam = best[1]
    return policy.solve(lam)


def served_ladder(smollm2_url, gemma_url, max_tokens: int = 4, **gemma_options) -> list[dict]:
    """The CPU server ladder (`asd.live.llama_server.cpu_server_ladder`), Gemma's options overridable."""
    from asd.live.llama_server import cpu_server_ladder

    smollm2, gemma = cpu_server_ladder(smollm2_url, gemma_url, max_tokens)
    gemma.update(gemma_options)
    return [smollm2, gemma]


def calibrated_builtin_policy(lam: float = 1e4, groups="logprob,entropy,format", stage0: bool = True) -> Policy:
    """`asd calibrate builtin --features logprob,entropy,format --lambda 1e4` (asd.calibration:
    features, logistic predictors, trace cost model, stage 0). Without the length group: live
    tests cap answers at a few tokens, the built-in trace at 48. At λ = 1e4 about 16% of the
    built-in prompts start at Gemma cold and a quarter of the rest continue there."""
    from asd.calibration.calibrate import calibrate

    return calibrate("builtin", groups=groups.split(",") if isinstance(groups, str) else groups,
                     stage0=stage0, split=None, lam=lam).policy
