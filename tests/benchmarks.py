"""Running a benchmark script the way its smoke test does: in a fresh interpreter from the
repository root, small sizes, its --json report read back. What each test then checks (every
figure present and finite, the printed table equal to the JSON) is the test's own business."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str, tmp_path: Path, timeout: float = 600) -> tuple[dict, str]:
    """(the --json report, stdout) of `benchmarks/<script> ARGS --json PATH`; fails on a non-zero exit."""
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, f"benchmarks/{script}", *args, "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()), done.stdout
