"""The universal path: one JSONL or CSV row per (request, tier), tiers named on the command
line (`--tiers NAME[:PARAMS_B[:TP]],...`, ladder order). Every bad value is reported with
the file, line and column it came from.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pandas as pd

from asd.errors import ConfigError, TraceError
from asd.traces import schema as S
from asd.traces.bundle import file_sha256, new_manifest
from asd.traces.importers.base import (TOKEN_ESTIMATE_RULE, ImportedTrace, Importer, complete_ladder_requests,
                                      estimate_tokens, in_request_order, parse_params_b)
from asd.traces.jsonl import iter_jsonl_objects

# From the bundle schema: the request fields an input row may carry, and the output fields
# (what a tier measured, and its label); label_source is set here, list summaries derived.
REQUEST_COLUMNS = S.INPUT_REQUEST_COLUMNS[1:]
OUTPUT_COLUMNS = tuple(
    c for c in S.MEASURED_OUTPUT_COLUMNS + S.LABEL_COLUMNS if c not in ("request_id", "tier", "label_source")
)
KNOWN_COLUMNS = ("request_id", "model", "tier", *REQUEST_COLUMNS, *OUTPUT_COLUMNS)
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def parse_tiers(spec: str | None) -> list[dict]:
    """`NAME[:PARAMS_B[:TP]],...` → manifest tier dicts, in the order given (the ladder). Without
    PARAMS_B, the size the name states where it states one (`parse_params_b`: llama-8b → 8).
    A NAME may hold ':' (Ollama's `llama3:8b`): the fields start at the first part after a ':'
    that is a number or empty, so `llama3:8b:8:1` is llama3:8b at 8B on 1 GPU."""
    return parse_tiers_stated(spec)[0]


def _is_field(part: str) -> bool:
    """A part of a --tiers item that is PARAMS_B or TP rather than more of the name."""
    try:
        float(part)
    except ValueError:
        return part == ""
    return True


def parse_tiers_stated(spec: str | None) -> tuple[list[dict], dict[str, float]]:
    """`parse_tiers`, and the sizes the spec states outright (NAME:PARAMS_B) by name: a size read
    from a name may be overridden by --params-b, one stated in the same command may not be
    contradicted."""
    if spec is None or not spec.strip():
        raise ConfigError("--tiers is required: NAME[:PARAMS_B[:TP]],... in ladder order")
    tiers, stated = [], {}
    for item in spec.split(","):
        parts = item.strip().split(":")
        n_name = next((k for k in range(1, len(parts)) if _is_field(parts[k].strip())), len(parts))
        # "small-1b : 1" is small-1b of 1B, as "small-1b , big-7b" names small-1b
        name, fields = ":".join(parts[:n_name]).strip(), [f.strip() for f in parts[n_name:]]
        if len(fields) > 2 or not parts[0]:
            raise ConfigError(f"--tiers: {item.strip()!r} is not NAME[:PARAMS_B[:TP]]")
        tier = {"name": name, "model_id": name}
        sizes = {part: parse_params_b(part) for part in name.split(":") if parse_params_b(part) is not None}
        if len(set(sizes.values())) > 1:  # llama-8b:7.5b: a size typed with its unit reads as part of the name
            (a, a_b), (b, b_b) = list(sizes.items())[:2]
            raise ConfigError(f"--tiers: {item.strip()!r}: the name states {a_b:g}B in {a!r} and {b_b:g}B in {b!r}; "
                              f"give PARAMS_B as a number ({a}:{b_b:g})")
        if fields and fields[0]:
            params_b = float(fields[0])
            if not math.isfinite(params_b) or params_b <= 0:
                raise ConfigError(f"--tiers: {item.strip()!r}: PARAMS_B must be a positive number")
            tier["params_b"] = stated[name] = params_b
        elif parse_params_b(name) is not None:  # as every importer: the size a name states (llama-8b → 8)
            tier["params_b"] = parse_params_b(name)
        if len(fields) > 1 and fields[1]:
            if not (fields[1].isascii() and fields[1].isdigit()) or int(fields[1]) < 1:  # '²' is a digit too
                raise ConfigError(f"--tiers: {item.strip()!r}: TP must be a positive integer")
            tier["tensor_parallel"] = int(fields[1])
        if any(t["name"] == tier["name"] for t in tiers):
            raise ConfigError(f"--tiers: tier name {tier['name']!r} appears twice")
        tiers.append(tier)
    return tiers, stated


class _RowError(Exception):
    def __init__(self, column: str, message: str):
        super().__init__(message)
        self.column = column


FLOAT32_MAX = 3.4028234663852886e38  # float32's largest finite value


def _number(column: str, value, from_text: bool) -> float:
    if from_text:
        try:
            return float(value)
        except ValueError:
            raise _RowError(column, f"{value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _RowError(column, f"expected a number, got {type(value).__name__} {value!r}")
    return float(value)


COUNT_MAX = 2**31 - 1  # the bundle stores counts as int32


def _count(column: str, value, from_text: bool) -> int:
    number = _number(column, value, from_text)
    if not math.isfinite(number) or number != int(number) or number < 0:
        raise _RowError(column, f"expected a whole number ≥ 0, got {value!r}")
    if number > COUNT_MAX:
        raise _RowError(column, f"{value!r} exceeds {COUNT_MAX}, the largest count a bundle stores")
    return int(number)


def _text(column: str, value) -> str:
    if not isinstance(value, str):
        raise _RowError(column, f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _convert(column: str, value, from_text: bool):
    """One cell → its bundle value (None = not recorded); `from_text` for CSV cells."""
    if value is None or (from_text and value == ""):
        return None
    if column in ("request_id", "model"):
        if not from_text and isinstance(value, int) and not isinstance(value, bool) and column == "request_id":
            return str(value)
        value = _text(column, value)
        if not value:
            raise _RowError(column, "is empty")
        return value
    if column == "tier":
        return _count(column, value, from_text)
    if column in ("output", *REQUEST_COLUMNS):
        return _text(column, value)
    if column == "quality":
        quality = _number(column, value, from_text)
        if math.isnan(quality):
            raise _RowError(column, "quality is NaN (leave it empty/null when not judged)")
        if not 0.0 <= quality <= 1.0:
            raise _RowError(column, f"quality {quality!r} is outside [0, 1]")
        return quality
    if column == "accepted":
        if from_text:
            if value.strip().lower() in _TRUE:
                return True
            if value.strip().lower() in _FALSE:
                return False
            raise _RowError(column, f"{value!r} is not true/false")
        if not isinstance(value, bool):
            raise _RowError(column, f"expected true/false, got {type(value).__name__} {value!r}")
        return value
    if column in ("n_prompt_tokens", "n_output_tokens"):
        return _count(column, value, from_text)
    if column in ("ttft_ms", "e2e_ms"):
        ms = _number(column, value, from_text)
        if not math.isfinite(ms) or ms < 0:
            raise _RowError(column, f"expected a time ≥ 0 in ms, got {value!r}")
        return ms
    if column in ("token_logprobs", "token_entropy"):
        if from_text:
            try:
                value = json.loads(value)
            except (json.JSONDecodeError, RecursionError):
                raise _RowError(column, f"{value[:40]!r} is not a JSON list of numbers") from None
        if not isinstance(value, list):
            raise _RowError(column, f"expected a list of numbers, got {type(value).__name__}")
        out = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise _RowError(column, f"item {i} is {item!r}, not a number")
            if column == "token_logprobs" and (math.isnan(item) or item > 0):
                raise _RowError(column, f"item {i} is {item!r}; a logprob is ≤ 0")
            # stored as float32: 1e39 would become inf there
            if column == "token_entropy" and not (math.isfinite(item) and 0 <= item <= FLOAT32_MAX):
                raise _RowError(column, f"item {i} is {item!r}; an entropy is finite (as float32) and ≥ 0")
            out.append(float(item))
        return out
    raise AssertionError(column)


def _csv_rows(path: Path):
    with path.open(encoding="utf-8-sig", newline="") as handle:
        try:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return
            header = [name.strip() for name in header]
            duplicated = sorted({name for name in header if header.count(name) > 1})
            if duplicated:
                raise TraceError(f"{path}, line 1: column {duplicated[0]!r} appears twice in the header")
            unknown = [name for name in header if name not in KNOWN_COLUMNS]
            if unknown:  # a header typo is the header's fault, not the first row's
                raise TraceError(f"{path}, line 1: unknown column {unknown[0]!r} (columns are {', '.join(KNOWN_COLUMNS)})")
            ended = reader.line_num  # the line the previous record ended on
            for cells in reader:
                # a record's first line (a quoted output may span several; line_num is its last)
                number, ended = ended + 1, reader.line_num
                if not cells or all(not c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    raise TraceError(f"{path}, line {number}: {len(cells)} fields, the header has {len(header)}")
                yield number, dict(zip(header, cells))
        except csv.Error as exc:
            raise TraceError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise TraceError(f"{path}: not UTF-8 text ({exc.reason})") from None


class TabularImporter(Importer):
    """Shared by JSONL and CSV: they differ only in how rows are read and how cells are typed."""

    options = ("tiers", "drop_incomplete")
    required = ("tiers",)
    from_text: bool = False

    def rows(self, path: Path):
        raise NotImplementedError

    def load(self, src: Path, *, tiers: str | None = None, drop_incomplete: bool = False) -> ImportedTrace:
        src = self.check_source(src)
        tier_list, stated = parse_tiers_stated(tiers)
        names = [t["name"] for t in tier_list]
        tier_of = {name: i for i, name in enumerate(names)}
        request_fields: dict[str, dict] = {}  # request_id → prompt/task/reference (+ line of first)
        first_line: dict[tuple[str, int], int] = {}
        id_kinds: dict[str, tuple[bool, int]] = {}  # request_id → (given as a number?, line first given)
        out_rows: list[dict] = []
        for number, raw in self.rows(src):
            where = f"{src}, line {number}"
            unknown = [key for key in raw if key not in KNOWN_COLUMNS]
            if unknown:
                raise TraceError(f"{where}: unknown column {unknown[0]!r} (columns are {', '.join(KNOWN_COLUMNS)})")
            try:
                row = {key: _convert(key, value, self.from_text) for key, value in raw.items()}
            except _RowError as exc:
                raise TraceError(f"{where}, column {exc.column!r}: {exc}") from None
            request_id = row.get("request_id")
            if request_id is None:
                raise TraceError(f"{where}, column 'request_id': missing")
            id_is_number = not isinstance(raw["request_id"], str)
            first_kind = id_kinds.setdefault(request_id, (id_is_number, number))
            if first_kind[0] != id_is_number:  # 1 and "1" read alike: one request, or two?
                kinds = ("a string", "a number")
                raise TraceError(
                    f"{where}, column 'request_id': {raw['request_id']!r} is {kinds[id_is_number]} here but "
                    f"{kinds[first_kind[0]]} at line {first_kind[1]}; write each id one way"
                )
            if "output" not in raw:
                raise TraceError(f"{where}, column 'output': missing (use null when not recorded)")
            tier = self._tier(row, names, tier_of, where)
            if (request_id, tier) in first_line:
                raise TraceError(
                    f"{where}: duplicate row for request {request_id!r} at tier {names[tier]!r} "
                    f"(first at line {first_line[request_id, tier]})"
                )
            first_line[request_id, tier] = number
            fields = request_fields.setdefault(request_id, {"_line": number})
            for column in REQUEST_COLUMNS:
                value = row.get(column)
                if value is None:
                    continue
                if fields.get(column) is not None and fields[column] != value:
                    raise TraceError(
                        f"{where}, column {column!r}: differs from the {column} given for request "
                        f"{request_id!r} at line {fields['_line']}"
                    )
                fields[column] = value
            n_out = row.get("n_output_tokens")
            logprobs, entropy = row.get("token_logprobs"), row.get("token_entropy")
            if n_out is None and logprobs is not None and entropy is not None and len(logprobs) != len(entropy):
                raise TraceError(f"{where}, column 'token_entropy': {len(entropy)} items but token_logprobs has "
                                 f"{len(logprobs)} (one of each per output token)")
            for column in ("token_logprobs", "token_entropy"):
                values = row.get(column)
                if values is not None and n_out is not None and len(values) != n_out:
                    raise TraceError(
                        f"{where}, column {column!r}: {len(values)} items but n_output_tokens is {n_out}"
                    )
            out = {column: row.get(column) for column in OUTPUT_COLUMNS}
            out["request_id"], out["tier"] = request_id, tier
            out["label_source"] = "input" if out["quality"] is not None or out["accepted"] is not None else None
            out_rows.append(out)
        if not out_rows:
            raise TraceError(f"{src}: empty (no rows)")

        outputs = pd.DataFrame(out_rows)
        keep, dropped = complete_ladder_requests(outputs, names, drop_incomplete, str(src))
        outputs = in_request_order(outputs, keep)
        requests = pd.DataFrame(
            {
                "request_id": keep,
                **{c: [request_fields[r].get(c) for r in keep] for c in REQUEST_COLUMNS},
            }
        )
        outputs = _typed_outputs(outputs)
        outputs, estimated = _estimate_missing_counts(outputs, requests)
        manifest = new_manifest(
            tier_list,
            label_rule="quality and accepted as given in the input file" if outputs["quality"].notna().any()
            or outputs["accepted"].notna().any() else None,
            estimated_columns=sorted(estimated),
            provenance={
                "importer": self.name,
                "source_file": str(src.resolve()),
                "source_sha256": file_sha256(src),
                "arguments": {"tiers": tiers, "drop_incomplete": drop_incomplete},
                "dropped_incomplete_requests": dropped,
                "params_b_rule": "PARAMS_B of --tiers, else parsed from the tier name",
                "params_b_stated": stated,  # what --params-b may not contradict
                **({"token_estimate_rule": estimated} if estimated else {}),
            },
        )
        return ImportedTrace(manifest, requests, outputs, report={"dropped_incomplete": dropped})

    @staticmethod
    def _tier(row: dict, names: list[str], tier_of: dict, where: str) -> int:
        model, tier = row.get("model"), row.get("tier")
        if model is None and tier is None:
            raise TraceError(f"{where}, column 'model': missing (give 'model' (a tier name) or 'tier' (0-based))")
        if model is not None and model not in tier_of:
            raise TraceError(f"{where}, column 'model': unknown model {model!r}; tiers are {', '.join(names)}")
        if tier is not None and tier >= len(names):
            raise TraceError(
                f"{where}, column 'tier': {tier} is out of range; tiers are 0..{len(names) - 1} ({', '.join(names)})"
            )
        if model is not None and tier is not None and tier_of[model] != tier:
            raise TraceError(f"{where}, column 'tier': {tier} disagrees with model {model!r} (tier {tier_of[model]})")
        return tier_of[model] if model is not None else tier


def _estimate_missing_counts(outputs: pd.DataFrame, requests: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Token counts the file leaves out, where its text tells them, as the public importers
    count: an answer's from its token_logprobs or token_entropy (one per token), else TOKEN_ESTIMATE_RULE of its
    output; a prompt's by that rule from the request's prompt (chat template not counted). Left
    null, they would price every answer as a prefill alone (the cost model counts a tier with
    no counts as 0 tokens): a chat answer of 300 words took 5 ms. Returns the outputs and, per
    column estimated anywhere, the rule and how many counts it gave (the manifest's provenance)."""
    estimated = {}
    n_out = outputs["n_output_tokens"]
    def listed(column):  # one value per output token
        return outputs[column].map(lambda v: len(v) if isinstance(v, list) else None).astype("Float64")

    from_lists = listed("token_logprobs").fillna(listed("token_entropy"))
    from_text = estimate_tokens(outputs["output"].astype("string"))
    fill = pd.array(from_lists.fillna(from_text.astype("Float64")), dtype="Int32")
    missing_out = (n_out.isna() & pd.Series(fill, index=outputs.index).notna()).to_numpy()
    if missing_out.any():
        outputs.loc[missing_out, "n_output_tokens"] = fill[missing_out]
        estimated["outputs.n_output_tokens"] = (f"where the file gives none ({int(missing_out.sum())} of "
                                                f"{len(outputs)}): the number of token_logprobs (else token_entropy), else "
                                                f"{TOKEN_ESTIMATE_RULE} of the output")
    prompts = requests.set_index("request_id")["prompt"]
    prompt_counts = estimate_tokens(prompts.astype("string")).reindex(outputs["request_id"]).to_numpy()
    missing_prompt = (outputs["n_prompt_tokens"].isna().to_numpy() & pd.notna(prompt_counts))
    if missing_prompt.any():
        outputs.loc[missing_prompt, "n_prompt_tokens"] = prompt_counts[missing_prompt]
        estimated["outputs.n_prompt_tokens"] = (f"where the file gives none ({int(missing_prompt.sum())} of "
                                                f"{len(outputs)}): {TOKEN_ESTIMATE_RULE} of the request's prompt "
                                                "(chat template not counted)")
    return outputs, estimated


def _typed_outputs(outputs: pd.DataFrame) -> pd.DataFrame:
    """Nullable dtypes, so an all-null column is still typed and ints stay ints."""
    return outputs.assign(
        quality=outputs["quality"].astype("Float64"),
        accepted=outputs["accepted"].astype("boolean"),
        n_prompt_tokens=outputs["n_prompt_tokens"].astype("Int32"),
        n_output_tokens=outputs["n_output_tokens"].astype("Int32"),
        ttft_ms=outputs["ttft_ms"].astype("Float64"),
        e2e_ms=outputs["e2e_ms"].astype("Float64"),
        tier=outputs["tier"].astype("int16"),
        output=outputs["output"].astype(object),
    )


class JsonlImporter(TabularImporter):
    name = "jsonl"
    summary = "JSON Lines, one object per (request, tier); needs --tiers"

    def rows(self, path: Path):
        return iter_jsonl_objects(path)


class CsvImporter(TabularImporter):
    name = "csv"
    summary = "CSV with a header, one row per (request, tier); needs --tiers"
    from_text = True

    def rows(self, path: Path):
        return _csv_rows(path)
