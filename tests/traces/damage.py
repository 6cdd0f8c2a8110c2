"""A corpus of damaged trace bundles: copies of the built-in trace with one damage each.

`DAMAGES` lists them; `make(damage, parent)` writes one. Each damage says which file an error
about it must name (`file`, relative to the bundle; None when the damage is the bundle
directory itself, then the bundle path is enough). The damages are what a disk (zero-byte,
truncated, zeroed or bit-flipped files), a bad exporter (wrong types, unknown or missing
columns, the wrong table under a name, values out of range, duplicate keys, dangling ids) and
a careless user (hand-edited JSON, a directory or a symbolic link where a file belongs, a
stray copy of a table, a file that cannot be read) do to a bundle.

`run_command` and `refusal_problems` judge one CLI run over a damaged bundle the same way in
the in-process test and in the subprocess that runs permission damages without root's
override (tests/traces/test_damaged_bundles.py).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from asd.traces.bundle import builtin_bundle_path

MANIFEST = "manifest.json"
REQ, OUT, DRA = "requests.parquet", "outputs.parquet", "drafts.parquet"


@dataclass(frozen=True)
class Damage:
    name: str
    kind: str  # manifest, file, column, value, key, reference, os
    file: str | None  # what the error must name; None: the bundle directory itself
    apply: Callable[[Path], None] = field(repr=False)
    # Permission damages: root reads through them, so they need a process without
    # CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (see test_damaged_bundles.py).
    needs_permissions: bool = False


def make(damage: Damage, parent: Path) -> Path:
    """A copy of the built-in bundle under `parent`, named after the damage, damaged."""
    path = parent / damage.name
    shutil.copytree(builtin_bundle_path(), path)
    damage.apply(path)
    return path


# --- how damages are applied ----------------------------------------------------------------


def _manifest(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        manifest = json.loads((path / MANIFEST).read_text())
        edit(manifest)
        (path / MANIFEST).write_text(json.dumps(manifest, indent=2))  # NaN/Infinity written as JSON allows

    return apply


def _manifest_bytes(edit: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        (path / MANIFEST).write_bytes(edit((path / MANIFEST).read_bytes()))

    return apply


def _tier(i: int, **fields) -> Callable[[dict], None]:
    return lambda m: m["tiers"][i].update(fields)


def _table(file: str, edit: Callable[[pa.Table], pa.Table]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        pq.write_table(edit(pq.read_table(path / file)), path / file)

    return apply


def _set(column: str, row: int, value) -> Callable[[pa.Table], pa.Table]:
    """Plant `value` at `row` (a callable gets the old value), keeping the column's type."""

    def edit(table: pa.Table) -> pa.Table:
        idx = table.schema.get_field_index(column)
        values = table.column(column).to_pylist()
        values[row] = value(values[row]) if callable(value) else value
        kind = table.schema.field(idx).type
        return table.set_column(idx, pa.field(column, kind), pa.array(values, type=kind))

    return edit


def _cast(column: str, kind: pa.DataType, convert=None) -> Callable[[pa.Table], pa.Table]:
    def edit(table: pa.Table) -> pa.Table:
        idx = table.schema.get_field_index(column)
        values = table.column(column).to_pylist()
        if convert:
            values = [None if v is None else convert(v) for v in values]
        return table.set_column(idx, pa.field(column, kind), pa.array(values, type=kind))

    return edit


def _drop(column: str) -> Callable[[pa.Table], pa.Table]:
    return lambda t: t.drop_columns([column])


def _rename(old: str, new: str) -> Callable[[pa.Table], pa.Table]:
    return lambda t: t.rename_columns([new if c == old else c for c in t.column_names])


def _add(column: str, values: Callable[[int], list], kind: pa.DataType) -> Callable[[pa.Table], pa.Table]:
    return lambda t: t.append_column(pa.field(column, kind), pa.array(values(t.num_rows), type=kind))


def _repeat_row(row: int) -> Callable[[pa.Table], pa.Table]:
    return lambda t: pa.concat_tables([t, t.slice(row, 1)])


