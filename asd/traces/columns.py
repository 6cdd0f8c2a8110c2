"""Columns of a bundle table as numpy arrays, the form the simulator and calibration use.

Reads with pyarrow and converts without pandas: numeric columns without nulls come back
zero-copy in their own dtype, columns with nulls as float64 with NaN (null = not recorded),
and `request_id` as `request_index`, the row of each request in requests.parquet — the
strings are never materialised as Python objects.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from asd.errors import TraceError
from asd.traces import schema as S
from asd.traces.bundle import Bundle, open_bundle, parquet_errors

# What the simulator reads per output row and per draft row (see DESIGN.md, "Simulation").
SIMULATOR_OUTPUT_COLUMNS = S.SIMULATOR_OUTPUT_COLUMNS
SIMULATOR_DRAFT_COLUMNS = S.SIMULATOR_DRAFT_COLUMNS


def to_numpy(col: pa.ChunkedArray | pa.Array, name: str = "column") -> np.ndarray:
    """One numeric/boolean Arrow column as numpy; nulls → NaN (as float64)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    kind = col.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise TraceError(f"{name}: type {kind} is not numeric")
    if col.null_count:
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    return col.to_numpy(zero_copy_only=False)


def request_index(bundle: Bundle | str, ids: pa.ChunkedArray) -> np.ndarray:
    """Row of each id in requests.parquet (-1 where absent).

    Works on each chunk's dictionary (its distinct ids in order of first appearance). When a
    table is stored in request order — as recorders and `synth` write it — each dictionary
    is a run of the requests table and is matched by comparing strings, with no hashing;
    otherwise all dictionaries are looked up in one hash join. `bundle`: an open bundle, a
    path or `builtin` (opened and validated by `open_bundle`)."""
    bundle = open_bundle(bundle)
    known = bundle.read("requests", ["request_id"]).column("request_id").combine_chunks()
    chunks = [c if pa.types.is_dictionary(c.type) else pc.dictionary_encode(c) for c in ids.chunks]
    if not chunks:
        return np.zeros(0, dtype=np.int64)
    # Batches of one Parquet row group share its dictionary: look each distinct one up once.
    dictionaries, which = [], []
    for c in chunks:
        if not (dictionaries and (c.dictionary is dictionaries[-1] or c.dictionary.equals(dictionaries[-1]))):
            dictionaries.append(c.dictionary)
        which.append(len(dictionaries) - 1)
    starts = _runs_of(known, dictionaries)
    if starts is not None:
        offsets = starts
        lookup = None
    else:
        lookup = pc.index_in(pa.concat_arrays(dictionaries), value_set=known)
        lookup = pc.fill_null(lookup, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = np.cumsum([0] + [len(d) for d in dictionaries])
    parts = []
    for c, w in zip(chunks, which):
        codes = offsets[w] + c.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        parts.append(codes if lookup is None else lookup[codes])
    return np.concatenate(parts)


def _runs_of(known: pa.Array, dictionaries: list[pa.Array]) -> list[int] | None:
    """Start of each dictionary as a contiguous run of `known`, or None if one is not.

    A chunk starts where the previous one ended, or one request earlier when a request's
    rows straddle the chunk boundary."""
    starts, end = [], 0
    for d in dictionaries:
        for start in (end, end - 1):
            if 0 <= start and start + len(d) <= len(known) and len(d) > 0:
                if known.slice(start, len(d)).equals(d):
                    break
        else:
            return None
        starts.append(start)
        end = start + len(d)
    return starts


def read_arrays(bundle: Bundle | str, table: str, columns: Iterable[str]) -> dict[str, np.ndarray]:
    """Read `columns` of `table` as numpy arrays; `request_id` is returned as `request_index`.
    `bundle`: an open bundle, a path or `builtin` (opened and validated by `open_bundle`)."""
    if isinstance(columns, str):  # iterated, "quality" asked for columns 'q', 'u', ...
        raise TraceError(f"columns {columns!r}: give a list of column names, e.g. [{columns!r}]")
    bundle = open_bundle(bundle)
    columns = list(columns)
    present = set(bundle.columns(table))  # also checks the table exists
    missing = [c for c in columns if c not in present]
    if missing:
        raise TraceError(f"{bundle.path}/{table}.parquet: no column {missing[0]!r}")
    file = bundle.path / f"{table}.parquet"
    with parquet_errors(file):
        arrow = pq.read_table(file, columns=columns, read_dictionary=["request_id"] if "request_id" in columns else None)
    out = {}
    for name in columns:
        if name == "request_id":
            out["request_index"] = request_index(bundle, arrow.column(name))
        else:
            out[name] = to_numpy(arrow.column(name), f"{file}: column {name!r}")
    return out
