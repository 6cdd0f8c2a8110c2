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


from asd.traces.importers import IMPORTERS, import_trace, summary_lines  # noqa: E402


@traces.command(
    "import",
    epilog="\b\nFormats:\n" + "\n".join(f"  {name:<14} {cls.summary}" for name, cls in IMPORTERS.items()),
)
@click.argument("fmt", metavar="FORMAT", type=click.Choice(list(IMPORTERS)))
@click.argument("src", metavar="SRC", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--tiers", help="jsonl/csv: NAME[:PARAMS_B[:TP]],... in ladder order.")
@click.option("--models", help="mmlu-pro/alpaca-eval/option-logits: model names as in the data, ladder order.")
@click.option("--annotator", help="alpaca-eval: judge whose preferences give quality (default: one labelling every model; 'none': no labels).")
@click.option("--prompt-style", help="option-logits: base, shared or task (default task).")
@click.option("--icl-demos", type=int, help="option-logits: 0 or 1 in-context demos (default 1).")
@click.option("--source-repo", help="spec-bench: which fork's runs (default yukiki-jc/Spec-Bench).")
@click.option("--dataset", help="spec-bench: question set (default spec_bench).")
@click.option("--method", help="spec-bench: draft-model run whose accepted lengths give drafts (default sps-68m).")
@click.option("--verify-model", help="spec-bench: the verify tier (default vicuna-7b-v1.3).")
@click.option("--drop-incomplete", is_flag=True, help="Drop requests missing a tier (counted) instead of failing.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at -o.")
@click.option("--json", "json_path", type=click.Path(), help="Also write the summary as JSON.")
def traces_import(fmt, src, out, overwrite, json_path, **options):
    """Import outside results SRC (a file or directory) in FORMAT as a trace bundle.

    \b
    asd traces import jsonl runs.jsonl --tiers llama-8b:8:1,llama-70b:70:4 -o bundle
    asd traces import mmlu-pro DIR --models Meta-Llama-3_1-8B,Meta-Llama-3_1-70B -o bundle
    """
    summary = import_trace(fmt, src, out, overwrite=overwrite, **options)
    for line in summary_lines(summary):
        click.echo(line)
    write_json(json_path, summary)


# --- engine commands ---


# --- record commands (asd record) ---


if __name__ == "__main__":
    main()
