"""The README's examples: running them from the repository root leaves no untracked paths
(every file or directory an example writes — `-o`, `--json`, `>`; a recording's `.partial/` —
is ignored by git, or is the tracked built-in trace its maintainers re-record), each Python
example followed by an output block prints that output, and so does each shell example marked
`<!-- checked-example -->` (the ones on the built-in trace: no data, no servers, seconds each)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
WRITES = re.compile(r"(?:\s-o\s+|\s--out\s+|\s--json\s+|\s>\s+)(\S+)")


def example_lines() -> list[str]:
    """Command lines in the README's code blocks (`$ ` prompts in output blocks included)."""
    lines, in_block = [], False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        text = line.strip()
        if in_block or text.startswith("$ "):
            text = text.removeprefix("$ ")
            if re.match(r"(asd|python|head)\b", text):
                lines.append(text)
    return lines


def written_paths() -> set[str]:
    paths = set()
    for line in example_lines():
        for target in WRITES.findall(" " + line):
            target = target.strip("`")
            if target.isupper() or target.startswith("asd/") or "PATH" in target:
                continue  # placeholders, and the tracked built-in trace
            paths.add(target)
            if line.startswith("asd record") and re.search(rf"-o\s+{re.escape(target)}(\s|$)", line):
                paths.add(target + ".partial")
    return paths


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_paths_the_readme_examples_write_are_ignored_by_git():
    paths = written_paths()
    assert {"demo", "synth4", "traces.json", "prompts.jsonl"} <= paths  # the parser finds the examples
    for path in sorted(paths):
        probe = path.rstrip("/") + ("/x" if "." not in Path(path).name or path.endswith(".partial") else "")
        done = subprocess.run(["git", "check-ignore", "-q", "--no-index", probe], cwd=REPO)
        assert done.returncode == 0, f"{path}: written by a README example but not ignored by git"


NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def python_examples() -> list[tuple[int, str, str]]:
    """(line, code, shown output) for each ```python block whose next block, after nothing but
    blank lines, is a plain output block (``` or ```text); a block without one is a sketch
    with placeholder paths."""
    lines, examples = (REPO / "README.md").read_text().splitlines(), []
    for start, line in enumerate(lines):
        if line.strip() != "```python":
            continue
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
        after = end + 1
        while after < len(lines) and not lines[after].strip():
            after += 1
        if after < len(lines) and lines[after].strip() in ("```", "```text"):
            close = next(i for i in range(after + 1, len(lines)) if lines[i].startswith("```"))
            examples.append((start + 1, "\n".join(lines[start + 1 : end]), "\n".join(lines[after + 1 : close])))
    return examples


def same_output(shown: str, printed: str) -> bool:
    """Equal text, and numbers equal to 1e-9 relative: the last digit of a float printed in full
    (an ECE, an AUROC) moves with the BLAS build, and the README is not wrong for it."""
    if NUMBER.sub("#", shown) != NUMBER.sub("#", printed):
        return False
    return all(abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
               for a, b in zip(NUMBER.findall(shown), NUMBER.findall(printed)))


def test_readme_has_python_examples_with_their_output():
    assert len(python_examples()) >= 6  # the parser still finds sections 3, 5, 6, 7, 8 and 9
    assert same_output("auroc 0.79482992 n 19500", "auroc 0.79482992000001 n 19500")
    assert not same_output("auroc 0.794 n 19500", "auroc 0.795 n 19500")
    assert not same_output("stops [0.35, 0.29]", "stops [0.35, 0.29, 0.0]")


@pytest.mark.parametrize("line, code, shown", [pytest.param(*e, id=f"line{e[0]}") for e in python_examples()])
def test_readme_python_example_prints_what_the_readme_shows(line, code, shown, tmp_path):
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"README line {line}: the example failed:\n{done.stderr[-2000:]}"
    printed = done.stdout.rstrip()
    assert same_output(shown.rstrip(), printed), (
        f"README line {line}: the example now prints\n{printed}\n--- the README shows\n{shown}")


