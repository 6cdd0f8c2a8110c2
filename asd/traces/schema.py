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

# Column groups, derived here so recorders, importers and readers never restate them.
def scalar_columns(schema: pa.Schema) -> tuple[str, ...]:
    """Numeric and boolean columns of a table (what the simulator reads as arrays)."""
    kinds = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
    return tuple(f.name for f in schema if any(kind(f.type) for kind in kinds))


# Per-row summaries of the token lists (derived by `bundle.conform` when absent) and the labels:
# neither comes from a model backend.
OUTPUT_SUMMARY_COLUMNS = ("mean_logprob", "min_logprob", "mean_entropy")
LABEL_COLUMNS = ("quality", "accepted", "label_source")
# What a backend measures per (request, tier): `asd record`'s shards hold exactly these.
MEASURED_OUTPUT_COLUMNS = tuple(
    f.name for f in OUTPUTS if f.name not in OUTPUT_SUMMARY_COLUMNS + LABEL_COLUMNS
)
# A tier's row is a *recorded output* when any of these holds a value: something the tier
# produced (text, token counts or signals, timings) or a label. The prompt's token count is
# not the tier's doing, and a tier that never answered alone (Spec-Bench's draft model) has
# rows but no recorded output. `inspect`'s n and the import summary count these.
RECORDED_OUTPUT_COLUMNS = tuple(
    name for name in MEASURED_OUTPUT_COLUMNS if name not in ("request_id", "tier", "n_prompt_tokens")
) + ("quality", "accepted")
# The request columns a prompt set or an import file may give (the rest are derived or
# set by later commands: prompt_hash, arrival_s, split).
INPUT_REQUEST_COLUMNS = ("request_id", "prompt", "task", "reference")
# What the simulator reads per output row and per draft row (DESIGN.md, "Simulation").
SIMULATOR_OUTPUT_COLUMNS = ("request_id",) + scalar_columns(OUTPUTS)
SIMULATOR_DRAFT_COLUMNS = ("request_id",) + scalar_columns(DRAFTS)

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
