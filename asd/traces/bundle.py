"""Read and write trace bundles (see `asd.traces.schema`).

`open_bundle(path_or_bundle)` is the one way to open a bundle for reading: it accepts a
directory, the name `builtin` or an already opened `Bundle`, checks the manifest, and
validates the tables (`asd.traces.validate`) before anything is read, so no reader can
forget. A bundle asd itself wrote carries a validation stamp in its manifest (the sha256 of
each table file); while the files still match it, the full check is skipped.

Writes are atomic: the bundle is built in a temporary directory beside the target,
validated, stamped and renamed into place, so a crash never leaves a half-written bundle
and asd never puts an invalid one in place. Reads load only the columns asked for. OS
errors (permission, a directory where a file belongs, disk full) become a `TraceError`
naming the path.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import math
import os
import stat
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
from asd.fsutil import atomic_dir, atomic_write, finite_json
from asd.traces import schema as S
from asd.traces.jsonl import loads_unique

BUILTIN = "builtin"
MANIFEST = "manifest.json"
# Manifest key of the validation stamp (`asd.traces.validate.stamp_of`); not part of `Bundle.manifest`.
STAMP_KEY = "validation"
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


def bundle_target(path: str | os.PathLike, overwrite: bool) -> Path:
    """Where a command may write (or, with overwrite, replace) a bundle, checked before any
    work: `output_path`'s rule, a directory name (not '', '.' or '..': replacing the current
    directory would take the user's files with it), nothing there without overwrite, and with
    it only an earlier bundle or an empty directory replaced — never another file or a
    directory of other files, which the swap would delete."""
    target = output_path(path)
    if str(path).strip() == "" or target.name in ("", ".", ".."):
        raise TraceError(f"{str(path)!r}: name a directory to write the bundle to (e.g. -o runs/bundle)")
    if not os.path.lexists(target):
        return target
    # what --overwrite would refuse is said first: hinting at it for a plain file sent the user
    # round in a circle
    if target.is_symlink() or not target.is_dir():
        raise TraceError(f"{target}: exists and is not a directory; --overwrite replaces only a trace bundle, so "
                         "write the bundle elsewhere")
    if not (target / MANIFEST).is_file() and any(target.iterdir()):
        raise TraceError(f"{target}: exists and is not a trace bundle (no {MANIFEST}); --overwrite replaces only "
                         "a bundle: move or remove this directory yourself")
    if not overwrite:
        raise TraceError(f"{target}: already exists (pass --overwrite to replace it)")
    own = {MANIFEST, *(f"{table}.parquet" for table in S.TABLES)}
    others = sorted(entry.name for entry in target.iterdir() if entry.name not in own)
    if others:  # the swap deletes the whole directory: an import's own source file went with it
        more = f" and {len(others) - 1} more" if len(others) > 1 else ""
        raise TraceError(f"{target}: holds {others[0]!r}{more} besides the bundle's own files; --overwrite would "
                         "delete them with the bundle: move them out first, or write the bundle elsewhere")
    return target


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (Arrow's span several), for an `error:` line."""
    return " ".join(str(exc).split())


def file_problem(path: str | os.PathLike, kind: str = "file") -> str | None:
    """Why `path` is not a regular file asd can read (None when it is): missing, a directory
    or other non-file in its place, a dangling or looping symbolic link, permission denied.
    `kind="directory"` asks the same of a directory."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        if exc.errno == errno.ENOENT:
            return "a dangling symbolic link" if os.path.islink(path) else "missing"
        if exc.errno == errno.ENOTDIR:
            return "missing (a file stands where its directory should be)"
        return os.strerror(exc.errno) if exc.errno else str(exc)
    if kind == "directory":
        if not stat.S_ISDIR(info.st_mode):
            return "a file, not a directory"
        try:
            os.listdir(path)
        except OSError as exc:
            return f"cannot list it ({exc.strerror or exc})"
        return None
    if stat.S_ISDIR(info.st_mode):
        return "a directory where a file is expected"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    return None


@contextmanager
def write_errors(target: str | os.PathLike) -> Iterator[None]:
    """Writing a bundle or one of its files inside: an OS failure (permission, disk full, a
    file where a directory belongs) is a TraceError naming the path."""
    try:
        yield
    except OSError as exc:  # named by the target: exc.filename may be the source of a copy
        raise TraceError(f"{target}: cannot write ({exc.strerror or one_line(exc)})") from None
    except pa.ArrowException as exc:
        raise TraceError(f"{target}: cannot write ({one_line(exc)})") from None


@contextmanager
def parquet_errors(file: str | os.PathLike) -> Iterator[None]:
    """Reading a bundle's Parquet file inside: any failure is a TraceError naming the file."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise TraceError(f"{file}: unreadable Parquet ({one_line(exc)})") from None


def read_schema(file: str | os.PathLike) -> pa.Schema:
    """A Parquet file's schema; an unreadable file is a TraceError naming it."""
    with parquet_errors(file):
        return pq.read_schema(file)


