"""Dense views of a trace bundle: per (request, tier) grids that calibration, the simulator
and the live runner all read, built by one function from Parquet files or from in-memory rows.

Conventions: tiers are 0-based, N requests × L tiers; numeric grids are float64 (N, L) with
NaN = not recorded; `outputs` is an (N, L) object grid of str or None. Draft grids hold in
column i the row (draft tier i−1 → verify tier i); column 0 and pairs not recorded are NaN
(rows between non-consecutive tiers are not part of the grid). The text columns (request ids,
tasks, splits, prompts, references, outputs) are read as Python objects on first use and
per-token lists only when asked for (`TraceView.token_lists`), as ragged `TokenLists`: a
numeric run over 10^6 requests never builds millions of strings it does not read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from asd.errors import ConfigError, TraceError
from asd.traces.bundle import MANIFEST, Bundle, check_manifest, conform, new_manifest, open_bundle
from asd.traces.columns import read_arrays, to_numpy
from asd.traces.labels import ACCEPT_THRESHOLD, acceptable

OUTPUT_GRIDS = (
    "quality", "accepted", "n_prompt_tokens", "n_output_tokens", "ttft_ms", "e2e_ms",
    "mean_logprob", "min_logprob", "mean_entropy",
)
DRAFT_GRIDS = {"n_accepted": "draft_n_accepted", "n_draft_tokens": "draft_n_tokens", "verify_ms": "draft_verify_ms"}
# Token list name → (table, column). Draft lists sit at the verify tier, like the draft grids.
TOKEN_LISTS = {
    "token_logprobs": ("outputs", "token_logprobs"),
    "token_entropy": ("outputs", "token_entropy"),
    "verifier_logprobs": ("drafts", "verifier_logprobs"),
}
REQUEST_COLUMNS = ("request_id", "task", "split", "prompt", "reference")


@dataclass(frozen=True)
class TokenLists:
    """Per-(request, tier) lists of floats, ragged: cell (r, k) is
    `values[start[r, k] : start[r, k] + length[r, k]]`; `present` is False where no list was
    recorded (length is then 0). Cells never overlap, so taking rows only indexes `start`."""

    values: np.ndarray  # (M,) float32, shared between a view and its subsets
    start: np.ndarray  # (N, L) int64
    length: np.ndarray  # (N, L) int64
    present: np.ndarray  # (N, L) bool

    def cell(self, request: int, tier: int) -> np.ndarray | None:
        if not self.present[request, tier]:
            return None
        s = self.start[request, tier]
        return self.values[s : s + self.length[request, tier]]

    def take(self, rows: np.ndarray) -> "TokenLists":
        if not self.values.size and not self.present.strides[0]:  # `no_lists`: stays a broadcast
            return no_lists((len(rows),) + self.present.shape[1:])
        return TokenLists(self.values, self.start[rows], self.length[rows], self.present[rows])

    @property
    def any(self) -> bool:
        return bool(self.present.any())


def no_lists(shape) -> TokenLists:
    """No list recorded anywhere, as read-only broadcast zeros: three (N, L) grids of nothing
    would be 65 MB per list name at 10^6 requests × 4 tiers."""
    zero = lambda dtype: np.broadcast_to(np.zeros((), dtype), shape)  # noqa: E731
    return TokenLists(np.zeros(0, np.float32), zero(np.int64), zero(np.int64), zero(bool))


class _Source:
    """Where a view's rows come from: a bundle on disk or Arrow tables in memory. Keeps the
    token lists once read, so a view and its subsets share them."""

    def __init__(self, n_requests: int, n_tiers: int):
        self.n_requests, self.n_tiers = n_requests, n_tiers
        self._lists: dict[str, TokenLists] = {}

    def token_lists(self, name: str) -> TokenLists:
        if name not in self._lists:
            self._lists[name] = self._read_lists(name)
        return self._lists[name]

    def column_all_null(self, table: str, column: str) -> bool:
        """True when `column` is absent from `table` or (cheaply known to be) null throughout."""
        return not self.has(table) or column not in self.columns(table) or self.all_null(table, column)

    def request_objects(self, name: str) -> np.ndarray:
        """A requests column as an (N,) object array, None where null or absent."""
        if self.column_all_null("requests", name):
            return np.full(self.n_requests, None, dtype=object)
        # ids are unique; other columns repeat a few values: one str object per distinct value
        return _objects(self.read("requests", [name]).column(0), shared=name != "request_id")

    def output_texts(self) -> np.ndarray:
        """(N, L) object grid of the outputs' texts, None where absent."""
        texts = np.full((self.n_requests, self.n_tiers), None, dtype=object)
        if not self.column_all_null("outputs", "output"):
            arrays = self.arrays("outputs", ["request_id", "tier"])
            rows, tier = arrays["request_index"], arrays["tier"].astype(np.int64)
            keep = _valid(rows, tier, self.n_tiers)
            texts[rows[keep], tier[keep]] = _objects(self.read("outputs", ["output"]).column(0))[keep]
        return texts

    def _read_lists(self, name: str) -> TokenLists:
        table, column = TOKEN_LISTS[name]
        shape = (self.n_requests, self.n_tiers)
        empty = no_lists(shape)
        if self.column_all_null(table, column):
            return empty
        keys = ["tier"] if table == "outputs" else ["draft_tier", "verify_tier"]
        arrays = self.arrays(table, ["request_id", *keys])
        lists = self.read(table, [column]).column(0)
        rows = arrays["request_index"]
        if table == "outputs":
            tiers = arrays["tier"].astype(np.int64)
            keep = _valid(rows, tiers, self.n_tiers)
        else:
            tiers = arrays["verify_tier"].astype(np.int64)
            keep = _valid(rows, tiers, self.n_tiers) & (tiers >= 1) & (arrays["draft_tier"].astype(np.int64) == tiers - 1)
        lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
        present = ~to_numpy(lists.is_null()).astype(bool)
        lengths = to_numpy(pc.fill_null(pc.list_value_length(lists), 0)).astype(np.int64)
        values = to_numpy(pc.list_flatten(lists)).astype(np.float32, copy=False)
        starts = np.cumsum(lengths) - lengths
        out = TokenLists(values, *(np.array(a) for a in (empty.start, empty.length, empty.present)))
        sel = keep & present
        out.start[rows[sel], tiers[sel]] = starts[sel]
        out.length[rows[sel], tiers[sel]] = lengths[sel]
        out.present[rows[sel], tiers[sel]] = True
        return out


