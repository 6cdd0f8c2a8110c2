"""Tier ladder configs (YAML/JSON): sampling defaults merge, mistakes name the tier."""

from __future__ import annotations

import json

import pytest

from asd.errors import ConfigError
from asd.live.tiers import load_ladder
from tests.live.conftest import REPO


def test_builtin_ladder_loads_with_sampling_merged():
    ladder = load_ladder(REPO / "asd/traces/builtin/tiers.yaml")
    assert [t["name"] for t in ladder["tiers"]] == ["smollm2-135m", "gemma3-270m"]
    assert all(t["sampling"] == {"max_tokens": 48, "temperature": 0.0, "top_logprobs": 5} for t in ladder["tiers"])


def test_per_tier_sampling_overrides_defaults_and_json_works(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"sampling": {"max_tokens": 10}, "tiers": [
        {"name": "a", "backend": "llama_cpp", "model": "m.gguf"},
        {"name": "b", "backend": "openai", "url": "http://h:1", "sampling": {"max_tokens": 20}}]}))
    tiers = load_ladder(path)["tiers"]
    assert tiers[0]["sampling"]["max_tokens"] == 10 and tiers[1]["sampling"]["max_tokens"] == 20


@pytest.mark.parametrize(
    "tiers, message",
    [
        ([{"backend": "llama_cpp", "model": "m"}], r"tiers\[0\]: `name` missing"),
        ([{"name": "a", "backend": "llama_cpp", "model": "m"}, {"name": "a", "backend": "llama_cpp", "model": "m"}], "duplicate tier name 'a'"),
        ([{"name": "a", "backend": "tgi", "model": "m"}], "unknown backend 'tgi'"),
        ([{"name": "a", "model": "m"}], r"tiers\[0\] \(a\): `backend` missing \(one of llama_cpp, openai, vllm\)"),
        ([{"name": "a", "backend": "openai"}], "give `model`"),
        ([{"name": "a", "backend": "llama_cpp", "model": "m", "sampling": {"max_tokens": -1}}], "max_tokens"),
        ([], "at least one tier"),
        # read as numbers and URLs later: a TypeError/ValueError traceback in asd live and serve
        ([{"name": "a", "backend": "openai", "url": 5}], r"tiers\[0\] \(a\): `url` must be a URL or a list of URLs, got 5"),
        ([{"name": "a", "backend": "openai", "url": {"h": 1}}], "`url` must be a URL or a list"),
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "retries": "x"}], "`retries` must be a whole number >= 0, got 'x'"),
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "timeout_s": -1}], "`timeout_s` must be a number > 0"),
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "backoff_s": [1]}], "`backoff_s` must be a number >= 0"),
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "concurrency": True}], "`concurrency` must be a whole number >= 1"),
        ([{"name": "a", "backend": "llama_cpp", "model": "m", "tensor_parallel": 1.5}], "`tensor_parallel` must be a whole"),
        ([{"name": "a", "backend": "llama_cpp", "model": "m", "params_b": "x"}], "`params_b` must be a number > 0"),
        # a template without {prompt} sent every request the template alone
        ([{"name": "a", "backend": "llama_cpp", "model": "m", "template": "{nope}"}],
         r"tiers\[0\] \(a\): `template` must be chat, raw or a string containing \{prompt\}, got '\{nope\}'"),
        ([{"name": "a", "backend": "llama_cpp", "model": "m", "template": 3}], "`template` must be chat, raw"),
    ],
)
def test_config_mistakes_name_the_tier(tmp_path, tiers, message):
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps({"tiers": tiers}))
    with pytest.raises(ConfigError, match=message):
        load_ladder(path)


def test_unparseable_config(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("tiers: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_ladder(path)
    with pytest.raises(ConfigError, match="not found"):
        load_ladder(tmp_path / "none.yaml")