class Bundle:
    """An opened trace bundle: its manifest, and column-selective table reads."""

    def __init__(self, path: Path, manifest: dict, validated: bool = False, stamp: dict | None = None):
        self.path = path
        self.manifest = manifest
        self.stamp = stamp  # the manifest's validation stamp, if asd wrote one
        # True once `asd.traces.validate` passed it (or its stamp matched): readers may trust it.
        self.validated = validated

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
        """Whether the bundle has `table` (anything at its file name counts: validation
        refuses a directory or other non-file there rather than treating it as absent)."""
        return os.path.lexists(self.path / f"{table}.parquet")

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
        problem = file_problem(file)
        if problem == "missing":
            raise TraceError(f"{self.path}: bundle has no {table} table ({file.name} missing)")
        if problem:
            raise TraceError(f"{file}: {problem}")
        return file

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, tiers={self.tier_names})"


def open_bundle(bundle: "Bundle | str | os.PathLike", *, validate: bool = True) -> Bundle:
    """Open a bundle for reading: a directory, `builtin`, or a `Bundle` already opened.

    The manifest is always checked. With `validate` (the default) the tables are validated
    too (`asd.traces.validate`): a bundle carrying asd's validation stamp whose files still
    match it is trusted after hashing them; any other bundle gets the full check. The first
    problem is raised as a TraceError naming the bundle and file. `validate=False` is for
    tools that must look at a broken bundle (`asd traces validate` itself)."""
    if isinstance(bundle, Bundle):
        opened, name = bundle, str(bundle.path)
    else:
        name = str(bundle)
        opened = _open_manifest(bundle)
    if validate and not opened.validated:
        from asd.traces.validate import require_valid  # validate imports this module

        require_valid(opened, name)
    return opened


def _open_manifest(path: str | os.PathLike) -> Bundle:
    """The bundle directory and its checked manifest; tables are not looked at beyond
    their presence."""
    path = resolve_bundle_path(path)
    problem = file_problem(path, kind="directory")
    if problem == "missing":
        raise TraceError(f"{path}: no such bundle")
    if problem == "a file, not a directory":
        raise TraceError(f"{path}: a bundle is a directory, this is a file")
    if problem:
        raise TraceError(f"{path}: not a readable bundle directory ({problem})")
    manifest_file = path / MANIFEST
    problem = file_problem(manifest_file)
    if problem == "missing":
        raise TraceError(f"{path}: not a trace bundle ({MANIFEST} missing)")
    if problem:
        raise TraceError(f"{manifest_file}: {problem}")
    manifest = read_manifest(manifest_file)
    check_manifest(manifest, manifest_file)
    stamp = manifest.pop(STAMP_KEY, None)
    for table in S.REQUIRED_TABLES:
        problem = file_problem(path / f"{table}.parquet")
        if problem == "missing":
            raise TraceError(f"{path}: bundle has no {table} table ({table}.parquet missing)")
    return Bundle(path, manifest, stamp=stamp if isinstance(stamp, dict) else None)


def read_manifest(manifest_file: Path) -> dict:
    """Parse manifest.json; invalid JSON, a repeated key or an unreadable file is a TraceError."""
    try:
        text = manifest_file.read_bytes().decode("utf-8")
        return loads_unique(text)
    except OSError as exc:
        raise TraceError(f"{manifest_file}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{manifest_file}: invalid JSON (not UTF-8: {exc.reason} at byte {exc.start})") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise TraceError(f"{manifest_file}: invalid JSON ({one_line(exc)})") from None


def write_manifest(path: Path, manifest: dict) -> None:
    """Replace `path/manifest.json` atomically (a temporary file renamed over it)."""
    target = path / MANIFEST
    with write_errors(target):
        atomic_write(target, (json.dumps(finite_json(manifest), indent=2, sort_keys=False) + "\n").encode())


_TEXT_TIER_KEYS = ("model_id", "dtype", "quantization", "hardware", "backend", "backend_version")