class _BundleSource(_Source):
    def __init__(self, bundle: Bundle, n_requests: int):
        super().__init__(n_requests, bundle.n_tiers)
        self.bundle = bundle

    def has(self, table):
        return self.bundle.has(table)

    def columns(self, table):
        return self.bundle.columns(table)

    def read(self, table, columns):
        return self.bundle.read(table, columns)

    def arrays(self, table, columns):
        return read_arrays(self.bundle, table, columns)

    def all_null(self, table, column) -> bool:
        """From the Parquet statistics, without reading the column (False when unsure)."""
        file = self.bundle.path / f"{table}.parquet"
        try:
            meta = pq.ParquetFile(file).metadata
            index = meta.schema.to_arrow_schema().get_field_index(column)
            nulls = 0
            for g in range(meta.num_row_groups):
                group = meta.row_group(g)
                # A list column is stored as its leaf (`column.list.element`): match by path.
                leaf = next(j for j in range(group.num_columns) if group.column(j).path_in_schema.split(".")[0] == column)
                stats = group.column(leaf).statistics
                if stats is None or not stats.has_null_count or stats.has_min_max:
                    return False
                nulls += stats.null_count
            return index >= 0 and nulls >= meta.num_rows
        except (OSError, pa.ArrowException, StopIteration):
            return False


class _MemorySource(_Source):
    def __init__(self, tables: dict[str, pa.Table], n_tiers: int):
        super().__init__(tables["requests"].num_rows, n_tiers)
        self.tables = tables

    def has(self, table):
        return table in self.tables

    def columns(self, table):
        return self.tables[table].column_names

    def read(self, table, columns):
        return self.tables[table].select(list(columns))

    def all_null(self, table, column) -> bool:
        return self.tables[table].column(column).null_count == self.tables[table].num_rows

    def arrays(self, table, columns):
        t = self.tables[table]
        out = {}
        for name in columns:
            if name == "request_id":
                index = pc.index_in(t.column(name), value_set=self.tables["requests"].column("request_id"))
                out["request_index"] = to_numpy(pc.fill_null(index, -1)).astype(np.int64)
            else:
                out[name] = to_numpy(t.column(name), f"{table}: column {name!r}")
        return out


def _valid(rows: np.ndarray, tiers: np.ndarray, n_tiers: int) -> np.ndarray:
    # Rows naming an unknown request or tier are validate's business; a view skips them.
    return (rows >= 0) & (tiers >= 0) & (tiers < n_tiers)


