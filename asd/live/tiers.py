"""Ladder configs for `asd record`: a YAML or JSON file listing tiers in ladder order
(name, backend, model or url, params_b, hardware, tensor_parallel, sampling, backend options)
plus default sampling for all tiers."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from asd.errors import ConfigError

DEFAULT_SAMPLING = {"max_tokens": 48, "temperature": 0.0, "top_logprobs": 5}


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
        tiers.append(tier)
    return {"tiers": tiers, "sampling": defaults}


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value