def _is_number(value) -> bool:
    """A JSON number meant as a quantity: int or float, never a bool (True is an int in Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ManifestError(TraceError):
    """A manifest that breaks its rules: the message is the first problem, `problems` lists them
    all (`manifest_problems`), and `manifest` is the manifest where its ladder is still readable
    (a validator checks the tables against it), else None."""

    def __init__(self, problems: list[str], manifest: dict | None):
        super().__init__(problems[0])
        self.problems = problems
        self.manifest = manifest


def check_manifest(manifest: object, where: object = MANIFEST) -> None:
    """The manifest's own rules: a JSON object with `schema_version` equal to the one this
    asd reads (a positive integer, not a bool), a non-empty list of tiers with unique
    non-empty names, and every tier carrying every key of `schema.TIER_KEYS` (null when
    unknown): `params_b` a finite number > 0, `tensor_parallel` an integer >= 1, the
    descriptive keys strings. `where` (the manifest's path) starts every message. Raises
    ManifestError (a TraceError with the first problem as its message, carrying them all)."""
    problems, readable = manifest_problems(manifest, where)
    if problems:
        raise ManifestError(problems, manifest if readable else None)


def manifest_problems(manifest: object, where: object = MANIFEST) -> tuple[list[str], bool]:
    """Every problem `check_manifest` would raise on, and whether the ladder is still readable
    (a list of uniquely named tiers of the supported version), so a validator can go on to
    check the tables against it."""
    if not isinstance(manifest, dict):
        return [f"{where}: manifest must be a JSON object"], False
    if "schema_version" not in manifest:
        return [f"{where}: schema_version missing"], False
    version = manifest["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return [f"{where}: schema_version must be a positive integer ({S.SCHEMA_VERSION}), got {version!r}"], False
    if version > S.SCHEMA_VERSION:
        return [f"{where}: schema version {version} is newer than this asd reads ({S.SCHEMA_VERSION}); upgrade asd"], False
    if version != S.SCHEMA_VERSION:
        return [f"{where}: schema version {version} is not supported (this asd reads {S.SCHEMA_VERSION})"], False
    tiers = manifest.get("tiers")
    if not isinstance(tiers, list) or not tiers:
        return [f"{where}: tiers missing or empty"], False
    problems, names = [], []
    for i, tier in enumerate(tiers):
        if not isinstance(tier, dict) or not isinstance(tier.get("name"), str) or not tier["name"].strip():
            return problems + [f"{where}: tiers[{i}] has no name"], False
        label = f"{where}: tiers[{i}] ({tier['name']})"
        names.append(tier["name"])
        missing = [key for key in S.TIER_KEYS if key not in tier]
        if missing:
            problems.append(f"{label}: missing {', '.join(missing)} (every tier carries all of {', '.join(S.TIER_KEYS)}; "
                            "null when unknown)")
        params = tier.get("params_b")
        if params is not None and not (_is_number(params) and math.isfinite(params) and params > 0):
            problems.append(f"{label}: params_b must be a positive number or null, got {params!r}")
        tp = tier.get("tensor_parallel")
        if tp is not None and not (isinstance(tp, int) and not isinstance(tp, bool) and tp >= 1):
            problems.append(f"{label}: tensor_parallel must be an integer >= 1 or null, got {tp!r}")
        for key in _TEXT_TIER_KEYS:
            if tier.get(key) is not None and not isinstance(tier[key], str):
                problems.append(f"{label}: {key} must be a string or null, got {tier[key]!r}")
    if len(set(names)) != len(names):
        return problems + [f"{where}: duplicate tier names {names}"], False
    if "synthetic" in manifest and not isinstance(manifest["synthetic"], bool):
        problems.append(f"{where}: synthetic must be true or false, got {manifest['synthetic']!r}")
    estimated = manifest.get("estimated_columns", [])
    if not isinstance(estimated, list) or not all(isinstance(c, str) for c in estimated):
        problems.append(f"{where}: estimated_columns must be a list of column names, got {estimated!r}")
    return problems, True


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
    """Write one bundle table with the layout the fast column reader expects (zstd), with a
    CRC per page so that validation catches a damaged sector even where the damaged bytes
    still decode (stored text, raw zstd blocks)."""
    pq.write_table(
        table,
        file,
        compression="zstd",
        row_group_size=ROW_GROUP_SIZE,
        use_dictionary=[c for c in DICTIONARY_COLUMNS if c in table.column_names],
        write_page_checksum=True,
    )


def write_bundle(
    path: str | os.PathLike,
    manifest: dict,
    requests,
    outputs,
    drafts=None,
    *,
    overwrite: bool = False,
    validate: bool = True,
) -> Bundle:
    """Write a bundle atomically. Tables are conformed to the v1 schema first. With
    `validate` (the default) the written copy is validated and stamped before it is renamed
    into place; an invalid one is refused (TraceError) and nothing is left behind."""
    path = bundle_target(path, overwrite)  # never the shipped built-in trace, nor a directory of other files
    # strict JSON (a NaN figure is null), and the manifest the stamp's digest is taken of
    manifest = finite_json({k: v for k, v in manifest.items() if k != STAMP_KEY})
    check_manifest(manifest, f"{path}/{MANIFEST}")
    tables = {"requests": conform("requests", requests), "outputs": conform("outputs", outputs)}
    if drafts is not None:
        tables["drafts"] = conform("drafts", drafts)
    with staging_dir(path, validate=validate) as tmp:
        with write_errors(path):
            for name, table in tables.items():
                write_parquet(table, tmp / f"{name}.parquet")
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False) + "\n")
    if not validate:
        return Bundle(path, manifest)
    stamp = read_manifest(path / MANIFEST).get(STAMP_KEY)
    return Bundle(path, manifest, validated=True, stamp=stamp)


@contextmanager
def staging_dir(target: Path, *, validate: bool = True) -> Iterator[Path]:
    """A temporary directory beside `target` to build a bundle in (`asd.fsutil.atomic_dir`).
    When the block ends the bundle is validated and stamped (with `validate`), then renamed
    over `target`; on any failure the directory is removed and `target` is untouched."""
    target = Path(target)
    with write_errors(target), atomic_dir(target) as tmp:
        yield tmp
        if validate:
            from asd.traces.validate import validate_bundle  # validate imports this module

            problems = validate_bundle(tmp, max_problems=1, stamp=True)
            if problems:
                raise TraceError(f"{target}: not written, the result fails validation: {problems[0]}")
