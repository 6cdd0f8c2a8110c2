"""Read and write trace bundles (see `asd.traces.schema`).

Writes are atomic: the bundle is built in a temporary directory beside the target and
renamed into place, so a crash never leaves a half-written bundle. Reads load only the
columns asked for.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from asd import __version__
from asd.errors import TraceError
from asd.fsutil import atomic_dir
from asd.traces import schema as S

BUILTIN = "builtin"
MANIFEST = "manifest.json"
_SUMMARIES = (("token_logprobs", "mean_logprob", "min_logprob"), ("token_entropy", "mean_entropy", None))


def builtin_bundle_path() -> Path:
    """Where the built-in trace (recorded by `asd record` on CPU models) is installed."""
    return Path(str(resources.files("asd") / "traces" / "builtin" / "bundle"))


def resolve_bundle_path(path: str | os.PathLike) -> Path:
    """`builtin` names the trace shipped in the package; anything else is a directory."""
    if str(path) == BUILTIN:
        found = builtin_bundle_path()
        if not (found / MANIFEST).is_file():
            raise TraceError(f"the built-in trace is not installed at {found}")
        return found
    return Path(path)


def is_builtin(path: str | os.PathLike) -> bool:
    """True for `builtin`, and for the built-in trace's directory in an installed copy.

    In a source checkout the directory is an ordinary path, so maintainers can re-record it
    with `asd record -o asd/traces/builtin/bundle` (see asd/traces/builtin/README.md)."""
    if str(path) == BUILTIN:
        return True
    installed = builtin_bundle_path()
    if not {"site-packages", "dist-packages"} & set(installed.parts):
        return False
    try:
        return Path(path).resolve() == installed.resolve()
    except OSError:
        return False


def output_path(path: str | os.PathLike) -> Path:
    """Where a command may write a bundle: anywhere but the shipped built-in trace, which is
    read-only (in an installed copy it lives in site-packages)."""
    if is_builtin(path):
        raise TraceError(f"{path}: the built-in trace is read-only; write to another directory with -o OUT")
    return Path(path)


@contextmanager
def parquet_errors(file: str | os.PathLike) -> Iterator[None]:
    """Reading a bundle's Parquet file inside: any failure is a TraceError naming the file."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise TraceError(f"{file}: unreadable Parquet ({exc})") from None


def read_schema(file: str | os.PathLike) -> pa.Schema:
    """A Parquet file's schema; an unreadable file is a TraceError naming it."""
    with parquet_errors(file):
        return pq.read_schema(file)


def check_readable(file: str | os.PathLike) -> None:
    """Decode every row group of a Parquet file (one at a time, so memory stays bounded):
    catches a damaged file before it is copied anywhere."""
    with parquet_errors(file):
        parquet = pq.ParquetFile(file)
        for i in range(parquet.num_row_groups):
            parquet.read_row_group(i)


class Bundle:
    """An opened trace bundle: its manifest, and column-selective table reads."""

    def __init__(self, path: Path, manifest: dict):
        self.path = path
        self.manifest = manifest

    @property
    def tiers(self) -> list[dict]:
        return self.manifest["tiers"]

    @property
    def tier_names(self) -> list[str]:
        return [t["name"] for t in self.tiers]

    @property
    def n_tiers(self) -> int:
        return len(self.tiers)

    def has(self, table: str) -> bool:
        return (self.path / f"{table}.parquet").is_file()

    def columns(self, table: str) -> list[str]:
        return read_schema(self._file(table)).names

    def read(self, table: str, columns: Iterable[str] | None = None) -> pa.Table:
        """Read `table` (requests / outputs / drafts), only `columns` when given."""
        file = self._file(table)
        if columns is not None:
            columns = list(columns)
            present = set(read_schema(file).names)
            missing = [c for c in columns if c not in present]
            if missing:
                raise TraceError(f"{file}: no column {missing[0]!r} (has {sorted(present)})")
        with parquet_errors(file):
            return pq.read_table(file, columns=columns)

    def to_pandas(self, table: str, columns: Iterable[str] | None = None):
        return self.read(table, columns).to_pandas()

    def _file(self, table: str) -> Path:
        if table not in S.TABLES:
            raise TraceError(f"unknown table {table!r}; tables are {list(S.TABLES)}")
        file = self.path / f"{table}.parquet"
        if not file.is_file():
            raise TraceError(f"{self.path}: bundle has no {table} table ({file.name} missing)")
        return file

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, tiers={self.tier_names})"


