"""Tier ladder configs (YAML/JSON): sampling defaults merge, mistakes name the tier."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from asd.errors import ConfigError
from asd.live.tiers import load_ladder
from tests.live.conftest import REPO, free_port


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


def test_a_json_tier_config_naming_a_key_twice_is_refused(tmp_path):
    """json kept the second `model` silently: the tier would load another model than the one read first."""
    path = tmp_path / "t.json"
    path.write_text('{"tiers": [{"name": "a", "backend": "llama_cpp", "model": "m.gguf", "model": "n.gguf"}]}')
    with pytest.raises(ConfigError) as info:
        load_ladder(path)
    assert str(info.value) == f"{path}: not valid JSON (key 'model' appears twice in one object)"


def test_a_yaml_tier_config_naming_a_key_twice_is_refused_with_its_line(tmp_path):
    """PyYAML keeps the last value silently, as json does: an edited params_b must not vanish."""
    path = tmp_path / "tiers.yaml"
    path.write_text("tiers:\n  - name: a\n    backend: llama_cpp\n    model: m.gguf\n    params_b: 1\n"
                    "    params_b: 7\n")
    with pytest.raises(ConfigError) as info:
        load_ladder(path)
    assert str(info.value) == f"{path}, line 6: not valid YAML (key 'params_b' appears twice in one mapping)"
    # the same key in two different mappings is no repeat, and a merged key may be overridden
    path.write_text("tiers:\n  - &a {name: a, backend: llama_cpp, model: m.gguf, params_b: 1}\n"
                    "  - {<<: *a, name: b, params_b: 7}\n")
    assert [(t["name"], t["params_b"]) for t in load_ladder(path)["tiers"]] == [("a", 1), ("b", 7)]
    # an anchored mapping that merges and overrides, itself merged later (PyYAML flattens it in place)
    path.write_text("tiers:\n  - name: small\n    backend: vllm\n    model: a\n    sampling: &fast\n"
                    "      <<: {temperature: 0.0, max_tokens: 48}\n      max_tokens: 16\n"
                    "  - {name: big, backend: vllm, model: b}\nsampling:\n  <<: *fast\n")
    assert load_ladder(path)["tiers"][1]["sampling"]["max_tokens"] == 16
    path.write_text("tiers:\n  - {name: a, backend: llama_cpp, model: m.gguf, params_b: 1}\n"
                    "  - {name: b, backend: llama_cpp, model: m.gguf, params_b: 7}\n")
    assert [t["params_b"] for t in load_ladder(path)["tiers"]] == [1, 7]


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
        # YAML reads `hardware: 2024` as a number: the manifest refused it after every tier had run
        ([{"name": "a", "backend": "llama_cpp", "model": "m", "hardware": 2024}],
         r"tiers\[0\] \(a\): `hardware` must be a string, got 2024 \(quote it in YAML\)"),
        ([{"name": "a", "backend": "llama_cpp", "model": "m", "dtype": 16}], "`dtype` must be a string"),
        # a template without {prompt} sent every request the template alone
        ([{"name": "a", "backend": "llama_cpp", "model": "m", "template": "{nope}"}],
         r"tiers\[0\] \(a\): `template` must be chat, raw or a string containing \{prompt\}, got '\{nope\}'"),
        ([{"name": "a", "backend": "llama_cpp", "model": "m", "template": 3}], "`template` must be chat, raw"),
        # sent as the request's stop list: an int was a TypeError inside asd serve's startup
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "stop": 5}],
         r"tiers\[0\] \(a\): stop must be a string or a list of strings, got 5"),
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "stop": ["\n", 1]}], "stop must be a string or a list"),
        # URLs httpx could not call: refused here, not at the first request
        ([{"name": "a", "backend": "openai", "url": "not a url"}], "`url` must be an http:// or https:// URL, got 'not a url'"),
        ([{"name": "a", "backend": "openai", "url": "ftp://x"}], "`url` must be an http:// or https:// URL, got 'ftp://x'"),
        ([{"name": "a", "backend": "openai", "url": ["http://h:1", "http://"]}], "`url` 'http://' names no host"),
        ([{"name": "a", "backend": "openai", "url": "http://h:99999"}],
         "`url` 'http://h:99999': the port must be a number from 1 to 65535"),
        ([{"name": "a", "backend": "openai", "url": "http://h:x"}], "the port must be a number from 1 to 65535"),
        ([{"name": "a", "backend": "openai", "url": "http://[::1"}], "`url` 'http://\\[::1': Invalid IPv6 URL"),
        # sampling values no backend or OpenAI-compatible server accepts
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "sampling": {"temperature": "hot"}}],
         r"tiers\[0\] \(a\): sampling.temperature must be a number >= 0, got 'hot'"),
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "sampling": {"temperature": -1}}],
         "sampling.temperature must be a number >= 0, got -1"),
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "sampling": {"top_logprobs": 21}}],
         r"sampling.top_logprobs must be a whole number from 0 to 20 \(what OpenAI-compatible servers accept; "
         r"0: no logprobs\), got 21"),
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "sampling": {"top_logprobs": -1}}], "from 0 to 20"),
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "sampling": {"max_tokens": True}}],
         "sampling.max_tokens must be a whole number >= 1, got True"),
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "sampling": {"top_k": 5}}],
         r"tiers\[0\] \(a\): sampling: unknown key 'top_k'; valid keys: max_tokens, temperature, top_logprobs$"),
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "speculative": "yes"}],
         "`speculative` must be true or false, got 'yes'"),
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "draft_separator": 1}], "`draft_separator` must be a string"),
        ([{"name": "a", "backend": ["openai"], "url": "http://h:1"}], r"unknown backend \['openai'\]"),
        # a server's chat template is the server's: asd serve answered 500 at the first request
        ([{"name": "a", "backend": "openai", "url": "http://h:1", "template": "chat"}],
         r"tiers\[0\] \(a\): backend openai cannot read the model's chat template \(`template: chat`\); "
         r"give `template` as a string containing \{prompt\}"),
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


OPENAI_KEYS = ("api_key, backend, backoff_s, batch_size, concurrency, cooldown_s, draft_separator, dtype, hardware, "
               "model, model_id, name, params_b, quantization, retries, sampling, score_prefix, served_model, slots, "
               "speculative, stop, template, tensor_parallel, timeout_s, url")


@pytest.mark.parametrize(
    "key, message",
    [
        ("bogus_key", f"t.yaml: tiers[0] (a): unknown key 'bogus_key'; valid keys: {OPENAI_KEYS}"),
        ("concurency", f"t.yaml: tiers[0] (a): unknown key 'concurency' (did you mean 'concurrency'?); "
                       f"valid keys: {OPENAI_KEYS}"),
        ("n_ctx", f"t.yaml: tiers[0] (a): `n_ctx` is an option of backend llama_cpp, not openai; valid keys: {OPENAI_KEYS}"),
    ],
)
def test_an_unknown_tier_key_is_refused_naming_it_and_every_valid_key(tmp_path, monkeypatch, key, message):
    """A typo was silently ignored: the option it meant stayed at its default."""
    monkeypatch.chdir(tmp_path)
    Path("t.yaml").write_text(json.dumps({"tiers": [{"name": "a", "backend": "openai", "url": "http://h:1", key: 1}]}))
    with pytest.raises(ConfigError) as caught:
        load_ladder("t.yaml")
    assert str(caught.value) == message


def test_unknown_top_level_keys_and_top_level_sampling_mistakes_name_the_top_level(tmp_path):
    path = tmp_path / "t.yaml"
    tier = {"name": "a", "backend": "openai", "url": "http://h:1"}
    path.write_text(json.dumps({"tier": [tier], "tiers": [tier]}))
    with pytest.raises(ConfigError) as caught:
        load_ladder(path)
    assert str(caught.value) == f"{path}: unknown top-level key 'tier' (did you mean 'tiers'?); valid keys: sampling, tiers"
    path.write_text("sampling: {temperature: .nan}\ntiers: [{name: a, backend: openai, url: 'http://h:1'}]\n")
    with pytest.raises(ConfigError) as caught:
        load_ladder(path)
    assert str(caught.value) == f"{path}: sampling.temperature must be a number >= 0, got nan"


def test_null_sampling_values_take_the_default_and_a_url_list_with_ports_and_ipv6_loads(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("sampling: {top_logprobs: null}\n"
                    "tiers: [{name: a, backend: openai, url: ['http://h:8000/v1', 'https://[::1]:8443'], stop: \"\\n\",\n"
                    "         speculative: false, sampling: {temperature: 0.7, top_logprobs: 20}}]\n")
    (tier,) = load_ladder(path)["tiers"]
    assert tier["sampling"] == {"max_tokens": 48, "temperature": 0.7, "top_logprobs": 20}
    assert tier["speculative"] is False and tier["stop"] == "\n"


def readme_tier_configs() -> list[str]:
    """The YAML blocks of the README that hold a `tiers:` list."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if "\ntiers:" in "\n" + b]


