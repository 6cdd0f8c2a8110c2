"""The `asd` command line: thin — parse options, call one function, print.

User mistakes raise `AsdError`, printed here as one line with a non-zero exit.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from asd import __version__
from asd.errors import AsdError, TraceError


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
        try:
            Path(path).write_text(json.dumps(payload, indent=2, default=float) + "\n")
        except OSError as exc:
            raise AsdError(f"{path}: cannot write --json ({exc.strerror or exc})") from None


class JsonPath(click.Path):
    """`--json PATH`: a file (dir_okay=False) that must be writable, checked when the option is
    parsed, before any work starts — as one `error:` line rather than a usage screen."""

    def __init__(self):
        super().__init__(dir_okay=False)

    def convert(self, value, param, ctx):
        target = Path(value)
        parent = target.parent if str(target.parent) else Path(".")
        if target.is_dir():
            raise AsdError(f"{value}: cannot write --json (it is a directory)")
        if not parent.is_dir():
            raise AsdError(f"{value}: cannot write --json (no directory {parent})")
        if not os.access(target if target.exists() else parent, os.W_OK):
            raise AsdError(f"{value}: cannot write --json (permission denied)")
        return super().convert(value, param, ctx)


def json_option(help: str):
    """The `--json PATH` option every command shares."""
    return click.option("--json", "json_path", default=None, type=JsonPath(), help=help)


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
@json_option("Also write the summary as JSON.")
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


@traces.command("validate")
@click.argument("bundle")
@click.option("--max-problems", default=20, show_default=True, type=click.IntRange(1), help="Stop after this many problems.")
@json_option("Also write the result as JSON here.")
def traces_validate(bundle, max_problems, json_path):
    """Check BUNDLE (a directory, or `builtin`) against trace schema v1: version, column
    types, keys, value ranges. Prints each problem as `file: column 'x' row N: message`
    (rows 0-based) and exits 1 when there is any."""
    from asd.traces.validate import validate_bundle

    problems = validate_bundle(bundle, max_problems=max_problems)
    write_json(json_path, {"bundle": str(bundle), "valid": not problems, "problems": [
        {"file": p.file, "column": p.column, "row": p.row, "message": p.message} for p in problems]})
    if problems:
        for problem in problems:
            click.echo(str(problem), err=True)
        more = " (first ones; raise --max-problems for more)" if len(problems) == max_problems else ""
        click.echo(f"error: {bundle}: {len(problems)} problem(s){more}", err=True)
        sys.exit(1)
    click.echo(f"ok: {bundle} is a valid trace bundle (schema v1)")


@traces.command("inspect")
@click.argument("bundle", default="builtin")
@click.option("--threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Quality at or above which an answer counts as acceptable (where `accepted` is null).")
@json_option("Write the summary as JSON here.")
def traces_inspect(bundle, threshold, json_path):
    """Summarise BUNDLE (default: the built-in trace): tiers, per-tier quality and token
    counts, recorded signals, pairwise agreement of tier labels, and the oracle (cheapest
    acceptable tier) quality and cost share. Refuses a bundle that fails `asd traces validate`."""
    from asd.traces.bundle import open_bundle
    from asd.traces.summary import summarize_bundle
    from asd.traces.summary_view import print_summary
    from asd.traces.validate import validate_bundle

    opened = open_bundle(bundle)
    problems = validate_bundle(opened, max_problems=1)  # numbers from a broken bundle mislead
    if problems:
        raise TraceError(f"{bundle}: {problems[0]}; run `asd traces validate {bundle}` for all problems")
    summary = summarize_bundle(opened, threshold=threshold)
    summary["path"] = bundle  # as the user named it ("builtin" rather than site-packages)
    print_summary(summary)
    write_json(json_path, summary)


@traces.command("split")
@click.argument("bundle")
@click.option("--test-frac", default=0.3, show_default=True, type=float, help="Share of requests (per task) held out for test.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Write a split copy here instead of updating BUNDLE in place.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@json_option("Write the split counts as JSON here.")
def traces_split(bundle, test_frac, seed, out, overwrite, json_path):
    """Split BUNDLE's requests into calibration and test, by request, stratified by task,
    reproducible for a seed. Stored in the `split` column of requests.parquet (`builtin` is
    read-only: split a copy with -o OUT)."""
    from asd.traces.split import split_bundle

    result = split_bundle(bundle, test_frac=test_frac, seed=seed, out=out, overwrite=overwrite)
    click.echo(f"{result['bundle']}: {result['n_calibration']} calibration, {result['n_test']} test requests "
               f"({len(result['tasks'])} task(s), seed {seed})")
    write_json(json_path, result)


@traces.command("synth")
@click.option("-n", "--requests", "n_requests", required=True, type=int, help="Number of requests (10..10^6).")
@click.option("--tiers", "n_tiers", default=4, show_default=True, type=int, help="Number of tiers (2..8).")
@click.option("--seed", required=True, type=int)
@click.option("--informativeness", default=0.6, show_default=True, type=float,
              help="How much the logprob signals tell about correctness: 0 = noise, 1 = perfect.")
@click.option("--tasks", "n_tasks", default=4, show_default=True, type=click.IntRange(1))
@click.option("--token-lists", is_flag=True, help="Also write per-token logprob/entropy lists (large).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def traces_synth(n_requests, n_tiers, seed, informativeness, n_tasks, token_lists, out, overwrite):
    """Write a SYNTHETIC bundle (for tests and benchmarks only): correlated per-tier
    correctness from a latent difficulty, logprob-like signals, token counts, timings, drafts."""
    from asd.traces.synth import write_synthetic_bundle

    bundle = write_synthetic_bundle(out, n_requests, n_tiers, seed, overwrite=overwrite,
                                    informativeness=informativeness, n_tasks=n_tasks, token_lists=token_lists)
    click.echo(f"{out}: synthetic bundle, {n_requests} requests, tiers {', '.join(bundle.tier_names)} (seed {seed})")


@traces.command("merge")
@click.argument("bundles", nargs=-1, required=True)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def traces_merge(bundles, out, overwrite):
    """Join BUNDLES recorded as shards (`asd record --shard i/n`) into OUT. Refuses bundles
    whose tiers or sampling differ, and requests present in more than one bundle."""
    from asd.traces.merge import merge_bundles

    merged = merge_bundles(list(bundles), out, overwrite=overwrite)
    n = merged.read("requests", ["request_id"]).num_rows
    click.echo(f"{out}: merged {len(bundles)} bundles, {n} requests")


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
@json_option("Write the summary as JSON.")
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


# --- live commands (asd serve, asd live) ---


@main.command("serve")
@click.option("--tiers", "tiers_path", required=True, type=click.Path(dir_okay=False),
              help="Tier ladder config (YAML/JSON): each tier's server URL (or a list of replica URLs).")
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False), help="Policy file from `asd calibrate`.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (beyond loopback only with --api-key).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--api-key", envvar="ASD_API_KEY", default=None, help="Bearer token required on every route but /health (env ASD_API_KEY).")
@click.option("--max-queue", default=256, show_default=True, type=click.IntRange(1), help="Requests admitted at once; beyond: 429 with Retry-After.")
@click.option("--feedback-file", default=None, type=click.Path(dir_okay=False), help="Where POST /v1/feedback counts persist (default POLICY.feedback.json).")
@click.option("--no-speculative", is_flag=True, help="Regenerate at each tier instead of continuing from the draft.")
def serve_command(tiers_path, policy_path, host, port, api_key, max_queue, feedback_file, no_speculative):
    """OpenAI-compatible endpoint in front of the cascade: POST /v1/completions and
    /v1/chat/completions (with an `asd` object: stopped_at_tier, tier_probabilities, cost,
    fallback), POST /v1/feedback, GET /health, /stats, /metrics (Prometheus)."""
    from asd.live.server import serve

    click.echo(f"asd serve: http://{host}:{port} (tiers {tiers_path}, policy {policy_path})", err=True)
    serve(tiers_path, policy_path, host=host, port=port, api_key=api_key, max_queue=max_queue,
          feedback_path=feedback_file, speculative=not no_speculative)


@main.command("live")
@click.option("--tiers", "tiers_path", required=True, type=click.Path(dir_okay=False), help="Tier ladder config with each tier's server URL(s).")
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False), help="Policy file from `asd calibrate`.")
@click.option("--prompts", "prompts_path", required=True, type=click.Path(dir_okay=False), help="Prompt set (JSONL/CSV/Parquet, as for `asd record`).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="Open loop: Poisson arrivals at R requests/s.")
@click.option("--concurrency", type=click.IntRange(1), default=None, help="Closed loop: C clients, each sending its next prompt when answered.")
@click.option("-n", "--limit", type=click.IntRange(1), default=None, help="Only the first N prompts.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the arrival times.")
@click.option("-o", "--output", "out", default=None, type=click.Path(file_okay=False), help="Write the run as a trace bundle here (default: a temporary directory).")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at -o.")
@click.option("--deadline", "deadline_s", default=3600.0, show_default=True, type=click.FloatRange(min=1), help="Stop waiting for answers after this many seconds.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option("Write measured vs simulated as JSON.")
def live_command(tiers_path, policy_path, prompts_path, rate, concurrency, limit, seed, out, overwrite, deadline_s,
                 no_progress, json_path):
    """Run POLICY on the real tier servers for a prompt set, record the run as a trace bundle,
    replay the same requests at the same arrival times in the simulator, and print measured
    vs simulated latency (mean/p50/p95/p99 with relative error), quality, stop distribution
    and GPU-seconds."""
    from asd.live.confirm import format_report, live

    report = live(tiers_path, policy_path, prompts_path, rate=rate, concurrency=concurrency, out=out, seed=seed,
                  limit=limit, deadline_s=deadline_s, overwrite=overwrite, progress=not no_progress,
                  command=" ".join(["asd"] + sys.argv[1:]))
    click.echo(format_report(report))
    write_json(json_path, report)


if __name__ == "__main__":
    main()