def open_bundle(path: str | os.PathLike) -> Bundle:
    """Open a bundle directory (or `builtin`), checking its manifest and schema version."""
    path = resolve_bundle_path(path)
    if not path.exists():
        raise TraceError(f"{path}: no such bundle")
    if not path.is_dir():
        raise TraceError(f"{path}: a bundle is a directory, this is a file")
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise TraceError(f"{path}: not a trace bundle ({MANIFEST} missing)")
    try:
        manifest = json.loads(manifest_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TraceError(f"{manifest_file}: invalid JSON ({exc})") from None
    check_manifest(manifest, manifest_file)
    for table in S.REQUIRED_TABLES:
        if not (path / f"{table}.parquet").is_file():
            raise TraceError(f"{path}: bundle has no {table} table ({table}.parquet missing)")
    return Bundle(path, manifest)


def check_manifest(manifest: object, where: object = MANIFEST) -> None:
    if not isinstance(manifest, dict):
        raise TraceError(f"{where}: manifest must be a JSON object")
    version = manifest.get("schema_version")
    if not isinstance(version, int):
        raise TraceError(f"{where}: schema_version missing or not an integer")
    if version > S.SCHEMA_VERSION:
        raise TraceError(
            f"{where}: schema version {version} is newer than this asd reads ({S.SCHEMA_VERSION}); upgrade asd"
        )
    tiers = manifest.get("tiers")
    if not isinstance(tiers, list) or not tiers:
        raise TraceError(f"{where}: tiers missing or empty")
    names = []
    for i, tier in enumerate(tiers):
        if not isinstance(tier, dict) or not isinstance(tier.get("name"), str) or not tier["name"]:
            raise TraceError(f"{where}: tiers[{i}] has no name")
        names.append(tier["name"])
    if len(set(names)) != len(names):
        raise TraceError(f"{where}: duplicate tier names {names}")


def sampling_per_tier(tiers: list[dict], params: dict | None = None) -> dict:
    """The manifest's `sampling`: tier name → that tier's sampling parameters (the one shape,
    DESIGN.md: tiers carry their sampling parameters); `params` shared by every tier, or
    {} (not known)."""
    return {t["name"]: dict(params or {}) for t in tiers}


def new_manifest(tiers: list[dict], **fields) -> dict:
    """A manifest with the bookkeeping keys filled; `fields` (provenance, sampling, ...)
    override. `sampling` is per tier (`sampling_per_tier`), {} per tier when not given."""
    manifest = {
        "schema_version": S.SCHEMA_VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "asd_version": __version__,
        "synthetic": False,
        "tiers": [S.tier_entry(**t) for t in tiers],
        "sampling": sampling_per_tier(tiers),
        "provenance": {},
        "label_rule": None,
        "estimated_columns": [],
    }
    manifest.update(fields)
    return manifest


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a source file, read in 1 MiB blocks (for a manifest's provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def conform(table: str, data, where: str | None = None) -> pa.Table:
    """Cast a DataFrame / dict / Arrow table to the bundle schema of `table`.

    Missing optional columns become null; unknown columns and impossible casts are errors.
    The per-row summaries (mean/min logprob, mean entropy) are derived from the lists when absent.
    """
    schema = S.TABLES[table]
    where = where or table
    if isinstance(data, pa.Table):
        arrow = data
    elif isinstance(data, Mapping):
        arrow = pa.table(dict(data))
    else:  # pandas
        arrow = pa.Table.from_pandas(data, preserve_index=False)
    unknown = [c for c in arrow.column_names if c not in schema.names]
    if unknown:
        raise TraceError(f"{where}: unknown column {unknown[0]!r} (columns are {schema.names})")
    n = arrow.num_rows
    columns = []
    for field in schema:
        if field.name in arrow.column_names:
            col = arrow.column(field.name)
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise TraceError(
                    f"{where}: column {field.name!r} has type {col.type}, expected {field.type} ({exc})"
                ) from None
        else:
            col = pa.nulls(n, field.type)
        if not field.nullable and col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise TraceError(f"{where}: column {field.name!r} is null at row {row}")
        columns.append(col)
    out = pa.Table.from_arrays(columns, schema=schema)
    if table == "outputs":
        out = _fill_summaries(out, given=set(arrow.column_names))
    return out


def _fill_summaries(outputs: pa.Table, given: set[str]) -> pa.Table:
    for list_col, mean_col, min_col in _SUMMARIES:
        lists = outputs.column(list_col)
        if lists.null_count == len(lists):
            continue
        flat = pa.table({"row": pc.list_parent_indices(lists), "v": pc.list_flatten(lists)})
        for target, fn in ((mean_col, "mean"), (min_col, "min")):
            if target is None or target in given:
                continue
            per_row = flat.group_by("row").aggregate([("v", fn)])
            result = np.full(len(lists), np.nan, dtype=np.float32)
            result[per_row.column("row").to_numpy()] = per_row.column(f"v_{fn}").to_numpy()
            mask = np.isnan(result)
            idx = outputs.schema.get_field_index(target)
            outputs = outputs.set_column(
                idx, outputs.schema.field(idx), pa.array(result, type=pa.float32(), mask=mask)
            )
    return outputs


# Row groups of 256 Ki rows keep each group's request_id dictionary under Parquet's 1 MiB
# dictionary-page limit, so ids stay dictionary-encoded on disk and read back as integer codes
# cheaply; columns of few distinct values are dictionary-encoded, the rest (floats, mostly
# unique) are written plain — trying a dictionary on them only slows writes and reads.
ROW_GROUP_SIZE = 256 * 1024
DICTIONARY_COLUMNS = (
    "request_id", "task", "split", "tier", "draft_tier", "verify_tier", "quality", "accepted", "label_source",
)


def write_parquet(table: pa.Table, file: str | os.PathLike) -> None:
    """Write one bundle table with the layout the fast column reader expects (zstd)."""
    pq.write_table(
        table,
        file,
        compression="zstd",
        row_group_size=ROW_GROUP_SIZE,
        use_dictionary=[c for c in DICTIONARY_COLUMNS if c in table.column_names],
    )


def write_bundle(
    path: str | os.PathLike,
    manifest: dict,
    requests,
    outputs,
    drafts=None,
    *,
    overwrite: bool = False,
) -> Bundle:
    """Write a bundle atomically. Tables are conformed to the v1 schema first."""
    path = Path(path)
    check_manifest(manifest, f"{path}/{MANIFEST}")
    if path.exists() and not overwrite:
        raise TraceError(f"{path}: already exists (pass --overwrite, or overwrite=True, to replace it)")
    tables = {"requests": conform("requests", requests), "outputs": conform("outputs", outputs)}
    if drafts is not None:
        tables["drafts"] = conform("drafts", drafts)
    with atomic_dir(path) as tmp:
        for name, table in tables.items():
            write_parquet(table, tmp / f"{name}.parquet")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return Bundle(path, manifest)
