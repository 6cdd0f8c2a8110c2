"""Start llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) for a GGUF on
a free loopback port — the CPU ladder's tier servers for the live tests, the benchmark and the
README's `asd serve` example. asd itself only fronts servers; this is how the CPU ones start."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from asd.errors import BackendError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def llama_cpp_server(model: str, log: Path, *, n_ctx: int = 512, logits_all: bool = True,
                     startup_s: float = 120.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """Serve `model` on 127.0.0.1 with one thread; yields (base URL, process) once /v1/models
    answers, and stops the process on exit. `logits_all=False` makes prompt evaluation cheaper
    (no logits for prompt tokens) but the server then returns no logprobs."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "1",
               # Prompt batches too: with the default (every core) its spinning threads crawl on a busy machine.
               "--n_threads_batch", "1",
               # llama.cpp's server cuts a running stream short when another request arrives.
               "--interrupt_requests", "false", "--logits_all", str(logits_all).lower()]
    with open(log, "wb") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if server.poll() is not None:
                raise BackendError(f"llama.cpp server for {model} exited: {Path(log).read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise BackendError(f"llama.cpp server for {model} did not start within {startup_s:g} s")
            time.sleep(0.5)
        yield url, server
    finally:
        stop_process(server)


def stop_process(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Terminate a server we started, and kill it if it has not exited within `timeout_s`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_server_ladder(smollm2_url, gemma_url, max_tokens: int = 8) -> list[dict]:
    """The built-in ladder on two llama.cpp servers (`asd/traces/builtin/servers.yaml`, whose
    comments say why each tier is set up as it is) at these URLs, answers capped at `max_tokens`."""
    from asd.live.tiers import load_ladder

    path = Path(__file__).resolve().parents[1] / "traces" / "builtin" / "servers.yaml"
    tiers = load_ladder(path)["tiers"]
    for tier, url in zip(tiers, (smollm2_url, gemma_url)):
        tier["url"] = url
        tier["sampling"]["max_tokens"] = int(max_tokens)
    return tiers
