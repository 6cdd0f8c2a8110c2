"""`asd traces inspect`: what a bundle holds — tiers, per-tier quality and token counts,
which signals were recorded, how often tiers agree, and what an oracle would save.

Rules (also stated in the returned dict under `rules`):
- a tier's answer is *acceptable* when `accepted` is true, or, where `accepted` is null,
  when `quality` ≥ `threshold` (default 0.5);
- the *oracle* sends each request straight to its cheapest acceptable tier (if none is
  acceptable: the cheapest tier among those with the best quality); only requests with
  a labelled output at every tier count (`n_complete_requests`);
- *cost* of a tier on a request = params_b × (n_prompt_tokens + n_output_tokens), roughly
  proportional to FLOPs; a missing token count is filled with that tier's mean recorded count
  over the complete requests (said in `oracle.cost_note`), so it never counts as free; a
  count recorded for no request at all (MMLU-Pro's prompt tokens) is 0, and the note says so;
  `cost_share` = Σ oracle cost / Σ cost of always using the last tier;
- a tier's *n* (`n_outputs`) counts its *recorded outputs*: rows with anything the tier
  produced or a label (`schema.RECORDED_OUTPUT_COLUMNS`), not rows — a draft model that
  never answered alone shows 0;
- a draft pair's *accepted share* = Σ n_accepted / Σ n_draft_tokens over the rows recording
  both (`accepted_share`): the share of all draft tokens the verifier kept, so a long draft
  weighs more than a short one. `asd record`'s summary uses the same function.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from asd.traces import schema as S
from asd.traces.bundle import Bundle, open_bundle
from asd.traces.columns import read_arrays
from asd.traces.labels import ACCEPT_THRESHOLD, acceptable as acceptable_rule_array, acceptable_rule

DEFAULT_THRESHOLD = ACCEPT_THRESHOLD
# Per-output figures read as arrays (the token lists are only checked for presence).
_OUTPUT_COLUMNS = tuple(c for c in S.SIMULATOR_OUTPUT_COLUMNS if c not in ("min_logprob", "mean_entropy"))


def accepted_share(n_accepted, n_draft_tokens) -> float | None:
    """Σ n_accepted / Σ n_draft_tokens over the rows where both are recorded (NaN/None =
    not recorded); None when no draft token was recorded. The one definition of a draft
    pair's accepted share, for `asd traces inspect` and `asd record`."""
    kept = np.asarray(n_accepted, dtype=np.float64)
    drafted = np.asarray(n_draft_tokens, dtype=np.float64)
    both = ~np.isnan(kept) & ~np.isnan(drafted)
    total = drafted[both].sum()
    return float(kept[both].sum() / total) if total > 0 else None


def recorded_mask(bundle: Bundle) -> np.ndarray:
    """Per outputs row: is it a recorded output (`schema.RECORDED_OUTPUT_COLUMNS`)?"""
    present = [c for c in S.RECORDED_OUTPUT_COLUMNS if c in set(bundle.columns("outputs"))]
    table = bundle.read("outputs", present)
    mask = np.zeros(table.num_rows, dtype=bool)
    for name in present:
        mask |= pc.is_valid(table.column(name)).to_numpy(zero_copy_only=False)
    return mask


def _dense(values: np.ndarray, rows: np.ndarray, tiers: np.ndarray, shape, fill=np.nan) -> np.ndarray:
    out = np.full(shape, fill, dtype=np.float64)
    out[rows, tiers] = values
    return out


def _stat(x: np.ndarray, fn) -> float | None:
    x = x[~np.isnan(x)]
    return None if x.size == 0 else float(fn(x))


