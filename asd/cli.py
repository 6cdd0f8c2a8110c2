"""The `asd` command line: thin — parse options, call one function, print.

User mistakes raise `AsdError`, printed here as one line with a non-zero exit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from asd import __version__
from asd.errors import AsdError


class AsdGroup(click.Group):
    """Turns `AsdError` into `error: <message>` and exit code 2, without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AsdError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


def write_json(path: str | None, payload: dict) -> None:
    """`--json PATH`: the same dict the terminal table was printed from."""
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=float) + "\n")


@click.group(cls=AsdGroup)
@click.version_option(__version__, prog_name="asd")
def main():
    """asd — adaptive speculative decoding: decide per request at which tier of a model
    ladder to stop, trading GPU cost and latency against quality."""


@main.group(cls=AsdGroup)
def traces():
    """Import, inspect, validate, split and synthesise trace bundles."""


# --- traces commands (asd traces import/inspect/validate/split/synth/merge) ---


# --- engine commands ---


# --- record commands (asd record) ---


if __name__ == "__main__":
    main()
