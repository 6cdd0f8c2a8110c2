"""Prompt sets for `asd record`: JSONL, CSV or Parquet with `prompt` (required),
`request_id`, `reference` and `task` (optional), or a public question set (MT-bench,
MMLU-Pro questions); and the stable hash slices of `--shard i/n`."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pandas as pd

from asd.errors import ConfigError, TraceError
from asd.traces.jsonl import iter_jsonl_objects
from asd.traces.schema import INPUT_REQUEST_COLUMNS

COLUMNS = INPUT_REQUEST_COLUMNS


def load_prompts(path: str | Path) -> pd.DataFrame:
    """Read a prompt file into a DataFrame with exactly `COLUMNS` (missing optional → None)."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: prompt file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".csv", ".parquet", ".pq") and path.stat().st_size == 0:
        # said as it is, not as a missing 'prompt' column (or Parquet's "not a parquet file")
        raise TraceError(f"{path}: the prompt file is empty (0 bytes)")
    try:
        # `where[i]`: how an error names row i, counting from 1 as the importers do — the
        # file's line for JSONL and CSV (the header is line 1), the row for Parquet.
        if suffix in (".jsonl", ".ndjson"):
            frame, where = _read_jsonl(path)
        elif suffix == ".csv":
            frame, where = _read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            where = [f"row {i + 1}" for i in range(len(frame))]
        else:
            raise TraceError(f"{path}: unknown prompt file type {suffix!r} (use .jsonl, .csv or .parquet)")
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        if isinstance(exc, TraceError):
            raise
        raise TraceError(f"{path}: cannot read prompts ({str(exc).splitlines()[0]})") from None
    if frame.empty:  # no rows has no columns either: "no 'prompt' column" misled
        raise TraceError(f"{path}: the prompt file holds no prompts (no rows)")
    if "prompt" not in frame.columns:
        frame = _from_question_set(frame, path, where)
    unknown = [c for c in frame.columns if c not in COLUMNS]
    frame = frame.drop(columns=unknown)
    if "request_id" not in frame.columns:
        frame["request_id"] = [f"r{i:06d}" for i in range(len(frame))]
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame = frame[list(COLUMNS)].copy()
    for i, (rid, prompt) in enumerate(zip(frame["request_id"], frame["prompt"])):
        if not isinstance(prompt, str) or not prompt.strip():
            raise TraceError(f"{path}, {where[i]}: 'prompt' is empty or not text")
        if rid is None or (isinstance(rid, float) and rid != rid) or str(rid) == "":
            raise TraceError(f"{path}, {where[i]}: 'request_id' is empty")
    frame["request_id"] = frame["request_id"].astype(str)
    dup = frame["request_id"].duplicated()
    if dup.any():
        row = int(dup.to_numpy().nonzero()[0][0])
        first = int((frame["request_id"] == frame["request_id"].iloc[row]).to_numpy().nonzero()[0][0])
        raise TraceError(
            f"{path}, {where[row]}: duplicate request_id {frame['request_id'].iloc[row]!r} (first at {where[first]})"
        )
    for column in ("reference", "task"):
        values = [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in frame[column]]
        frame[column] = pd.Series(values, index=frame.index, dtype=object)
    return frame.reset_index(drop=True)


LETTERS = "ABCDEFGHIJKLMNOP"


def _from_question_set(frame: pd.DataFrame, path: Path, where: list[str]) -> pd.DataFrame:
    """Public question sets as found in shared/data: MT-bench (`turn_1`; first turn only, no
    exact reference, so quality is judged against the last tier) and MMLU-Pro (`question` +
    JSON `options` + `answer` letter → a lettered multiple-choice prompt)."""
    if "turn_1" in frame.columns:
        return pd.DataFrame({"request_id": frame.get("question_id", pd.Series(range(len(frame)))).astype(str),
                             "prompt": frame["turn_1"], "task": frame.get("category")})
    if {"question", "options", "answer"} <= set(frame.columns):
        # Here `answer` is the gold letter every label of the question comes from, so a null is a
        # broken question, refused as the MMLU-Pro importer refuses it (a null `reference` in a
        # prompt file of our own is allowed: that prompt is labelled by agreement instead).
        for column in ("question", "answer"):
            null = frame[column].isna().to_numpy()
            if null.any():
                i = int(null.argmax())
                named = f" for question_id {frame['question_id'].iloc[i]}" if "question_id" in frame.columns else ""
                raise TraceError(f"{path}, {where[i]}, column {column!r}: null{named} (a value is required)")
        prompts = []
        for i, (question, options) in enumerate(zip(frame["question"], frame["options"])):
            try:
                choices = json.loads(options) if isinstance(options, str) else list(options)
            except (json.JSONDecodeError, TypeError):
                raise TraceError(f"{path}, {where[i]}: 'options' is not a JSON list") from None
            lines = [f"{LETTERS[j]}. {c}" for j, c in enumerate(choices[: len(LETTERS)])]
            prompts.append(f"{question}\n" + "\n".join(lines) + "\nAnswer with the letter of the correct option.")
        category = frame["category"] if "category" in frame.columns else pd.Series([""] * len(frame))
        return pd.DataFrame({
            "request_id": frame.get("question_id", pd.Series(range(len(frame)))).astype(str),
            "prompt": prompts,
            "reference": frame["answer"],
            "task": ["multiple_choice/" + str(c) for c in category],
        })
    raise TraceError(f"{path}: no 'prompt' column (columns are {list(frame.columns)})")


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, list[str]]:
    numbered = list(iter_jsonl_objects(path))
    for number, row in numbered:
        for key, value in row.items():
            # JSON lets "\ud800" stand alone; no model can be sent it, and pyarrow's refusal
            # later named no line
            if isinstance(value, str) and not _encodable(value):
                raise TraceError(f"{path}, line {number}: {key!r} holds a lone surrogate (an unpaired "
                                 "\\ud800-\\udfff escape), which is not text")
    return pd.DataFrame([row for _, row in numbered]), [f"line {number}" for number, _ in numbered]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_csv(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Cells as text (empty → None), and each row's line in the file (a quoted cell may span lines)."""
    rows, where = [], []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                return pd.DataFrame(), []
            header = [name.strip() for name in header]
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:  # two 'prompt' columns: which one the models are asked would be a guess
                raise TraceError(f"{path}, line 1: column {repeated[0]!r} appears twice in the header")
            start = reader.line_num + 1
            for cells in reader:
                line, start = start, reader.line_num + 1
                if not cells or all(not c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    raise TraceError(f"{path}, line {line}: {len(cells)} fields, the header has {len(header)}")
                rows.append({k: (v if v != "" else None) for k, v in zip(header, cells)})
                where.append(f"line {line}")
        except csv.Error as exc:
            raise TraceError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
    return pd.DataFrame(rows, columns=header), where


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`i/n` with 0 ≤ i < n → (i, n)."""
    if text is None:
        return None
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: need 0 <= i < n")
    return index, count


def shard_of(request_id: str, count: int) -> int:
    """Stable slice of a request: the same on every machine and for every prompt-file order."""
    digest = hashlib.sha256(str(request_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(prompts: pd.DataFrame, shard: tuple[int, int] | None) -> pd.DataFrame:
    if shard is None:
        return prompts
    index, count = shard
    keep = [shard_of(rid, count) == index for rid in prompts["request_id"]]
    return prompts[keep].reset_index(drop=True)


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]
