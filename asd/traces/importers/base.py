"""What every importer shares: the `Importer` base class, the in-memory `ImportedTrace` it
returns, and the helpers for tier ladders, token estimates, incomplete requests and the
per-model Parquet exports in shared/data.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from asd.errors import ConfigError, TraceError
from asd.traces.jsonl import DuplicateKeyError, loads_unique

# Where a source records no token counts: one token per 4 characters, rounded up
# (the usual rule of thumb for English BPE vocabularies); an empty text is 0 tokens.
CHARS_PER_TOKEN = 4
TOKEN_ESTIMATE_RULE = "ceil(characters / 4)"


@dataclass
class ImportedTrace:
    """An importer's result before it is written: bundle tables as DataFrames + manifest."""

    manifest: dict
    requests: pd.DataFrame
    outputs: pd.DataFrame
    drafts: pd.DataFrame | None = None
    # Facts the CLI reports (e.g. how many incomplete requests were dropped).
    report: dict = field(default_factory=dict)


class Importer:
    """One source format. Subclasses set `name`, `summary`, `options` and implement `load`.

    `options` names the keyword options (CLI flags without dashes, `_` for `-`) this format
    accepts besides the source path; `required` those it cannot do without.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    source_kind: ClassVar[str] = "file"  # "file" or "directory"
    options: ClassVar[tuple[str, ...]] = ()
    required: ClassVar[tuple[str, ...]] = ()

    def load(self, src: Path, **options) -> ImportedTrace:
        raise NotImplementedError

    def check_source(self, src: Path) -> Path:
        src = Path(src)
        if not src.exists():
            raise TraceError(f"{src}: no such {self.source_kind}")
        if self.source_kind == "directory" and not src.is_dir():
            raise TraceError(f"{src}: {self.name} reads a directory, this is a file")
        if self.source_kind == "file" and not src.is_file():
            raise TraceError(f"{src}: {self.name} reads a file, this is a directory")
        return src


def require_files(src: Path, names: tuple[str, ...], what: str) -> None:
    for name in names:
        if not (src / name).is_file():
            raise TraceError(f"{src}: not {what} ({name} missing)")


def estimate_tokens(texts: pd.Series) -> pd.Series:
    """Token count estimated from text length (TOKEN_ESTIMATE_RULE); null stays null."""
    return estimate_tokens_from_chars(texts.str.len())


def estimate_tokens_from_chars(chars: pd.Series) -> pd.Series:
    return np.ceil(chars.astype("float64") / CHARS_PER_TOKEN).astype("Int32")


_SIZE_TOKEN = re.compile(r"^(\d+(?:[._]\d+)?)([bm])$", re.IGNORECASE)


def parse_params_b(model: str) -> float | None:
    """Parameter count in billions read from a model name, or None when it does not say.

    The name is split on '-' and ':' (an Ollama-style tag); a part that is a number followed by
    'b' or 'm' (a '_' or '.' inside is a decimal point) gives the size:
    'Llama-2-13b-hf' → 13, 'Qwen-1_8B' → 1.8, 'Meta-Llama-3_1-70B' → 70, 'vicuna-68m' → 0.068,
    'llama3:8b' → 8. Mixture-of-experts names ('Mixtral-8x7B'), names without a size and names
    stating two different ones ('Infinity-Instruct-3M-0625-Llama3-70B': 3M is its data set) give
    None rather than a guess.
    """
    sizes = set()
    for part in re.split(r"[-:]", model):
        match = _SIZE_TOKEN.match(part)
        if match:
            value = float(match.group(1).replace("_", "."))
            sizes.add(value if match.group(2).lower() == "b" else value / 1000.0)
    return sizes.pop() if len(sizes) == 1 else None


PARAMS_B_RULE = "parsed from the model name (asd.traces.importers.base.parse_params_b)"


def tiers_named(names: list[str], **fields) -> list[dict]:
    """One manifest tier per model name: model_id = the name, params_b by `parse_params_b`
    (PARAMS_B_RULE); `fields` are shared by every tier."""
    return [{"name": n, "model_id": n, "params_b": parse_params_b(n), **fields} for n in names]


def parse_model_list(text: str | None, option: str = "--models") -> list[str]:
    if text is None:
        raise ConfigError(f"{option} is required (comma-separated, in ladder order)")
    names = [name.strip() for name in text.split(",")]
    if not names or any(not name for name in names):
        raise ConfigError(f"{option} {text!r}: empty model name")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"{option} {text!r}: {duplicates[0]!r} appears twice")
    return names


def require_rows(path: Path, n_rows: int) -> None:
    """A source file with no rows is an error naming it (not an empty list of what it holds)."""
    if n_rows == 0:
        raise TraceError(f"{path}: empty (no rows)")


def check_known_models(models: list[str], available, where: str) -> None:
    known = set(available)
    for model in models:
        if model not in known:
            raise TraceError(f"{where}: unknown model {model!r}; available: {', '.join(sorted(known))}")


def complete_requests(
    present: pd.DataFrame,
    n_tiers: int,
    tier_names: list[str],
    drop_incomplete: bool,
    where: str,
) -> tuple[np.ndarray, int]:
    """Which requests have a row at every tier.

    `present` has columns request_id and tier (one row per recorded pair). Returns the
    request ids to keep (in first-seen order) and how many incomplete ones were dropped;
    an incomplete request without `drop_incomplete` is an error naming the first one.
    """
    ids = pd.unique(present["request_id"])
    counts = present.groupby("request_id", sort=False)["tier"].nunique().reindex(ids)
    incomplete = counts.index[counts.to_numpy() < n_tiers]
    if len(incomplete) and not drop_incomplete:
        first = incomplete[0]
        have = set(present.loc[present["request_id"] == first, "tier"])
        missing = [tier_names[t] for t in range(n_tiers) if t not in have]
        more = f" (and {len(incomplete) - 1} more incomplete requests)" if len(incomplete) > 1 else ""
        raise TraceError(
            f"{where}: request {first!r} has no row for tier {missing[0]!r}{more}; "
            "pass --drop-incomplete to drop incomplete requests"
        )
    keep = counts.index[counts.to_numpy() >= n_tiers].to_numpy()
    if len(keep) == 0:
        raise TraceError(f"{where}: no request has a row at every tier ({', '.join(tier_names)})")
    return keep, int(len(incomplete))


def _is_text(arrow_type) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def _is_list_of(arrow_type, item) -> bool:
    is_list = pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
    return is_list and item(arrow_type.value_type)


# What a source column must hold, as the importers read it (not an exact Arrow type: any
# string width, integer size or float size will do). An all-null column (Arrow type null)
# fits every kind; null values are checked where they matter.
COLUMN_KINDS = {
    "string": _is_text,
    "integer": pa.types.is_integer,
    "number": lambda t: pa.types.is_integer(t) or pa.types.is_floating(t),
    "boolean": pa.types.is_boolean,
    "id": lambda t: _is_text(t) or pa.types.is_integer(t),  # turned into text
    "list of integers": lambda t: _is_list_of(t, pa.types.is_integer),
    "list of strings": lambda t: _is_list_of(t, _is_text),
}


def _fits(arrow_type, kind: str) -> bool:
    return pa.types.is_null(arrow_type) or COLUMN_KINDS[kind](arrow_type)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def _reading_source(path: Path) -> Iterator[None]:
    """Reading a source Parquet file inside: any failure is a TraceError naming the file."""
    try:
        yield
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise TraceError(f"{path}: not a readable Parquet file ({_reason(exc)})") from None


def source_schema(path: Path) -> pa.Schema:
    """The Arrow schema of a source Parquet file; an unreadable file is a TraceError."""
    with _reading_source(path):
        return pq.read_schema(path)


def check_columns(path: Path, kinds: dict[str, str]) -> pa.Schema:
    """Every column in `kinds` (name → kind in COLUMN_KINDS) exists in `path` and holds that
    kind; else a TraceError naming the file and the first bad column."""
    schema = source_schema(path)
    for column, kind in kinds.items():
        index = schema.get_field_index(column)
        if index < 0:
            raise TraceError(f"{path}, column {column!r}: missing (expected {kind})")
        found = schema.field(index).type
        if not _fits(found, kind):
            raise TraceError(f"{path}, column {column!r}: expected {kind}, found {found}")
    return schema


def read_source_table(path: Path, kinds: dict[str, str], *, filters=None, non_null: tuple[str, ...] = ()) -> pa.Table:
    """The columns of `kinds` from a source Parquet file, after `check_columns`; `filters`
    (pyarrow's) narrow the rows (their columns must be in `kinds`). A null in a `non_null`
    column is an error naming the column. Every read failure is a TraceError."""
    check_columns(path, kinds)
    with _reading_source(path):
        table = pq.read_table(path, columns=list(kinds), filters=list(filters) if filters else None)
    for column in non_null:
        nulls = table.column(column).null_count
        if nulls:
            raise TraceError(f"{path}, column {column!r}: {nulls} null value{'s' if nulls != 1 else ''} (a value is required)")
    return table


def read_source(path: Path, kinds: dict[str, str], **options) -> pd.DataFrame:
    """`read_source_table` as a DataFrame."""
    return read_source_table(path, kinds, **options).to_pandas()


def check_unique(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    """No two rows of `frame` share the values of `columns` (else the first repeat is named)."""
    repeated = frame.duplicated(columns)
    if repeated.any():
        first = frame.loc[repeated, columns].iloc[0]
        what = ", ".join(f"{c} {first[c]!r}" if isinstance(first[c], str) else f"{c} {first[c]}" for c in columns)
        raise TraceError(f"{path}: two rows for {what}")


def parse_json_cell(value, path: Path, column: str, key) -> object:
    """A JSON text cell parsed; null or malformed is an error naming file, column and row key, as
    is an object naming one key twice (option-logits `choices` {"A": …, "A": …})."""
    try:
        return loads_unique(value)
    except DuplicateKeyError as exc:
        raise TraceError(f"{path}, column {column!r}: {key}: key {exc.key!r} appears twice in one object") from None
    except (TypeError, json.JSONDecodeError, RecursionError):
        raise TraceError(f"{path}, column {column!r}: {key}: {value!r:.60} is not JSON") from None


def read_ladder_rows(
    path: Path,
    names: list[str],
    kinds: dict[str, str],
    request_key: str,
    *,
    available=None,
    where: str | None = None,
    filters: tuple = (),
) -> pd.DataFrame:
    """The rows of a per-model Parquet export for the requested ladder `names`, with `tier`
    (the model's place in `names`) and `request_id` (`request_key` as text) added.

    `kinds` names the columns to read and their kinds (`model` and `request_key` are added);
    see `read_source`. Every name must be among `available` (default: the file's distinct
    `model` values), else an error naming `where` (default: the file). `filters` narrow the
    read further (their columns must be in `kinds`). A model with two rows for one request
    is an error.
    """
    kinds = {"model": "string", request_key: "id", **kinds}
    if available is None:
        models = read_source_table(path, {"model": "string"})
        require_rows(path, models.num_rows)
        available = pc.unique(models.column("model")).drop_null().to_pylist()
    check_known_models(names, available, str(path) if where is None else where)
    rows = read_source(path, kinds, filters=[("model", "in", names), *filters], non_null=(request_key,))
    check_unique(path, rows, ["model", request_key])
    rows["tier"] = rows["model"].map({name: i for i, name in enumerate(names)}).astype("int16")
    rows["request_id"] = rows[request_key].astype(str)
    return rows


def complete_ladder_requests(
    rows: pd.DataFrame, names: list[str], drop_incomplete: bool, where: str
) -> tuple[np.ndarray, int]:
    """`complete_requests` over a ladder's rows (their request_id and tier columns)."""
    return complete_requests(rows[["request_id", "tier"]], len(names), names, drop_incomplete, where)


def in_request_order(rows: pd.DataFrame, keep) -> pd.DataFrame:
    """The rows of the kept requests only, ordered as `keep`, then by tier."""
    order = pd.Series(range(len(keep)), index=keep)
    rows = rows[rows["request_id"].isin(order.index)]
    rows = rows.assign(_order=rows["request_id"].map(order)).sort_values(["_order", "tier"], kind="stable")
    return rows.drop(columns="_order").reset_index(drop=True)


def read_request_table(
    path: Path, request_key: str, keep, kinds: dict[str, str], required: tuple[str, ...], missing: str
) -> pd.DataFrame:
    """A per-request Parquet table (questions, prompts) indexed by request_id (`request_key` as
    text) and reindexed to `keep`; `kinds` as in `read_source` (`request_key` is added). A
    kept request without a row there is an error: `path` then `missing` formatted with the
    first such request id; one whose row has a null in a `required` column is an error naming
    the file, the column and the request.
    """
    table = read_source(path, {request_key: "id", **kinds}, non_null=(request_key,))
    check_unique(path, table, [request_key])
    table["request_id"] = table[request_key].astype(str)
    table = table.set_index("request_id")
    absent = ~pd.Index(keep).isin(table.index)
    if absent.any():
        raise TraceError(f"{path}: " + missing.format(keep[np.argmax(absent)]))
    table = table.reindex(keep)
    null = table[list(required)].isna().to_numpy()
    if null.any():
        row, column = np.argwhere(null)[0]
        raise TraceError(
            f"{path}, column {required[column]!r}: null for {request_key} {table.index[row]} (a value is required)"
        )
    return table