def test_every_key_the_shipped_configs_and_the_readme_use_is_valid(tmp_path):
    configs = [REPO / "asd/traces/builtin/tiers.yaml", REPO / "asd/traces/builtin/servers.yaml"]
    for i, block in enumerate(readme_tier_configs()):
        configs.append(tmp_path / f"readme-{i}.yaml")
        configs[-1].write_text(block)
    assert len(configs) > 2
    for path in configs:
        assert load_ladder(path)["tiers"], path


NOT_UTF8 = b"tiers:\n  - {name: caf\xe9, backend: openai, url: 'http://h:1'}\n"


def test_a_tier_config_that_is_not_utf8_is_one_line_naming_the_file_and_line(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError) as caught:
        load_ladder(path)
    assert str(caught.value) == f"{path}, line 1: not UTF-8 text (invalid start byte)"
    path.write_bytes(NOT_UTF8)
    with pytest.raises(ConfigError) as caught:
        load_ladder(path)
    assert str(caught.value) == f"{path}, line 2: not UTF-8 text (invalid continuation byte)"
    path.write_bytes(b"\xef\xbb\xbf" + NOT_UTF8.replace(b"\xe9", b"e"))  # a byte-order mark is fine
    assert load_ladder(path)["tiers"][0]["name"] == "cafe"


