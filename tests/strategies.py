"""Hypothesis strategies for traces and engine tables, shared by the test modules."""

from __future__ import annotations

from hypothesis import strategies as st  # noqa: F401

# --- trace strategies ---

_SPLITS = st.sampled_from(["calibration", "test", None])
_LOGPROB = st.floats(-30.0, 0.0, width=32)
_ENTROPY = st.floats(0.0, 12.0, width=32)
_MS = st.floats(0.0, 1e5, allow_nan=False)


def _maybe(strategy):
    return st.one_of(st.none(), strategy)


@st.composite
def trace_bundles(draw, max_requests: int = 10, max_tiers: int = 4, with_drafts: bool | None = None):
    """A valid v1 bundle as `(manifest, requests, outputs, drafts)` column dicts (drafts may be
    None). Values are float32-exact, nulls appear everywhere they are allowed, list lengths
    match the token counts, and each request has outputs for any subset of the tiers."""
    from asd.traces.bundle import new_manifest

    n_tiers = draw(st.integers(1, max_tiers))
    params = draw(st.lists(st.one_of(st.none(), st.floats(0.1, 500.0)), min_size=n_tiers, max_size=n_tiers))
    manifest = new_manifest([{"name": f"tier-{k}", "params_b": p} for k, p in enumerate(params)])
    ids = draw(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=max_requests, unique=True))
    n = len(ids)
    requests = {
        "request_id": ids,
        "prompt": draw(st.lists(_maybe(st.text(max_size=8)), min_size=n, max_size=n)),
        "task": draw(st.lists(_maybe(st.sampled_from(["math", "code", "chat"])), min_size=n, max_size=n)),
        "arrival_s": draw(st.lists(_maybe(st.floats(0.0, 1e6)), min_size=n, max_size=n)),
        "split": draw(st.lists(_SPLITS, min_size=n, max_size=n)),
    }
    columns = ["request_id", "tier", "output", "n_prompt_tokens", "n_output_tokens", "token_logprobs",
               "token_entropy", "ttft_ms", "e2e_ms", "quality", "accepted", "label_source"]
    outputs = {c: [] for c in columns}
    for rid in ids:
        tiers = draw(st.lists(st.integers(0, n_tiers - 1), max_size=n_tiers, unique=True))
        for tier in tiers:
            n_out = draw(_maybe(st.integers(0, 5)))
            length = n_out if n_out is not None else draw(st.integers(0, 5))
            outputs["request_id"].append(rid)
            outputs["tier"].append(tier)
            outputs["output"].append(draw(_maybe(st.text(max_size=8))))
            outputs["n_prompt_tokens"].append(draw(_maybe(st.integers(0, 10_000))))
            outputs["n_output_tokens"].append(n_out)
            outputs["token_logprobs"].append(draw(_maybe(st.lists(_LOGPROB, min_size=length, max_size=length))))
            outputs["token_entropy"].append(draw(_maybe(st.lists(_ENTROPY, min_size=length, max_size=length))))
            outputs["ttft_ms"].append(draw(_maybe(_MS)))
            outputs["e2e_ms"].append(draw(_maybe(_MS)))
            outputs["quality"].append(draw(_maybe(st.floats(0.0, 1.0, width=32))))
            outputs["accepted"].append(draw(_maybe(st.booleans())))
            outputs["label_source"].append(draw(_maybe(st.sampled_from(["exact-match", "judge"]))))
    drafts = None
    if n_tiers > 1 and (with_drafts if with_drafts is not None else draw(st.booleans())):
        drafts = {c: [] for c in ["request_id", "draft_tier", "verify_tier", "n_draft_tokens", "n_accepted",
                                  "verifier_logprobs", "verify_ms"]}
        pairs = [(d, v) for d in range(n_tiers) for v in range(d + 1, n_tiers)]
        for rid in ids:
            for d, v in draw(st.lists(st.sampled_from(pairs), max_size=2, unique=True)):
                n_draft = draw(st.integers(0, 5))
                drafts["request_id"].append(rid)
                drafts["draft_tier"].append(d)
                drafts["verify_tier"].append(v)
                drafts["n_draft_tokens"].append(n_draft)
                drafts["n_accepted"].append(draw(_maybe(st.integers(0, n_draft))))
                drafts["verifier_logprobs"].append(draw(_maybe(st.lists(_LOGPROB, min_size=n_draft, max_size=n_draft))))
                drafts["verify_ms"].append(draw(_maybe(_MS)))
        if not drafts["request_id"]:
            drafts = None  # an empty drafts table is invalid: no drafts means no drafts.parquet
    if not outputs["request_id"]:  # the outputs table must not be empty
        outputs = {c: v[:0] for c, v in outputs.items()}
        outputs.update(request_id=[ids[0]], tier=[0], **{c: [None] for c in columns[2:]})
    return manifest, requests, outputs, drafts



