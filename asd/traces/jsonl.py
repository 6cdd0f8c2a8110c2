"""JSON input: JSON Lines files (one object per line), shared by `asd traces import jsonl` and
the prompt files of `asd record`, whose errors name the file and line; and `loads_unique`, the
one parse of JSON a user hands asd (JSONL rows, manifests, tier configs, policy headers, JSON
cells of imported sources), which refuses a key given twice in one object."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from asd.errors import TraceError


class DuplicateKeyError(ValueError):
    """One JSON object names `key` twice. json keeps the last value without a word, so a row
    edited by appending {"quality": 1} to it would silently change its label."""

    def __init__(self, key: str):
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def _unique_keys(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) < len(pairs):  # rare: only then look for the key (the common path stays C-speed)
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return obj


# one decoder: json.loads(text, object_pairs_hook=...) builds a new one per call, a fifth of a
# short JSONL row's parse time
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def loads_unique(text: str):
    """json.loads, but a key repeated in one object (at any depth) raises DuplicateKeyError, a
    ValueError; malformed JSON raises json.JSONDecodeError as before, and a non-text TypeError."""
    return _DECODER.decode(text)


def iter_jsonl_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a byte-order mark is accepted; a key
    given twice in one object is an error naming the line and the key."""
    with Path(path).open(encoding="utf-8-sig") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = loads_unique(line)
                except DuplicateKeyError as exc:
                    raise TraceError(f"{path}, line {number}: key {exc.key!r} appears twice in one object "
                                     "(which value is meant?)") from None
                except json.JSONDecodeError as exc:
                    raise TraceError(f"{path}, line {number}{_where_in_line(line, exc)}: invalid JSON ({exc.msg})"
                                     f"{'; the file ends inside it (cut off?)' if _cut_off(line, exc) else ''}"
                                     ) from None
                except RecursionError:  # json's decoder recurses once per level of nesting
                    raise TraceError(f"{path}, line {number}: invalid JSON (nested too deeply)") from None
                if not isinstance(row, dict):
                    raise TraceError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
                yield number, row
        except UnicodeDecodeError as exc:
            raise TraceError(f"{path}: not UTF-8 text ({exc.reason})") from None


_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')


def _where_in_line(line: str, exc: json.JSONDecodeError) -> str:
    """', near column 'quality', character 49': the last key before the error, and where the error is."""
    keys = _KEY.findall(line[: exc.pos])
    return (f", near column {keys[-1]!r}" if keys else "") + f", character {exc.colno}"


def _cut_off(line: str, exc: json.JSONDecodeError) -> bool:
    """The file's last line (no newline) failing where a writer stopped mid-row: at its very end,
    or in a string never closed; a typo mid-line in a file without a final newline is not one."""
    if line.endswith("\n"):
        return False
    return exc.pos >= len(line.rstrip()) or exc.msg.startswith("Unterminated string")
