"""Running the README's examples from the repository root leaves no untracked paths: every
file or directory an example writes (`-o`, `--json`, `>`; and a recording's `.partial/`) is
ignored by git, or is the tracked built-in trace its maintainers re-record."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

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