# --- engine table strategies ---

import numpy as _np  # noqa: E402
from hypothesis.extra import numpy as _hnp  # noqa: E402

_unit = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False)
_cost = st.floats(0.0, 10.0, allow_nan=False, allow_infinity=False)


def _stochastic(draw, shape):
    """Arrays whose last axis sums to 1 (rows of a transition kernel), zeros allowed."""
    weights = draw(_hnp.arrays(_np.float64, shape, elements=_unit)) + 1e-3
    return weights / weights.sum(axis=-1, keepdims=True)


@st.composite
def dp_instances(draw, max_tiers=4, max_bins=4, max_prompt_bins=3):
    """Random DP inputs: q_stop <= q_mean (L, B), trans (L-1, B, B), cnext, trans0 (L, B0, B), c0."""
    n_tiers = draw(st.integers(1, max_tiers))
    n_bins = draw(st.integers(1, max_bins))
    n_prompt_bins = draw(st.integers(1, max_prompt_bins))
    q_mean = draw(_hnp.arrays(_np.float64, (n_tiers, n_bins), elements=_unit))
    shrink = draw(_hnp.arrays(_np.float64, (n_tiers, n_bins), elements=_unit))
    return {
        "q_stop": q_mean * shrink,
        "q_mean": q_mean,
        "trans": _stochastic(draw, (max(n_tiers - 1, 0), n_bins, n_bins)),
        "cnext": draw(_hnp.arrays(_np.float64, (max(n_tiers - 1, 0), n_bins), elements=_cost)),
        "trans0": _stochastic(draw, (n_tiers, n_prompt_bins, n_bins)),
        "c0": draw(_hnp.arrays(_np.float64, (n_tiers, n_prompt_bins), elements=_cost)),
    }


