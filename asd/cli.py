"""The `asd` command line: thin — parse options, call one function, print.

User mistakes raise `AsdError`, printed here as one line with a non-zero exit.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path

import click

from asd import __version__
from asd.errors import AsdError, ConfigError
from asd.fsutil import atomic_write, check_writable_file, finite_json


class AsdGroup(click.Group):
    """Turns `AsdError` into `error: <message>` and exit code 2, without a traceback; an OS
    error that escaped the library (permission, disk full) likewise, naming its path.

    Exit codes: 0 success; 1 a check found problems (`asd traces validate` on an invalid
    bundle); 2 a usage error (bad option or input, missing file or bundle), as click's own;
    130 interrupted (Ctrl-C), as a shell reports SIGINT."""

    def invoke(self, ctx):
        with warnings.catch_warnings():  # restores Python's own printer afterwards (CliRunner in tests)
            warnings.showwarning = _warning_line
            _WARNED.clear()  # once per text and command (a group invokes its subcommand's group too)
            try:
                return self._invoke(ctx)
            finally:
                _remove_made_dirs_left_empty()

    def make_context(self, info_name, args, parent=None, **extra):
        try:  # the group's own options (`asd --bad`), parsed before invoke
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            _usage_error_line(exc, info_name or "asd")

    def _invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise  # the help screen, as asked for
        except click.UsageError as exc:
            _usage_error_line(exc, ctx.command_path)
        except AsdError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(getattr(exc, "exit_code", 2))
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(2)
        except (KeyboardInterrupt, click.exceptions.Abort):
            # Ctrl-C where no command handles it (loading, calibrating, probing servers): click's
            # "Aborted!" and exit 1 read as a failure; every output is written whole or not at all
            click.echo("error: interrupted; no output was left half-written", err=True)
            sys.exit(130)


def _usage_error_line(exc: click.UsageError, command_path: str):
    """A bad option or argument as one `error:` line naming the command, as every other mistake
    gets, in place of click's usage screen; exit 2 as click's own."""
    where = exc.ctx.command_path if exc.ctx is not None else command_path
    click.echo(f"error: {where}: {exc.format_message()} (see '{where} --help')", err=True)
    sys.exit(2)


_WARNED: set[str] = set()


def _warning_line(message, category, filename, lineno, file=None, line=None):
    """A library warning (e.g. a tier with no observed acceptance) as one `warning:` line on
    stderr, not Python's file:line: Category: text plus the source line; once per text (each
    fold's calibration gave the same line again: ten of them on a two-tier bundle)."""
    text = f"warning: {message}"
    if text not in _WARNED:
        _WARNED.add(text)
        click.echo(text, err=True)


class BundleArg(click.ParamType):
    """A trace bundle to read: a directory or `builtin`. Commands open it with
    `asd.traces.bundle.open_bundle`, which validates it; tests/traces/test_damaged_bundles.py
    runs every command with an argument of this type over a corpus of damaged bundles."""

    name = "bundle"

    def convert(self, value, param, ctx):
        if not str(value).strip():  # Path("") is the working directory: never what an empty argument meant
            self.fail("bundle path is empty", param, ctx)
        return str(value)


BUNDLE = BundleArg()


