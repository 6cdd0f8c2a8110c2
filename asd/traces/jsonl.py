"""JSON Lines input (one object per line), shared by `asd traces import jsonl` and the
prompt files of `asd record`: errors name the file and line."""

from __future__ import annotations

import json
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
                    raise TraceError(f"{path}, line {number}: invalid JSON ({exc.msg})") from None
                except RecursionError:  # json's decoder recurses once per level of nesting
                    raise TraceError(f"{path}, line {number}: invalid JSON (nested too deeply)") from None
                if not isinstance(row, dict):
                    raise TraceError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
                yield number, row
        except UnicodeDecodeError as exc:
            raise TraceError(f"{path}: not UTF-8 text ({exc.reason})") from None
