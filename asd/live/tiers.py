"""Ladder configs for `asd record`: a YAML or JSON file listing tiers in ladder order
(name, backend, model or url, params_b, hardware, tensor_parallel, sampling, backend options)
plus default sampling for all tiers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from asd.errors import ConfigError

DEFAULT_SAMPLING = {"max_tokens": 48, "temperature": 0.0, "top_logprobs": 5}
# Tier options the runner, the simulator and the backends read as numbers: (whole number?, least
# value, least value allowed?); null or absent = the default.
NUMBER_OPTIONS = {
    "params_b": (False, 0, False), "tensor_parallel": (True, 1, True), "concurrency": (True, 1, True),
    "slots": (True, 1, True), "timeout_s": (False, 0, False), "retries": (True, 0, True),
    "backoff_s": (False, 0, True), "cooldown_s": (False, 0, True), "batch_size": (True, 1, True),
    "n_threads": (True, 1, True), "seed": (True, 0, True),
}


def load_ladder(path: str | Path) -> dict:
    """→ {"tiers": [tier dicts with `sampling` merged], "sampling": defaults}."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: tier config not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({str(exc).splitlines()[0]})") from None
    if isinstance(data, list):
        data = {"tiers": data}
    if not isinstance(data, dict) or not isinstance(data.get("tiers"), list) or not data["tiers"]:
        raise ConfigError(f"{path}: expected a `tiers:` list with at least one tier")
    defaults = dict(DEFAULT_SAMPLING)
    defaults.update(_mapping(data.get("sampling") or {}, f"{path}: sampling"))
    tiers, names = [], set()
    from asd.live.backends import BACKENDS

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
        if backend not in BACKENDS:
            raise ConfigError(f"{where} ({name}): unknown backend {backend!r} (backends are {sorted(BACKENDS)})")
        if not tier.get("model") and not tier.get("url"):
            raise ConfigError(f"{where} ({name}): give `model` (path or name) or `url`")
        sampling = dict(defaults)
        sampling.update(_mapping(tier.pop("sampling", None) or {}, f"{where}: sampling"))
        for key in ("max_tokens", "top_logprobs"):
            if not isinstance(sampling[key], int) or sampling[key] < (1 if key == "max_tokens" else 0):
                raise ConfigError(f"{where} ({name}): sampling.{key} must be a non-negative integer")
        tier["sampling"] = sampling
        _check_options(tier, f"{where} ({name})")
        tiers.append(tier)
    return {"tiers": tiers, "sampling": defaults}


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _check_options(tier: dict, where: str) -> None:
    """`url` and the numeric options (`NUMBER_OPTIONS`) of one tier, named when wrong."""
    for key, (whole, least, inclusive) in NUMBER_OPTIONS.items():
        value = tier.get(key)
        if value is None:
            continue
        number = isinstance(value, int) if whole else isinstance(value, (int, float)) and math.isfinite(value)
        if isinstance(value, bool) or not number or not (value >= least if inclusive else value > least):
            kind = "a whole number" if whole else "a number"
            raise ConfigError(f"{where}: `{key}` must be {kind} {'>=' if inclusive else '>'} {least}, got {value!r}")
    template = tier.get("template")
    if template not in (None, "", "raw", "chat") and not (isinstance(template, str) and "{prompt}" in template):
        # format_prompt substitutes {prompt}: without it every request would be sent the template alone
        raise ConfigError(f"{where}: `template` must be chat, raw or a string containing {{prompt}}, got {template!r}")
    url = tier.get("url")
    urls = [url] if isinstance(url, str) else url
    if url is not None and not (isinstance(urls, list) and urls and all(isinstance(u, str) and u for u in urls)):
        raise ConfigError(f"{where}: `url` must be a URL or a list of URLs, got {url!r}")