class FloatRange(click.FloatRange):
    """click.FloatRange that refuses nan too (nan fails every comparison, so click's bounds
    let it through: `--threshold nan` counted nothing as acceptable), and ±inf (an unbounded
    side let it through: `live --deadline inf` never stopped waiting)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number.", param, ctx)
        if math.isinf(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def write_json(path: str | None, payload: dict) -> None:
    """`--json PATH`: the same dict the terminal table was printed from."""
    if path:
        try:
            atomic_write(path, (json.dumps(finite_json(payload), indent=2, default=float, allow_nan=False) + "\n").encode())
        except OSError as exc:
            raise AsdError(f"{path}: cannot write --json ({exc.strerror or exc})") from None


class JsonPath(click.Path):
    """`--json PATH` (and every other file an option names): a file (dir_okay=False) that must be
    writable, checked when the option is parsed, before any work starts — as one `error:` line
    rather than a usage screen. Missing folders on its path are made when it is written
    (`asd.fsutil.atomic_file`), as for every output of asd."""

    def __init__(self, option: str = "--json"):
        super().__init__(dir_okay=False)
        self.option = option

    def convert(self, value, param, ctx):
        check_writable_file(value, self.option)
        return super().convert(value, param, ctx)


# --plots directories the running command made, deepest first: removed again where the command
# ends leaving them empty (refused or failed before any plot), so a mistake leaves nothing behind.
_MADE_DIRS: list[Path] = []


def _remove_made_dirs_left_empty() -> None:
    while _MADE_DIRS:
        try:
            _MADE_DIRS.pop(0).rmdir()  # only an empty directory goes
        except OSError:
            _MADE_DIRS.clear()  # not empty (plots written), or gone: its parents stay too


class PlotsDir(click.Path):
    """`--plots DIR`: made when the option is parsed, so that a path that cannot be a directory
    is one `error:` line before any calibration, not after it, and another output may go inside
    it (`--json out/r.json --plots out`, in either order: it is eager, parsed before the other
    options); removed again if the command leaves it empty."""

    def __init__(self):
        super().__init__(file_okay=False)

    def convert(self, value, param, ctx):
        from asd.simulator.plots import plots_dir

        if Path(value).is_file():  # one line, where click would print a usage screen
            raise AsdError(f"{value}: cannot create --plots directory (it is a file)")
        value = super().convert(value, param, ctx)
        # resolved first: "new/../kept" must not count the existing kept/ as made here
        missing, path = [], Path(value).resolve()
        while not path.exists() and path != path.parent:
            missing.append(path)
            path = path.parent
        try:
            plots_dir(value)
        except ConfigError as exc:
            raise AsdError(str(exc)) from None
        _MADE_DIRS.extend(missing)
        return value


def refuse_overwriting_inputs(inputs: dict, outputs: dict, command: str | None = None) -> None:
    """Before any work: an output that is one of the command's input files (by path, link or
    hard link), lies inside an input bundle (the built-in trace's directory too) or over a file
    inside an input directory, or is another output's path, or one of the files `command`
    writes into its `--plots` directory (`plots.PLOT_FILES`), is one `error:` line (each was
    silently overwritten: `--json` over the `--policy` it read or over the bundle's manifest,
    `-o` over the bundle's own Parquet, `--save-policy D/latency.png` by the plot of that name).
    inputs / outputs: option name → path (None: not given)."""
    from asd.traces.bundle import builtin_bundle_path, is_builtin

    def where(path):
        if path in (None, ""):
            return None
        try:
            return Path(path).resolve()
        except (OSError, RuntimeError):  # a symbolic-link loop: the bundle's own check names it
            return Path(os.path.abspath(path))

    def same_file(a: Path, b: Path) -> bool:
        try:
            return a == b or (a.is_file() and b.is_file() and os.path.samefile(a, b))
        except OSError:
            return False

    given_in = {name: where(builtin_bundle_path() if is_builtin(p) else p)
                for name, p in inputs.items() if p is not None}
    seen: dict[Path, str] = {}
    if command is not None and outputs.get("--plots") not in (None, ""):
        from asd.simulator.plots import PLOT_FILES, check_plot_files

        check_plot_files(outputs["--plots"], command)
        seen |= {where(Path(outputs["--plots"]) / name): "a plot that --plots writes there"
                 for name in PLOT_FILES[command]}
    for name, path in ((n, where(p)) for n, p in outputs.items()):
        if path is None:
            continue
        for in_name, in_path in given_in.items():
            if in_path is None:
                continue
            if same_file(path, in_path):
                raise AsdError(f"{name} {outputs[name]}: is also {in_name}, which it would overwrite; write it elsewhere")
            if in_path.is_dir() and in_path in path.parents:
                if is_builtin(inputs[in_name]):
                    what = f"the built-in trace's bundle {in_path}"
                elif (in_path / "manifest.json").is_file():
                    what = f"the bundle {inputs[in_name]}"
                elif path.exists():  # a new file beside an importer's sources harms none of them
                    what = f"{in_name} {inputs[in_name]}"
                else:
                    continue
                raise AsdError(f"{name} {outputs[name]}: lies inside {what} this command reads, which it would "
                               "damage; write it elsewhere")
        if path in seen:
            raise AsdError(f"{name} {outputs[name]}: is also {seen[path]}; give each output its own path")
        seen[path] = name
        # Inside the bundle `-o` writes (`--json B/manifest.json` replaced the manifest of the
        # bundle just imported, which then failed validation) or inside any other bundle.
        # --plots is a folder the other outputs may go into.
        for other, other_path in ((n, where(p)) for n, p in outputs.items() if n not in (name, "--plots")):
            if other_path is not None and other_path in path.parents:
                raise AsdError(f"{name} {outputs[name]}: lies inside {other} {outputs[other]}, which this command "
                               "writes; write it elsewhere")
        bundle = next((d for d in path.parents if (d / "manifest.json").is_file()
                       and (d / "requests.parquet").is_file()), None)
        if bundle is not None:
            raise AsdError(f"{name} {outputs[name]}: lies inside the bundle {bundle}, which it would damage; "
                           "write it elsewhere")


def json_option(help: str):
    """The `--json PATH` option every command shares."""
    return click.option("--json", "json_path", default=None, type=JsonPath(), help=help)


@click.group(cls=AsdGroup)
@click.version_option(__version__, prog_name="asd")
def main():
    """asd — adaptive speculative decoding: decide per request at which tier of a model
    ladder to stop, trading GPU cost and latency against quality."""


@main.group(cls=AsdGroup, short_help="Import, inspect, validate, split, merge, synth trace bundles.")
def traces():
    """Import, inspect, validate, split, merge and synthesise trace bundles."""


# --- traces commands (asd traces import/inspect/validate/split/synth/merge) ---


from asd.traces.importers import IMPORTERS, import_trace, summary_lines  # noqa: E402


def _formats_epilog() -> str:
    """`asd traces import --help`'s list of formats, each summary wrapped to fit 80 columns
    (a `\\b` paragraph is printed as it is, so click would not wrap it)."""
    import textwrap

    lines = ["\b", "Formats:"]
    for name, cls in IMPORTERS.items():
        wrapped = textwrap.wrap(cls.summary, width=59)  # 80 − the epilog's indent (2) − 2 − 15 − 2
        lines += [f"  {name:<14} {wrapped[0]}"] + [f"  {'':<14} {rest}" for rest in wrapped[1:]]
    return "\n".join(lines)


@traces.command("import", short_help="Import outside results as a trace bundle.", epilog=_formats_epilog())
@click.argument("fmt", metavar="FORMAT", type=click.Choice(list(IMPORTERS)))
@click.argument("src", metavar="SRC", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--tiers", help="jsonl/csv (required): NAME[:PARAMS_B[:TP]],... in ladder order (TP: tensor-parallel "
                              "GPUs; a NAME may hold ':', as llama3:8b).")
@click.option("--models", help="mmlu-pro/alpaca-eval/option-logits (required): model names as in the data, "
                               "comma-separated, in ladder order.")
@click.option("--annotator", help="alpaca-eval: judge whose preferences give quality (default: one labelling every model; 'none': no labels).")
@click.option("--prompt-style", help="option-logits: base, shared or task (default task).")
@click.option("--icl-demos", type=int, help="option-logits: 0 or 1 in-context demos (default 1).")
@click.option("--source-repo", help="spec-bench: the fork whose runs are read (default: yukiki-jc/Spec-Bench).")
@click.option("--dataset", help="spec-bench: question set (default spec_bench).")
@click.option("--method", help="spec-bench: draft-model run whose accepted lengths give drafts (default sps-68m).")
@click.option("--verify-model", help="spec-bench: the verify tier (default vicuna-7b-v1.3).")
@click.option("--params-b", "params_b", metavar="NAME=B,...",
              help="Parameter counts in billions for tiers whose name does not say (e.g. Mixtral-8x7B-v0.1=46.7).")
@click.option("--drop-incomplete", is_flag=True, help="Drop requests missing a tier (counted) instead of failing.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at -o.")
@json_option("Also write the summary as JSON.")
def traces_import(fmt, src, out, overwrite, json_path, **options):
    """Import outside results SRC (a file or directory) in FORMAT as a trace bundle.

    \b
    asd traces import jsonl runs.jsonl -o bundle \\
        --tiers llama-8b:8:1,llama-70b:70:4
    asd traces import mmlu-pro DIR -o bundle \\
        --models Meta-Llama-3_1-8B,Meta-Llama-3_1-70B
    """
    refuse_overwriting_inputs({"SRC": src}, {"-o": out, "--json": json_path})
    summary = import_trace(fmt, src, out, overwrite=overwrite, **options)
    for line in summary_lines(summary):
        click.echo(line)
    write_json(json_path, summary)


@traces.command("validate", short_help="Check a bundle against the trace schema; exit 1 if invalid.")
@click.argument("bundle", type=BUNDLE)
@click.option("--max-problems", default=20, show_default=True, type=click.IntRange(1), help="Stop after this many problems.")
@json_option("Also write the result as JSON here.")
def traces_validate(bundle, max_problems, json_path):
    """Check BUNDLE (a directory, or `builtin`) against trace schema v1: version, column
    types, keys, value ranges. Prints each problem as `file: column 'x' row N: message`
    (rows 0-based) and exits 1 when there is any (an invalid bundle); a BUNDLE that is not
    there is a usage error: one line, exit 2."""
    from asd.traces.bundle import open_bundle, resolve_bundle_path
    from asd.traces.validate import validate_bundle

    if not resolve_bundle_path(bundle).is_dir():
        open_bundle(bundle)  # nothing to validate: the one-line usage error inspect gives (exit 2)
    refuse_overwriting_inputs({"BUNDLE": bundle}, {"--json": json_path})
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


@traces.command("inspect", short_help="Summarise a bundle: tiers, quality, signals, oracle.")
@click.argument("bundle", default="builtin", type=BUNDLE)
@click.option("--threshold", default=0.5, show_default=True, type=FloatRange(0, 1),
              help="Quality at or above which an answer counts as acceptable (where `accepted` is null).")
@json_option("Write the summary as JSON here.")
def traces_inspect(bundle, threshold, json_path):
    """Summarise BUNDLE (default: the built-in trace): tiers, per-tier quality and token
    counts, recorded signals, pairwise agreement of tier labels, and the oracle (cheapest
    acceptable tier) quality and cost share. Refuses a bundle that fails `asd traces validate`."""
    from asd.traces.bundle import open_bundle
    from asd.traces.summary import summarize_bundle
    from asd.traces.summary_view import print_summary

    refuse_overwriting_inputs({"BUNDLE": bundle}, {"--json": json_path})
    summary = summarize_bundle(open_bundle(bundle), threshold=threshold)  # validated: numbers from a broken bundle mislead
    summary["path"] = bundle  # as the user named it ("builtin" rather than site-packages)
    print_summary(summary)
    write_json(json_path, summary)


@traces.command("split", short_help="Split a bundle's requests into calibration and test.")
@click.argument("bundle", type=BUNDLE)
@click.option("--test-frac", default=0.3, show_default=True, type=float, help="Share of requests (per task) held out for test.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Write a split copy here instead of updating BUNDLE in place.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@json_option("Write the split counts as JSON here.")
def traces_split(bundle, test_frac, seed, out, overwrite, json_path):
    """Split BUNDLE's requests into calibration and test, by request, stratified by task,
    reproducible for a seed. Stored in the `split` column of requests.parquet (`builtin` is
    read-only: split a copy with -o OUT)."""
    from asd.traces.bundle import resolve_bundle_path
    from asd.traces.split import split_bundle

    try:
        if out is not None and Path(out).resolve() == resolve_bundle_path(bundle).resolve():
            out = None  # a copy onto itself is the in-place split (as it was before outputs were checked)
    except (OSError, RuntimeError):  # a symbolic-link loop: opening the bundle names it
        pass
    refuse_overwriting_inputs({"BUNDLE": bundle}, {"-o": out, "--json": json_path})
    result = split_bundle(bundle, test_frac=test_frac, seed=seed, out=out, overwrite=overwrite)
    click.echo(f"{result['bundle']}: {result['n_calibration']} calibration, {result['n_test']} test "
               f"request{'s' if result['n_test'] != 1 else ''} "
               f"({_strata(result['tasks'])}, seed {seed})")
    write_json(json_path, result)


def _strata(tasks: list[dict]) -> str:
    """'2 task(s) and requests without one': the split's strata, counted as inspect counts tasks."""
    named = sum(t["task"] is not None for t in tasks)
    return f"{named} task(s)" + (" and requests without one" if named < len(tasks) else "")


@traces.command("synth", short_help="Write a synthetic bundle (for tests and benchmarks).")
@click.option("-n", "--requests", "n_requests", required=True, type=int, help="Number of requests (10..10^6).")
@click.option("--tiers", "n_tiers", default=4, show_default=True, type=int, help="Number of tiers (2..8).")
@click.option("--seed", required=True, type=click.IntRange(0))
@click.option("--informativeness", default=0.6, show_default=True, type=float,
              help="How much the logprob signals tell about correctness: 0 = noise, 1 = perfect.")
@click.option("--tasks", "n_tasks", default=4, show_default=True, type=click.IntRange(1),
              help="Number of tasks (each shifts the requests' difficulty).")
@click.option("--token-lists", is_flag=True, help="Also write per-token logprob/entropy lists (large).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Bundle directory to write.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def traces_synth(n_requests, n_tiers, seed, informativeness, n_tasks, token_lists, out, overwrite):
    """Write a SYNTHETIC bundle (for tests and benchmarks only): each tier's correctness
    correlated through a latent difficulty, logprob-like signals, token counts, timings,
    arrival times, drafts."""
    from asd.traces.synth import write_synthetic_bundle

    bundle = write_synthetic_bundle(out, n_requests, n_tiers, seed, overwrite=overwrite,
                                    informativeness=informativeness, n_tasks=n_tasks, token_lists=token_lists)
    click.echo(f"{out}: synthetic bundle, {n_requests} requests, tiers {', '.join(bundle.tier_names)} (seed {seed})")


@traces.command("merge", short_help="Join bundles recorded as shards (asd record --shard).")
@click.argument("bundles", nargs=-1, required=True, type=BUNDLE)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Bundle directory to write.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def traces_merge(bundles, out, overwrite):
    """Join BUNDLES recorded as shards (`asd record --shard i/n`) into OUT. Refuses bundles
    whose tiers or sampling differ, and requests present in more than one bundle."""
    from asd.traces.merge import merge_bundles

    refuse_overwriting_inputs({f"BUNDLES {b}": b for b in bundles}, {"-o": out})
    merged = merge_bundles(list(bundles), out, overwrite=overwrite)
    n = merged.read("requests", ["request_id"]).num_rows
    click.echo(f"{out}: merged {len(bundles)} bundles, {n} request{'s' if n != 1 else ''}")
    missing = merged.manifest["provenance"].get("missing_shards")
    if missing:
        _warn({"warnings": [f"shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} of the recording "
                            f"{'are' if len(missing) > 1 else 'is'} not among the bundles merged"]})


# --- calibration and simulation commands (asd calibrate / simulate / sweep) ---

COST_MODEL_HELP = ("trace: recorded timings; profile: the committed GPU hardware profile; params: parameters x "
                   "tokens (default: trace when every tier has recorded timings, else profile).")
EVAL_COST_MODEL_HELP = COST_MODEL_HELP.replace("(default: ", "(default: the --policy file's own, else ")
RISK_HELP = "mean, or lcb:G for a lower credible bound at level G in [0.5, 1) (e.g. lcb:0.9)."
# Each repeat is a whole K-fold calibration (minutes on a real ladder); 100 fold seeds put the
# mean's SD at a tenth of one draw's, and a typo like 1000 would run for days.
MAX_REPEATS = 100


def _progress(label):
    """A one-line progress note per fold on stderr (calibration is the long part); `what` says
    which of several runs (`asd sweep --repeats`: which fold seed)."""
    def note(k, n, what=None):
        click.echo(f"{label}: {what + ': ' if what else ''}calibrating {k + 1}/{n}", err=True)
    return note


@main.command("calibrate", short_help="Fit a policy file on a trace bundle.")
@click.argument("bundle", type=BUNDLE)
@click.option("-o", "--out", default=None, type=JsonPath("-o"),
              help="Policy file to write (.npz); required unless --predictor gbt-reference.")
@click.option("--predictor", default="logistic", show_default=True,
              type=click.Choice(["logistic", "mlp", "gbt-reference"]),
              help="gbt-reference: report its metrics only (not exportable to a policy).")
@click.option("--features", "groups", default=None,
              help="Comma-separated feature groups out of logprob, entropy, length, format, content, agreement, "
                   "draft (default: every group the trace supports).")
@click.option("--bins", "n_bins", default=None, type=click.IntRange(1),
              help="Bins per tier, each on its own requests, at quantiles of p̂ (tied p̂ leave some empty) (default: "
                   "4 × (√N/2 clamped to 4..20), fewer on tiny "
                   "bundles, each pooling its 4 neighbours on either side).")
@click.option("--risk", default="mean", show_default=True, help=RISK_HELP)
@click.option("--stage0/--no-stage0", default=True, show_default=True, help="Let the prompt alone choose a deeper start tier.")
@click.option("--prompt-text/--no-prompt-text", default=True, show_default=True,
              help="Stage 0 also reads the prompt's words with a TF-IDF logistic regression per tier; the policy "
                   "file then keeps the words and word pairs found in at least 2 (3 from 2,000 requests) "
                   "calibration prompts.")
@click.option("--cost-model", default=None, help=COST_MODEL_HELP)
@click.option("--split", default="calibration", show_default=True, help="Fit on this split when the bundle has one (else on every request).")
@click.option("--lambda", "lam", default=1.0, show_default=True, type=float,
              help="λ the policy is solved at: the cost charged for an unacceptable answer, in the cost model's unit "
                   "(GPU-ms under trace/profile). check, live and serve run the policy at this λ; simulate and "
                   "sweep search their own.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--plots", "plots", default=None, type=PlotsDir(), is_eager=True, help="Write the reliability diagram here.")
@json_option("Write the report as JSON.")
def calibrate_command(bundle, out, predictor, groups, n_bins, risk, stage0, prompt_text, cost_model, split, lam, seed, plots,
                      json_path):
    """Fit features, calibrated predictors, engine tables and the cost model on BUNDLE and
    write the policy file that simulate, check, live and serve run unchanged. Metrics are out of
    fold (K-fold grouped by request)."""
    from asd.calibration.calibrate import calibrate_to_file
    from asd.engine.policy import check_policy_target
    from asd.simulator.report import print_calibration

    if predictor == "gbt-reference":  # metrics only: nothing is binned, solved or priced, and no policy is written
        _warn_ignored(["out", "n_bins", "risk", "cost_model", "lam"], "with --predictor gbt-reference")
    elif out is None:
        raise click.UsageError("Missing option '-o' / '--out' (the policy file to write).")
    if not stage0:
        _warn_ignored(["prompt_text"], "with --no-stage0 (only stage 0 reads the prompt)")
    _answer_groups(groups)
    refuse_overwriting_inputs({"BUNDLE": bundle}, {"-o": out, "--json": json_path, "--plots": plots}, "calibrate")
    if out is not None and predictor != "gbt-reference":  # before the fitting, as Policy.save would after it
        check_policy_target(out)

    report = calibrate_to_file(bundle, out, predictor=predictor, groups=groups, n_bins=n_bins, risk=_risk(risk),
                               stage0=stage0, cost_model=cost_model, split=split, lam=lam, seed=seed, plots=plots,
                               prompt_text=prompt_text)
    print_calibration(report)
    write_json(json_path, report)


def _evaluation_options(f):
    for option in reversed([
        click.argument("bundle", default="builtin", type=BUNDLE),
        click.option("--split", default=None,
                     help="Replay on this split of a split bundle, calibrating on the rest (default: test when "
                          "the bundle has a split column)."),
        click.option("--folds", default=None, type=click.IntRange(2),
                     help="Pooled K-fold cross-fitting instead of --split (default: 5 when the bundle has no "
                          "split column)."),
        click.option("--cost-model", default=None, help=EVAL_COST_MODEL_HELP),
        click.option("--predictor", default="logistic", show_default=True, type=click.Choice(["logistic", "mlp"])),
        click.option("--stage0/--no-stage0", default=True, show_default=True),
        click.option("--risk", default="mean", show_default=True, help=RISK_HELP),
        click.option("--seed", default=0, show_default=True, type=click.IntRange(0)),
        click.option("--plots", default=None, type=PlotsDir(), is_eager=True, help="Write PNG plots here."),
        click.option("--policy", default=None, type=click.Path(dir_okay=False),
                     help="Replay this policy file (from `asd calibrate`) instead of calibrating one: on the test "
                          "split, else on every request; only the tuned baselines are fitted (--predictor, "
                          "--stage0 and --risk have no effect)."),
    ]):
        f = option(f)
    return f


def _des_options(pools: bool):
    """--mode, --rate, --arrivals, --cv, --scheduler (the DES's load) and with `pools` --replicas,
    --max-batch: one definition for `asd simulate`, `asd sweep` and `asd check`."""
    options = [
        click.option("--mode", default="replay", show_default=True, type=click.Choice(["replay", "des"]),
                     help="replay: each request alone (no contention); des: discrete-event simulation under load."),
        click.option("--rate", default=None, type=float,
                     help="des: arrival rate in requests per second (required unless --arrivals trace)."),
        click.option("--arrivals", default="poisson", show_default=True, type=click.Choice(["poisson", "gamma", "trace"]),
                     help="des: Poisson at --rate, bursty gamma gaps at --rate (--cv), or the trace's recorded offsets."),
        click.option("--cv", default=1.0, show_default=True, type=float,
                     help="des, gamma arrivals: coefficient of variation of the gaps (1 = Poisson; 2-4 is bursty)."),
        click.option("--scheduler", default="fifo", show_default=True, type=click.Choice(["fifo", "difficulty"]),
                     help="des: queue order at each tier; difficulty: the requests most likely to be answered there first."),
    ]
    if pools:
        options += [
            click.option("--replicas", default="1", show_default=True,
                         help="des: replicas per tier, one number or one per tier (1,1,2)."),
            click.option("--max-batch", default=256, show_default=True, type=click.IntRange(1, 2**31 - 1),
                         help="des: continuous-batching limit per replica (sequences in a batch)."),
            click.option("--kv-tokens", "kv_tokens", default=None,
                         help="des: KV-cache capacity per replica in tokens, one number or one per tier "
                              "(default: unlimited); a request waits until its prompt and output fit."),
        ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


@main.command("simulate", short_help="Choose λ for a latency limit on held-out requests, vs baselines.")
@_evaluation_options
@click.option("--tau-max", required=True, type=float, help="Latency limit in ms for the statistic --stat.")
@click.option("--stat", default="p95", show_default=True, type=click.Choice(["mean", "p50", "p95", "p99"]))
@_des_options(pools=True)
@click.option("--chrome-trace", "chrome_trace", default=None, type=JsonPath("--chrome-trace"),
              help="des: write the chosen policy's run as a chrome://tracing file (one span per request per tier).")
@click.option("--save-policy", "save_policy", default=None, type=JsonPath("--save-policy"),
              help="Also write the policy to deploy: fitted on every calibration request (up to 25,000, as each "
                   "fold's), solved at the λ the "
                   "deployment line's rule picks on them (within τ_max less its margin); check, live and serve "
                   "run it as it is.")
@click.option("--explain", "explain_id", default=None, metavar="REQUEST_ID",
              help="Also show this held-out request's walk: outputs, features, p̂, values, decisions.")
@json_option("Write the results as JSON.")
def simulate_command(bundle, split, folds, cost_model, predictor, stage0, risk, seed, plots, policy, tau_max, stat,
                     mode, rate, arrivals, cv, scheduler, replicas, max_batch, kv_tokens, chrome_trace, save_policy,
                     explain_id, json_path):
    """Replay BUNDLE (default: the built-in trace) under a calibrated cascade policy on held-out
    requests; choose λ: the best held-out quality among the distinct policies whose latency
    statistic stays within --tau-max; compare every baseline at the same limit."""
    from asd.simulator.report import print_explain, print_simulation
    from asd.simulator.job import run_simulate

    _warn_ignored_load(mode, arrivals, also=["replicas", "max_batch", "kv_tokens", "chrome_trace"])
    _warn_ignored_with_policy(policy)
    refuse_overwriting_inputs({"BUNDLE": bundle, "--policy": policy},
                              {"--json": json_path, "--chrome-trace": chrome_trace, "--plots": plots,
                               "--save-policy": save_policy}, "simulate")

    result = run_simulate(bundle, tau_max=tau_max, stat=stat, mode=mode, rate=rate, replicas=_replicas(replicas),
                          max_batch=max_batch, split=split, folds=folds,
                          cost_model=cost_model, predictor=predictor, stage0=stage0, risk=_risk(risk), seed=seed,
                          plots=plots, explain_id=explain_id, progress=_progress("simulate"), policy=policy,
                          scheduler=scheduler, arrivals=arrivals, cv=cv, chrome_trace=chrome_trace,
                          save_policy=save_policy, kv_tokens=_per_tier("--kv-tokens", kv_tokens))
    _warn(result)
    print_simulation(result)
    if result.get("explain"):
        print_explain(result["explain"])
    write_json(json_path, result)


@main.command("sweep", short_help="Quality/cost/latency frontiers of the policy and baselines.")
@_evaluation_options
@click.option("--ablate", default=None, type=click.Choice(["features", "risk"]), help="Also compare frontiers without each feature group, or across risk levels.")
@click.option("--csv", "csv_path", default=None, type=JsonPath("--csv"), help="Write every frontier point as CSV.")
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(1, MAX_REPEATS),
              help="Repeat the ≤ 2%-loss comparison over this many fold seeds (seed, seed+1, …; pooled folds "
                   "only) and print its mean, SD and range.")
@_des_options(pools=True)
@json_option("Write the frontiers as JSON.")
def sweep_command(bundle, split, folds, cost_model, predictor, stage0, risk, seed, plots, policy, ablate, csv_path,
                  repeats, mode, rate, arrivals, cv, scheduler, replicas, max_batch, kv_tokens, json_path):
    """The quality/cost/latency frontier, on held-out requests of BUNDLE (default: the built-in
    trace), of the policy (every distinct policy over λ) and of every baseline; then, at ≤ 2%
    quality loss against always-last, the GPU cost of the policy, of the best simple policy and
    of the oracle."""
    from asd.simulator.report import print_sweep
    from asd.simulator.sweep import run_sweep

    _warn_ignored_load(mode, arrivals, also=["replicas", "max_batch", "kv_tokens"])
    _warn_ignored_with_policy(policy)
    refuse_overwriting_inputs({"BUNDLE": bundle, "--policy": policy},
                              {"--json": json_path, "--csv": csv_path, "--plots": plots}, "sweep")
    result = run_sweep(bundle, split=split, folds=folds, cost_model=cost_model, predictor=predictor, stage0=stage0,
                       risk=_risk(risk), seed=seed, plots=plots, ablate=ablate, csv_path=csv_path,
                       progress=_progress("sweep"), policy=policy, repeats=repeats, mode=mode, rate=rate,
                       arrivals=arrivals, cv=cv, scheduler=scheduler, replicas=_replicas(replicas),
                       max_batch=max_batch, kv_tokens=_per_tier("--kv-tokens", kv_tokens))
    _warn(result)
    print_sweep(result)
    write_json(json_path, result)


def _warn_ignored_load(mode: str, arrivals: str, also=()) -> None:
    """The load options (and `also`, other des-only options) that have no effect for this mode
    and arrival process: one warning per reason."""
    if mode != "des":
        _warn_ignored(["rate", "arrivals", "cv", "scheduler", *also], "without --mode des")
        return
    if arrivals != "gamma":
        _warn_ignored(["cv"], "without --arrivals gamma")
    if arrivals == "trace":
        _warn_ignored(["rate"], "with --arrivals trace")


def _warn_ignored_with_policy(policy) -> None:
    """A given policy file is replayed as it was fitted: the fitting options do nothing."""
    if policy is not None:
        _warn_ignored(["predictor", "stage0", "risk"], "with --policy (the file is replayed as it was fitted)")


def _warn_ignored(names: list[str], reason: str) -> None:
    """One `warning:` line when options typed on the command line have no effect here (a
    default value is not the user's choice, so it is not warned about)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    params = {p.name: p for p in ctx.command.params}
    given = ["/".join(params[n].opts[-1:] + params[n].secondary_opts) for n in names
             if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
    if given:
        click.echo(f"warning: {', '.join(given)} {'has' if len(given) == 1 else 'have'} no effect {reason}; ignored",
                   err=True)


def _warn(result: dict) -> None:
    for warning in result.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)


@main.command("check", short_help="Test a policy's promises on trace bundles (for CI).")
@click.argument("policy", type=click.Path())  # a directory: Policy.load says so in one line
@click.argument("bundles", nargs=-1, required=True, type=BUNDLE)
@click.option("--min-quality", type=float, default=None, metavar="Q", help="Quality (mean score over labelled requests) >= Q.")
@click.option("--max-loss-vs-last", type=float, default=None, metavar="PCT",
              help="Quality loss against always-last on the same requests, in %, <= PCT.")
@click.option("--max-cost-rel", type=float, default=None, metavar="C", help="GPU cost relative to always-last <= C.")
@click.option("--max-latency", multiple=True, metavar="STAT=MS", help="Latency statistic (mean, p50, p95, p99) <= MS; repeatable.")
@click.option("--beat", multiple=True, metavar="BASELINE[:MARGIN]",
              help="quality >= BASELINE's − MARGIN and cost_rel <= BASELINE's + MARGIN (MARGIN absolute, default "
                   "0). BASELINE: always-<tier>, fixed-2stage, pipeline, threshold, router, random, protocol or "
                   "oracle (tuned ones picked at the policy's cost on calibration rows); repeatable.")
@click.option("--against", default=None, type=click.Path(), metavar="OLD_POLICY",
              help="Regression: fail where the new frontier over λ is below OLD_POLICY's by more than --tolerance at any cost level.")
@click.option("--tolerance", default=0.0, show_default=True, type=float, help="--against: allowed quality shortfall.")
@click.option("--split", default=None, help="Replay on this split (e.g. test) of a split bundle (default: test when there is one).")
@click.option("--folds", default=None, type=click.IntRange(2), help="Folds the tuned baselines are cross-fitted over without a split (default 5).")
@_des_options(pools=True)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--junit", "junit_path", default=None, type=JsonPath("--junit"), help="Write JUnit XML (one test case per bundle × promise).")
@json_option("Write the rows and figures as JSON.")
def check_command(policy, bundles, min_quality, max_loss_vs_last, max_cost_rel, max_latency, beat, against, tolerance,
                  split, folds, mode, rate, arrivals, cv, scheduler, replicas, max_batch, kv_tokens, seed, junit_path,
                  json_path):
    """Test POLICY's promises on every BUNDLE: replay each under the policy as it was saved and
    print one table (bundle, promise, measured, limit, result). Exit 0 when every promise
    holds, 1 when any fails, 2 on bad input (an incompatible policy is refused before any
    figure).

    \b
    asd check policy.npz my-trace --min-quality 0.8 --max-latency p95=800
    asd check policy.npz trace-a trace-b --max-cost-rel 0.6 --beat threshold
    asd check new.npz my-trace --against old.npz --tolerance 0.01 --junit ci.xml
    """
    from asd.simulator.check import check_policy, junit_xml
    from asd.simulator.report import print_check

    if against is None:
        _warn_ignored(["tolerance"], "without --against")
    if max_latency:
        _warn_ignored_load(mode, arrivals, also=["replicas", "max_batch", "kv_tokens"])
    else:  # the load shapes latencies alone, and no promise here is on latency
        _warn_ignored(["mode", "rate", "arrivals", "cv", "scheduler", "replicas", "max_batch", "kv_tokens"],
                      "without --max-latency")
        mode = "replay"
    refuse_overwriting_inputs({"POLICY": policy, "--against": against,
                               **{f"BUNDLE {b}": b for b in bundles}}, {"--json": json_path, "--junit": junit_path})

    result = check_policy(policy, list(bundles), min_quality=min_quality, max_loss_vs_last=max_loss_vs_last,
                          max_cost_rel=max_cost_rel, max_latency=list(max_latency), beat=list(beat), against=against,
                          tolerance=tolerance, split=split, folds=folds, mode=mode, rate=rate, seed=seed,
                          arrivals=arrivals, cv=cv, scheduler=scheduler, replicas=_replicas(replicas),
                          max_batch=max_batch, kv_tokens=_per_tier("--kv-tokens", kv_tokens))
    for report in result.bundles:
        for warning in report["warnings"]:
            click.echo(f"warning: {report['bundle']}: {warning}", err=True)
    print_check(result)
    write_json(json_path, result.to_dict())
    if junit_path:
        try:
            atomic_write(junit_path, junit_xml(result).encode())
        except OSError as exc:
            raise AsdError(f"{junit_path}: cannot write --junit ({exc.strerror or exc})") from None
    if not result.passed:
        sys.exit(1)


def _replicas(text: str):
    """`--replicas 2` or `--replicas 1,1,2` → an int or a list of ints."""
    from asd.simulator.des import MAX_REPLICAS

    return _per_tier("--replicas", text, MAX_REPLICAS)


def _per_tier(option: str, text: str | None, most: int = 2**62):
    """`OPTION 2` or `OPTION 1,1,2` → an int or a list of ints, each in [1, most]; None stays None."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise AsdError(f"{option} {text!r}: use a whole number or one per tier, e.g. 1,1,2") from None
    if any(v < 1 for v in values):
        raise AsdError(f"{option} {text!r}: every count must be >= 1")
    if any(v > most for v in values):
        raise AsdError(f"{option} {text!r}: at most {most} per tier")
    return values[0] if len(values) == 1 else values


def _answer_groups(groups: str | None) -> None:
    """--features naming only the groups every policy has (`stage`: tier index, cold start) fitted
    a policy that reads no answer at all (AUROC 0.5) without a word, as naming none did."""
    from asd.calibration.features import ALWAYS, GROUPS, parse_groups

    named = parse_groups(groups)
    if named is not None and set(named) <= set(ALWAYS):
        answer = [g for g in GROUPS if g not in ALWAYS]
        raise AsdError(f"--features {groups}: {', '.join(ALWAYS)} is always included; name at least one of "
                       f"{', '.join(answer)}")


def _risk(risk: str):
    """`mean` or `lcb:G` → the engine's risk argument."""
    if risk == "mean":
        return "mean"
    if risk.startswith("lcb:"):
        try:
            level = float(risk[4:])
        except ValueError:
            level = None
        if level is not None and 0.5 <= level < 1.0:  # checked here, not after the first fold's calibration
            return level
    raise AsdError(f"--risk {risk!r}: use mean or lcb:G with G in [0.5, 1), e.g. lcb:0.9")


# --- engine commands ---


# --- record commands (asd record) ---


from asd.live.labels import LABEL_MODES  # noqa: E402
from asd.live.record import DRAFT_MODES  # noqa: E402


@main.command("record", short_help="Run every tier over a prompt set; write a trace bundle.")
@click.option("--tiers", "tiers_path", required=True, type=click.Path(dir_okay=False), help="Tier ladder config (YAML or JSON), tiers in ladder order.")
@click.option("--prompts", "prompts_path", required=True, type=click.Path(dir_okay=False), help="Prompt set: JSONL, CSV or Parquet with prompt (request_id, reference, task optional).")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False), help="Bundle directory to write.")
@click.option("--shard", default=None, metavar="I/N", help="Record only slice I of N (0 <= I < N, by hash of request_id).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Record only the first LIMIT prompts of the file.")
@click.option("--drafts", type=click.Choice(DRAFT_MODES), default=DRAFT_MODES[0], show_default=True, help="Score each tier's output under every later tier, the next one, or none.")
@click.option("--label", type=click.Choice(LABEL_MODES), default=LABEL_MODES[0], show_default=True, help="Quality rule for prompts without a reference: agreement (the same text as the last tier's, normalised) or bleu (sacreBLEU > 0.8 against it; needs asd[bleu]).")
@click.option("--overwrite", is_flag=True, help="Re-record and replace an existing bundle.")
@click.option("--restart", is_flag=True, help="Discard the results of an unfinished run in OUTPUT.partial/ and start over (after changing the tier config or options).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@json_option("Write the summary as JSON.")
def record_command(tiers_path, prompts_path, out, shard, limit, drafts, label, overwrite, restart, no_progress, json_path):
    """Run every tier over a prompt set, score drafts under later tiers, write a trace bundle.

    Crash-safe and resumable: results are kept in OUTPUT.partial/ as they complete;
    rerun the same command to continue after a crash or kill, or add --restart to
    discard them and start over. A llama_cpp tier's context (`n_ctx`, or `auto`) is
    checked against the tokenised prompts before any model loads.
    """
    from asd.live.record import format_summary, record

    refuse_overwriting_inputs({"--tiers": tiers_path, "--prompts": prompts_path}, {"-o": out, "--json": json_path})
    summary = record(
        tiers_path, prompts_path, out, shard=shard, limit=limit, drafts=drafts, label=label,
        overwrite=overwrite, restart=restart, progress=not no_progress, command=" ".join(["asd"] + sys.argv[1:]),
    )
    click.echo(format_summary(summary))
    write_json(json_path, summary)


# --- live commands (asd serve, asd live) ---


@main.command("serve", short_help="OpenAI-compatible cascade endpoint over the tier servers.")
@click.option("--tiers", "tiers_path", required=True, type=click.Path(dir_okay=False),
              help="Tier ladder config (YAML/JSON): each tier's server URL (or a list of replica URLs).")
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False),
              help="Policy file from `asd calibrate` or `asd simulate --save-policy` (run at the λ it was solved at).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (other than loopback: needs --api-key).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--api-key", envvar="ASD_API_KEY", default=None, help="Bearer token required on every route but /health (env ASD_API_KEY).")