def test_the_main_job_prints_the_figures_the_readme_shows(tmp_path):
    """`asd simulate --tau-max 800` on the built-in trace: λ and every row of the README's table
    (quality, cost, latency mean/p50/p95/p99, stops per tier, p95 ≤ τ) as the command prints them."""
    from click.testing import CliRunner

    from asd.cli import main

    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- main-job-output -->", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    assert "$ asd simulate --tau-max 800\n" in block
    shown = {row.split()[0]: row.split()[1:] for row in block.splitlines()
             if re.match(r"\s+(policy|always-|fixed-2stage|pipeline|threshold|router|random|protocol|oracle)", row)}
    result = CliRunner().invoke(main, ["simulate", "--tau-max", "800", "--json", str(tmp_path / "main.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "main.json").read_text())
    assert f"λ = {data['chosen']['lambda']:.0f}:" in block
    rows = {"policy": data["chosen"], **data["baselines"]}
    assert set(shown) == set(rows)
    for name, row in rows.items():
        ms = row["latency_ms"]
        printed = [f"{row['quality']:.3f}", f"{row['cost_rel']:.3f}", *(f"{ms[s]:.0f}" for s in ("mean", "p50", "p95", "p99")),
                   *(f"{share:.2f}" for share in row["stop_fractions"]), "yes" if ms["p95"] <= 800 else "no"]
        assert shown[name] == printed, f"README's main job, row {name}: shows {shown[name]}, the command prints {printed}"


MARKER = re.compile(r"<!-- checked-example(?:: ([a-z, -]+))? -->")
MARKER_FLAGS = {"trimmed", "shared-data"}


def checked_examples() -> list[tuple[int, list[tuple[str, str]], frozenset[str]]]:
    """(line, [(command, shown output)], flags) for each code block marked `<!-- checked-example -->`:
    its `$ ` lines (a trailing backslash continues one) and what the README shows after each.
    Flags after the marker's colon: `trimmed` (the README shows some of the lines, in order) and
    `shared-data` (the commands read ../shared/data)."""
    lines, examples = (REPO / "README.md").read_text().splitlines(), []
    for at, line in enumerate(lines):
        marker = MARKER.fullmatch(line.strip())
        if not marker:
            continue
        flags = frozenset(f.strip() for f in (marker.group(1) or "").split(",") if f.strip())
        assert flags <= MARKER_FLAGS, f"README line {at + 1}: unknown marker flags {sorted(flags - MARKER_FLAGS)}"
        assert lines[at + 1].startswith("```"), f"README line {at + 1}: the marker must sit right above a code block"
        end = next(i for i in range(at + 2, len(lines)) if lines[i].startswith("```"))
        runs, continued = [], False
        for text in lines[at + 2 : end]:
            if continued:
                runs[-1][0] = runs[-1][0][:-1] + " " + text.strip()
            elif text.startswith("$ "):
                runs.append([text[2:], []])
            else:
                assert runs, f"README line {at + 1}: a checked example starts with its `$ ` command"
                runs[-1][1].append(text)
            continued = bool(runs) and not runs[-1][1] and runs[-1][0].endswith("\\")
        examples.append((at + 1, [(command, "\n".join(shown)) for command, shown in runs], flags))
    return examples


def shows_in_order(shown: str, printed: str) -> bool:
    """Every line the README shows is a line printed, in the same order (same_output per line)."""
    printed_lines = iter(printed.splitlines())
    return all(any(same_output(want, got) for got in printed_lines) for want in shown.splitlines() if want)


def _comparable(text: str) -> str:
    # rich pads table lines with spaces; the built-in bundle's path is the checkout's
    text = re.sub(r"\S*/asd/traces/builtin/bundle\b", "BUILTIN", text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def test_readme_has_checked_examples():
    examples = checked_examples()
    assert len(examples) >= 8  # calibrate, the DES queues, sweep, policy_reference, check (twice), the worked examples
    assert sum("shared-data" in flags for _, _, flags in examples) >= 2
    assert shows_in_order("b 2\nd 4.0", "a\nb 2\nc\nd 4.0000000000001")
    assert not shows_in_order("d 4\nb 2", "b 2\nd 4")  # out of order
    assert not shows_in_order("b 3", "b 2")


@pytest.mark.parametrize("line, runs, flags", [pytest.param(*e, id=f"line{e[0]}") for e in checked_examples()])
def test_readme_checked_example_prints_what_the_readme_shows(line, runs, flags, tmp_path):
    """Each command of a marked example, run from a directory that has the repository's tests/
    (the committed check policy) and scripts/, with ../shared/data beside it where the example
    reads it, at 120 columns, prints what the README shows: stdout and stderr as a terminal shows
    them, or only stdout where the command is a pipeline or sends its stderr elsewhere itself
    (`2>/dev/null`); all of it, or the lines shown in order where the README trims."""
    cwd = tmp_path / "repo"
    cwd.mkdir()
    if "shared-data" in flags:
        if not SHARED_DATA.is_dir():
            pytest.skip(f"real public data not found at {SHARED_DATA} (set ASD_SHARED_DATA)")
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / "data").symlink_to(SHARED_DATA.resolve())
    for shared in ("tests", "scripts"):
        (cwd / shared).symlink_to(REPO / shared)
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    compare = shows_in_order if "trimmed" in flags else same_output
    for command, shown in runs:
        whole = command if "|" in command or "2>" in command else command + " 2>&1"
        done = subprocess.run(["bash", "-c", whole], cwd=cwd,
                              env=env, capture_output=True, text=True, timeout=600)
        printed = done.stdout
        assert compare(_comparable(shown), _comparable(printed)), (
            f"README line {line}: `{command}` now prints\n{printed}\n--- the README shows\n{shown}")
