"""Every command that reads a bundle refuses every damaged bundle of the corpus
(tests/traces/damage.py) cleanly: non-zero exit, one `error:` line naming the bundle and the
damaged file, no traceback, no warning.

The commands are discovered from the click group: any parameter of type `asd.cli.BundleArg`
(or named like a bundle) makes a command a bundle reader. A reader whose only input is the
bundle is run as `asd ... BUNDLE`; one that needs more (an output, a second bundle, a policy)
gets its argv template in `ARGV`, and `test_every_bundle_reading_command_can_be_run` fails
until it has one — so a new command (`asd calibrate BUNDLE`, `asd check POLICY BUNDLE`) is
covered the day it is added.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asd.cli import BundleArg, main
from asd.errors import TraceError
from asd.traces.bundle import builtin_bundle_path, open_bundle
from tests.traces.damage import DAMAGES, make, refusal_problems, run_command

REPO = Path(__file__).resolve().parents[2]
POLICY = str(REPO / "tests" / "policies" / "builtin.npz")  # the committed policy (tests/simulator/test_check.py)

# argv after the command's own path; {bundle} is the damaged bundle, {out} a fresh path,
# {partner} a valid bundle with other request ids (merge needs two).
ARGV: dict[tuple[str, ...], list[str]] = {
    ("traces", "split"): ["{bundle}", "-o", "{out}"],
    ("traces", "merge"): ["{bundle}", "{partner}", "-o", "{out}"],
    ("calibrate",): ["{bundle}", "-o", "{out}"],
    ("simulate",): ["{bundle}", "--tau-max", "800"],
    ("check",): [POLICY, "{bundle}", "--min-quality", "0"],
}
# Variants of a command run as well: the extra path words are its first arguments.
VARIANTS: dict[tuple[str, ...], list[str]] = {
    ("simulate", "--policy"): [POLICY, "{bundle}", "--tau-max", "800"],
    ("sweep", "--policy"): [POLICY, "{bundle}"],
}
# Commands that list every problem before their `error:` line.
LISTS_PROBLEMS = {("traces", "validate")}


def _reads_bundle(param: click.Parameter) -> bool:
    return isinstance(param.type, BundleArg) or "bundle" in (param.name or "").lower()


def bundle_commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], click.Command]:
    found = {}
    for name, command in group.commands.items():
        path = prefix + (name,)
        if isinstance(command, click.Group):
            found.update(bundle_commands(command, path))
        elif any(_reads_bundle(p) for p in command.params):
            found[path] = command
    return found


def argv_template(path: tuple[str, ...], command: click.Command) -> list[str] | None:
    if path in ARGV:
        return ARGV[path]
    others = [p for p in command.params if not _reads_bundle(p) and p.required]
    readers = [p for p in command.params if _reads_bundle(p)]
    if not others and len(readers) == 1 and isinstance(readers[0], click.Argument):
        return ["{bundle}"]
    return None


COMMANDS = bundle_commands()
RUNNABLE = {path: argv_template(path, cmd) for path, cmd in COMMANDS.items()} | VARIANTS


def test_every_bundle_reading_command_can_be_run():
    assert {("traces", "validate"), ("traces", "inspect"), ("traces", "split"), ("traces", "merge")} <= set(COMMANDS)
    missing = [" ".join(path) for path, argv in RUNNABLE.items() if argv is None]
    assert not missing, f"add an argv template to ARGV in {__file__} for: {missing}"
    typed = [" ".join(path) for path, cmd in COMMANDS.items()
             if not any(isinstance(p.type, BundleArg) for p in cmd.params)]
    assert not typed, f"give the bundle argument of {typed} type=asd.cli.BUNDLE"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    paths = {d.name: make(d, root) for d in DAMAGES}
    # a valid partner for merge: the built-in trace under other request ids
    partner = root / "partner"
    shutil.copytree(builtin_bundle_path(), partner)
    for table in ("requests", "outputs", "drafts"):
        file = partner / f"{table}.parquet"
        t = pq.read_table(file)
        ids = pa.array(["p-" + r for r in t.column("request_id").to_pylist()], pa.string())
        pq.write_table(t.set_column(0, t.schema.field(0), ids), file)
    yield {"paths": paths, "partner": partner, "control": make_control(root)}
    for path in paths.values():  # let the cleanup into the permission damages
        if path.is_dir() and not path.is_symlink():
            os.chmod(path, 0o755)
            for f in path.iterdir():
                if not f.is_symlink():
                    os.chmod(f, 0o755 if f.is_dir() else 0o644)


def make_control(root: Path) -> Path:
    control = root / "undamaged"
    shutil.copytree(builtin_bundle_path(), control)
    return control


def argv_for(path: tuple[str, ...], bundle: Path, partner: Path, out: Path) -> list[str]:
    fill = {"bundle": str(bundle), "partner": str(partner), "out": str(out)}
    return list(path) + [a.format(**fill) for a in RUNNABLE[path]]


@pytest.mark.parametrize("path", sorted(RUNNABLE), ids=" ".join)
def test_every_command_accepts_the_undamaged_copy(corpus, path, tmp_path):
    """The control: the corpus' refusals are the damage's doing, not the template's."""
    outcome = run_command(argv_for(path, corpus["control"], corpus["partner"], tmp_path / "out"))
    assert outcome.exit_code == 0 and outcome.exception is None, outcome.output
    assert not outcome.warnings


ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.mark.parametrize("path", sorted(RUNNABLE), ids=" ".join)
@pytest.mark.parametrize("damage", DAMAGES, ids=[d.name for d in DAMAGES])
def test_every_command_refuses_every_damaged_bundle(corpus, damage, path, tmp_path):
    if damage.needs_permissions and ROOT:
        pytest.skip("root reads through file modes; test_permission_damages_without_root_override runs this")
    bundle = corpus["paths"][damage.name]
    out = tmp_path / "out"
    outcome = run_command(argv_for(path, bundle, corpus["partner"], out))
    assert refusal_problems(outcome, damage, bundle, path in LISTS_PROBLEMS) == []
    assert not out.exists()  # nothing written from a damaged bundle


