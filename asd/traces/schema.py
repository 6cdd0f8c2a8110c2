"""Trace bundle v1: the Arrow schemas of its three tables and its manifest.

A bundle is a directory: `manifest.json` plus `requests.parquet`, `outputs.parquet` and
(optionally) `drafts.parquet`. Tiers are 0-based indices into `manifest["tiers"]`, in ladder
order. A null value means "not recorded", never zero.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

REQUESTS = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string()),
        pa.field("prompt_hash", pa.string()),
        pa.field("task", pa.string()),
        pa.field("reference", pa.string()),
        pa.field("arrival_s", pa.float64()),  # offset from the start of the workload
        pa.field("split", pa.string()),  # "calibration" / "test" / null
    ]
)

OUTPUTS = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("tier", pa.int16(), nullable=False),
        pa.field("output", pa.string()),
        pa.field("n_prompt_tokens", pa.int32()),
        pa.field("n_output_tokens", pa.int32()),
        pa.field("token_logprobs", pa.list_(pa.float32())),
        pa.field("token_entropy", pa.list_(pa.float32())),
        # Per-row summaries of the lists above, so the simulator need not read the lists.
        pa.field("mean_logprob", pa.float32()),
        pa.field("min_logprob", pa.float32()),
        pa.field("mean_entropy", pa.float32()),
        pa.field("ttft_ms", pa.float64()),
        pa.field("e2e_ms", pa.float64()),
        pa.field("quality", pa.float32()),
        pa.field("accepted", pa.bool_()),
        pa.field("label_source", pa.string()),
    ]
)

DRAFTS = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("draft_tier", pa.int16(), nullable=False),
        pa.field("verify_tier", pa.int16(), nullable=False),
        pa.field("n_draft_tokens", pa.int32()),
        pa.field("n_accepted", pa.int32()),
        pa.field("verifier_logprobs", pa.list_(pa.float32())),
        pa.field("verify_ms", pa.float64()),
    ]
)

# What `drafts.n_accepted` counts, from the manifest's optional top-level "draft_acceptance":
# "longest_prefix" (the default, also when the key is absent): the longest prefix of the draft
# the verifier accepts, so the verifier continues after it; "sps_steps": draft tokens accepted
# summed over speculative-sampling steps (the Spec-Bench importer), which is no prefix and is
# kept out of the continuation cost (asd.calibration.costs).
DRAFT_ACCEPTANCE = ("longest_prefix", "sps_steps")
DEFAULT_DRAFT_ACCEPTANCE = "longest_prefix"

TABLES: dict[str, pa.Schema] = {"requests": REQUESTS, "outputs": OUTPUTS, "drafts": DRAFTS}
REQUIRED_TABLES = ("requests", "outputs")

# Keys every manifest tier entry carries (values may be null when unknown).
TIER_KEYS = (
    "name",
    "model_id",
    "params_b",
    "dtype",
    "quantization",
    "hardware",
    "tensor_parallel",
    "backend",
    "backend_version",
)


def tier_entry(name: str, **fields) -> dict:
    """A manifest tier dict with every key present (unknown → None)."""
    entry = {key: None for key in TIER_KEYS}
    entry["name"] = name
    unknown = set(fields) - set(TIER_KEYS)
    if unknown:
        raise ValueError(f"unknown tier fields: {sorted(unknown)}")
    entry.update(fields)
    return entry
