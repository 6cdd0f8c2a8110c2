"""Ladder configs for `asd record`, `asd serve` and `asd live`: a YAML or JSON file listing
tiers in ladder order (name, backend, model or url, params_b, hardware, tensor_parallel,
sampling, backend options) plus default sampling for all tiers. Every mistake the runner or a
backend would trip on later (a wrong type, an unknown key) is refused here, naming the tier."""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from asd.errors import ConfigError
from asd.traces.jsonl import DuplicateKeyError, loads_unique

DEFAULT_SAMPLING = {"max_tokens": 48, "temperature": 0.0, "top_logprobs": 5}
# OpenAI-compatible servers (vLLM, llama.cpp, OpenAI itself) accept at most 20 top logprobs.
MAX_TOP_LOGPROBS = 20
TOP_LEVEL_KEYS = ("sampling", "tiers")
# Keys every tier may have, whatever its backend: read by the runner and its pools
# (`asd.live.pool`), `asd record`, the bundle manifest and the simulator of `asd live`. A
# backend's own keys are its `options` (`asd.live.backends`).
TIER_KEYS = (
    "name", "backend", "model", "sampling", "template", "stop", "draft_separator", "speculative",
    "concurrency", "slots", "timeout_s", "retries", "backoff_s", "cooldown_s", "batch_size",
    "params_b", "hardware", "tensor_parallel", "model_id", "dtype", "quantization",
)
# Tier options the runner, the simulator and the backends read as numbers: (whole number?, least
# value, least value allowed?); null or absent = the default.
NUMBER_OPTIONS = {
    "params_b": (False, 0, False), "tensor_parallel": (True, 1, True), "concurrency": (True, 1, True),
    "slots": (True, 1, True), "timeout_s": (False, 0, False), "retries": (True, 0, True),
    "backoff_s": (False, 0, True), "cooldown_s": (False, 0, True), "batch_size": (True, 1, True),
    "n_threads": (True, 1, True), "seed": (True, 0, True),
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key given twice in one mapping is refused (PyYAML keeps the last
    value silently, as json does), naming its line: the same rule as a JSON config's. Keys are
    checked as written, when the mapping is composed: a merge (`<<: *base`) may be overridden,
    which is what it is for, and merging rewrites the merged nodes later."""

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise _DuplicateYamlKey(key_node.value, key_node.start_mark.line + 1)
                seen.add(key)
        return node


class _DuplicateYamlKey(DuplicateKeyError):
    def __init__(self, key, line: int):
        super().__init__(key)
        self.line = line


def load_ladder(path: str | Path) -> dict:
    """→ {"tiers": [tier dicts with `sampling` merged], "sampling": defaults}."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: tier config not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is accepted, as for prompt files
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text ({exc.reason})") from None
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        data = loads_unique(text) if kind == "JSON" else yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateYamlKey as exc:
        raise ConfigError(f"{path}, line {exc.line}: not valid YAML (key {exc.key!r} appears twice in one "
                          "mapping)") from None
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: not valid JSON (key {exc.key!r} appears twice in one object)") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {kind} ({str(exc).splitlines()[0]})") from None
    except RecursionError:  # both parsers recurse once per level of nesting
        raise ConfigError(f"{path}: not valid {kind} (nested too deeply)") from None
    if isinstance(data, list):
        data = {"tiers": data}
    if not isinstance(data, dict) or not isinstance(data.get("tiers"), list) or not data["tiers"]:
        raise ConfigError(f"{path}: expected a `tiers:` list with at least one tier")
    _check_keys(data, TOP_LEVEL_KEYS, f"{path}", "top-level key")
    defaults = dict(DEFAULT_SAMPLING)
    defaults.update(_sampling(data.get("sampling"), f"{path}"))
    tiers, names = [], set()
    from asd.live.backends import BACKENDS, Backend

    for i, tier in enumerate(data["tiers"]):
        where = f"{path}: tiers[{i}]"
        tier = dict(_mapping(tier, where))
        name = tier.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: `name` missing")
        if name in names:
            raise ConfigError(f"{where}: duplicate tier name {name!r}")
        names.add(name)
        backend = tier.get("backend")
        if backend is None:
            raise ConfigError(f"{where} ({name}): `backend` missing (one of {', '.join(sorted(BACKENDS))})")
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ConfigError(f"{where} ({name}): unknown backend {backend!r} (backends are {sorted(BACKENDS)})")
        _check_tier_keys(tier, backend, BACKENDS, f"{where} ({name})")
        if not tier.get("model") and not tier.get("url"):
            raise ConfigError(f"{where} ({name}): give `model` (path or name) or `url`")
        if tier.get("template") == "chat" and getattr(BACKENDS[backend], "chat_prompt", None) is Backend.chat_prompt:
            # it failed at the first request (a 500 from asd serve), not here
            raise ConfigError(f"{where} ({name}): backend {backend} cannot read the model's chat template "
                              "(`template: chat`); give `template` as a string containing {prompt}")
        sampling = dict(defaults)
        sampling.update(_sampling(tier.pop("sampling", None), f"{where} ({name})"))
        tier["sampling"] = sampling
        _check_options(tier, f"{where} ({name})")
        tiers.append(tier)
    return {"tiers": tiers, "sampling": defaults}


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _check_keys(mapping: dict, valid, where: str, what: str = "key") -> None:
    """An unknown key (a typo would otherwise be ignored: the option silently at its default)
    is an error naming it, the nearest valid key, and every valid one."""
    for key in mapping:
        if key not in valid:
            close = difflib.get_close_matches(str(key), list(valid), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown {what} {key!r}{hint}; valid keys: {', '.join(sorted(valid))}")


def _check_tier_keys(tier: dict, backend: str, backends: dict, where: str) -> None:
    valid = set(TIER_KEYS) | set(getattr(backends[backend], "options", ()))
    for key in tier:
        if key in valid:
            continue
        others = sorted(b for b, cls in backends.items() if key in getattr(cls, "options", ()))
        if others:  # a key of another backend: say so, rather than "unknown"
            raise ConfigError(f"{where}: `{key}` is an option of backend {' and '.join(others)}, not {backend}; "
                              f"valid keys: {', '.join(sorted(valid))}")
        _check_keys(tier, valid, where)


def _sampling(value, where: str) -> dict:
    """A `sampling:` block (top level or one tier's), checked: known keys, and values that every
    backend and OpenAI-compatible server accepts; null = the default."""
    sampling = {k: v for k, v in _mapping({} if value is None else value, f"{where}: sampling").items() if v is not None}
    _check_keys(sampling, DEFAULT_SAMPLING, f"{where}: sampling")
    max_tokens = sampling.get("max_tokens", 1)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"{where}: sampling.max_tokens must be a whole number >= 1, got {max_tokens!r}")
    temperature = sampling.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature < 0:
        raise ConfigError(f"{where}: sampling.temperature must be a number >= 0, got {temperature!r}")
    top = sampling.get("top_logprobs", 0)
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS:
        raise ConfigError(f"{where}: sampling.top_logprobs must be a whole number from 0 to {MAX_TOP_LOGPROBS} "
                          f"(what OpenAI-compatible servers accept; 0: no logprobs), got {top!r}")
    return sampling


