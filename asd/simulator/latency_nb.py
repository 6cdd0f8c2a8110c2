"""Numba kernels of the iteration-level latency model: the single source of truth for how long a
continuous-batching iteration, and a request running alone, take at a tier.

coeffs (L, 4) float64 in ms: one iteration at tier i takes
    c0 + c1·prefill_tokens + c2·decode_seqs + c3·kv_tokens_in_batch.
A request with n_prompt tokens to prefill and n_out tokens to generate, alone on a replica:
its first iteration prefills the prompt and yields token 1 (kv = n_prompt); each of the n_out − 1
decode iterations feeds token j = 1 .. n_out−1 (kv = n_prompt + j). n_out = 0 (a verified draft
needing no new token) is the prefill iteration alone. Summed in closed form:
    T = c0 + (c1 + c3)·P + (D−1)·(c0 + c2 + c3·P) + c3·(D−1)·D/2,  D = max(n_out, 1).
The DES (des_nb.py) charges exactly these iterations, so alone it reproduces T.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, inline="always")
def iteration_ms_nb(coeffs, tier, prefill_tokens, decode_seqs, kv_tokens):
    """Duration of one batched iteration at `tier`."""
    return (coeffs[tier, 0] + coeffs[tier, 1] * prefill_tokens + coeffs[tier, 2] * decode_seqs
            + coeffs[tier, 3] * kv_tokens)


@njit(cache=True, inline="always")
def prefill_ms_nb(coeffs, tier, n_prompt):
    """The first iteration of a request alone: prefill of n_prompt tokens, yielding token 1."""
    return coeffs[tier, 0] + (coeffs[tier, 1] + coeffs[tier, 3]) * n_prompt


@njit(cache=True, inline="always")
def request_latency_ms_nb(coeffs, tier, n_prompt, n_out):
    """End-to-end time of one request alone at `tier` (closed form, see the module docstring)."""
    steps = max(n_out, 1) - 1  # decode iterations after the prefill iteration
    return (prefill_ms_nb(coeffs, tier, n_prompt)
            + steps * (coeffs[tier, 0] + coeffs[tier, 2] + coeffs[tier, 3] * n_prompt)
            + coeffs[tier, 3] * (steps * (steps + 1) / 2.0))


@njit(cache=True)
def latency_grid_nb(coeffs, n_prompt, n_out, out):
    """out[r, i] = request_latency_ms at tier i for n_prompt[r, i], n_out[r, i]; (N, L) each."""
    for r in range(n_prompt.shape[0]):
        for i in range(n_prompt.shape[1]):
            out[r, i] = request_latency_ms_nb(coeffs, i, n_prompt[r, i], n_out[r, i])