@click.option("--max-queue", default=256, show_default=True, type=click.IntRange(1), help="Requests admitted at once; beyond: 429 with Retry-After.")
@click.option("--feedback-file", default=None, type=click.Path(dir_okay=False), help="Where POST /v1/feedback counts persist (default: the --policy path with .feedback.json added).")
@click.option("--no-speculative", is_flag=True, help="Regenerate at each tier instead of continuing from the draft.")
def serve_command(tiers_path, policy_path, host, port, api_key, max_queue, feedback_file, no_speculative):
    """OpenAI-compatible endpoint in front of the cascade: POST /v1/completions and
    /v1/chat/completions (with an `asd` object: stopped_at_tier, tier_probabilities, cost,
    fallback), POST /v1/feedback, GET /health, /stats, /metrics (Prometheus)."""
    try:
        from asd.live.server import serve
    except ImportError as exc:
        raise ConfigError(f"asd serve needs {exc.name} (pip install 'asd[live]')") from None

    def announce():  # after the ladder and policy are checked: no banner above a refusal
        click.echo(f"asd serve: http://{host}:{port} (tiers {tiers_path}, policy {policy_path})", err=True)

    refuse_overwriting_inputs({"--tiers": tiers_path, "--policy": policy_path}, {"--feedback-file": feedback_file})
    serve(tiers_path, policy_path, host=host, port=port, api_key=api_key, max_queue=max_queue,
          feedback_path=feedback_file, speculative=not no_speculative, announce=announce)


