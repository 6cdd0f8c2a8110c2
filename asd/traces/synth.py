"""Synthetic trace bundles, for tests and benchmarks only — never a default for users.

Each request has a latent difficulty shared by all tiers, so tier correctness is correlated
as on real ladders; each tier's logprob-like signals carry a tunable share
(`informativeness`, 0 = pure noise, 1 = a perfect predictor) of that tier's correctness
margin. Everything is vectorised numpy: 10^6 requests × 4 tiers take a few seconds.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
from scipy.special import ndtri

from asd.errors import ConfigError
from asd.traces.bundle import Bundle, new_manifest, write_bundle

# Parameter counts (billions) of the synthetic ladders, by number of tiers: shaped like real
# ladders (8B → 70B at two tiers, up to 1B → 405B at eight).
LADDERS = {
    2: (8, 70),
    3: (8, 34, 70),
    4: (8, 13, 34, 70),
    5: (3, 8, 13, 34, 70),
    6: (1, 3, 8, 13, 34, 70),
    7: (1, 3, 8, 13, 34, 70, 180),
    8: (1, 3, 8, 13, 34, 70, 180, 405),
}
MIN_REQUESTS, MAX_REQUESTS = 10, 1_000_000
NOISE_SD = 0.6  # per-(request, tier) noise around the shared difficulty; lower = more correlated


def synth_tier_name(params_b: float) -> str:
    return f"synth-{params_b:g}b"


def synth_accuracy(n_tiers: int, low: float = 0.45, high: float = 0.85) -> np.ndarray:
    """Target accuracy per tier: rising with log parameter count from `low` to `high`."""
    logp = np.log(np.asarray(LADDERS[n_tiers], dtype=float))
    return low + (high - low) * (logp - logp[0]) / (logp[-1] - logp[0])


def synthesize(
    n_requests: int,
    n_tiers: int,
    seed: int,
    *,
    informativeness: float = 0.6,
    n_tasks: int = 4,
    token_lists: bool = False,
    drafts: bool = True,
    timings: bool = True,
    arrival_rate: float = 10.0,
) -> tuple[dict, pa.Table, pa.Table, pa.Table | None]:
    """Return `(manifest, requests, outputs, drafts)` for a synthetic ladder.

    Correctness of tier k on request r: `d_r + NOISE_SD·e_rk < t_k`, d_r ~ N(0, 1) the
    request's difficulty (tasks shift it), t_k set so tier k's accuracy follows
    `synth_accuracy`. Signals: u_rk = ρ·margin + √(1−ρ²)·noise with ρ = informativeness;
    mean_logprob, min_logprob rise and mean_entropy falls with u. `token_lists` adds the
    per-token lists (lengths = n_output_tokens) — for small bundles, they are large.
    Outputs are ordered by request, then tier; drafts hold each consecutive pair (k, k+1).
    """
    _check_args(n_requests, n_tiers, informativeness, n_tasks)
    rng = np.random.default_rng(seed)
    n, k = n_requests, n_tiers
    params = np.asarray(LADDERS[k], dtype=float)

    task = rng.integers(0, n_tasks, size=n)
    task_shift = np.linspace(-0.5, 0.5, n_tasks) if n_tasks > 1 else np.zeros(1)
    difficulty = rng.standard_normal(n) + task_shift[task]
    spread = np.sqrt(1.0 + np.var(task_shift) + NOISE_SD**2)
    threshold = ndtri(synth_accuracy(k)) * spread
    latent = difficulty[:, None] + NOISE_SD * rng.standard_normal((n, k))
    margin = (threshold[None, :] - latent) / spread  # > 0 ⇔ correct
    correct = margin > 0

    rho = informativeness
    u = rho * margin / margin.std() + np.sqrt(1.0 - rho**2) * rng.standard_normal((n, k))
    mean_logprob = -np.logaddexp(0.0, -(u + 1.0)) * 0.6  # softplus: always < 0
    min_logprob = mean_logprob * (2.0 + rng.gamma(2.0, 1.0, size=(n, k)))
    mean_entropy = np.logaddexp(0.0, -(u + 0.5)) * 0.8

    n_prompt = np.maximum(1, rng.lognormal(np.log(300), 0.6, size=n)).astype(np.int32)
    out_base = rng.lognormal(np.log(120), 0.7, size=n)
    n_output = np.maximum(1, out_base[:, None] * rng.lognormal(0.0, 0.25, size=(n, k))).astype(np.int32)

    ids = np.char.add("synth-", np.char.zfill(np.arange(n).astype(str), len(str(n - 1))))
    request_ids = pa.array(ids, type=pa.string())
    requests = pa.table(
        {
            "request_id": request_ids,
            "task": pa.array(np.char.add("task-", task.astype(str)), type=pa.string()),
            "arrival_s": np.cumsum(rng.exponential(1.0 / arrival_rate, size=n)),
        }
    )

    rows = n * k
    flat = {
        "request_id": request_ids.take(pa.array(np.repeat(np.arange(n), k))),
        "tier": np.tile(np.arange(k, dtype=np.int16), n),
        "n_prompt_tokens": np.repeat(n_prompt, k),
        "n_output_tokens": n_output.ravel(),
        "quality": correct.ravel().astype(np.float32),
        "accepted": correct.ravel(),
        "label_source": pa.DictionaryArray.from_arrays(np.zeros(rows, dtype=np.int8), ["synthetic"]).cast(pa.string()),
    }
    if token_lists:
        lp, ent = _token_lists(rng, n_output.ravel(), mean_logprob.ravel(), mean_entropy.ravel())
        flat["token_logprobs"], flat["token_entropy"] = lp, ent
        flat["mean_logprob"] = _list_mean(lp)
        flat["min_logprob"] = _list_min(lp)
        flat["mean_entropy"] = _list_mean(ent)
    else:
        flat["mean_logprob"] = mean_logprob.ravel().astype(np.float32)
        flat["min_logprob"] = min_logprob.ravel().astype(np.float32)
        flat["mean_entropy"] = mean_entropy.ravel().astype(np.float32)
    if timings:
        # ms: prefill ∝ params·prompt tokens, decode ∝ params per token; lognormal jitter.
        ttft = (20.0 + 0.004 * params[None, :] * n_prompt[:, None]) * rng.lognormal(0, 0.2, size=(n, k))
        tpot = (8.0 + 0.6 * params[None, :]) * rng.lognormal(0, 0.1, size=(n, k))
        flat["ttft_ms"] = ttft.ravel()
        flat["e2e_ms"] = (ttft + tpot * n_output).ravel()
    outputs = pa.table(flat)

    draft_table = _drafts(rng, request_ids, correct, n_output, params, token_lists) if drafts and k > 1 else None
    tiers = [
        {
            "name": synth_tier_name(p),
            "model_id": f"synthetic/{synth_tier_name(p)}",
            "params_b": float(p),
            "dtype": "synthetic",
            "hardware": "synthetic",
            "tensor_parallel": 1,
            "backend": "asd.traces.synth",
        }
        for p in params
    ]
    manifest = new_manifest(
        tiers,
        synthetic=True,
        label_rule="synthetic: quality = accepted = latent correctness (1/0)",
        provenance={
            "generator": "asd.traces.synth.synthesize",
            "seed": int(seed),
            "n_requests": int(n),
            "informativeness": float(informativeness),
            "n_tasks": int(n_tasks),
            "target_accuracy": [round(float(a), 4) for a in synth_accuracy(k)],
            "note": "synthetic traces for tests and benchmarks, not measurements of any model",
        },
    )
    return manifest, requests, outputs, draft_table


def write_synthetic_bundle(path: str | os.PathLike, n_requests: int, n_tiers: int, seed: int, *, overwrite=False, **kwargs) -> Bundle:
    """`synthesize` and write the result as a bundle (atomically)."""
    manifest, requests, outputs, drafts = synthesize(n_requests, n_tiers, seed, **kwargs)
    return write_bundle(path, manifest, requests, outputs, drafts, overwrite=overwrite)


def _check_args(n_requests, n_tiers, informativeness, n_tasks) -> None:
    if not MIN_REQUESTS <= n_requests <= MAX_REQUESTS:
        raise ConfigError(f"synthetic traces have {MIN_REQUESTS}..{MAX_REQUESTS} requests, got {n_requests}")
    if n_tiers not in LADDERS:
        raise ConfigError(f"synthetic traces have 2..8 tiers, got {n_tiers}")
    if not 0.0 <= informativeness <= 1.0:
        raise ConfigError(f"informativeness must be in [0, 1], got {informativeness}")
    if n_tasks < 1:
        raise ConfigError(f"n_tasks must be at least 1, got {n_tasks}")


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _float_lists(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    """list<float32> rows of `values` cut at `offsets` (the bundle schema's list type)."""
    return pa.LargeListArray.from_arrays(offsets, values).cast(pa.list_(pa.float32()))


def _token_lists(rng, lengths, mean_lp, mean_ent):
    """Per-token logprobs (≤ 0) and entropies (≥ 0) whose row means follow the summaries."""
    owner = np.repeat(np.arange(lengths.size), lengths)
    offsets = _offsets(lengths)
    lp = (mean_lp[owner] * rng.exponential(1.0, size=owner.size)).astype(np.float32)
    ent = (mean_ent[owner] * rng.exponential(1.0, size=owner.size)).astype(np.float32)
    return _float_lists(offsets, lp), _float_lists(offsets, ent)


def _list_mean(lists: pa.Array) -> np.ndarray:
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values = lists.values.to_numpy()
    sums = np.add.reduceat(values.astype(np.float64), offsets[:-1]) if values.size else np.zeros(len(lists))
    lengths = np.diff(offsets)
    return np.where(lengths > 0, sums / np.maximum(lengths, 1), np.nan).astype(np.float32)


def _list_min(lists: pa.Array) -> np.ndarray:
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values = lists.values.to_numpy()
    lengths = np.diff(offsets)
    mins = np.minimum.reduceat(values, offsets[:-1]) if values.size else np.zeros(len(lists))
    return np.where(lengths > 0, mins, np.nan).astype(np.float32)


def _drafts(rng, request_ids, correct, n_output, params, token_lists) -> pa.Table:
    """Tier k drafts for tier k+1: the verifier accepts a longer prefix when both agree."""
    n, k = correct.shape
    pairs = k - 1
    agree = correct[:, :-1] == correct[:, 1:]
    n_draft = n_output[:, :-1]
    frac = rng.beta(np.where(agree, 6.0, 1.5), np.where(agree, 2.0, 4.0))
    n_accepted = np.minimum(n_draft, np.floor(frac * (n_draft + 1))).astype(np.int32)
    verify_ms = (15.0 + 0.002 * params[None, 1:] * n_draft) * rng.lognormal(0, 0.2, size=(n, pairs))
    table = {
        "request_id": request_ids.take(pa.array(np.repeat(np.arange(n), pairs))),
        "draft_tier": np.tile(np.arange(pairs, dtype=np.int16), n),
        "verify_tier": np.tile(np.arange(1, k, dtype=np.int16), n),
        "n_draft_tokens": n_draft.ravel().astype(np.int32),
        "n_accepted": n_accepted.ravel(),
        "verify_ms": verify_ms.ravel(),
    }
    if token_lists:
        offsets = _offsets(n_draft.ravel())
        values = (-rng.exponential(0.4, size=int(offsets[-1]))).astype(np.float32)
        table["verifier_logprobs"] = _float_lists(offsets, values)
    return pa.table(table)
