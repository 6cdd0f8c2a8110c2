"""`asd traces validate/inspect/split/synth/merge`: outputs, JSON, one-line errors and exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from asd.cli import main
from asd.traces.bundle import open_bundle

REPO = Path(__file__).resolve().parents[2]


def run(*args):
    return CliRunner().invoke(main, ["traces", *map(str, args)])


@pytest.fixture()
def synth(tmp_path):
    result = run("synth", "-n", 300, "--tiers", 3, "--seed", 0, "-o", tmp_path / "s")
    assert result.exit_code == 0, result.output
    assert "synthetic bundle, 300 requests, tiers synth-8b, synth-34b, synth-70b" in result.output
    return tmp_path / "s"


def test_synth_then_validate_ok(synth, tmp_path):
    result = run("validate", synth, "--json", tmp_path / "v.json")
    assert result.exit_code == 0 and result.output.startswith("ok: ")
    assert json.loads((tmp_path / "v.json").read_text()) == {"bundle": str(synth), "valid": True, "problems": []}


def test_validate_lists_problems_and_exits_1(synth):
    file = synth / "outputs.parquet"
    table = pq.read_table(file)
    quality = table.column("quality").to_pylist()
    quality[4] = 2.0
    table = table.set_column(table.schema.get_field_index("quality"), "quality", pa.array(quality, pa.float32()))
    pq.write_table(table, file)
    result = run("validate", synth)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == ["outputs.parquet: column 'quality' row 4: quality 2.0 is outside [0, 1]", f"error: {synth}: 1 problem(s)"]


def test_inspect_prints_a_table_and_writes_the_same_numbers_as_json(synth, tmp_path):
    result = run("inspect", synth, "--json", tmp_path / "i.json")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "i.json").read_text())
    assert {"n_requests", "tiers", "signals", "oracle"} <= set(summary)
    assert summary["n_requests"] == 300 and summary["signals"]["drafts"] is True
    assert {"name", "params_b", "mean_quality", "mean_output_tokens"} <= set(summary["tiers"][0])
    assert {"quality", "cost_share"} <= set(summary["oracle"])
    assert "SYNTHETIC" in result.output and "synth-34b" in result.output
    assert f"{summary['tiers'][0]['mean_quality']:.3f}" in result.output
    assert f"cost share {summary['oracle']['cost_share']:.3f}" in result.output


def test_split_is_reproducible_from_the_command_line(synth, tmp_path):
    first = run("split", synth, "--test-frac", 0.3, "--seed", 0, "-o", tmp_path / "a", "--json", tmp_path / "a.json")
    second = run("split", synth, "--test-frac", 0.3, "--seed", 0, "-o", tmp_path / "b")
    assert first.exit_code == 0 and second.exit_code == 0
    assert "calibration" in first.output and "test requests" in first.output
    split = lambda p: pq.read_table(p / "requests.parquet").column("split").to_pylist()  # noqa: E731
    assert split(tmp_path / "a") == split(tmp_path / "b")
    assert json.loads((tmp_path / "a.json").read_text())["n_test"] == split(tmp_path / "a").count("test")


def test_merge_joins_shards_from_the_command_line(tmp_path):
    for i, seed in enumerate((1, 2)):
        assert run("synth", "-n", 20, "--tiers", 2, "--seed", seed, "-o", tmp_path / f"s{i}").exit_code == 0
    # two synthetic bundles share request ids (synth-00..): merge must refuse them
    result = run("merge", tmp_path / "s0", tmp_path / "s1", "-o", tmp_path / "m")
    assert result.exit_code == 2 and "is also in" in result.output and "Traceback" not in result.output
    for table in ("requests", "outputs", "drafts"):
        t = pq.read_table(tmp_path / "s1" / f"{table}.parquet")
        ids = pa.array([f"x{r}" for r in t.column("request_id").to_pylist()])
        pq.write_table(t.set_column(0, t.schema.field(0), ids), tmp_path / "s1" / f"{table}.parquet")
    result = run("merge", tmp_path / "s0", tmp_path / "s1", "-o", tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert "merged 2 bundles, 40 requests" in result.output
    assert open_bundle(tmp_path / "m").read("outputs", ["tier"]).num_rows == 80


@pytest.mark.parametrize(
    "args,message",
    [
        (["inspect", "{tmp}/missing"], "no such bundle"),
        (["validate", "{tmp}/missing"], "no such bundle"),
        (["split", "{tmp}/missing"], "no such bundle"),
        (["synth", "-n", "5", "--seed", "0", "-o", "{tmp}/x"], "10..1000000 requests"),
        (["synth", "-n", "50", "--tiers", "12", "--seed", "0", "-o", "{tmp}/x"], "2..8 tiers"),
        (["merge", "{tmp}/a", "-o", "{tmp}/x"], "at least two bundles"),
        (["merge", "{tmp}/a", "{tmp}/b", "-o", "{tmp}/x"], "no such bundle"),
    ],
)
def test_bad_input_is_one_error_line_and_nonzero_exit(tmp_path, args, message):
    result = run(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_split_with_bad_fraction_is_refused(synth):
    result = run("split", synth, "--test-frac", 1.5)
    assert result.exit_code == 2 and result.output.startswith("error: --test-frac must be strictly between 0 and 1")


def test_inspect_without_a_bundle_means_the_builtin_trace():
    result = run("inspect")
    builtin = REPO / "asd" / "traces" / "builtin" / "bundle" / "manifest.json"
    if builtin.is_file():
        assert result.exit_code == 0 and "tiers" in result.output
    else:
        assert result.exit_code == 2 and "built-in trace is not installed" in result.output


def test_console_entry_point_runs_in_a_subprocess(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "asd.cli", "traces", "synth", "-n", "10", "--tiers", "2", "--seed", "0", "-o", str(tmp_path / "s")]
    assert subprocess.run(cmd, cwd=REPO, env=env, capture_output=True).returncode == 0
    done = subprocess.run([sys.executable, "-m", "asd.cli", "traces", "validate", str(tmp_path / "nope")],
                          cwd=REPO, env=env, capture_output=True, text=True)
    # A bundle that is not there is a usage error, as for inspect: one line, exit 2 (1 = invalid bundle).
    assert done.returncode == 2 and done.stderr == f"error: {tmp_path / 'nope'}: no such bundle\n"


# --- read-only built-in trace, --json checked up front, inspect refuses broken bundles ---


def _snapshot(path: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(path.iterdir()) if p.is_file()} if path.is_dir() else {}


def _one_error_line(result, *fragments):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["traces", "split", "builtin"],
        ["traces", "merge", "{tmp}/a", "{tmp}/b", "-o", "builtin"],
        ["record", "--tiers", "{tmp}/t.yaml", "--prompts", "{tmp}/p.jsonl", "-o", "builtin", "--no-progress"],
        # synth and import wrote a directory named `builtin` that `builtin` never names
        ["traces", "synth", "-n", "100", "--seed", "0", "-o", "builtin"],
        ["traces", "import", "jsonl", "{tmp}/runs.jsonl", "--tiers", "a,b", "-o", "builtin"],
    ],
)
def test_the_builtin_trace_is_read_only(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)  # a relative `builtin` directory must not appear either
    from asd.traces.bundle import builtin_bundle_path

    before = _snapshot(builtin_bundle_path())
    result = CliRunner().invoke(main, [a.format(tmp=tmp_path) for a in args])
    line = _one_error_line(result, "builtin: the built-in trace is read-only", "-o OUT")
    assert "Traceback" not in line
    assert _snapshot(builtin_bundle_path()) == before and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["/dev/null/x.json", "{tmp}"])
@pytest.mark.parametrize(
    "command",
    [
        ["traces", "import", "jsonl", "{tmp}/runs.jsonl", "--tiers", "a,b", "-o", "{tmp}/out"],
        ["traces", "inspect", "{synth}"],
        ["traces", "validate", "{synth}"],
        ["traces", "split", "{synth}", "-o", "{tmp}/out"],
        ["record", "--tiers", "{tmp}/t.yaml", "--prompts", "{tmp}/p.jsonl", "-o", "{tmp}/out", "--no-progress"],
    ],
)
def test_unwritable_json_path_is_refused_before_any_work(synth, tmp_path, command, target):
    before = sorted(p.name for p in tmp_path.iterdir())
    source = _snapshot(synth)
    fill = {"tmp": tmp_path, "synth": synth}
    args = [a.format(**fill) for a in command] + ["--json", target.format(**fill)]
    result = CliRunner().invoke(main, args)
    _one_error_line(result, "cannot write --json", "/dev/null is a file, not a directory" if "null" in target else "it is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == before and _snapshot(synth) == source


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (no file can be created there)")
def test_a_json_path_no_file_can_be_created_at_is_refused_before_any_work_even_as_root():
    """Permission bits say nothing for root: the check really creates (and removes) a file."""
    result = CliRunner().invoke(main, ["traces", "inspect", "builtin", "--json", "/proc/asd-test.json"])
    _one_error_line(result, "cannot write --json", "/proc/asd-test.json")


def test_write_json_failure_is_an_asd_error(tmp_path):
    from asd.cli import write_json
    from asd.errors import AsdError

    (tmp_path / "afile").write_text("")  # a folder cannot be made under a file
    with pytest.raises(AsdError, match="cannot write --json"):
        write_json(str(tmp_path / "afile" / "sub" / "x.json"), {"a": 1})
    write_json(str(tmp_path / "gone" / "sub" / "x.json"), {"a": float("nan")})  # missing folders are made
    assert (tmp_path / "gone" / "sub" / "x.json").read_text() == '{\n  "a": null\n}\n'


def _rewrite(bundle, table, edit):
    file = bundle / f"{table}.parquet"
    pq.write_table(edit(pq.read_table(file)), file)


def _set_quality_nan(t):
    q = t.column("quality").to_pylist()
    q[3] = float("nan")
    return t.set_column(t.schema.get_field_index("quality"), "quality", pa.array(q, pa.float32()))


def _orphan(t):
    ids = t.column("request_id").to_pylist()
    ids[5] = "nobody"
    return t.set_column(0, t.schema.field(0), pa.array(ids))


@pytest.mark.parametrize(
    "table,edit,problem",
    [
        ("outputs", lambda t: pa.concat_tables([t, t.slice(2, 1)]), "duplicate (request, tier)"),
        ("outputs", lambda t: t.slice(0, 0), "outputs.parquet: empty table"),
        ("outputs", _orphan, "request 'nobody' is not in requests.parquet"),
        ("outputs", _set_quality_nan, "NaN quality"),
        ("drafts", None, "drafts.parquet: unreadable Parquet"),
    ],
)
def test_inspect_refuses_an_invalid_bundle_with_one_line(synth, table, edit, problem):
    if edit is None:
        (synth / f"{table}.parquet").write_text("notparquet\n")
    else:
        _rewrite(synth, table, edit)
    source = _snapshot(synth)
    result = run("inspect", synth)
    _one_error_line(result, f"error: {synth}: ", problem, f"run `asd traces validate {synth}` for all problems")
    assert _snapshot(synth) == source


@pytest.mark.parametrize("command", ["synth", "import", "split", "merge"])
def test_overwrite_replaces_only_a_bundle_never_a_directory_of_other_files(synth, tmp_path, command, monkeypatch):
    """--overwrite swaps the old bundle out and deletes it: a directory of the user's files, a
    plain file, or the current directory ('.', '') in its place is refused with one line, and
    kept (synth -o userdir --overwrite deleted userdir/notes.txt; -o . was a ValueError)."""
    jsonl = tmp_path / "runs.jsonl"
    jsonl.write_text('{"request_id": "q", "model": "a", "output": "x"}\n{"request_id": "q", "model": "b", "output": "y"}\n')
    other = tmp_path / "other"
    assert run("split", synth, "--test-frac", 0.3, "-o", other).exit_code == 0

    def write_to(out):
        args = {"synth": ["synth", "-n", 30, "--seed", 1, "-o", out],
                "import": ["import", "jsonl", jsonl, "--tiers", "a,b", "-o", out],
                "split": ["split", synth, "--test-frac", 0.3, "-o", out],
                "merge": ["merge", synth, other, "-o", out]}[command]
        return run(*args, "--overwrite")

    userdir = tmp_path / "userdir"
    userdir.mkdir()
    (userdir / "notes.txt").write_text("important\n")
    result = write_to(userdir)
    assert result.exit_code != 0
    assert result.output.strip() == (f"error: {userdir}: exists and is not a trace bundle (no manifest.json); "
                                     "--overwrite replaces only a bundle: move or remove this directory yourself")
    assert (userdir / "notes.txt").read_text() == "important\n"
    plain = tmp_path / "plain.txt"
    plain.write_text("keep\n")
    result = write_to(plain)
    assert result.exit_code != 0 and plain.read_text() == "keep\n"  # click's own check, where -o is a Path(file_okay=False)
    assert "exists and is not a directory" in result.output or "is a file" in result.output, result.output
    # without --overwrite, what it would refuse is said first, with no hint to pass it
    without = run(*{"synth": ["synth", "-n", 30, "--seed", 1, "-o", userdir],
                    "import": ["import", "jsonl", jsonl, "--tiers", "a,b", "-o", userdir],
                    "split": ["split", synth, "--test-frac", 0.3, "-o", userdir],
                    "merge": ["merge", synth, other, "-o", userdir]}[command])
    assert without.exit_code != 0 and "not a trace bundle" in without.output, without.output
    assert "pass --overwrite" not in without.output
    monkeypatch.chdir(tmp_path)
    for out in (".", ""):
        result = write_to(out)
        assert result.exit_code != 0 and "name a directory to write the bundle to" in result.output, result.output
        assert (userdir / "notes.txt").is_file() and len(result.output.strip().splitlines()) == 1
    if command != "merge":  # an earlier bundle and an empty directory are what --overwrite replaces
        empty = tmp_path / "empty"
        empty.mkdir()
        assert write_to(empty).exit_code == 0 and (empty / "manifest.json").is_file()
        assert write_to(empty).exit_code == 0
        # an earlier bundle holding a file of the user's (an import's own source was one): kept, refused
        (empty / "runs.jsonl").write_text(jsonl.read_text())
        result = write_to(empty)
        assert result.exit_code != 0 and result.output.strip() == (
            f"error: {empty}: holds 'runs.jsonl' besides the bundle's own files; --overwrite would delete them with "
            "the bundle: move them out first, or write the bundle elsewhere")
        assert (empty / "runs.jsonl").read_text() == jsonl.read_text() and (empty / "manifest.json").is_file()
