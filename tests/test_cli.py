"""The messages and tables a new user meets on the command line: counts that mean what the
README says, table cells kept whole, one-line errors that name the real flag and the line,
exit codes (1 = invalid bundle, 2 = usage error)."""

from __future__ import annotations

import json
import re

import pandas as pd
from click.testing import CliRunner

from asd.cli import main, record_command
from asd.live.labels import LABEL_MODES
from asd.live.record import DRAFT_MODES
from asd.traces.bundle import builtin_bundle_path, new_manifest, write_bundle


def run(*args, **env):
    return CliRunner(env={"COLUMNS": "80", **env}).invoke(main, [str(a) for a in args])


def one_error_line(result, exit_code=2) -> str:
    assert result.exit_code == exit_code, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: "), result.output
    return result.output.rstrip("\n")


def small_bundle(path, tiers=("tiny-model-with-a-rather-long-name", "big"), n=1, validate=True, **manifest_fields):
    manifest = new_manifest([{"name": t, "params_b": float(i + 1)} for i, t in enumerate(tiers)], **manifest_fields)
    ids = [f"r{i}" for i in range(n)]
    outputs = {"request_id": [r for r in ids for _ in tiers], "tier": [k for _ in ids for k in range(len(tiers))],
               "output": ["x"] * (n * len(tiers)), "quality": [1.0] * (n * len(tiers))}
    write_bundle(path, manifest, {"request_id": ids}, outputs, validate=validate)
    return path


def test_inspect_n_counts_recorded_outputs_so_spec_bench_draft_tier_shows_0(shared_data, tmp_path):
    assert run("traces", "import", "spec-bench", shared_data / "spec_bench", "-o", tmp_path / "sb").exit_code == 0
    result = run("traces", "inspect", tmp_path / "sb", "--json", tmp_path / "s.json")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    draft, verify = summary["tiers"]
    assert (draft["n_outputs"], verify["n_outputs"]) == (0, 560) and summary["n_outputs"] == 560
    rows = {}  # the tiers table comes first; later tables start with tier names too
    for line in result.output.splitlines():
        if line.strip().startswith((draft["name"], verify["name"])):
            rows.setdefault(line.split()[0], line.split())
    assert rows[draft["name"]][2] == "0" and rows[verify["name"]][2] == "560"  # columns: tier, B, n, ...


def test_inspect_keeps_tier_names_whole_at_80_columns(tmp_path):
    long_names = ("vicuna-68m-draft-model-for-speculation", "vicuna-7b-v1.3-verifier-tier")
    manifest = new_manifest([{"name": n, "params_b": float(i + 1)} for i, n in enumerate(long_names)])
    outputs = {"request_id": ["r0", "r0"], "tier": [0, 1], "output": ["a", "a"], "quality": [1.0, 0.0]}
    drafts = {"request_id": ["r0"], "draft_tier": [0], "verify_tier": [1], "n_draft_tokens": [4], "n_accepted": [1]}
    write_bundle(tmp_path / "b", manifest, {"request_id": ["r0"]}, outputs, drafts)
    result = run("traces", "inspect", tmp_path / "b")
    assert result.exit_code == 0, result.output
    for name in long_names:
        assert any(name in line for line in result.output.splitlines() if line.strip().startswith(name)), result.output
    assert f"{long_names[0]} → {long_names[1]}" in result.output
    assert re.search(r"accepted share: Σ n_accepted / Σ n_draft_tokens", " ".join(result.output.split()))


