"""The built-in trace: its committed prompt set is what the generator script writes, and the
shipped bundle (recorded by `asd record` on CPU) holds both tiers, logprobs, timings, drafts."""

from __future__ import annotations

import importlib.util
import json

import pytest

from asd.traces.bundle import builtin_bundle_path, open_bundle
from tests.conftest import REPO

BUILTIN = REPO / "asd" / "traces" / "builtin"


def _generator():
    spec = importlib.util.spec_from_file_location("make_builtin_prompts", REPO / "scripts" / "make_builtin_prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_prompt_set_is_exactly_what_the_generator_writes():
    rows = [json.loads(line) for line in (BUILTIN / "prompts.jsonl").read_text().splitlines()]
    assert rows == _generator().make_prompts(len(rows))
    assert 500 <= len(rows) <= 1000
    assert {r["task"] for r in rows} == {"arithmetic", "facts", "copying", "classification"}
    assert all(r["reference"] for r in rows) and len({r["prompt"] for r in rows}) == len(rows)


def test_arithmetic_references_are_right():
    for row in _generator().make_prompts(200):
        if row["task"] == "arithmetic":
            words = row["prompt"].split()
            a, op, b = int(words[2]), words[3], int(words[4].rstrip("?"))
            assert int(row["reference"]) == {"plus": a + b, "minus": a - b, "times": a * b}[op]


@pytest.fixture(scope="module")
def builtin():
    if not (builtin_bundle_path() / "manifest.json").is_file():
        pytest.skip("the built-in bundle has not been recorded into this checkout")
    return open_bundle("builtin")


def test_builtin_bundle_has_both_tiers_logprobs_timings_and_drafts(builtin):
    assert builtin.tier_names == ["smollm2-135m", "gemma3-270m"]
    assert all(t["backend"] == "llama_cpp" and t["backend_version"] for t in builtin.tiers)
    n = len(builtin.read("requests", ["request_id"]))
    outputs = builtin.to_pandas("outputs", ["tier", "token_logprobs", "n_output_tokens", "ttft_ms", "e2e_ms", "quality"])
    assert len(outputs) == 2 * n
    assert outputs["ttft_ms"].notna().all() and (outputs["e2e_ms"] >= outputs["ttft_ms"]).all()
    assert all(len(lp) == k for lp, k in zip(outputs["token_logprobs"], outputs["n_output_tokens"]))
    assert outputs["quality"].between(0, 1).all() and 0 < outputs["quality"].mean() < 1
    drafts = builtin.to_pandas("drafts")
    assert len(drafts) == n and (drafts["n_accepted"] <= drafts["n_draft_tokens"]).all()
    assert builtin.manifest["provenance"]["prompts_sha256"]


def test_builtin_bundle_stays_small():
    files = [p for p in builtin_bundle_path().glob("*") if p.is_file()]
    if not files:
        pytest.skip("the built-in bundle has not been recorded into this checkout")
    assert sum(p.stat().st_size for p in files) <= 5 * 1024 * 1024