@pytest.mark.parametrize("command", ["serve", "live", "record"])
@pytest.mark.parametrize(
    "config, message",
    [
        (b"\xff\xfe", "error: t.yaml, line 1: not UTF-8 text (invalid start byte)"),
        (b"tiers: [{name: smollm2-135m, backend: openai, url: 'http://127.0.0.1:9', stop: 5}]\n",
         "error: t.yaml: tiers[0] (smollm2-135m): stop must be a string or a list of strings, got 5"),
        (b"tiers: [{name: smollm2-135m, backend: openai, url: 'http://127.0.0.1:9', bogus_key: 1}]\n",
         f"error: t.yaml: tiers[0] (smollm2-135m): unknown key 'bogus_key'; valid keys: {OPENAI_KEYS}"),
    ],
)
def test_asd_serve_live_and_record_refuse_a_bad_tier_config_with_one_line_and_exit_2(tmp_path, monkeypatch, command,
                                                                                      config, message):
    """Each was a traceback (UnicodeDecodeError; a TypeError in serve's startup, exit 3, or in live)."""
    from click.testing import CliRunner

    from asd.cli import main

    monkeypatch.chdir(tmp_path)
    Path("t.yaml").write_bytes(config)
    Path("p.jsonl").write_text('{"prompt": "Say hi."}\n')
    Path("p.npz").write_bytes(b"")  # never read: the tier config is refused first
    args = {"serve": ["serve", "--tiers", "t.yaml", "--policy", "p.npz", "--port", str(free_port())],
            "live": ["live", "--tiers", "t.yaml", "--policy", "p.npz", "--prompts", "p.jsonl", "--rate", "1"],
            "record": ["record", "--tiers", "t.yaml", "--prompts", "p.jsonl", "-o", "out", "--no-progress"]}[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output == message + "\n"
    assert not Path("out").exists() and not Path("out.partial").exists()