@pytest.mark.parametrize("damage", [d for d in DAMAGES if not d.needs_permissions], ids=lambda d: d.name)
def test_open_bundle_refuses_every_damaged_bundle(corpus, damage):
    with pytest.raises(TraceError) as caught:
        open_bundle(corpus["paths"][damage.name])
    message = str(caught.value)
    assert "\n" not in message and str(corpus["paths"][damage.name]) in message
    assert damage.file is None or damage.file in message


_PERMISSION_SCRIPT = r"""
import json, sys
from pathlib import Path
from tests.traces.damage import DAMAGES, refusal_problems, run_command
from tests.traces.test_damaged_bundles import LISTS_PROBLEMS, RUNNABLE, argv_for
root, partner = Path(sys.argv[1]), Path(sys.argv[2])
report = []
for damage in [d for d in DAMAGES if d.needs_permissions]:
    for path in sorted(RUNNABLE):
        out = root / "out"
        outcome = run_command(argv_for(path, root / damage.name, partner, out))
        problems = refusal_problems(outcome, damage, root / damage.name, path in LISTS_PROBLEMS)
        if out.exists():
            problems.append("wrote an output")
        report.append({"damage": damage.name, "command": " ".join(path), "problems": problems})
print(json.dumps(report))
"""


@pytest.mark.skipif(not ROOT, reason="not root: the permission damages run in the in-process test")
def test_permission_damages_without_root_override(corpus):
    """Root ignores file modes, so the permission damages run in a subprocess whose bounding
    set lacks CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (util-linux `setpriv`)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    probe = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot drop capabilities here: {probe.stderr.decode().strip()}")
    damaged = corpus["paths"]["outputs-unreadable"].parent
    cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", _PERMISSION_SCRIPT,
           str(damaged), str(corpus["partner"])]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report) == sum(d.needs_permissions for d in DAMAGES) * len(RUNNABLE)
    assert [r for r in report if r["problems"]] == []
