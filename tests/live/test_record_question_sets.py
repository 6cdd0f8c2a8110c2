"""`asd record` on the public question sets (MT-bench, MMLU-Pro `questions.parquet`) with the
shipped ladder: each tier's context is checked or chosen from the tokenised prompts before
any model loads; a changed tier config is started over with --restart; the summary's
"accepted share" is the one `asd traces inspect` shows."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from click.testing import CliRunner

from asd.cli import main
from asd.live.record import fit_contexts
from asd.live.tiers import load_ladder
from asd.live.prompts import load_prompts
from asd.traces.bundle import open_bundle
from asd.traces.summary import summarize_bundle
from asd.traces.validate import validate_bundle
from tests.live.conftest import REPO, free_port, write_jsonl

SHIPPED = REPO / "asd" / "traces" / "builtin" / "tiers.yaml"


def run_cli(*args):
    return CliRunner().invoke(main, ["record", *map(str, args), "--no-progress"])


def shipped_ladder(tmp_path, max_tokens=None, **per_tier) -> str:
    """The shipped ladder as written, with fewer new tokens (tests stay fast) and per-tier edits."""
    config = yaml.safe_load(SHIPPED.read_text())
    if max_tokens is not None:
        config["sampling"]["max_tokens"] = max_tokens
    for tier in config["tiers"]:
        tier.update(per_tier)
    path = tmp_path / "tiers.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def vocab_only_loads(monkeypatch, smollm2):
    """Every llama.cpp model load, as its `vocab_only` flag: proves no weights were loaded."""
    import llama_cpp

    loads = []
    original = llama_cpp.Llama.__init__

    def spy(self, *args, **kwargs):
        loads.append(bool(kwargs.get("vocab_only")))
        original(self, *args, **kwargs)

    monkeypatch.setattr(llama_cpp.Llama, "__init__", spy)
    return loads


def test_too_small_n_ctx_is_refused_before_any_model_loads_naming_prompt_and_fix(tmp_path, shared_data, vocab_only_loads):
    tiers = shipped_ladder(tmp_path, n_ctx=64)
    questions = shared_data / "mt_bench" / "questions.parquet"
    result = run_cli("--tiers", tiers, "--prompts", questions, "--limit", 3, "-o", tmp_path / "b")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    match = re.fullmatch(
        rf"error: {re.escape(str(tiers))}: tier 'smollm2-135m': prompt '(\d+)' needs (\d+) tokens \((\d+) prompt \+ 48 "
        r"max_tokens\) but n_ctx is 64; set `n_ctx: (\d+)` \(or `n_ctx: auto`\) for this tier\n",
        result.output,
    )
    assert match, result.output
    prompt_id, needed, prompt_tokens, suggested = match.group(1), *map(int, match.groups()[1:])
    assert prompt_id in set(load_prompts(questions).head(3)["request_id"])
    assert needed == prompt_tokens + 48 > 64 and suggested >= needed and suggested % 64 == 0
    assert vocab_only_loads and all(vocab_only_loads)  # only vocabularies were read
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()
    # The suggested size is enough for every tier of the ladder.
    fixed = load_ladder(shipped_ladder(tmp_path, n_ctx=suggested))
    assert [t["n_ctx"] for t in fit_contexts(fixed, load_prompts(questions).head(3), "all", tiers)["tiers"]] == [suggested] * 2


@pytest.mark.parametrize("question_set", ["mt_bench", "mmlu_pro"])
def test_auto_context_fits_the_longest_prompt_of_the_run(shared_data, smollm2, question_set):
    prompts = load_prompts(shared_data / question_set / "questions.parquet").head(40)
    ladder = fit_contexts(load_ladder(SHIPPED), prompts, "all", SHIPPED)
    from asd.live.backends.local import LlamaCppBackend

    for tier in ladder["tiers"]:
        vocab = LlamaCppBackend(tier, vocab_only=True)
        try:
            longest = max(len(vocab._tokenize_prompt(vocab.format_prompt(p))) for p in prompts["prompt"])
        finally:
            vocab.close()
        assert tier["n_ctx"] % 64 == 0 and longest + 48 <= tier["n_ctx"] < longest + 96 + 64


@pytest.mark.slow
def test_shipped_ladder_records_mt_bench_and_mmlu_pro_questions(tmp_path, shared_data, smollm2):
    """The README's example, with one question of each and 4 new tokens instead of 48 so it
    stays short (about 100 s on a loaded two-core machine: Gemma scores its 262k-token
    vocabulary at every prompt position)."""
    tiers = shipped_ladder(tmp_path, max_tokens=4)
    for name, limit in (("mt_bench", 1), ("mmlu_pro", 1)):
        out = tmp_path / name
        result = run_cli("--tiers", tiers, "--prompts", shared_data / name / "questions.parquet", "--limit", limit,
                         "-o", out, "--json", tmp_path / f"{name}.json")
        assert result.exit_code == 0, result.output
        assert f"{out}: complete, 1 request\n" in result.output
        assert validate_bundle(out) == []
        bundle = open_bundle(out)
        outputs = bundle.to_pandas("outputs")
        contexts = [t["n_ctx"] for t in bundle.manifest["provenance"]["tiers"]]
        for tier, n_ctx in enumerate(contexts):
            rows = outputs[outputs["tier"] == tier]
            assert isinstance(n_ctx, int) and (rows["n_prompt_tokens"] + 4 <= n_ctx).all()
        sources = set(outputs["label_source"])
        assert sources == ({"reference:choice"} if name == "mmlu_pro" else {"agreement:last_tier"})
        # One "accepted share" (Σ n_accepted / Σ n_draft_tokens): the summary and inspect agree.
        recorded = json.loads((tmp_path / f"{name}.json").read_text())["drafts"][0]["accepted_share"]
        inspected = summarize_bundle(bundle)["drafts"][0]["accepted_share"]
        assert recorded == pytest.approx(inspected, abs=1e-4)
        assert f"accepted share {inspected:.3f}" in result.output


def _two_tier_config(tmp_path, smollm2, second: dict):
    config = {
        "sampling": {"max_tokens": 3, "temperature": 0.0, "top_logprobs": 2},
        "tiers": [{"name": "small", "backend": "llama_cpp", "model": smollm2, "template": "chat",
                   "stop": ["<|im_end|>"], "n_ctx": "auto", "n_threads": 1}, second],
    }
    path = tmp_path / "tiers.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_changed_tier_config_is_refused_naming_restart_and_restart_starts_over(tmp_path, smollm2, httpx_installed):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"request_id": "q1", "prompt": "Say yes."}])
    down = {"name": "big", "backend": "openai", "url": f"http://127.0.0.1:{free_port()}", "retries": 1, "backoff_s": 0.01}
    first = run_cli("--tiers", _two_tier_config(tmp_path, smollm2, down), "--prompts", prompts, "-o", tmp_path / "b")
    assert first.exit_code == 2 and first.output.count("\n") == 1
    assert f"1 result recorded so far is kept in {tmp_path / 'b.partial'}" in first.output
    assert "rerun the same command to resume, or after changing the tier config or options add --restart" in first.output

    # The user fixes the config: the same command now describes other tiers.
    fixed = _two_tier_config(tmp_path, smollm2, {"name": "big", "backend": "llama_cpp", "model": smollm2,
                                                  "template": "chat", "stop": ["<|im_end|>"], "n_threads": 1})
    refused = run_cli("--tiers", fixed, "--prompts", prompts, "-o", tmp_path / "b")
    assert refused.exit_code == 2 and refused.output.count("\n") == 1
    assert f"error: {tmp_path / 'b.partial'}: holds an unfinished recording from other tiers/prompts/options" in refused.output
    assert "add --restart to discard it and start over" in refused.output

    done = run_cli("--tiers", fixed, "--prompts", prompts, "-o", tmp_path / "b", "--restart")
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert lines[0] == f"{tmp_path / 'b'}: complete, 1 request"  # singular
    assert lines[1] == f"  --restart: discarded 1 result of an unfinished run in {tmp_path / 'b.partial'}"
    assert lines[2].startswith("  generated 2 outputs, scored 1 draft (resumed 0 outputs, 0 drafts)")
    assert re.search(r"draft small → big: 1 row, accepted share \d\.\d{3}", done.output)
    assert not (tmp_path / "b.partial").exists() and validate_bundle(tmp_path / "b") == []


def test_n_ctx_that_is_neither_a_number_nor_auto_is_one_line(tmp_path):
    tiers = shipped_ladder(tmp_path, n_ctx="lots")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    result = run_cli("--tiers", tiers, "--prompts", prompts, "-o", tmp_path / "b")
    assert result.exit_code == 2 and result.output == (
        f"error: {tiers}: tier 'smollm2-135m': n_ctx must be a positive integer or `auto`, got 'lots'\n"
    )
    assert not (tmp_path / "b.partial").exists()
