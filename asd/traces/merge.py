"""Join bundles recorded as slices of one workload (`asd record --shard i/n`) into one.

Slices must describe the same ladder (identical tier entries, sampling and schema version)
and hold disjoint requests; anything else is refused before a byte is written. Every input
is opened through `open_bundle` (validated); the result is validated by `write_bundle`
before it is put in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from asd.errors import TraceError
from asd.traces import schema as S
from asd.traces.bundle import Bundle, bundle_target, conform, new_manifest, open_bundle, output_path, write_bundle
from asd.traces.validate import repeated_rows


def _check_same_ladder(first: Bundle, other: Bundle) -> None:
    a, b = first.manifest, other.manifest
    if a["schema_version"] != b["schema_version"]:
        raise TraceError(f"{other.path}: schema version {b['schema_version']} differs from {first.path} ({a['schema_version']})")
    if first.tier_names != other.tier_names:
        raise TraceError(
            f"{other.path}: tiers {', '.join(other.tier_names)} differ from {first.path} ({', '.join(first.tier_names)})"
        )
    for ta, tb in zip(first.tiers, other.tiers):
        for key in sorted(set(ta) | set(tb)):
            if ta.get(key) != tb.get(key):
                raise TraceError(
                    f"{other.path}: tier {ta['name']!r} has {key}={tb.get(key)!r}, {first.path} has {ta.get(key)!r}"
                )
    # labelled by other rules, or recorded with other draft or label options: one bundle whose
    # manifest described the first shard's alone
    if a.get("label_rule") != b.get("label_rule"):
        raise TraceError(f"{other.path}: labelled by {b.get('label_rule')!r}, {first.path} by {a.get('label_rule')!r}")
    ra, rb = a.get("record") or {}, b.get("record") or {}
    for key in ("drafts", "label"):
        if key in ra and key in rb and ra[key] != rb[key]:
            raise TraceError(f"{other.path}: recorded with --{key} {rb[key]}, {first.path} with --{key} {ra[key]}")
    sa, sb = a.get("sampling") or {}, b.get("sampling") or {}
    if sa != sb:
        tier = next(name for name in sorted(set(sa) | set(sb)) if sa.get(name) != sb.get(name))
        raise TraceError(
            f"{other.path}: sampling of tier {tier!r} is {json.dumps(sb.get(tier))}, {first.path} has {json.dumps(sa.get(tier))}"
        )


def merge_bundles(paths: list[str | os.PathLike | Bundle], out: str | os.PathLike, overwrite: bool = False) -> Bundle:
    """Concatenate the tables of `paths` (directories, `builtin` or open bundles) into a new
    bundle at `out` (atomic write, validated)."""
    if len(paths) < 2:
        raise TraceError("merge needs at least two bundles")
    output_path(out)
    bundles = [open_bundle(p) for p in paths]
    resolved = [b.path.resolve() for b in bundles]
    if Path(out).resolve() in resolved:
        raise TraceError(f"{out}: the output must not be one of the inputs")
    if len(set(resolved)) != len(resolved):
        twice = next(p for p, r in zip(paths, resolved) if resolved.count(r) > 1)
        raise TraceError(f"{twice}: the same bundle is given twice")
    bundle_target(out, overwrite)
    first = bundles[0]
    for other in bundles[1:]:
        _check_same_ladder(first, other)

    # each shard's tables in the v1 schema's column order and types first: a shard written by
    # another tool (columns reordered, fields nullable) is a valid bundle that concat refused
    requests = [conform("requests", b.read("requests"), f"{b.path}/requests.parquet") for b in bundles]
    _check_all_or_none_split(bundles, requests)
    ids = pa.chunked_array([r.column("request_id").combine_chunks() for r in requests])
    owner = np.repeat(np.arange(len(bundles)), [r.num_rows for r in requests])
    codes = pc.dictionary_encode(ids.combine_chunks()).indices.to_numpy(zero_copy_only=False)
    repeat = np.flatnonzero(repeated_rows(codes))
    if repeat.size:
        row = int(repeat[0])
        first_row = int(np.flatnonzero(codes == codes[row])[0])
        raise TraceError(
            f"{bundles[owner[row]].path}: request {ids[row].as_py()!r} is also in {bundles[owner[first_row]].path}"
            " (shards must hold disjoint requests)"
        )

    outputs = pa.concat_tables([conform("outputs", b.read("outputs"), f"{b.path}/outputs.parquet") for b in bundles])
    with_drafts = [b for b in bundles if b.has("drafts")]
    drafts = pa.concat_tables([conform("drafts", b.read("drafts"), f"{b.path}/drafts.parquet")
                               for b in with_drafts]) if with_drafts else None
    acceptance = _draft_acceptance(with_drafts)
    fields = {k: v for k, v in first.manifest.items() if k not in ("tiers", "created_at", "asd_version", "schema_version")}
    fields.pop("draft_acceptance", None)
    if acceptance != S.DEFAULT_DRAFT_ACCEPTANCE:  # what the drafts' n_accepted counts, from the shards that have them
        fields["draft_acceptance"] = acceptance
    fields["synthetic"] = any(bool(b.manifest.get("synthetic")) for b in bundles)
    fields["estimated_columns"] = sorted({c for b in bundles for c in b.manifest.get("estimated_columns", [])})
    fields["provenance"] = {
        "merged_from": [{"path": str(b.path), "provenance": b.manifest.get("provenance")} for b in bundles]
    }
    # what every shard was recorded with, not the first shard's fingerprint and slice
    record = {k: v for k, v in (first.manifest.get("record") or {}).items() if k in ("drafts", "label")}
    fields.pop("record", None)
    if record and all("record" in b.manifest for b in bundles):
        fields["record"] = record
    missing = missing_shards(bundles)
    if missing:
        fields["provenance"]["missing_shards"] = missing
    manifest = new_manifest([{k: v for k, v in t.items() if k in S.TIER_KEYS} for t in first.tiers], **fields)
    manifest["tiers"] = first.tiers  # keep any extra keys a recorder added, exactly
    return write_bundle(out, manifest, pa.concat_tables(requests), outputs, drafts, overwrite=overwrite)


def _draft_acceptance(with_drafts) -> str:
    """What every shard's drafts.n_accepted counts (the manifest's `draft_acceptance`): one
    meaning, or refused. The merged manifest took the first shard's, so the others' drafts were
    read in its sense and the result hung on the order of the arguments."""
    meanings = [(b.path, b.manifest.get("draft_acceptance", S.DEFAULT_DRAFT_ACCEPTANCE)) for b in with_drafts]
    for path, meaning in meanings[1:]:
        if meaning != meanings[0][1]:
            raise TraceError(f"{path}: its drafts count n_accepted as {meaning!r}, {meanings[0][0]}'s as "
                             f"{meanings[0][1]!r} (draft_acceptance): one bundle cannot hold both")
    return meanings[0][1] if meanings else S.DEFAULT_DRAFT_ACCEPTANCE


def missing_shards(bundles) -> list[str]:
    """The slices `asd record --shard i/n` would add to these bundles when all are slices of one
    n (['2/3'] for shards 0/3 and 1/3); [] when they cover it, or are not all such slices."""
    slices = [(b.manifest.get("record") or {}).get("shard") for b in bundles]
    try:
        parsed = [tuple(int(x) for x in s.split("/")) for s in slices]
    except (AttributeError, ValueError):
        return []
    counts = {n for _, n in parsed}
    if len(counts) != 1:
        return []
    (n,) = counts
    return [f"{i}/{n}" for i in range(n) if i not in {i for i, _ in parsed}]


def _check_all_or_none_split(bundles, requests) -> None:
    """Split shards with unsplit ones: the unsplit requests would be in neither split, and every
    command that reads the split (calibrate, simulate, check) would leave them out, quietly."""
    split = [r.num_rows > 0 and "split" in r.column_names and r.column("split").null_count < r.num_rows
             for r in requests]
    if any(split) and not all(split):
        done = bundles[split.index(True)].path
        plain = next(b.path for b, s in zip(bundles, split) if not s)
        raise TraceError(f"{done} is split (calibration/test) but {plain} is not: merged, {plain}'s requests would be "
                         "in neither split and every command reading the split would leave them out; merge unsplit "
                         "bundles and split the result (asd traces split), or split each first")