@main.command("live", short_help="Run a policy on the real servers; measured vs simulated.")
@click.option("--tiers", "tiers_path", required=True, type=click.Path(dir_okay=False), help="Tier ladder config with each tier's server URL(s).")
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False),
              help="Policy file from `asd calibrate` or `asd simulate --save-policy` (run at the λ it was solved at).")
@click.option("--prompts", "prompts_path", required=True, type=click.Path(dir_okay=False), help="Prompt set (JSONL/CSV/Parquet, as for `asd record`).")
@click.option("--rate", type=FloatRange(min=0, min_open=True), default=None, metavar="R",
              help="Open loop: Poisson arrivals at R requests/s. Give this or --concurrency.")
@click.option("--concurrency", type=click.IntRange(1), default=None, metavar="C",
              help="Closed loop: C clients, each sending its next prompt when answered.")
@click.option("-n", "--limit", type=click.IntRange(1), default=None, help="Only the first N prompts.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="Seed of the arrival times.")
@click.option("-o", "--output", "out", default=None, type=click.Path(file_okay=False), help="Write the run as a trace bundle here (default: a temporary directory).")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at -o.")
@click.option("--deadline", "deadline_s", default=3600.0, show_default=True, type=FloatRange(min=1), help="Stop waiting this many seconds after the first request is sent; requests not answered by then count as errors.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option("Write measured vs simulated as JSON.")
def live_command(tiers_path, policy_path, prompts_path, rate, concurrency, limit, seed, out, overwrite, deadline_s,
                 no_progress, json_path):
    """Run POLICY on the real tier servers for a prompt set, record the run as a trace bundle,
    replay the same requests at the same arrival times in the simulator, and print measured
    vs simulated latency (mean/p50/p95/p99 with relative error), quality, stop distribution
    and GPU-seconds."""
    from asd.live.confirm import format_report, live

    if concurrency is not None:
        _warn_ignored(["seed"], "with --concurrency (it seeds the Poisson arrivals of --rate)")
    refuse_overwriting_inputs({"--tiers": tiers_path, "--policy": policy_path, "--prompts": prompts_path},
                              {"-o": out, "--json": json_path})
    report = live(tiers_path, policy_path, prompts_path, rate=rate, concurrency=concurrency, out=out, seed=seed,
                  limit=limit, deadline_s=deadline_s, overwrite=overwrite, progress=not no_progress,
                  command=" ".join(["asd"] + sys.argv[1:]))
    click.echo(format_report(report))
    write_json(json_path, report)
    if report["interrupted"]:  # what was answered is written; the run itself did not finish
        sys.exit(130)


if __name__ == "__main__":
    main()
