"""The iteration-level latency model, one source of truth for the simulator and the cost model.

One continuous-batching iteration at tier i takes c0 + c1·prefill_tokens + c2·decode_seqs +
c3·kv_tokens_in_batch ms (coeffs (L, 4), COMMON.md §4 `iteration_coefficients`). A request alone
with P prompt tokens and D output tokens takes (D' = max(D, 1)):

    request_latency_ms = c0 + (c1 + c3)·P  +  (D'−1)·(c0 + c2 + c3·P)  +  c3·(D'−1)·D'/2

(one prefill iteration yielding the first token, then D'−1 decode iterations whose KV grows by one
token each). A continuation from a draft of n_draft tokens with n_accepted kept prefills prompt +
draft, then decodes max(n_out − n_accepted − 1, 0) tokens from KV = prompt + accepted. The cost
model prices latencies with `latency_ms` from here, so replay latencies and the DES at zero load
agree exactly.
"""

from __future__ import annotations

import numpy as np

from asd.errors import ConfigError
from asd.simulator.latency_nb import (  # noqa: F401  (re-exported: the kernels and their twins)
    iteration_ms_nb, latency_grid_nb, prefill_ms_nb, request_latency_ms_nb,
)
from asd.simulator.reference import iteration_ms, prefill_ms, request_latency_ms  # noqa: F401


def check_coefficients(coeffs, n_tiers: int | None = None) -> np.ndarray:
    """(L, 4) float64, finite and >= 0, or a ConfigError naming the tier and column."""
    c = np.ascontiguousarray(coeffs, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 4 or (n_tiers is not None and c.shape[0] != n_tiers):
        want = f"({n_tiers if n_tiers is not None else 'tiers'}, 4)"
        raise ConfigError(f"iteration coefficients have shape {c.shape}: expected {want} "
                          "[c0, c_prefill_token, c_decode_seq, c_kv_token] in ms")
    bad = ~np.isfinite(c) | (c < 0)
    if bad.any():
        tier, col = (int(x) for x in np.argwhere(bad)[0])
        raise ConfigError(f"iteration coefficient [{tier}, {col}] = {c[tier, col]!r}: must be finite and >= 0")
    return c


def latency_grid(coeffs, n_prompt, n_out) -> np.ndarray:
    """(N, L) latency in ms of each request alone at each tier, from token counts (N, L)."""
    n_prompt = np.ascontiguousarray(n_prompt, dtype=np.int64)
    n_out = np.ascontiguousarray(n_out, dtype=np.int64)
    if n_prompt.ndim != 2 or n_prompt.shape != n_out.shape:
        raise ConfigError(f"token counts have shapes {n_prompt.shape} and {n_out.shape}: expected equal (N, L)")
    c = check_coefficients(coeffs, n_prompt.shape[1])
    if (n_prompt < 0).any() or (n_out < 0).any():
        raise ConfigError("token counts must be >= 0")
    out = np.empty(n_prompt.shape)
    latency_grid_nb(c, n_prompt, n_out, out)
    return out


def latency_ms(coeffs, n_prompt, n_out, n_draft=0, n_accepted=0) -> np.ndarray:
    """Latency (ms) of requests each alone at a tier, vectorised (the closed form above), cold or
    continuing from a draft.

    `coeffs` is (..., 4) [c0, c1, c2, c3]; token counts broadcast against coeffs[..., 0]. Cold:
    n_draft = n_accepted = 0. Continuing from a draft: the verify pass covers prompt + draft and
    only max(n_out − n_accepted − 1, 0) decode iterations follow. Token counts are finite and
    >= 0, n_accepted <= n_draft; coefficients as `check_coefficients`; else a ConfigError."""
    c = np.asarray(coeffs, dtype=np.float64)
    if c.ndim == 0 or c.shape[-1] != 4:
        raise ConfigError(f"coeffs has shape {c.shape}: expected (..., 4) "
                          "[c0, c_prefill_token, c_decode_seq, c_kv_token] in ms")
    check_coefficients(c.reshape(-1, 4))
    c0, c1, c2, c3 = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    n_prompt, n_out = np.asarray(n_prompt, np.float64), np.asarray(n_out, np.float64)
    n_draft, n_accepted = np.asarray(n_draft, np.float64), np.asarray(n_accepted, np.float64)
    for name, a in (("n_prompt", n_prompt), ("n_out", n_out), ("n_draft", n_draft), ("n_accepted", n_accepted)):
        bad = ~(np.isfinite(a) & (a >= 0.0))
        if bad.any():
            raise ConfigError(f"{name} holds {a[bad].flat[0].item()!r}: token counts must be finite and >= 0")
    if (n_accepted > n_draft).any():
        raise ConfigError("n_accepted exceeds n_draft: a continuation keeps at most the draft's tokens")
    prefill_tokens = n_prompt + n_draft
    m = np.maximum(n_out - n_accepted - 1.0, 0.0)
    start_kv = n_prompt + n_accepted
    prefill = c0 + (c1 + c3) * prefill_tokens
    decode = m * (c0 + c2 + c3 * start_kv) + c3 * m * (m + 1.0) / 2.0
    return prefill + decode