@dataclass(frozen=True)
class TraceView:
    """A bundle as dense (N, L) grids; see the module docstring for the conventions."""

    path: str | None
    tier_names: list[str]
    params_b: np.ndarray  # (L,) float64, NaN unknown
    tensor_parallel: np.ndarray  # (L,) int64, 1 when unknown
    n_requests: int
    n_tiers: int
    # request_ids, tasks, split, prompts, references (N,) and outputs (N, L): object arrays
    # (None where absent), properties below read from the source on first use
    has_output: np.ndarray  # (N, L) bool: an outputs row exists
    quality: np.ndarray
    accepted: np.ndarray
    acceptable: np.ndarray  # 1/0, NaN unlabelled (`acceptable` rule)
    n_prompt_tokens: np.ndarray
    n_output_tokens: np.ndarray
    ttft_ms: np.ndarray
    e2e_ms: np.ndarray
    mean_logprob: np.ndarray
    min_logprob: np.ndarray
    mean_entropy: np.ndarray
    draft_n_accepted: np.ndarray  # column i: draft tier i−1 verified by tier i
    draft_n_tokens: np.ndarray
    draft_verify_ms: np.ndarray
    has_drafts: bool
    max_tokens: np.ndarray  # (L,) float64, NaN unknown
    manifest: dict
    content_hash: str
    _source: _Source = field(repr=False, compare=False)
    _rows: np.ndarray = field(repr=False, compare=False)  # each request's row in the source
    _objects: dict = field(default_factory=dict, repr=False, compare=False)  # text columns read so far

    def _text_column(self, name: str) -> np.ndarray:
        found = self._objects.get(name)
        if found is None:
            whole = self._source.output_texts() if name == "outputs" else self._source.request_objects(name)
            found = self._objects[name] = whole[self._rows]
        return found

    request_ids = property(lambda self: self._text_column("request_id"), doc="(N,) object")
    tasks = property(lambda self: self._text_column("task"), doc="(N,) object, None where absent")
    split = property(lambda self: self._text_column("split"), doc="(N,) object, None where absent")
    prompts = property(lambda self: self._text_column("prompt"), doc="(N,) object, None where absent")
    references = property(lambda self: self._text_column("reference"), doc="(N,) object, None where absent")
    outputs = property(lambda self: self._text_column("outputs"), doc="(N, L) object: str or None")

    @property
    def has_split(self) -> bool:
        """Does any request carry a split label?"""
        if "split" not in self._objects and self._source.column_all_null("requests", "split"):
            return False
        return any(s is not None for s in self.split)

    @property
    def has_logprobs(self) -> bool:
        return bool(np.isfinite(self.mean_logprob).any())

    @property
    def has_entropy(self) -> bool:
        return bool(np.isfinite(self.mean_entropy).any())

    @property
    def has_text(self) -> bool:
        if "outputs" not in self._objects and self._source.column_all_null("outputs", "output"):
            return False
        return bool(pd.notna(self.outputs).any())

    def token_lists(self, name: str) -> TokenLists:
        """`token_logprobs`, `token_entropy` (outputs) or `verifier_logprobs` (drafts, at the
        verify tier), read from the source on first use."""
        if name not in TOKEN_LISTS:
            raise ConfigError(f"unknown token list {name!r}; lists are {', '.join(TOKEN_LISTS)}")
        return self._source.token_lists(name).take(self._rows)

    def subset(self, rows) -> "TraceView":
        """The view of some requests: a boolean mask of length N or integer indices."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (self.n_requests,):
                raise ConfigError(f"subset mask has shape {rows.shape}, the view has {self.n_requests} requests")
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64, copy=False).reshape(-1)
        if rows.size and (rows.min() < -self.n_requests or rows.max() >= self.n_requests):
            raise ConfigError(f"subset index out of range for a view of {self.n_requests} requests")
        per_request = {
            f.name: getattr(self, f.name)[rows]
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), np.ndarray) and f.name not in ("params_b", "tensor_parallel", "max_tokens")
        }
        texts = {name: column[rows] for name, column in self._objects.items()}
        return dataclasses.replace(self, n_requests=int(rows.size), _objects=texts, **per_request)


def load_view(bundle: Bundle | str | os.PathLike) -> TraceView:
    """The dense view of a bundle (a `Bundle`, a directory, or "builtin")."""
    if not isinstance(bundle, Bundle):
        bundle = open_bundle(bundle)
    n = bundle.read("requests", ["request_id"]).num_rows
    view = _build(_BundleSource(bundle, n), bundle.manifest, str(bundle.path), bundle_hash(bundle.path))
    # Arrow's allocator keeps the Parquet read's freed buffers (0.4 GB at 10^6 × 4): return them
    pa.default_memory_pool().release_unused()
    return view


def _check_tier_list(tiers) -> None:
    # a plain string is a sequence too: tiers="t0" made a ladder of tiers 't' and '0'
    if isinstance(tiers, (str, bytes)) or not isinstance(tiers, (Sequence, np.ndarray)):
        raise ConfigError(f"tiers {tiers!r}: give a list of tier names (or manifest tier dicts), in ladder order")


def view_from_records(
    tiers: Sequence[str | Mapping] | None,
    requests: Sequence[Mapping],
    outputs: Sequence[Mapping],
    drafts: Sequence[Mapping] | None = None,
    *,
    manifest: dict | None = None,
    sampling: Mapping | None = None,
) -> TraceView:
    """A view of rows held in memory (the live runner's answers so far), built by the same
    code as `load_view`. Rows use the bundle schema's column names (`asd.traces.schema`):
    requests need `request_id`; outputs `request_id`, `tier` and whatever was measured;
    drafts `request_id`, `draft_tier`, `verify_tier`, ... . `tiers` are names or manifest
    tier dicts (or None with `manifest`, e.g. a recorded bundle's); `sampling`
    ({tier name: {"max_tokens": ...}}) feeds "hit the token limit"."""
    if manifest is None:
        _check_tier_list(tiers)
        entries = [{"name": t} if isinstance(t, str) else dict(t) for t in tiers]
        manifest = new_manifest(entries, sampling=dict(sampling or {}))
    check_manifest(manifest, "in-memory view")
    tables = {
        "requests": conform("requests", _columns(requests, "request_id"), "requests (in memory)"),
        "outputs": conform("outputs", _columns(outputs, "request_id", "tier"), "outputs (in memory)"),
    }
    if drafts:
        tables["drafts"] = conform("drafts", _columns(drafts, "request_id", "draft_tier", "verify_tier"), "drafts (in memory)")
    source = _MemorySource(tables, len(manifest["tiers"]))
    return _build(source, manifest, None, _tables_hash(manifest, tables))


def view_from_outputs(
    prompt: str | None,
    outputs: Sequence[Mapping | None],
    *,
    tiers: Sequence[str | Mapping],
    drafts: Sequence[Mapping | None] | None = None,
    request_id: str = "request",
    task: str | None = None,
    reference: str | None = None,
    sampling: Mapping | None = None,
) -> TraceView:
    """A one-request view: `outputs[k]` is tier k's answer as a dict of outputs columns
    (`output`, `n_prompt_tokens`, `n_output_tokens`, `token_logprobs`, `token_entropy`,
    `ttft_ms`, `e2e_ms`), or None where tier k has not run; `drafts[k]` (k ≥ 1) is tier k's
    verification of tier k−1's answer (`n_draft_tokens`, `n_accepted`, `verifier_logprobs`,
    `verify_ms`) or None."""
    _check_tier_list(tiers)
    if len(outputs) > len(tiers):
        raise ConfigError(f"{len(outputs)} tier outputs for a ladder of {len(tiers)} tiers")
    rows = [{**o, "request_id": request_id, "tier": k} for k, o in enumerate(outputs) if o is not None]
    draft_rows = [
        {**d, "request_id": request_id, "draft_tier": k - 1, "verify_tier": k}
        for k, d in enumerate(drafts or ())
        if d is not None and k >= 1
    ]
    request = {"request_id": request_id, "prompt": prompt, "task": task, "reference": reference}
    return view_from_records(tiers, [request], rows, draft_rows or None, sampling=sampling)


def _columns(rows: Sequence[Mapping], *required: str) -> dict[str, list]:
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names)
    for name in required:
        if name not in names:
            names.append(name)
    return {name: [row.get(name) for row in rows] for name in names}


def _build(source: _Source, manifest: dict, path: str | None, content_hash: str) -> TraceView:
    tiers = manifest["tiers"]
    n, n_tiers = source.n_requests, len(tiers)
    shape = (n, n_tiers)

    out_columns = set(source.columns("outputs"))
    arrays = source.arrays("outputs", ["request_id", "tier", *[c for c in OUTPUT_GRIDS if c in out_columns]])
    rows, tier = arrays.pop("request_index"), arrays.pop("tier").astype(np.int64)
    keep = _valid(rows, tier, n_tiers)
    rows, tier = rows[keep], tier[keep]

    def grid(values, fill=np.nan, dtype=np.float64):
        out = np.full(shape, fill, dtype=dtype)
        out[rows, tier] = values
        return out

    grids = {name: grid(arrays[name][keep]) if name in arrays else np.full(shape, np.nan) for name in OUTPUT_GRIDS}
    has_output = grid(True, fill=False, dtype=bool)

    drafts = {target: np.full(shape, np.nan) for target in DRAFT_GRIDS.values()}
    has_drafts = False
    if source.has("drafts"):
        d_columns = set(source.columns("drafts"))
        d = source.arrays("drafts", ["request_id", "draft_tier", "verify_tier", *[c for c in DRAFT_GRIDS if c in d_columns]])
        d_rows, verify = d["request_index"], d["verify_tier"].astype(np.int64)
        pair = _valid(d_rows, verify, n_tiers) & (verify >= 1) & (d["draft_tier"].astype(np.int64) == verify - 1)
        has_drafts = bool(pair.any())
        for name, target in DRAFT_GRIDS.items():
            if name in d:
                drafts[target][d_rows[pair], verify[pair]] = d[name][pair]

    return TraceView(
        path=path,
        tier_names=[t["name"] for t in tiers],
        params_b=np.array([_number(t.get("params_b")) for t in tiers], dtype=np.float64),
        tensor_parallel=np.array([int(t.get("tensor_parallel") or 1) for t in tiers], dtype=np.int64),
        n_requests=int(n),
        n_tiers=n_tiers,
        has_output=has_output,
        acceptable=acceptable(grids["quality"], grids["accepted"], ACCEPT_THRESHOLD),
        **grids,
        **drafts,
        has_drafts=has_drafts,
        max_tokens=_max_tokens(manifest),
        manifest=manifest,
        content_hash=content_hash,
        _source=source,
        _rows=np.arange(n, dtype=np.int64),
    )


def _objects(column: pa.ChunkedArray, shared: bool = False) -> np.ndarray:
    """A string column as an object array (None where null). shared: equal values are one
    Python object (through the column's dictionary), for columns that repeat a few values."""
    if shared and len(column):
        encoded = pc.dictionary_encode(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
        values = np.append(encoded.dictionary.to_numpy(zero_copy_only=False).astype(object), None)
        codes = pc.fill_null(encoded.indices, len(encoded.dictionary)).to_numpy(zero_copy_only=False)
        return values[codes]
    out = column.to_numpy(zero_copy_only=False) if len(column) else np.zeros(0, dtype=object)
    return out.astype(object, copy=False)


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan


def _max_tokens(manifest: dict) -> np.ndarray:
    """Each tier's generation limit from the manifest's `sampling` (per tier name, or one
    dict for all tiers); NaN where not stated."""
    sampling = manifest.get("sampling") or {}
    out = []
    for tier in manifest["tiers"]:
        own = sampling.get(tier["name"]) if isinstance(sampling, dict) else None
        source = own if isinstance(own, dict) else sampling
        out.append(_number(source.get("max_tokens")) if isinstance(source, dict) else np.nan)
    return np.array(out, dtype=np.float64)


def bundle_hash(path: str | os.PathLike) -> str:
    """SHA-256 over a bundle's manifest and Parquet files (names and bytes, in name order):
    the provenance a policy records to refuse being applied to another bundle."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.name == MANIFEST or p.suffix == ".parquet"))
    for file in files:
        digest.update(file.name.encode() + b"\0")
        try:
            with open(file, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise TraceError(f"{file}: unreadable ({exc})") from None
    return digest.hexdigest()


def _tables_hash(manifest: dict, tables: dict[str, pa.Table]) -> str:
    stable = {k: v for k, v in manifest.items() if k != "created_at"}
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode())
    for name in sorted(tables):
        sink = io.BytesIO()
        pq.write_table(tables[name], sink, compression="none")
        digest.update(name.encode() + b"\0" + sink.getvalue())
    return digest.hexdigest()


__all__ = [
    "ACCEPT_THRESHOLD", "TOKEN_LISTS", "TokenLists", "TraceView", "acceptable", "bundle_hash",
    "load_view", "view_from_outputs", "view_from_records",
]
