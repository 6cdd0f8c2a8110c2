"""What every benchmark script shares (not a benchmark itself: the bench_*.py scripts are)."""

from __future__ import annotations

import argparse

from asd.errors import AsdError
from asd.fsutil import check_writable_file


def not_judged(requests: int, goal_requests: int) -> str:
    """What a run smaller than the size its goal is for prints instead of met / not met."""
    return f"not judged: {requests:,} requests, the goal is for {goal_requests:,}"


def refuse_unwritable_json(parser: argparse.ArgumentParser, path) -> None:
    """A `--json PATH` that cannot be written is one `error:` line and exit 2 now, not after the
    run whose figures it was to hold (None: no report asked for)."""
    if path is None:
        return
    try:
        check_writable_file(path, "--json")
    except AsdError as exc:
        parser.exit(2, f"error: {exc}\n")
