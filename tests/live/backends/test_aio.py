"""The async OpenAI-compatible replica (`asd.live.backends.aio`, what `asd serve` and `asd live`
call) when a server has dropped an idle keep-alive connection: llama-cpp-python's server does so
after hanging up on a prompt longer than its context, and the next request to reuse the
connection (left in the pool by the tokenize calls that diagnose the hang-up) took a healthy
replica out for its cooldown. Seen under load in tests/live/test_server.py, whose real-server
test covers the same path; a fake server makes the race deterministic here: it answers the
first request on each connection and hangs up, unanswered, on the next. (A fake tests the
mapping only; tests/live/test_server.py runs the real server.)"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

pytest.importorskip("httpx", reason="httpx not installed (pip install '.[live]')")

from asd.live.backends.aio import OpenAIReplica, ReplicaError  # noqa: E402
from tests.live.conftest import QuietHandler, serving  # noqa: E402

EVENT = {"choices": [{"text": "Tokyo", "index": 0, "logprobs": None, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 7, "completion_tokens": 1}}


class _DropsReusedConnections(QuietHandler):
    """Answers /v1/models, /extras/tokenize and streamed /v1/completions, but hangs up, unanswered,
    on any request that comes on a connection it already answered one on."""

    protocol_version = "HTTP/1.1"  # keep-alive: the client pools the connection
    lock = threading.Lock()

    def setup(self):
        super().setup()
        self.requests_here = 0
        with self.lock:
            self.tally["connections"] += 1

    def _hang_up_if_reused(self) -> bool:
        self.requests_here += 1
        if self.requests_here > 1:
            self.close_connection = True
            return True
        with self.lock:
            self.tally[self.path] = self.tally.get(self.path, 0) + 1
        return False

    def do_GET(self):
        if not self._hang_up_if_reused():
            self.reply(json.dumps({"data": [{"id": "m"}]}).encode())

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self._hang_up_if_reused():
            return
        if self.path == "/extras/tokenize":
            self.reply(json.dumps({"tokens": [1, 2, 3, 4, 5, 6, 7]}).encode())
        else:
            self.reply(f"data: {json.dumps(EVENT)}\n\ndata: [DONE]\n\n".encode(), "text/event-stream")


def _calls(url: str):
    """Each call of a replica, each on the connection the call before it left in the pool."""
    async def go():
        replica = OpenAIReplica({"name": "t", "backend": "openai", "model": "m", "n_ctx": 512}, url)
        try:
            served = await replica.served_model()
            counted = await replica._count_tokens("The capital of Japan is")
            probed = await replica.probe(5.0)
            return served, counted, probed, await replica.generate("The capital of Japan is", 4)
        finally:
            await replica.client.aclose()

    return asyncio.run(go())


def test_a_pooled_connection_the_server_dropped_is_asked_again_on_a_new_one():
    tally = {"connections": 0}
    with serving(type("Handler", (_DropsReusedConnections,), {"tally": tally})) as url:
        served, counted, probed, generation = _calls(url)
    assert served == "m" and counted == 7 and probed is None  # the probe: the server is there
    assert generation.text == "Tokyo" and generation.n_prompt_tokens == 7
    # every call after the first was sent on a pooled connection, hung up on, and answered on a new one
    assert tally == {"connections": 4, "/v1/models": 2, "/extras/tokenize": 1, "/v1/completions": 1}


def test_a_server_that_hangs_up_on_a_new_connection_too_is_still_a_replica_failure():
    class HangsUpOnCompletions(_DropsReusedConnections):
        def do_POST(self):
            if self.path == "/v1/completions":
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.close_connection = True
                return
            super().do_POST()

    with serving(type("Handler", (HangsUpOnCompletions,), {"tally": {"connections": 0}})) as url:
        with pytest.raises(ReplicaError) as caught:
            _calls(url)
    # it counts the prompt (7 tokens + 4 ≤ the 512 of its context): the server, not the prompt
    assert caught.value.retryable and "cut the stream before any token" in str(caught.value)
