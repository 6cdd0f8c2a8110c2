"""Each benchmark's `--help` gives its docstring's whole first paragraph, not a sentence cut
at the first line break."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(str(p.relative_to(REPO)) for p in (REPO / "benchmarks").rglob("bench_*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_describes_the_benchmark_in_whole_sentences(script):
    doc = ast.get_docstring(ast.parse((REPO / script).read_text()))
    first_paragraph = " ".join(doc.split("\n\n")[0].split())
    done = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert first_paragraph in " ".join(done.stdout.split())
    assert first_paragraph.endswith(".")
