"""Check a trace bundle against schema v1: version, column types, keys and value ranges.

Every check is vectorised (pyarrow compute / numpy), so a 10^6-request bundle validates in
seconds. Each failed check becomes one `Problem` naming the file, column and first bad row
(0-based row of that Parquet file) and how many more rows fail the same way.

Readers do not call this directly: `asd.traces.bundle.open_bundle` does, through
`require_valid`. A bundle that passed is *stamped* when asd wrote it (`validate_bundle(...,
stamp=True)`): its manifest records the validator version, a digest of the manifest and the
size and sha256 of every table file. `require_valid` trusts a bundle whose stamp matches
(hashing costs a few percent of `asd traces inspect`; the full check costs over half) and
checks every other bundle in full. Hashes rather than sizes and mtimes, so a flipped bit
on disk or a copy that kept the timestamps is still caught.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from asd import __version__
from asd.errors import TraceError
from asd.traces import schema as S
from asd.traces.bundle import (
    MANIFEST, STAMP_KEY, Bundle, ManifestError, file_problem, file_sha256, one_line, open_bundle,
    resolve_bundle_path, write_manifest,
)

SPLITS = ("calibration", "test")
# Bump when a check is added or tightened: stamps written by an older validator then no
# longer match, and those bundles get the full check once more.
VALIDATOR_VERSION = 3


@dataclass(frozen=True)
class Problem:
    """One failed check: where (file, column, 0-based row) and what."""

    file: str
    column: str | None
    row: int | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.column is not None:
            where += f": column {self.column!r}"
        if self.row is not None:
            where += f" row {self.row}"
        return f"{where}: {self.message}"


class _Full(Exception):
    """Raised internally once `max_problems` have been collected."""


class _Collector:
    def __init__(self, max_problems: int):
        self.max_problems = max_problems
        self.problems: list[Problem] = []

    def add(self, file: str, column: str | None, row: int | None, message: str) -> None:
        self.problems.append(Problem(file, column, row, message))
        if len(self.problems) >= self.max_problems:
            raise _Full

    def rows(self, file: str, column: str, bad: np.ndarray, message, values=None) -> None:
        """Report the first row where boolean mask `bad` holds, with a count of the rest."""
        idx = np.flatnonzero(bad)
        if idx.size == 0:
            return
        row = int(idx[0])
        if callable(message):
            value = values[row]
            text = message(value.as_py() if isinstance(value, pa.Scalar) else value)
        else:
            text = message
        if idx.size > 1:
            text += f" (and {idx.size - 1} more rows)"
        self.add(file, column, row, text)


def validate_bundle(
    path_or_bundle: str | os.PathLike | Bundle, max_problems: int = 20, *, stamp: bool = False
) -> list[Problem]:
    """Check a bundle in full (never trusting a stamp); return at most `max_problems`
    problems (empty list: the bundle is valid).

    An unreadable bundle (no directory, no manifest, newer schema version) yields a single
    problem rather than raising, so callers can print every result the same way. With
    `stamp`, a valid bundle gets the validation stamp written into its manifest (what asd's
    writers do; read-only commands never write it).
    """
    if max_problems < 1:
        raise ValueError("max_problems must be at least 1")
    out = _Collector(max_problems)
    try:
        if isinstance(path_or_bundle, Bundle):
            bundle = path_or_bundle
        else:
            bundle = _open_for_validation(path_or_bundle, out)
            if bundle is None:
                return out.problems
        _check_bundle(bundle, out)
    except _Full:
        pass
    if stamp and not out.problems:
        bundle.stamp = stamp_of(bundle.path, bundle.manifest)
        write_manifest(bundle.path, {**bundle.manifest, STAMP_KEY: bundle.stamp})
        bundle.validated = True
    return out.problems


def _open_for_validation(path, out: "_Collector") -> Bundle | None:
    """The bundle to check, or None with the reason added. A manifest that breaks its rules has
    every problem listed and, where its ladder is still readable (a bad params_b, a tier key
    missing), its tables checked against it: opening stopped at the first and checked no table."""
    try:
        return open_bundle(path, validate=False)
    except ManifestError as exc:
        for problem in exc.problems:
            out.add(*_bundle_level(path, problem))
        if exc.manifest is None:
            return None
        return Bundle(resolve_bundle_path(path), {k: v for k, v in exc.manifest.items() if k != STAMP_KEY})
    except TraceError as exc:
        out.add(*_bundle_level(path, str(exc)))
        return None


def require_valid(bundle: Bundle, name: str | None = None) -> None:
    """Raise a TraceError naming the first problem of `bundle` (`name`: the bundle as the
    user wrote it), unless its validation stamp still matches its files. Marks it validated.
    Called by `open_bundle`; use that."""
    name = name or str(bundle.path)
    if not stamp_matches(bundle):
        problems = validate_bundle(bundle, max_problems=1)
        if problems:
            raise TraceError(f"{name}: {problems[0]}; run `asd traces validate {name}` for all problems")
    bundle.validated = True


def _manifest_sha256(manifest: dict) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _table_files(path: Path) -> list[str]:
    return [f"{name}.parquet" for name in S.TABLES if os.path.lexists(path / f"{name}.parquet")]


def stamp_of(path: Path, manifest: dict) -> dict:
    """The validation stamp of a bundle that has just passed `validate_bundle`."""
    return {
        "validator": VALIDATOR_VERSION,
        "asd_version": __version__,
        "manifest_sha256": _manifest_sha256(manifest),
        "files": {
            name: {"size": (path / name).stat().st_size, "sha256": file_sha256(path / name)}
            for name in _table_files(path)
        },
    }


def stamp_matches(bundle: Bundle) -> bool:
    """Whether `bundle` carries a stamp from this validator that its manifest and table
    files still match, byte for byte (sizes first: a changed size needs no hashing)."""
    stamp = bundle.stamp
    if not isinstance(stamp, dict) or stamp.get("validator") != VALIDATOR_VERSION:
        return False
    files = stamp.get("files")
    if not isinstance(files, dict) or stamp.get("manifest_sha256") != _manifest_sha256(bundle.manifest):
        return False
    try:
        if sorted(files) != sorted(_table_files(bundle.path)) or _stray_tables(bundle.path):
            return False
        for name, recorded in files.items():
            file = bundle.path / name
            if not isinstance(recorded, dict) or file_problem(file) or file.stat().st_size != recorded.get("size"):
                return False
        return all(file_sha256(bundle.path / name) == recorded.get("sha256") for name, recorded in files.items())
    except OSError:
        return False


def _manifest_file(path: Path) -> str:
    try:
        return str(path / MANIFEST) if path.is_dir() else str(path)
    except OSError:  # a directory that cannot be looked into
        return str(path)


def _bundle_level(path: str | os.PathLike, message: str) -> tuple[str, None, None, str]:
    """A bundle that does not open, as one problem naming its file once: the error already
    starts with the path (`B: no such bundle`, `B/manifest.json: ...`), so that is the file."""
    try:
        resolved = resolve_bundle_path(path)
        where = _manifest_file(resolved)
    except TraceError:  # `builtin` when the built-in trace is not installed
        resolved, where = path, str(path)
    for prefix in sorted({where, str(path), str(resolved)}, key=len, reverse=True):
        if message.startswith(prefix + ": "):
            return prefix, None, None, message[len(prefix) + 2:]
    return where, None, None, message


def _check_sampling(bundle: Bundle, out: _Collector) -> None:
    """`sampling` maps every tier's name to an object of its sampling parameters ({} when
    not known), and nothing else: one shape for every writer."""
    sampling = bundle.manifest.get("sampling")
    if not isinstance(sampling, dict):
        out.add(MANIFEST, None, None, f"sampling must be an object of tier name -> parameters, got {type(sampling).__name__}")
        return
    names = bundle.tier_names
    for key, value in sampling.items():
        if key not in names:
            out.add(MANIFEST, None, None, f"sampling: {key!r} is not a tier (sampling is per tier: {', '.join(names)})")
        elif not isinstance(value, dict):
            out.add(MANIFEST, None, None, f"sampling[{key!r}] must be an object of parameters, got {type(value).__name__}")
    for name in names:
        if name not in sampling:
            out.add(MANIFEST, None, None, f"sampling: no entry for tier {name!r} ({{}} when not known)")


def _check_bundle(bundle: Bundle, out: _Collector) -> None:
    n_tiers = bundle.n_tiers  # the manifest itself was checked when the bundle was opened
    _check_stray_tables(bundle, out)
    _check_sampling(bundle, out)
    acceptance = bundle.manifest.get("draft_acceptance", S.DEFAULT_DRAFT_ACCEPTANCE)
    if acceptance not in S.DRAFT_ACCEPTANCE:
        out.add(MANIFEST, None, None, f"draft_acceptance {acceptance!r} is not one of {', '.join(S.DRAFT_ACCEPTANCE)}")
    tables = {}
    for name in S.TABLES:
        if name == "drafts" and not bundle.has("drafts"):
            _check_not_lost(bundle, "drafts.parquet", out)
            continue
        tables[name] = _read_checked(bundle, name, out)
    requests, outputs, drafts = tables["requests"], tables["outputs"], tables.get("drafts")
    request_ids = None
    if requests is not None:
        request_ids = _check_requests(requests, out)
    if outputs is not None:
        _check_outputs(outputs, request_ids, n_tiers, out)
    if drafts is not None:
        _check_drafts(drafts, request_ids, n_tiers, out)


def _check_not_lost(bundle: Bundle, file: str, out: _Collector) -> None:
    """An optional table that the bundle's validation stamp lists, with the manifest unchanged
    since, was deleted: without it every command would quietly read another bundle (no drafts:
    regeneration instead of speculative continuation in every cost)."""
    stamp = bundle.stamp
    if (isinstance(stamp, dict) and isinstance(stamp.get("files"), dict) and file in stamp["files"]
            and stamp.get("manifest_sha256") == _manifest_sha256(bundle.manifest)):
        out.add(file, None, None, f"missing, though the bundle was written and validated with it (restore it; to "
                                  f"use the bundle without it, delete the manifest's {STAMP_KEY!r} entry)")


def _read_checked(bundle: Bundle, name: str, out: _Collector) -> pa.Table | None:
    """Read the columns of `name` whose type is right; report missing, unknown, mistyped ones."""
    file = f"{name}.parquet"
    expected = S.TABLES[name]
    problem = file_problem(bundle.path / file)
    if problem:
        out.add(file, None, None, problem)
        return None
    try:
        schema = pq.read_schema(bundle.path / file)
    except (OSError, pa.ArrowException) as exc:
        out.add(file, None, None, f"unreadable Parquet ({one_line(exc)})")
        return None
    good = []
    for field in expected:
        if field.name not in schema.names:
            out.add(file, field.name, None, "column missing")
            continue
        actual = schema.field(field.name).type
        if actual != field.type:
            out.add(file, field.name, None, f"type {actual}, expected {field.type}")
            continue
        good.append(field.name)
    for extra in schema.names:
        if extra not in expected.names:
            out.add(file, extra, None, f"unknown column (schema v{S.SCHEMA_VERSION} has {expected.names})")
    try:
        # every page is decoded; pages written with a CRC (asd writes one) are checked against it
        table = pq.read_table(bundle.path / file, columns=good, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as exc:
        out.add(file, None, None, f"unreadable Parquet ({one_line(exc)})")
        return None
    if table.num_rows == 0:
        hint = "; omit drafts.parquet when no drafts were recorded" if name == "drafts" else ""
        out.add(file, None, None, f"empty table{hint}")
        return None
    for field in expected:
        if not field.nullable and field.name in table.column_names:
            out.rows(file, field.name, _np(table.column(field.name).is_null()), "null (this column is required)")
    return table


def _check_stray_tables(bundle: Bundle, out: _Collector) -> None:
    """A Parquet file under another name (`Drafts.parquet`, `output.parquet`) would be
    silently ignored: report it."""
    try:
        stray = _stray_tables(bundle.path)
    except OSError as exc:
        out.add(str(bundle.path), None, None, f"cannot list the bundle directory ({exc.strerror or exc})")
        return
    for name in stray:
        out.add(name, None, None, f"unknown table file (a bundle holds {', '.join(f'{t}.parquet' for t in S.TABLES)})")


def _stray_tables(path: Path) -> list[str]:
    known = {f"{name}.parquet" for name in S.TABLES}
    return [name for name in sorted(os.listdir(path)) if name.lower().endswith(".parquet") and name not in known]


# --- helpers -------------------------------------------------------------------------------


def _np(mask) -> np.ndarray:
    """A boolean Arrow array/expression result as numpy, nulls counted as False."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _values(col) -> np.ndarray:
    return col.to_numpy(zero_copy_only=False)


