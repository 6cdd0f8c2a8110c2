"""The issue's acceptance path, as a new user runs it: import real ladders, inspect them,
and see the published per-tier accuracy."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from asd.cli import main


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_inspect_of_imported_mmlu_pro_ladder_shows_published_accuracy(shared_data, tmp_path):
    models = ["Meta-Llama-3_1-8B", "Meta-Llama-3_1-70B"]
    _run("traces", "import", "mmlu-pro", shared_data / "mmlu_pro", "--models", ",".join(models), "-o", tmp_path / "b")
    _run("traces", "inspect", tmp_path / "b", "--json", tmp_path / "s.json")
    summary = json.loads((tmp_path / "s.json").read_text())
    published = pd.read_csv(shared_data / "mmlu_pro" / "per_model_accuracy.csv").set_index("model")
    assert [t["name"] for t in summary["tiers"]] == models
    for tier in summary["tiers"]:
        assert 100 * tier["mean_quality"] == pytest.approx(published.loc[tier["name"], "acc_strict"], abs=0.005)
    assert summary["signals"] == {"logprobs": False, "timings": False, "drafts": False}
    # The oracle can only do better than the last tier alone, at a fraction of its cost.
    assert summary["oracle"]["quality"] > summary["tiers"][-1]["mean_quality"]
    assert 0 < summary["oracle"]["cost_share"] < 1


def test_inspect_of_imported_llama2_alpaca_eval_ladder(shared_data, tmp_path):
    models = "llama-2-7b-chat-hf,llama-2-13b-chat-hf,llama-2-70b-chat-hf"
    _run("traces", "import", "alpaca-eval", shared_data / "alpaca_eval", "--models", models,
         "--drop-incomplete", "-o", tmp_path / "b")
    result = _run("traces", "inspect", tmp_path / "b", "--json", tmp_path / "s.json")
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["n_requests"] == 804  # llama-2-70b-chat-hf lacks one of the 805 prompts
    qualities = [t["mean_quality"] for t in summary["tiers"]]
    assert qualities == sorted(qualities)  # bigger Llama-2 chat models win more often
    assert "llama-2-70b-chat-hf" in result.output
