"""JSON Lines input (one object per line), shared by `asd traces import jsonl` and the
prompt files of `asd record`: errors name the file and line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from asd.errors import TraceError


def iter_jsonl_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a byte-order mark is accepted."""
    with Path(path).open(encoding="utf-8-sig") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
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