# A time in ms beyond this (11.6 days for one request) is not a measurement: most likely another
# unit, and its square overflows the latency fits (1e300 passed and broke `asd simulate`).
MAX_MS = 1e9


def _check_times(file: str, table: pa.Table, columns, out: _Collector) -> None:
    _check_nonnegative(file, table, columns, out)
    for name in columns:
        if name in table.column_names:
            col = table.column(name)
            out.rows(file, name, _np(pc.and_(pc.greater(col, MAX_MS), pc.invert(pc.is_inf(col)))),
                     lambda v: f"{v} ms is over {MAX_MS:.0e} ms (11.6 days): not a time in ms", col)


def _check_nonnegative(file: str, table: pa.Table, columns, out: _Collector, integer=False) -> None:
    for name in columns:
        if name not in table.column_names:
            continue
        col = table.column(name)
        if not integer:
            out.rows(file, name, _np(pc.is_nan(col)), "NaN (use null for not recorded)")
            out.rows(file, name, _np(pc.is_inf(col)), "infinite")
        out.rows(file, name, _np(pc.less(col, 0)), lambda v: f"{v} is negative", col)


def _check_logprobs(file: str, table: pa.Table, name: str, out: _Collector) -> None:
    """A scalar or list<float> logprob column: every value finite... or -inf, and ≤ 0."""
    if name not in table.column_names:
        return
    col = table.column(name)
    is_list = pa.types.is_list(col.type)
    flat = pc.list_flatten(col) if is_list else col
    parents = _values(pc.list_parent_indices(col)) if is_list else None
    for bad, message in (
        (_np(pc.is_nan(flat)), "NaN logprob"),
        (_np(pc.greater(flat, 0)), "logprob > 0"),
    ):
        if not bad.any():
            continue
        if is_list:
            rows = np.zeros(table.num_rows, dtype=bool)
            rows[parents[bad]] = True
            first = int(np.flatnonzero(bad)[0])
            value = flat[first].as_py()
            suffix = f" ({value} at token {first - _list_start(col, parents[first])})"
            out.rows(file, name, rows, message + suffix)
        else:
            out.rows(file, name, bad, lambda v: f"{message} ({v})", flat)