# no subnormal λ (below 2.2e-308): there 0.25·λ loses bits, so a transition-weighted sum of λ no
# longer equals λ and an exact stop/continue tie breaks either way (2.2e-313 against 1.0 did)
lambdas = st.floats(0.0, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def calibration_sets(draw, max_requests=60, max_tiers=4):
    """(p_hat, accepted, costs) for N requests over L tiers; accepted 0/1 or quality, some NaN."""
    n = draw(st.integers(1, max_requests))
    n_tiers = draw(st.integers(1, max_tiers))
    p_hat = draw(_hnp.arrays(_np.float64, (n, n_tiers), elements=_unit))
    accepted = draw(_hnp.arrays(_np.float64, (n, n_tiers), elements=st.sampled_from([0.0, 1.0, 0.25, _np.nan])))
    costs = draw(_hnp.arrays(_np.float64, (n, n_tiers), elements=_cost))
    return p_hat, accepted, costs


@st.composite
def isotonic_tables(draw, n_rows, max_knots=6):
    """One piecewise-linear non-decreasing table per predictor row."""
    tables = []
    for _ in range(n_rows):
        k = draw(st.integers(1, max_knots))
        x = _np.sort(draw(_hnp.arrays(_np.float64, k, elements=_unit)))
        y = _np.sort(draw(_hnp.arrays(_np.float64, k, elements=_unit)))
        tables.append((x, y))
    return tables


# --- calibration strategies ---


@st.composite
def ragged_token_lists(draw, max_requests=6, max_tiers=4, max_len=40):
    """A `TokenLists` over (N, L) cells, some missing, some empty, cells stored in a shuffled
    order with gaps between them (as after `subset`), plus the plain Python lists it holds."""
    from asd.calibration.views import TokenLists

    n = draw(st.integers(1, max_requests))
    n_tiers = draw(st.integers(1, max_tiers))
    cells = [[draw(_maybe(st.lists(_LOGPROB, max_size=max_len))) for _ in range(n_tiers)] for _ in range(n)]
    order = draw(st.permutations([(r, k) for r in range(n) for k in range(n_tiers)]))
    values, start = [], _np.zeros((n, n_tiers), dtype=_np.int64)
    length = _np.zeros((n, n_tiers), dtype=_np.int64)
    present = _np.zeros((n, n_tiers), dtype=bool)
    for r, k in order:
        values.extend([-1.0] * draw(st.integers(0, 2)))  # a gap that belongs to no cell
        if cells[r][k] is not None:
            start[r, k], length[r, k], present[r, k] = len(values), len(cells[r][k]), True
            values.extend(cells[r][k])
    lists = TokenLists(_np.asarray(values, dtype=_np.float32), start, length, present)
    return lists, cells
# --- simulator strategies ---

_tokens = st.integers(0, 40)


@st.composite
def replay_instances(draw, max_requests=12, max_tiers=4, max_bins=4, max_prompt_bins=3):
    """Random replay inputs: bins (climbed and cold), stage-0 start table, stop tables climbed
    and cold (the last tier always stops, as the DP guarantees), per-(request, tier) cost/latency cold and continued,
    quality."""
    n = draw(st.integers(1, max_requests))
    n_tiers = draw(st.integers(1, max_tiers))
    n_bins = draw(st.integers(1, max_bins))
    n_prompt_bins = draw(st.integers(1, max_prompt_bins))
    stop = draw(_hnp.arrays(_np.uint8, (n_tiers, n_bins), elements=st.integers(0, 1)))
    stop[-1] = 1
    stop_cold = draw(_hnp.arrays(_np.uint8, (n_tiers, n_bins), elements=st.integers(0, 1)))
    stop_cold[-1] = 1
    values = _hnp.arrays(_np.float64, (n, n_tiers), elements=_cost)
    return {
        "prompt_bins": draw(_hnp.arrays(_np.int64, n, elements=st.integers(0, n_prompt_bins - 1))),
        "tier_bins": draw(_hnp.arrays(_np.int64, (n, n_tiers), elements=st.integers(0, n_bins - 1))),
        "cold_bins": draw(_hnp.arrays(_np.int64, (n, n_tiers), elements=st.integers(0, n_bins - 1))),
        "start_table": draw(_hnp.arrays(_np.int64, n_prompt_bins, elements=st.integers(0, n_tiers - 1))),
        "stop_table": stop, "stop_cold_table": stop_cold,
        "cost": draw(values), "cost_cont": draw(values), "latency_ms": draw(values),
        "latency_cont_ms": draw(values),
        "quality": draw(_hnp.arrays(_np.float64, (n, n_tiers), elements=_unit)),
    }


@st.composite
def cascade_instances(draw, max_requests=10, max_tiers=3):
    """Random DES inputs: paths start <= stop (some skipping the tiers between: after_start), token
    counts cold and continued (N, L), iteration coefficients (L, 4), pools (replicas, max batch, KV
    capacity that fits every request)."""
    n = draw(st.integers(1, max_requests))
    n_tiers = draw(st.integers(1, max_tiers))
    start = draw(_hnp.arrays(_np.int64, n, elements=st.integers(0, n_tiers - 1)))
    depth = draw(_hnp.arrays(_np.int64, n, elements=st.integers(0, n_tiers - 1)))
    stop = _np.minimum(start + depth, n_tiers - 1)
    # some paths skip from the start tier straight to the stop tier (fixed-2stage)
    skips = draw(_hnp.arrays(_np.bool_, n))
    after_start = _np.where(skips, stop, _np.minimum(start + 1, stop))
    tokens = _hnp.arrays(_np.int64, (n, n_tiers), elements=_tokens)
    coeffs = draw(_hnp.arrays(_np.float64, (n_tiers, 4), elements=st.floats(0.0, 5.0, allow_nan=False)))
    coeffs[:, 0] += 0.5  # an iteration takes time: c0 > 0
    n_prompt, n_decode, n_prompt_cont, n_decode_cont = (draw(tokens) for _ in range(4))
    # a continuation decodes from prompt + accepted prefix: at most what its verify pass prefilled
    rejected = draw(_hnp.arrays(_np.int64, (n, n_tiers), elements=st.integers(0, 40)))
    n_kv_cont = n_prompt_cont - rejected % (n_prompt_cont + 1)
    peak = max(int((n_prompt + n_decode).max()), int((n_prompt_cont + n_decode_cont).max()), 1)
    return {
        "start": start, "stop": stop, "after_start": after_start, "n_prompt": n_prompt, "n_decode": n_decode,
        "n_prompt_cont": n_prompt_cont, "n_decode_cont": n_decode_cont, "n_kv_cont": n_kv_cont, "coeffs": coeffs,
        "replicas": draw(_hnp.arrays(_np.int64, n_tiers, elements=st.integers(1, 2))),
        "max_batch": draw(_hnp.arrays(_np.int64, n_tiers, elements=st.integers(1, 3))),
        "kv_capacity": peak + draw(_hnp.arrays(_np.int64, n_tiers, elements=st.integers(0, 60))),
        "arrival_ms": _np.sort(draw(_hnp.arrays(_np.float64, n, elements=st.sampled_from(
            [0.0, 1.0, 2.5, 10.0, 50.0, 200.0])))),
    }
