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


@main.command("record")
@click.option("--tiers", "tiers_path", required=True, type=click.Path(dir_okay=False), help="Tier ladder config (YAML or JSON), tiers in ladder order.")
@click.option("--prompts", "prompts_path", required=True, type=click.Path(dir_okay=False), help="Prompt set: JSONL, CSV or Parquet with prompt (request_id, reference, task optional).")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False), help="Bundle directory to write.")
@click.option("--shard", default=None, metavar="I/N", help="Record only slice I of N (0 <= I < N, by hash of request_id).")
@click.option("--drafts", type=click.Choice(["all", "next", "none"]), default="all", show_default=True, help="Score each tier's output under every later tier, the next one, or none.")
@click.option("--label", type=click.Choice(["agreement", "bleu"]), default="agreement", show_default=True, help="Quality rule for prompts without a reference (vs the last tier).")
@click.option("--overwrite", is_flag=True, help="Re-record and replace an existing bundle.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="Write the summary as JSON.")
def record_command(tiers_path, prompts_path, out, shard, drafts, label, overwrite, no_progress, json_path):
    """Run every tier over a prompt set, score drafts under later tiers, write a trace bundle.

    Crash-safe and resumable: results are kept in OUTPUT.partial/ as they complete;
    rerun the same command to continue after a crash or kill.
    """
    from asd.live.record import format_summary, record

    summary = record(
        tiers_path, prompts_path, out, shard=shard, drafts=drafts, label=label,
        overwrite=overwrite, progress=not no_progress, command=" ".join(["asd"] + sys.argv[1:]),
    )
    click.echo(format_summary(summary))
    write_json(json_path, summary)


if __name__ == "__main__":
    main()