def _bytes(file: str, edit: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        (path / file).write_bytes(edit((path / file).read_bytes()))

    return apply


def _bad_sector(file: str, offset_share: float) -> Callable[[Path], None]:
    """The table as asd writes it today (`write_parquet`: page CRCs), then 16 bytes at
    `offset_share` of the file inverted, size and mtime kept: a bad sector under a stamp."""

    def apply(path: Path) -> None:
        from asd.traces.bundle import write_parquet

        write_parquet(pq.read_table(path / file), path / file)
        info = (path / file).stat()
        data = (path / file).read_bytes()
        at = int(len(data) * offset_share)
        (path / file).write_bytes(data[:at] + bytes(b ^ 0xFF for b in data[at:at + 16]) + data[at + 16:])
        os.utime(path / file, ns=(info.st_atime_ns, info.st_mtime_ns))

    return apply


def _replace_with_dir(file: str, inside: Callable[[Path, Path], None] | None = None) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        moved = path.parent / f".{path.name}-{file}"
        os.replace(path / file, moved)
        (path / file).mkdir()
        if inside:
            inside(moved, path / file)
        moved.unlink(missing_ok=True)

    return apply


def _symlink(file: str, target: str) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        (path / file).unlink()
        os.symlink(target, path / file)

    return apply


def _fifo(file: str) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        (path / file).unlink()
        os.mkfifo(path / file)

    return apply


def _chmod(file: str | None, mode: int) -> Callable[[Path], None]:
    return lambda path: os.chmod(path / file if file else path, mode)


def _swap(a: str, b: str) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        os.replace(path / a, path / "swap.tmp")
        os.replace(path / b, path / a)
        os.replace(path / "swap.tmp", path / b)

    return apply


def _move_into(sub: str, *files: str) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        (path / sub).mkdir()
        for f in files:
            os.replace(path / f, path / sub / f)

    return apply


def _copy_as(file: str, name: str) -> Callable[[Path], None]:
    return lambda path: shutil.copy2(path / file, path / name)


def _rename_file(file: str, name: str) -> Callable[[Path], None]:
    return lambda path: os.replace(path / file, path / name)


def _write_as(file: str, writer: Callable[[pa.Table, Path], None]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        table = pq.read_table(path / file)
        (path / file).unlink()
        writer(table, path / file)

    return apply


def _bundle_is_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_text("not a directory\n")


def _bundle_symlink_loop(path: Path) -> None:
    shutil.rmtree(path)
    os.symlink(path.name, path)


def _dup_key(data: bytes) -> bytes:
    return data.replace(b"{", b'{\n  "schema_version": 1,', 1)


def _csv(table: pa.Table, file: Path) -> None:
    import pyarrow.csv as pacsv

    pacsv.write_csv(table.drop_columns(["token_logprobs", "token_entropy"]), file)


def _null(value):
    return None


# --- the corpus -----------------------------------------------------------------------------

M = "manifest"
DAMAGES: list[Damage] = [
    # manifest.json: content and types
    Damage("manifest-missing", M, MANIFEST, lambda p: (p / MANIFEST).unlink()),
    Damage("manifest-zero-bytes", M, MANIFEST, _manifest_bytes(lambda b: b"")),
    Damage("manifest-truncated", M, MANIFEST, _manifest_bytes(lambda b: b[: len(b) // 2])),
    Damage("manifest-json-array", M, MANIFEST, _manifest_bytes(lambda b: b"[" + b + b"]")),
    Damage("manifest-not-utf8", M, MANIFEST, _manifest_bytes(lambda b: b.replace(b"smollm2", b"smoll\xffm2", 1))),
    Damage("manifest-byte-order-mark", M, MANIFEST, _manifest_bytes(lambda b: b"\xef\xbb\xbf" + b)),
    Damage("manifest-duplicate-key", M, MANIFEST, _manifest_bytes(_dup_key)),
    Damage("schema-version-missing", M, MANIFEST, _manifest(lambda m: m.pop("schema_version"))),
    Damage("schema-version-0", M, MANIFEST, _manifest(lambda m: m.update(schema_version=0))),
    Damage("schema-version-negative", M, MANIFEST, _manifest(lambda m: m.update(schema_version=-3))),
    Damage("schema-version-true", M, MANIFEST, _manifest(lambda m: m.update(schema_version=True))),
    Damage("schema-version-string", M, MANIFEST, _manifest(lambda m: m.update(schema_version="1"))),
    Damage("schema-version-float", M, MANIFEST, _manifest(lambda m: m.update(schema_version=1.0))),
    Damage("schema-version-newer", M, MANIFEST, _manifest(lambda m: m.update(schema_version=99))),
    Damage("tiers-missing", M, MANIFEST, _manifest(lambda m: m.pop("tiers"))),
    Damage("tiers-empty", M, MANIFEST, _manifest(lambda m: m.update(tiers=[]))),
    Damage("tiers-an-object", M, MANIFEST, _manifest(lambda m: m.update(tiers={t["name"]: t for t in m["tiers"]}))),
    Damage("tier-a-string", M, MANIFEST, _manifest(lambda m: m["tiers"].__setitem__(0, "smollm2-135m"))),
    Damage("tier-without-name", M, MANIFEST, _manifest(lambda m: m["tiers"][0].pop("name"))),
    Damage("tier-name-empty", M, MANIFEST, _manifest(_tier(0, name=""))),
    Damage("tier-name-a-number", M, MANIFEST, _manifest(_tier(1, name=270))),
    Damage("tier-names-duplicate", M, MANIFEST, _manifest(_tier(1, name="smollm2-135m"))),
    Damage("tier-only-a-name", M, MANIFEST, _manifest(lambda m: m["tiers"].__setitem__(1, {"name": "gemma3-270m"}))),
    Damage("tier-key-missing", M, MANIFEST, _manifest(lambda m: m["tiers"][0].pop("tensor_parallel"))),
    Damage("params-b-true", M, MANIFEST, _manifest(_tier(0, params_b=True))),
    Damage("params-b-negative", M, MANIFEST, _manifest(_tier(1, params_b=-8.0))),
    Damage("params-b-zero", M, MANIFEST, _manifest(_tier(1, params_b=0))),
    Damage("params-b-string", M, MANIFEST, _manifest(_tier(0, params_b="135M"))),
    Damage("params-b-nan", M, MANIFEST, _manifest(_tier(0, params_b=float("nan")))),
    Damage("params-b-infinite", M, MANIFEST, _manifest(_tier(1, params_b=float("inf")))),
    Damage("tensor-parallel-zero", M, MANIFEST, _manifest(_tier(0, tensor_parallel=0))),
    Damage("tensor-parallel-true", M, MANIFEST, _manifest(_tier(0, tensor_parallel=True))),
    Damage("tensor-parallel-fraction", M, MANIFEST, _manifest(_tier(1, tensor_parallel=1.5))),
    Damage("model-id-a-number", M, MANIFEST, _manifest(_tier(0, model_id=135))),
    Damage("synthetic-a-string", M, MANIFEST, _manifest(lambda m: m.update(synthetic="no"))),
    Damage("estimated-columns-a-string", M, MANIFEST, _manifest(lambda m: m.update(estimated_columns="quality"))),
    # the manifest lost its last tier: the tables now point past the ladder
    # the manifest then names sampling for a tier it no longer has: refused at manifest.json
    Damage("tier-dropped-from-manifest", M, MANIFEST, _manifest(lambda m: m["tiers"].pop())),
    # files: missing, truncated, corrupt, misplaced, not files
    Damage("requests-missing", "file", REQ, lambda p: (p / REQ).unlink()),
    Damage("outputs-missing", "file", OUT, lambda p: (p / OUT).unlink()),
    Damage("requests-zero-bytes", "file", REQ, _bytes(REQ, lambda b: b"")),
    Damage("drafts-zero-bytes", "file", DRA, _bytes(DRA, lambda b: b"")),
    Damage("outputs-truncated", "file", OUT, _bytes(OUT, lambda b: b[: len(b) // 2])),
    Damage("outputs-footer-zeroed", "file", OUT, _bytes(OUT, lambda b: b[:-64] + bytes(64))),
    Damage("outputs-page-header-zeroed", "file", OUT, _bytes(OUT, lambda b: b[:4] + bytes(64) + b[68:])),
    Damage("outputs-bad-sector", "file", OUT, _bad_sector(OUT, 0.3)),
    Damage("requests-bad-sector", "file", REQ, _bad_sector(REQ, 0.5)),
    Damage("drafts-text", "file", DRA, _bytes(DRA, lambda b: b"request_id,draft_tier\nb0000,0\n")),
    Damage("outputs-csv-named-parquet", "file", OUT, _write_as(OUT, _csv)),
    Damage("outputs-arrow-ipc-named-parquet", "file", OUT, _write_as(OUT, lambda t, f: feather.write_feather(t, f))),
    Damage("outputs-gzipped", "file", OUT, _bytes(OUT, lambda b: __import__("gzip").compress(b))),
    Damage("outputs-a-directory", "file", OUT, _replace_with_dir(OUT)),
    # pyarrow would read a directory of Parquet files as one dataset: a trap, not a table
    Damage("requests-a-dataset-directory", "file", REQ, _replace_with_dir(REQ, lambda old, new: os.replace(old, new / "part-0.parquet"))),
    Damage("drafts-a-directory", "file", DRA, _replace_with_dir(DRA)),
    Damage("manifest-a-directory", "file", MANIFEST, _replace_with_dir(MANIFEST)),
    Damage("manifest-symlink-loop", "file", MANIFEST, _symlink(MANIFEST, MANIFEST)),
    Damage("manifest-dangling-symlink", "file", MANIFEST, _symlink(MANIFEST, "../elsewhere/manifest.json")),
    Damage("outputs-symlink-loop", "file", OUT, _symlink(OUT, OUT)),
    Damage("drafts-dangling-symlink", "file", DRA, _symlink(DRA, "/nonexistent/drafts.parquet")),
    Damage("manifest-a-fifo", "file", MANIFEST, _fifo(MANIFEST)),
    Damage("drafts-a-fifo", "file", DRA, _fifo(DRA)),
    Damage("requests-and-outputs-swapped", "file", REQ, _swap(REQ, OUT)),
    Damage("outputs-under-drafts-name", "file", DRA, lambda p: shutil.copy2(p / OUT, p / DRA)),
    Damage("tables-moved-into-a-subdirectory", "file", REQ, _move_into("data", REQ, OUT, DRA)),
    Damage("drafts-capitalised", "file", "Drafts.parquet", _rename_file(DRA, "Drafts.parquet")),
    Damage("outputs-stray-download-copy", "file", "outputs (1).parquet", _copy_as(OUT, "outputs (1).parquet")),
    Damage("bundle-is-a-file", "file", None, _bundle_is_file),
    Damage("bundle-symlink-loop", "file", None, _bundle_symlink_loop),
    # column types, missing and unknown columns
    Damage("quality-as-string", "column", OUT, _table(OUT, _cast("quality", pa.string(), str))),
    Damage("tier-as-int64", "column", OUT, _table(OUT, _cast("tier", pa.int64()))),
    Damage("request-id-as-large-string", "column", REQ, _table(REQ, _cast("request_id", pa.large_string()))),
    Damage("token-logprobs-as-double", "column", OUT, _table(OUT, _cast("token_logprobs", pa.list_(pa.float64())))),
    Damage("accepted-as-int", "column", OUT, _table(OUT, _cast("accepted", pa.int8(), int))),
    Damage("n-output-tokens-as-float", "column", OUT, _table(OUT, _cast("n_output_tokens", pa.float64(), float))),
    Damage("verify-tier-as-string", "column", DRA, _table(DRA, _cast("verify_tier", pa.string(), str))),
    Damage("outputs-without-quality", "column", OUT, _table(OUT, _drop("quality"))),
    Damage("requests-without-task", "column", REQ, _table(REQ, _drop("task"))),
    Damage("requests-without-request-id", "column", REQ, _table(REQ, _drop("request_id"))),
    Damage("outputs-without-tier", "column", OUT, _table(OUT, _drop("tier"))),
    Damage("drafts-without-n-accepted", "column", DRA, _table(DRA, _drop("n_accepted"))),
    Damage("outputs-unknown-column", "column", OUT, _table(OUT, _add("score", lambda n: [0.5] * n, pa.float64()))),
    Damage("requests-column-renamed", "column", REQ, _table(REQ, _rename("task", "Task"))),
    # value ranges and list lengths
    Damage("quality-above-1", "value", OUT, _table(OUT, _set("quality", 7, 1.5))),
    Damage("quality-negative", "value", OUT, _table(OUT, _set("quality", 8, -0.1))),
    Damage("quality-nan", "value", OUT, _table(OUT, _set("quality", 9, float("nan")))),
    Damage("n-output-tokens-negative", "value", OUT, _table(OUT, _set("n_output_tokens", 10, -1))),
    Damage("ttft-infinite", "value", OUT, _table(OUT, _set("ttft_ms", 11, float("inf")))),
    Damage("e2e-nan", "value", OUT, _table(OUT, _set("e2e_ms", 12, float("nan")))),
    Damage("mean-logprob-positive", "value", OUT, _table(OUT, _set("mean_logprob", 13, 0.3))),
    Damage("token-logprob-nan", "value", OUT, _table(OUT, _set("token_logprobs", 14, lambda v: [float("nan")] + v[1:]))),
    Damage("token-entropy-negative", "value", OUT, _table(OUT, _set("token_entropy", 15, lambda v: [-1.0] + v[1:]))),
    Damage("token-logprobs-too-long", "value", OUT, _table(OUT, _set("token_logprobs", 16, lambda v: v + [-0.5]))),
    Damage("arrival-negative", "value", REQ, _table(REQ, _set("arrival_s", 3, -1.0))),
    Damage("split-unknown", "value", REQ, _table(REQ, _set("split", 4, "train"))),
    Damage("tier-out-of-range", "value", OUT, _table(OUT, _set("tier", 17, 2))),
    Damage("tier-negative", "value", OUT, _table(OUT, _set("tier", 18, -1))),
    Damage("tier-null", "value", OUT, _table(OUT, _set("tier", 19, None))),
    Damage("verify-not-deeper", "value", DRA, _table(DRA, _set("verify_tier", 5, 0))),
    Damage("n-accepted-above-drafted", "value", DRA, _table(DRA, _set("n_accepted", 6, 10_000))),
    Damage("verifier-logprobs-short", "value", DRA, _table(DRA, _set("verifier_logprobs", 7, lambda v: v[:-1]))),
    Damage("verify-ms-negative", "value", DRA, _table(DRA, _set("verify_ms", 8, -5.0))),
    Damage("outputs-empty", "value", OUT, _table(OUT, lambda t: t.slice(0, 0))),
    Damage("requests-empty", "value", REQ, _table(REQ, lambda t: t.slice(0, 0))),
    Damage("drafts-empty", "value", DRA, _table(DRA, lambda t: t.slice(0, 0))),
    # keys: nulls, duplicates, dangling references between tables
    Damage("request-id-null", "key", REQ, _table(REQ, _set("request_id", 2, None))),
    Damage("request-id-empty-string", "key", REQ, _table(REQ, _set("request_id", 2, ""))),
    Damage("outputs-request-id-null", "key", OUT, _table(OUT, _set("request_id", 20, None))),
    Damage("request-duplicated", "key", REQ, _table(REQ, _repeat_row(5))),
    Damage("output-row-duplicated", "key", OUT, _table(OUT, _repeat_row(21))),
    Damage("draft-row-duplicated", "key", DRA, _table(DRA, _repeat_row(9))),
    Damage("outputs-dangling-request", "reference", OUT, _table(OUT, _set("request_id", 22, "ghost"))),
    Damage("drafts-dangling-request", "reference", DRA, _table(DRA, _set("request_id", 10, "ghost"))),
    Damage("requests-lost-a-row", "reference", OUT, _table(REQ, lambda t: t.slice(1))),
    # permissions: root reads through these (the test drops root's override to run them)
    Damage("bundle-dir-unreadable", "os", None, _chmod(None, 0o000), needs_permissions=True),
    Damage("manifest-unreadable", "os", MANIFEST, _chmod(MANIFEST, 0o000), needs_permissions=True),
    Damage("outputs-unreadable", "os", OUT, _chmod(OUT, 0o000), needs_permissions=True),
    Damage("drafts-unreadable", "os", DRA, _chmod(DRA, 0o200), needs_permissions=True),
]


# --- judging a run ----------------------------------------------------------------------------


@dataclass
class Outcome:
    exit_code: int
    output: str
    warnings: list[str]
    exception: str | None


def run_command(argv: list[str]) -> Outcome:
    """Run `asd ARGV` in-process (CliRunner), collecting every warning it raises."""
    from click.testing import CliRunner

    from asd.cli import main

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, argv)
    unexpected = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        unexpected = f"{type(result.exception).__name__}: {result.exception}"
    return Outcome(result.exit_code, result.output, [f"{w.category.__name__}: {w.message}" for w in caught], unexpected)


def refusal_problems(outcome: Outcome, damage: Damage, bundle: Path, lists_problems: bool) -> list[str]:
    """Why `outcome` is not a clean refusal of `damage` (empty: it is): a non-zero exit, an
    `error:` line naming the bundle and (on that line, or for `validate` on a problem line)
    the damaged file, no traceback, no stray exception or warning."""
    lines = outcome.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    problems = []
    if outcome.exit_code == 0:
        problems.append("exit code 0")
    if outcome.exception or "Traceback" in outcome.output:
        problems.append(f"traceback / exception: {outcome.exception}")
    if outcome.warnings:
        problems.append(f"warnings: {outcome.warnings}")
    if len(errors) != 1:
        problems.append(f"{len(errors)} error: lines")
    elif str(bundle) not in errors[0]:
        problems.append("the error line does not name the bundle")
    if not lists_problems and len(lines) != 1:
        problems.append(f"{len(lines)} lines of output, expected one")
    if damage.file is not None:
        naming = lines if lists_problems else errors
        if not any(damage.file in line for line in naming):
            problems.append(f"no line names {damage.file}")
    return [f"{p}; output: {outcome.output.strip()!r}" for p in problems]