def _check_url(url, where: str) -> None:
    """An http(s) URL with a host and, when given, a port in 1..65535 (httpx would fail on
    anything else at the first request, inside the server's event loop)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 address
        raise ConfigError(f"{where}: `url` {url!r}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or any(c.isspace() for c in url):
        raise ConfigError(f"{where}: `url` must be an http:// or https:// URL, got {url!r}")
    if not parts.hostname:
        raise ConfigError(f"{where}: `url` {url!r} names no host")
    try:
        port = parts.port  # ValueError: not a number, or beyond 65535
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigError(f"{where}: `url` {url!r}: the port must be a number from 1 to 65535")


def _check_options(tier: dict, where: str) -> None:
    """The numeric options (`NUMBER_OPTIONS`), `template`, `url`, `stop` and the other typed
    options of one tier, named when wrong."""
    for key, (whole, least, inclusive) in NUMBER_OPTIONS.items():
        value = tier.get(key)
        if value is None:
            continue
        number = isinstance(value, int) if whole else isinstance(value, (int, float)) and math.isfinite(value)
        if isinstance(value, bool) or not number or not (value >= least if inclusive else value > least):
            kind = "a whole number" if whole else "a number"
            raise ConfigError(f"{where}: `{key}` must be {kind} {'>=' if inclusive else '>'} {least}, got {value!r}")
    for key in ("model_id", "dtype", "quantization", "hardware"):  # written to the bundle's manifest as text
        value = tier.get(key)
        if value is not None and not isinstance(value, str):
            # refused now: the manifest check would refuse it after every tier had run
            raise ConfigError(f"{where}: `{key}` must be a string, got {value!r} (quote it in YAML)")
    template = tier.get("template")
    if template not in (None, "", "raw", "chat") and not (isinstance(template, str) and "{prompt}" in template):
        # format_prompt substitutes {prompt}: without it every request would be sent the template alone
        raise ConfigError(f"{where}: `template` must be chat, raw or a string containing {{prompt}}, got {template!r}")
    url = tier.get("url")
    urls = [url] if isinstance(url, str) else url
    if url is not None and not (isinstance(urls, list) and urls and all(isinstance(u, str) and u for u in urls)):
        raise ConfigError(f"{where}: `url` must be a URL or a list of URLs, got {url!r}")
    for one in urls or []:
        _check_url(one, where)
    stop = tier.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        # the backends send it as the request's stop list: an int failed inside the server's startup
        raise ConfigError(f"{where}: stop must be a string or a list of strings, got {stop!r}")
    speculative = tier.get("speculative")
    if speculative is not None and not isinstance(speculative, bool):
        raise ConfigError(f"{where}: `speculative` must be true or false, got {speculative!r}")
    separator = tier.get("draft_separator")
    if separator is not None and not isinstance(separator, str):
        raise ConfigError(f"{where}: `draft_separator` must be a string, got {separator!r}")
    engine_args = tier.get("engine_args")
    if engine_args is not None and not isinstance(engine_args, dict):
        raise ConfigError(f"{where}: `engine_args` must be a mapping, got {engine_args!r}")
