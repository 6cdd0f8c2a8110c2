"""Tier backends behind one protocol (`base.Backend`), registered by name in `BACKENDS`.
Heavy dependencies (llama-cpp-python, vLLM, httpx) are imported only when a tier uses them."""

from asd.live.backends.base import BACKENDS, Backend, Generation, Score, make_backend, register
from asd.live.backends import http as _http  # noqa: F401  (registers openai)
from asd.live.backends import local as _local  # noqa: F401  (registers llama_cpp)
from asd.live.backends import vllm as _vllm  # noqa: F401  (registers vllm)

__all__ = ["BACKENDS", "Backend", "Generation", "Score", "make_backend", "register"]