def _list_start(col, row: int) -> int:
    lengths = _values(pc.fill_null(pc.list_value_length(col), 0))
    return int(lengths[:row].sum())


def _check_list_length(file: str, table: pa.Table, list_col: str, count_col: str, out: _Collector) -> None:
    if list_col not in table.column_names or count_col not in table.column_names:
        return
    lengths = pc.list_value_length(table.column(list_col))
    counts = table.column(count_col)
    bad = _np(pc.not_equal(pc.cast(lengths, pa.int64()), pc.cast(counts, pa.int64())))
    message = lambda r: f"{lengths[r].as_py()} values but {count_col} is {counts[r].as_py()}"  # noqa: E731
    out.rows(file, list_col, bad, message, np.arange(table.num_rows))


def _request_codes(file: str, table: pa.Table, request_ids: pa.Array | None, out: _Collector) -> np.ndarray | None:
    """Index of each row's request in the requests table; reports rows whose request is absent."""
    if "request_id" not in table.column_names or request_ids is None:
        return None
    ids = table.column("request_id")
    codes = pc.index_in(ids, value_set=request_ids)
    missing = _np(pc.and_(pc.is_null(codes), pc.is_valid(ids)))
    out.rows(file, "request_id", missing, lambda v: f"request {v!r} is not in requests.parquet", ids)
    return _values(pc.fill_null(codes, -1)).astype(np.int64)