def summarize_bundle(bundle: Bundle | str, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """The summary dict printed by `asd traces inspect` (and written by its `--json`).
    `bundle`: an open bundle, a path or `builtin` (opened and validated by `open_bundle`)."""
    bundle = open_bundle(bundle)
    requests = bundle.read("requests", ["request_id", "task", "split"])
    present = set(bundle.columns("outputs"))
    arrays = read_arrays(bundle, "outputs", [c for c in _OUTPUT_COLUMNS if c in present])
    n_req, n_tiers = requests.num_rows, bundle.n_tiers
    rows, tiers = arrays.pop("request_index"), arrays.pop("tier").astype(np.int64)
    keep = (rows >= 0) & (tiers >= 0) & (tiers < n_tiers)  # invalid rows are validate's business
    recorded = recorded_mask(bundle)[keep]
    rows, tiers = rows[keep], tiers[keep]
    shape = (n_req, n_tiers)

    def grid(name):
        if name not in arrays:
            return np.full(shape, np.nan)
        return _dense(arrays[name][keep].astype(np.float64), rows, tiers, shape)

    has = _dense(recorded.astype(np.float64), rows, tiers, shape, fill=0.0) > 0  # recorded outputs
    quality, accepted = grid("quality"), grid("accepted")
    acceptable = acceptable_rule_array(quality, accepted, threshold)
    score = np.where(np.isnan(quality), accepted, quality)
    n_prompt, n_output = grid("n_prompt_tokens"), grid("n_output_tokens")
    ttft, e2e = grid("ttft_ms"), grid("e2e_ms")

    tier_rows = []
    for k, tier in enumerate(bundle.tiers):
        ran = has[:, k]
        out_k = n_output[ran, k]
        tier_rows.append(
            {
                "name": tier["name"],
                "params_b": tier.get("params_b"),
                "n_outputs": int(ran.sum()),
                "mean_quality": _stat(score[ran, k], np.mean),
                "acceptable_rate": _stat(acceptable[ran, k], np.mean),
                "mean_output_tokens": _stat(out_k, np.mean),
                "median_output_tokens": _stat(out_k, np.median),
                "p90_output_tokens": _stat(out_k, lambda x: np.percentile(x, 90)),
                "max_output_tokens": _stat(out_k, np.max),
                "mean_prompt_tokens": _stat(n_prompt[ran, k], np.mean),
                "mean_ttft_ms": _stat(ttft[ran, k], np.mean),
                "mean_e2e_ms": _stat(e2e[ran, k], np.mean),
            }
        )

    complete = has.all(axis=1) & ~np.isnan(acceptable).any(axis=1)
    return {
        "path": str(bundle.path),
        "schema_version": bundle.manifest.get("schema_version"),
        "synthetic": bool(bundle.manifest.get("synthetic", False)),
        "n_requests": int(n_req),
        "n_outputs": int(recorded.sum()),
        "n_complete_requests": int(complete.sum()),
        "n_tasks": int(pc.count_distinct(requests.column("task")).as_py()),
        "splits": _split_counts(requests),
        "label_rule": bundle.manifest.get("label_rule"),
        "tiers": tier_rows,
        "signals": _signals(bundle, arrays),
        "agreement": _agreement(bundle.tier_names, acceptable),
        "drafts": _draft_pairs(bundle),
        "oracle": _oracle(bundle, acceptable[complete], score[complete], n_prompt[complete], n_output[complete]),
        "rules": {
            "acceptable": acceptable_rule(threshold),
            "oracle": "cheapest acceptable tier per request by its cost (none acceptable: cheapest best-quality tier); "
                      "requests with a labelled output at every tier only",
            "cost": "params_b * (n_prompt_tokens + n_output_tokens), a missing count filled with its tier's "
                    "mean recorded count; cost_share = oracle / always-last-tier",
        },
    }


def _split_counts(requests: pa.Table) -> dict:
    counts = pc.value_counts(pc.fill_null(requests.column("split"), "unsplit")).to_pylist()
    return {c["values"]: int(c["counts"]) for c in counts}


def _signals(bundle: Bundle, arrays: dict) -> dict:
    def any_valid(name):
        return name in arrays and not np.isnan(arrays[name].astype(np.float64)).all()

    drafts = bundle.has("drafts") and bundle.read("drafts", ["request_id"]).num_rows > 0
    return {
        "logprobs": any_valid("mean_logprob"),
        "timings": any_valid("ttft_ms") or any_valid("e2e_ms"),
        "drafts": bool(drafts),
    }


def _draft_pairs(bundle: Bundle) -> list[dict]:
    """Per (draft tier, verify tier): how much of a draft the verifier keeps, and at what cost."""
    if not bundle.has("drafts"):
        return []
    d = read_arrays(bundle, "drafts", ["draft_tier", "verify_tier", "n_draft_tokens", "n_accepted", "verify_ms"])
    pairs = []
    for draft, verify in sorted(set(zip(d["draft_tier"].astype(int), d["verify_tier"].astype(int)))):
        if not (0 <= draft < bundle.n_tiers and 0 <= verify < bundle.n_tiers):
            continue  # invalid rows are validate's business
        sel = (d["draft_tier"] == draft) & (d["verify_tier"] == verify)
        drafted, kept = d["n_draft_tokens"][sel], d["n_accepted"][sel]
        pairs.append(
            {
                "draft": bundle.tier_names[draft],
                "verify": bundle.tier_names[verify],
                "n_rows": int(sel.sum()),
                "mean_n_accepted": _stat(kept, np.mean),
                "accepted_share": accepted_share(kept, drafted),
                "mean_verify_ms": _stat(d["verify_ms"][sel], np.mean),
            }
        )
    return pairs


def _agreement(names: list[str], acceptable: np.ndarray) -> list[dict]:
    """Per pair of tiers, the share of the requests labelled at both on which their
    acceptability labels agree, and how many those are (a tier labelled nowhere, or on a
    sample, no longer blanks or narrows every other pair)."""
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            both = ~np.isnan(acceptable[:, i]) & ~np.isnan(acceptable[:, j])
            value = float(np.mean(acceptable[both, i] == acceptable[both, j])) if both.any() else None
            pairs.append({"a": names[i], "b": names[j], "agreement": value, "n_requests": int(both.sum())})
    return pairs


def _fill_counts(counts: np.ndarray) -> tuple[np.ndarray, int]:
    """A (request, tier) token-count grid with each missing count replaced by its tier's mean
    recorded count (a tier recording none: the mean over all tiers), so an unrecorded count
    does not make a request look free. A column recorded nowhere counts as 0. Returns the
    grid and how many counts were filled."""
    missing = np.isnan(counts)
    if missing.all() or not missing.any():
        return np.nan_to_num(counts), 0
    recorded = (~missing).sum(axis=0)
    overall = np.nanmean(counts)
    tier_mean = np.full(counts.shape[1], overall)
    tier_mean[recorded > 0] = np.nansum(counts, axis=0)[recorded > 0] / recorded[recorded > 0]
    return np.where(missing, tier_mean[None, :], counts), int(missing.sum())


def _oracle(bundle: Bundle, acceptable, score, n_prompt, n_output) -> dict:
    n, k = acceptable.shape
    if n == 0:
        return {"quality": None, "cost_share": None, "tier_share": None, "n_requests": 0}
    ok = acceptable > 0
    idx = np.arange(n)
    params = [t.get("params_b") for t in bundle.tiers]
    cost, cost_note = None, None
    if all(isinstance(p, (int, float)) and p > 0 for p in params):
        (prompt, n_prompt_filled), (output, n_output_filled) = _fill_counts(n_prompt), _fill_counts(n_output)
        tokens, n_filled = prompt + output, n_prompt_filled + n_output_filled
        if not tokens.any():
            tokens = np.ones_like(tokens)
            cost_note = "no token counts: cost = params_b per request"
        else:
            notes = [f"{name} recorded nowhere: counted as 0 (the cost is the other count's)"
                     for name, counts in (("n_prompt_tokens", n_prompt), ("n_output_tokens", n_output))
                     if np.isnan(counts).all()]
            if n_filled:
                notes.append(f"{n_filled} missing token count(s) filled with that tier's mean recorded count")
            cost_note = "; ".join(notes) or None
        cost = tokens * np.asarray(params, dtype=float)[None, :]
    else:
        cost_note = "params_b unknown for some tier: cheapest = earliest in the ladder"
    # Cheapest by the request's own cost where known (a chat template can make a small
    # tier's prompt dearer than a big tier's), else by ladder order; argmin keeps the first tie.
    rank = cost if cost is not None else np.broadcast_to(np.arange(k, dtype=float), (n, k))
    score_filled = np.nan_to_num(score, nan=-1.0)
    best = score_filled == score_filled.max(axis=1, keepdims=True)
    candidates = np.where(ok.any(axis=1)[:, None], ok, best)
    choice = np.argmin(np.where(candidates, rank, np.inf), axis=1)
    chosen_score = score[idx, choice]
    tier_share = np.bincount(choice, minlength=k) / n
    cost_share = None
    if cost is not None and cost[:, -1].sum() > 0:
        cost_share = float(cost[idx, choice].sum() / cost[:, -1].sum())
    elif cost is not None:  # a share of nothing: the last tier recorded 0 tokens everywhere
        cost_note = ((cost_note + "; ") if cost_note else "") + \
            f"always-{bundle.tier_names[-1]} costs 0 (its token counts are 0): no cost share"
    result = {
        "quality": _stat(chosen_score, np.mean),
        "cost_share": cost_share,
        "acceptable_rate": float(ok.any(axis=1).mean()),
        "tier_share": {name: float(s) for name, s in zip(bundle.tier_names, tier_share)},
        "last_tier_quality": _stat(score[:, -1], np.mean),
        "n_requests": int(n),
    }
    if cost_note:
        result["cost_note"] = cost_note
    return result


__all__ = ["summarize_bundle", "accepted_share", "recorded_mask", "DEFAULT_THRESHOLD"]