def test_inspect_says_1_request_and_no_tasks_line_for_a_bundle_without_tasks(tmp_path):
    result = run("traces", "inspect", small_bundle(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    head, signals = result.output.splitlines()[:2]
    assert head == f"{tmp_path / 'b'}: 1 request, 2 tiers"
    assert "tasks" not in signals and signals.startswith("signals: ")


def test_validate_missing_bundle_is_a_usage_error_and_an_invalid_one_exits_1(tmp_path):
    line = one_error_line(run("traces", "validate", tmp_path / "nope"), exit_code=2)
    assert line == f"error: {tmp_path / 'nope'}: no such bundle"
    flat = small_bundle(tmp_path / "flat", validate=False, sampling={"temperature": 0.0})  # not per tier
    result = run("traces", "validate", flat)
    assert result.exit_code == 1
    assert "manifest.json: sampling: 'temperature' is not a tier (sampling is per tier:" in result.output
    assert "manifest.json: sampling: no entry for tier 'big' ({} when not known)" in result.output


def test_every_writer_gives_sampling_per_tier(tmp_path):
    bundle = small_bundle(tmp_path / "b")
    assert json.loads((bundle / "manifest.json").read_text())["sampling"] == {"tiny-model-with-a-rather-long-name": {}, "big": {}}
    assert run("traces", "validate", bundle).exit_code == 0


def test_merge_errors_name_the_real_flag_and_no_python_lists(tmp_path):
    a, b = small_bundle(tmp_path / "a"), small_bundle(tmp_path / "b")
    (tmp_path / "out").mkdir()
    line = one_error_line(run("traces", "merge", a, b, "-o", tmp_path / "out"))
    assert line == f"error: {tmp_path / 'out'}: already exists (pass --overwrite to replace it)"
    line = one_error_line(run("traces", "merge", a, tmp_path / "a", "-o", tmp_path / "m"))
    assert line == f"error: {tmp_path / 'a'}: the same bundle is given twice"
    other = small_bundle(tmp_path / "c", tiers=("small", "big"))
    line = one_error_line(run("traces", "merge", a, other, "-o", tmp_path / "m"))
    assert "[" not in line and line.endswith(f"differ from {a} (tiny-model-with-a-rather-long-name, big)")


def test_csv_header_typo_is_reported_at_line_1(tmp_path):
    src = tmp_path / "runs.csv"
    src.write_text("request_id,model,output,qualty\nr,small,x,1\n")
    line = one_error_line(run("traces", "import", "csv", src, "--tiers", "small", "-o", tmp_path / "b"))
    assert line.startswith(f"error: {src}, line 1: unknown column 'qualty'")


def test_record_prompt_errors_count_lines_from_1_like_import(tmp_path):
    tiers = tmp_path / "t.yaml"
    tiers.write_text("tiers: [{name: x, backend: llama_cpp, model: smollm2-135m}]\n")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hello"}\n{"prompt": ""}\n')
    line = one_error_line(run("record", "--tiers", tiers, "--prompts", prompts, "-o", tmp_path / "b", "--no-progress"))
    assert line == f"error: {prompts}, line 2: 'prompt' is empty or not text"


def test_record_refuses_a_question_set_with_a_null_answer_before_any_model_loads(tmp_path, monkeypatch):
    import asd.live.record as record

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(record, "fit_contexts", no_model)  # the first step that reads a model (its vocabulary)
    tiers = tmp_path / "t.yaml"
    tiers.write_text("tiers: [{name: x, backend: llama_cpp, model: smollm2-135m}]\n")
    questions = tmp_path / "questions.parquet"
    pd.DataFrame({"question_id": [70, 71], "question": ["2 + 2?", "3 + 3?"], "options": ['["4", "5"]', '["5", "6"]'],
                  "answer": ["A", None], "category": ["math", "math"]}).to_parquet(questions)
    line = one_error_line(run("record", "--tiers", tiers, "--prompts", questions, "--limit", 1, "-o", tmp_path / "b",
                              "--no-progress"))
    assert line == f"error: {questions}, row 2, column 'answer': null for question_id 71 (a value is required)"
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()


def test_record_mode_choices_are_the_mode_tuples():
    choices = {p.name: list(p.type.choices) for p in record_command.params if p.name in ("drafts", "label")}
    assert choices == {"drafts": list(DRAFT_MODES), "label": list(LABEL_MODES)}
    assert "--restart" in run("record", "--help").output


def test_a_negative_seed_is_a_usage_error_not_a_numpy_traceback(tmp_path):
    """numpy's generators take seeds >= 0: `--seed -1` was a ValueError traceback in synth,
    calibrate, simulate, sweep, check and live. split hashes its seed, so any integer would do,
    but it takes seeds >= 0 like every other --seed (it accepted -5 alone)."""
    small_bundle(tmp_path / "b", n=4)
    for args in (["traces", "synth", "-n", "100", "-o", tmp_path / "s"], ["calibrate", "builtin", "-o", tmp_path / "p.npz"],
                 ["simulate", "--tau-max", "800"], ["sweep"], ["check", tmp_path / "p.npz", "builtin", "--min-quality", "0"],
                 ["live", "--tiers", "t.yaml", "--policy", "p.npz", "--prompts", "p.jsonl", "--rate", "1"],
                 ["traces", "split", tmp_path / "b", "-o", tmp_path / "c"]):
        result = run(*args, "--seed", "-1")
        assert result.exit_code == 2 and "Invalid value for '--seed': -1 is not in the range x>=0" in result.output, \
            (args, result.output)
    assert not (tmp_path / "c").exists()
    assert run("traces", "split", tmp_path / "b", "--seed", "5", "-o", tmp_path / "c").exit_code == 0


def test_a_bad_option_value_is_one_error_line_naming_the_command():
    """click's own usage screen (Usage:, Try ..., blank line, Error: ...) became one `error:` line
    naming the command, as every other mistake gets; exit 2 as before; `asd` alone still helps."""
    for args, command, text in ((["simulate", "--tau-max", "800", "--mode", "des", "--max-batch", "0"], "asd simulate",
                                 "Invalid value for '--max-batch': 0 is not in the range"),
                                (["simulate", "--tau-max", "abc"], "asd simulate", "'abc' is not a valid float"),
                                (["traces", "import", "jsonl", "x"], "asd traces import", "Missing option '-o'"),
                                (["--bad"], "asd", "No such option '--bad'"),
                                (["nosuch"], "asd", "No such command 'nosuch'")):
        result = CliRunner().invoke(main, args, prog_name="asd")
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith(f"error: {command}: ") and text in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and "Usage:" not in result.output, (args, result.output)
    assert "Usage: main [OPTIONS]" in run().output and "Usage: main traces" in run("traces").output


def test_sweep_repeats_is_bounded_before_any_calibration():
    """`asd sweep --repeats 100000` was accepted: each repeat is a whole K-fold calibration, so a
    typo ran for days. Above MAX_REPEATS it is one usage line, as every ranged option is."""
    from asd.cli import MAX_REPEATS

    for value in (MAX_REPEATS + 1, 10**9, 0):
        result = CliRunner().invoke(main, ["sweep", "--repeats", str(value)], prog_name="asd")
        assert result.exit_code == 2 and result.output == (
            f"error: asd sweep: Invalid value for '--repeats': {value} is not in the range 1<=x<={MAX_REPEATS}. "
            "(see 'asd sweep --help')\n"), result.output
        assert "calibrating" not in result.output


def test_nan_is_refused_by_the_ranged_float_options():
    """click's FloatRange lets nan through (every comparison is false): `traces inspect
    --threshold nan` counted no answer as acceptable, `live --deadline nan` waited nan seconds."""
    live = ["live", "--tiers", "t.yaml", "--policy", "p.npz", "--prompts", "p.jsonl"]
    for args, flag in ((["traces", "inspect", "--threshold", "nan"], "--threshold"),
                       ([*live, "--rate", "nan"], "--rate"), ([*live, "--rate", "1", "--deadline", "nan"], "--deadline")):
        result = run(*args)
        assert result.exit_code == 2 and f"Invalid value for '{flag}': 'nan' is not a number." in result.output, \
            (args, result.output)
    assert run("traces", "inspect", "--threshold", "0.7").exit_code == 0


def test_inf_is_refused_by_the_ranged_float_options():
    """`live --deadline inf` was accepted (a bound on one side only lets inf through): it would
    never stop waiting. A ranged float option refuses a non-finite value, as it refuses nan."""
    live = ["live", "--tiers", "t.yaml", "--policy", "p.npz", "--prompts", "p.jsonl"]
    for args, text in (([*live, "--rate", "1", "--deadline", "inf"], "'--deadline': 'inf' is not a finite number."),
                       ([*live, "--rate", "1", "--deadline", "Infinity"], "'--deadline': 'Infinity' is not a finite number."),
                       ([*live, "--rate", "1", "--deadline", "-inf"], "'--deadline': -inf is not in the range x>=1."),
                       ([*live, "--rate", "inf"], "'--rate': 'inf' is not a finite number."),
                       (["traces", "inspect", "--threshold", "inf"], "'--threshold': inf is not in the range 0<=x<=1.")):
        result = run(*args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and f"Invalid value for {text}" in lines[0], (args, result.output)


def test_an_output_over_an_input_or_another_output_is_refused_before_any_work(tmp_path):
    """`--json` over the `--policy` it reads, `-o` into the bundle's own files, two outputs at one
    path: each was written over silently (a policy replaced by JSON, a bundle's Parquet by a
    policy). Now one `error:` line and exit 2, with every file as it was."""
    bundle = small_bundle(tmp_path / "b", n=20)
    policy = tmp_path / "p.npz"
    policy.write_bytes(b"PK\x03\x04 stands for a policy; the refusal comes before it is read")
    parquet, manifest = bundle / "outputs.parquet", bundle / "manifest.json"
    results = tmp_path / "runs.jsonl"  # an importer's source
    results.write_text('{"request_id": "a", "tier": 0, "output": "x", "quality": 1}\n')
    (tmp_path / "same.jsonl").hardlink_to(results)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    before = {path: path.read_bytes() for path in (policy, parquet, manifest, results, prompts)}
    cases = {
        ("simulate", bundle, "--tau-max", 800, "--policy", policy, "--json", policy):
            f"--json {policy}: is also --policy, which it would overwrite; write it elsewhere",
        ("sweep", bundle, "--policy", policy, "--csv", tmp_path / "f", "--json", tmp_path / "f"):
            f"--csv {tmp_path / 'f'}: is also --json; give each output its own path",
        ("check", policy, bundle, "--min-quality", 0.5, "--junit", policy):
            f"--junit {policy}: is also POLICY, which it would overwrite; write it elsewhere",
        ("check", policy, bundle, "--min-quality", 0.5, "--json", parquet):
            f"--json {parquet}: lies inside the bundle {bundle} this command reads, which it would damage; "
            "write it elsewhere",
        ("calibrate", bundle, "-o", parquet):
            f"-o {parquet}: lies inside the bundle {bundle} this command reads, which it would damage; write it elsewhere",
        ("calibrate", bundle, "-o", tmp_path / "new.npz", "--json", tmp_path / "new.npz"):
            f"--json {tmp_path / 'new.npz'}: is also -o; give each output its own path",
        # asd traces and asd record: --json over the manifest, a source, the prompts (each wrote there)
        ("traces", "validate", bundle, "--json", manifest):
            f"--json {manifest}: lies inside the bundle {bundle} this command reads, which it would damage; "
            "write it elsewhere",
        ("traces", "inspect", bundle, "--json", manifest):
            f"--json {manifest}: lies inside the bundle {bundle} this command reads, which it would damage; "
            "write it elsewhere",
        ("traces", "split", bundle, "-o", tmp_path / "c", "--json", parquet):
            f"--json {parquet}: lies inside the bundle {bundle} this command reads, which it would damage; "
            "write it elsewhere",
        ("traces", "merge", bundle, "-o", bundle): f"-o {bundle}: is also BUNDLES {bundle}, which it would overwrite; "
                                                   "write it elsewhere",
        ("traces", "import", "jsonl", results, "--tiers", "a:1", "-o", tmp_path / "i", "--json", tmp_path / "same.jsonl"):
            f"--json {tmp_path / 'same.jsonl'}: is also SRC, which it would overwrite; write it elsewhere",
        ("record", "--tiers", tmp_path / "t.yaml", "--prompts", prompts, "-o", tmp_path / "r", "--json", prompts):
            f"--json {prompts}: is also --prompts, which it would overwrite; write it elsewhere",
        # the built-in trace is a bundle too, wherever it is installed
        ("simulate", "--tau-max", 800, "--json", builtin_bundle_path() / "r.json"):
            f"--json {builtin_bundle_path() / 'r.json'}: lies inside the built-in trace's bundle "
            f"{builtin_bundle_path().resolve()} this command reads, which it would damage; write it elsewhere",
        # a file the command's own plots would replace after the run (the policy was lost, or the plot failed)
        ("simulate", "--tau-max", 800, "--plots", tmp_path / "d", "--save-policy", tmp_path / "d" / "latency.png"):
            f"--save-policy {tmp_path / 'd' / 'latency.png'}: is also a plot that --plots writes there; "
            "give each output its own path",
        ("sweep", bundle, "--plots", tmp_path / "d", "--csv", tmp_path / "d" / "frontier_latency.png"):
            f"--csv {tmp_path / 'd' / 'frontier_latency.png'}: is also a plot that --plots writes there; "
            "give each output its own path",
        ("calibrate", bundle, "-o", tmp_path / "new.npz", "--plots", tmp_path / "d",
         "--json", tmp_path / "d" / "reliability.png"):
            f"--json {tmp_path / 'd' / 'reliability.png'}: is also a plot that --plots writes there; "
            "give each output its own path",
    }
    for args, message in cases.items():
        assert one_error_line(run(*args)) == f"error: {message}"
    assert {path: path.read_bytes() for path in before} == before
    assert not (tmp_path / "new.npz").exists() and not (tmp_path / "f").exists()
    assert not (builtin_bundle_path() / "r.json").exists() and not (tmp_path / "d").exists()  # made, then removed
    assert not any((tmp_path / name).exists() for name in ("c", "i", "r"))
    # a split copy onto the bundle itself is the in-place split, as before
    assert run("traces", "split", bundle, "-o", bundle).exit_code == 0
    # other files in the plots directory are fine
    assert run("calibrate", "builtin", "-o", tmp_path / "d" / "p.npz", "--plots", tmp_path / "d").exit_code == 0


def test_a_report_inside_the_bundle_written_or_inside_another_bundle_is_refused(tmp_path):
    """`traces import|split -o B --json B/manifest.json` wrote the bundle, then replaced its
    manifest with the summary (exit 0, and B failed validation); `--json` into another bundle
    replaced that one's files. Now one `error:` line before any work, and every file as it was."""
    other = small_bundle(tmp_path / "other", n=20)
    before = {p: p.read_bytes() for p in other.iterdir()}
    results = tmp_path / "runs.jsonl"
    results.write_text('{"request_id": "a", "tier": 0, "output": "x", "quality": 1}\n')
    new = tmp_path / "new"
    cases = {
        ("traces", "split", "builtin", "--test-frac", 0.3, "-o", new, "--json", new / "manifest.json"):
            f"--json {new / 'manifest.json'}: lies inside -o {new}, which this command writes; write it elsewhere",
        ("traces", "import", "jsonl", results, "--tiers", "a:1", "-o", new, "--json", new / "summary.json"):
            f"--json {new / 'summary.json'}: lies inside -o {new}, which this command writes; write it elsewhere",
        ("traces", "inspect", "builtin", "--json", other / "outputs.parquet"):
            f"--json {other / 'outputs.parquet'}: lies inside the bundle {other.resolve()}, which it would damage; "
            "write it elsewhere",
        ("traces", "import", "jsonl", results, "--tiers", "a:1", "-o", tmp_path / "i", "--json", other / "r.json"):
            f"--json {other / 'r.json'}: lies inside the bundle {other.resolve()}, which it would damage; "
            "write it elsewhere",
    }
    for args, message in cases.items():
        assert one_error_line(run(*args)) == f"error: {message}"
    assert {p: p.read_bytes() for p in other.iterdir()} == before
    assert not new.exists() and not (tmp_path / "i").exists()
    # beside a bundle is fine
    assert run("traces", "inspect", "builtin", "--json", tmp_path / "r.json").exit_code == 0


def test_calibrate_refuses_a_tier_with_no_quality_label(tmp_path):
    """It wrote a policy, fitted on no labels at that tier, that check, live and serve then ran."""
    bundle = tmp_path / "b"
    ids = [f"r{i}" for i in range(40)]
    write_bundle(bundle, new_manifest([{"name": "small", "params_b": 1.0}, {"name": "big", "params_b": 2.0}]),
                 {"request_id": ids}, {"request_id": [r for r in ids for _ in range(2)], "tier": [0, 1] * 40,
                                       "output": ["x"] * 80, "quality": [1.0, None] * 40})
    for extra in (["-o", tmp_path / "p.npz"], ["--predictor", "gbt-reference"]):
        line = one_error_line(run("calibrate", bundle, *extra))
        assert line == (f"error: asd calibrate: {bundle} has no quality label at tier big: a policy fitted on it would "
                        "know nothing about that tier's answers (label the bundle first)")
    assert not (tmp_path / "p.npz").exists()


def test_calibrate_refuses_to_write_its_policy_over_a_file_that_is_not_one(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    line = one_error_line(run("calibrate", "builtin", "-o", notes))
    assert line == f"error: {notes}: exists and is not an asd policy file; not overwritten (choose another path)"
    assert notes.read_text() == "my notes"
    policy = tmp_path / "policy.npz"
    for _ in range(2):  # a policy over the policy of an earlier run is replaced, as before
        assert run("calibrate", "builtin", "-o", policy).exit_code == 0


def test_calibrate_notes_only_the_missing_groups_it_was_asked_for(tmp_path):
    """`--features length` noted "no logprob features: no logprobs in trace" (and each text group)
    though no logprob feature was asked for; the default (every group the trace has) notes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from asd.traces.synth import write_synthetic_bundle

    bundle = tmp_path / "nolp"  # synthetic: no output text; and here no logprobs or entropies either
    write_synthetic_bundle(bundle, 200, 2, 0)
    table = pq.read_table(bundle / "outputs.parquet")
    for c in ("token_logprobs", "token_entropy", "mean_logprob", "min_logprob", "mean_entropy"):
        i = table.schema.get_field_index(c)
        table = table.set_column(i, table.schema.field(i), pa.nulls(table.num_rows, table.schema.field(i).type))
    pq.write_table(table, bundle / "outputs.parquet")
    notes = re.compile(r"^no (\w+) features: (.*)$", re.M)
    default = run("calibrate", bundle, "-o", tmp_path / "all.npz", "--json", tmp_path / "all.json")
    assert default.exit_code == 0, default.output
    assert dict(notes.findall(default.output)) == {
        "logprob": "no logprobs in trace", "entropy": "no token entropies in trace", "format": "no output text in trace",
        "content": "no output text in trace", "agreement": "no output text in trace"}
    assert json.loads((tmp_path / "all.json").read_text())["missing_groups"] == dict(notes.findall(default.output))
    for extra in (["-o", tmp_path / "length.npz"], ["--predictor", "gbt-reference"]):
        length = run("calibrate", bundle, "--features", "length", "--json", tmp_path / "length.json", *extra)
        assert length.exit_code == 0, length.output
        assert "(length, stage)" in length.output and not notes.findall(length.output), length.output
        assert json.loads((tmp_path / "length.json").read_text())["missing_groups"] == {}


HELP_COMMANDS = ([], ["record"], ["traces"], ["traces", "import"], ["traces", "validate"], ["traces", "inspect"],
                 ["traces", "split"], ["traces", "synth"], ["traces", "merge"], ["calibrate"], ["simulate"], ["sweep"],
                 ["check"], ["live"], ["serve"])


def test_every_help_fits_80_columns_with_whole_command_summaries():
    """`\\b` paragraphs (examples, the import formats) are not rewrapped by click: a line past 80
    columns was wrapped by the terminal instead; a command list cut its summaries at `...`."""
    for args in HELP_COMMANDS:
        result = run(*args, "--help")
        assert result.exit_code == 0, (args, result.output)
        for line in result.output.splitlines():
            assert len(line) <= 80, (args, line)
        if args in ([], ["traces"]):
            listed = result.output.split("Commands:")[1]
            assert "..." not in listed, listed


def test_help_names_what_the_options_accept():
    """Feature groups, --beat's baselines, --cost-model's kinds: listed in the help as the code
    has them (the help text is written out, so this catches a group or baseline added later)."""
    from asd.calibration.costs import COST_MODELS
    from asd.calibration.features import GROUPS
    from asd.simulator.baselines import baseline_names

    calibrate = " ".join(run("calibrate", "--help").output.split())
    assert all(g in calibrate for g in GROUPS if g != "stage"), calibrate  # stage is always in
    assert all(f"{kind}:" in calibrate for kind in COST_MODELS)
    from asd.simulator.evaluate import MAX_CALIBRATION_ROWS

    assert f"(up to {MAX_CALIBRATION_ROWS:,}," in " ".join(run("simulate", "--help").output.split())
    check = " ".join(run("check", "--help").output.split())
    assert all(name in check for name in baseline_names(["x"])[1:]) and "always-<tier>" in check, check


def test_python_dash_m_asd_is_the_asd_command(tmp_path):
    """For an environment whose scripts folder is not on PATH: the same commands, the same
    one-line errors and exit codes."""
    import subprocess
    import sys

    helped = subprocess.run([sys.executable, "-m", "asd", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and helped.stdout.startswith("Usage: asd [OPTIONS] COMMAND")
    missing = subprocess.run([sys.executable, "-m", "asd", "traces", "inspect", str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr == f"error: {tmp_path / 'nope'}: no such bundle\n"


def test_every_file_output_makes_its_missing_folders(tmp_path):
    """-o and --save-policy made missing folders while --json refused them; now every file an
    option names is treated alike (and written atomically)."""
    out = tmp_path / "a" / "b"
    result = CliRunner().invoke(main, ["traces", "inspect", "builtin", "--json", str(out / "inspect.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "inspect.json").read_text())["n_requests"] == 600
    assert [p.name for p in out.iterdir()] == ["inspect.json"]  # no temporary file left beside it