def repeated_rows(keys: np.ndarray) -> np.ndarray:
    """Mask of the rows whose key appeared on an earlier row."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeat = np.zeros(keys.size, dtype=bool)
    repeat[order[1:][sorted_keys[1:] == sorted_keys[:-1]]] = True
    return repeat


def _check_tier_range(file: str, table: pa.Table, column: str, n_tiers: int, out: _Collector) -> np.ndarray | None:
    """Report tiers outside the manifest's; the rows whose tier is in range (and not null), which
    the checks reading it go on with (one bad row stopped them for every row), or None without
    the column."""
    if column not in table.column_names:
        return None
    col = table.column(column)
    values = _values(pc.fill_null(col, 0)).astype(np.int64)
    bad = (values < 0) | (values >= n_tiers)
    out.rows(file, column, bad, lambda v: f"tier {v} is outside the manifest's {n_tiers} tiers (0..{n_tiers - 1})", values)
    return ~bad & ~_np(pc.is_null(col))


def _repeats_among(keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """repeated_rows over the `rows` mask only: every other row gets a key of its own."""
    return repeated_rows(np.where(rows, keys, -1 - np.arange(keys.size))) & rows


# --- per-table checks -----------------------------------------------------------------------


def _check_requests(table: pa.Table, out: _Collector) -> pa.Array | None:
    file = "requests.parquet"
    if "request_id" not in table.column_names:
        return None
    ids = table.column("request_id").combine_chunks()
    # a null id (reported as such by _read_checked) gets code -1 and is no duplicate
    codes = _values(pc.fill_null(pc.dictionary_encode(ids).indices, -1)).astype(np.int64)
    repeat = repeated_rows(codes) & (codes >= 0)
    out.rows(file, "request_id", repeat, lambda v: f"duplicate request {v!r}", ids)
    out.rows(file, "request_id", _np(pc.equal(pc.utf8_length(ids), 0)), "empty request id")
    if "split" in table.column_names:
        split = table.column("split")
        bad = _np(pc.and_(pc.is_valid(split), pc.invert(pc.is_in(split, value_set=pa.array(SPLITS)))))
        out.rows(file, "split", bad, lambda v: f"split {v!r} is not one of {list(SPLITS)} or null", split)
    _check_nonnegative(file, table, ["arrival_s"], out)
    return ids


def _check_outputs(table: pa.Table, request_ids, n_tiers: int, out: _Collector) -> None:
    file = "outputs.parquet"
    codes = _request_codes(file, table, request_ids, out)
    tiers_ok = _check_tier_range(file, table, "tier", n_tiers, out)
    if codes is not None and tiers_ok is not None:
        tiers = _values(pc.fill_null(table.column("tier"), 0)).astype(np.int64)
        repeat = _repeats_among(codes * n_tiers + tiers, tiers_ok & (codes >= 0))
        ids = table.column("request_id")
        out.rows(file, "tier", repeat, lambda r: f"duplicate (request, tier): request {ids[r].as_py()!r} tier {tiers[r]}", np.arange(table.num_rows))
    if "quality" in table.column_names:
        q = table.column("quality")
        out.rows(file, "quality", _np(pc.is_nan(q)), "NaN quality (use null for not judged)")
        bad = _np(pc.or_(pc.less(q, 0), pc.greater(q, 1)))
        out.rows(file, "quality", bad, lambda v: f"quality {v} is outside [0, 1]", q)
    _check_nonnegative(file, table, ["n_prompt_tokens", "n_output_tokens"], out, integer=True)
    for name in ("token_logprobs", "mean_logprob", "min_logprob"):
        _check_logprobs(file, table, name, out)
    for name in ("token_entropy", "mean_entropy"):
        if name in table.column_names:
            col = table.column(name)
            flat = pc.list_flatten(col) if pa.types.is_list(col.type) else col
            rows = _np(pc.or_(pc.or_(pc.is_nan(flat), pc.is_inf(flat)), pc.less(flat, 0)))
            if pa.types.is_list(col.type) and rows.any():
                mask = np.zeros(table.num_rows, dtype=bool)
                mask[_values(pc.list_parent_indices(col))[rows]] = True
                rows = mask
            out.rows(file, name, rows, "entropy is NaN, infinite or negative")
    _check_list_length(file, table, "token_logprobs", "n_output_tokens", out)
    _check_list_length(file, table, "token_entropy", "n_output_tokens", out)
    _check_times(file, table, ["ttft_ms", "e2e_ms"], out)


def _check_drafts(table: pa.Table, request_ids, n_tiers: int, out: _Collector) -> None:
    file = "drafts.parquet"
    codes = _request_codes(file, table, request_ids, out)
    ok_d = _check_tier_range(file, table, "draft_tier", n_tiers, out)
    ok_v = _check_tier_range(file, table, "verify_tier", n_tiers, out)
    if ok_d is not None and ok_v is not None:
        ok = ok_d & ok_v
        d = _values(pc.fill_null(table.column("draft_tier"), 0)).astype(np.int64)
        v = _values(pc.fill_null(table.column("verify_tier"), 0)).astype(np.int64)
        out.rows(file, "verify_tier", ok & (v <= d), "the verify tier must be deeper than the draft tier")
        if codes is not None:
            repeat = _repeats_among((codes * n_tiers + d) * n_tiers + v, ok & (codes >= 0))
            out.rows(file, "verify_tier", repeat, "duplicate (request, draft_tier, verify_tier)")
    _check_nonnegative(file, table, ["n_draft_tokens", "n_accepted"], out, integer=True)
    if "n_accepted" in table.column_names and "n_draft_tokens" in table.column_names:
        acc, n = table.column("n_accepted"), table.column("n_draft_tokens")
        bad = _np(pc.greater(acc, n))
        out.rows(file, "n_accepted", bad, lambda r: f"{acc[r].as_py()} accepted of {n[r].as_py()} draft tokens", np.arange(table.num_rows))
    _check_logprobs(file, table, "verifier_logprobs", out)
    _check_list_length(file, table, "verifier_logprobs", "n_draft_tokens", out)
    _check_times(file, table, ["verify_ms"], out)
