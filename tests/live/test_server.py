"""`asd serve` in front of two real llama.cpp servers: OpenAI-shaped answers with the `asd`
object, streaming, OpenAI-style errors for malformed requests, bearer token, Prometheus text
that the official parser reads, feedback that survives a restart, 429 when the queue is full,
and 64 concurrent clients with a tier server killed mid-run: none lost, none hung."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason="httpx not installed (pip install '.[live]')")
pytest.importorskip("fastapi", reason="fastapi not installed (pip install '.[live]')")

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from asd.engine.policy import Policy
from asd.live.feedback import FeedbackStore
from asd.live.pool import TierPool
from asd.live.runner import build_runner
from asd.live.server import create_app
from tests.live.cascade import builtin_policy, calibrated_builtin_policy, served_ladder, simple_features
from tests.live.conftest import REPO, QuietHandler, free_port, llama_cpp_server, serving, subprocess_env

PROMPT = "What is the chemical symbol for zinc? Answer with just the symbol."


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy") / "policy.npz"
    builtin_policy().save(path)
    return path


def make_app(tiers, policy_path, *, api_key=None, max_in_flight=64, feedback_path=None, request_timeout_s=300.0):
    store = FeedbackStore(Policy.load(policy_path), policy_path, feedback_path)
    return create_app(lambda: build_runner(tiers, store.policy, simple_features, max_in_flight=max_in_flight,
                                           request_timeout_s=request_timeout_s),
                      api_key=api_key, feedback=lambda runner: store)


@pytest.fixture(scope="module")
def client(llama_server, gemma_server, policy_file, tmp_path_factory):
    feedback = tmp_path_factory.mktemp("feedback") / "fb.json"
    tiers = served_ladder(llama_server, gemma_server, max_tokens=3)
    for tier in tiers:
        tier["n_ctx"] = 512  # the servers' context (conftest), which llama-cpp-python's server does not report
    with TestClient(make_app(tiers, policy_file, feedback_path=feedback)) as test_client:
        yield test_client


def test_completion_is_openai_shaped_with_the_asd_object(client):
    response = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    (choice,) = body["choices"]
    assert isinstance(choice["text"], str) and choice["finish_reason"] in ("stop", "length")
    asd = body["asd"]
    assert asd["stopped_at_tier"] in ("smollm2-135m", "gemma3-270m") and body["model"] == asd["stopped_at_tier"]
    assert 0.0 <= asd["tier_probabilities"]["smollm2-135m"] <= 1.0
    assert asd["cost"]["gpu_ms"] > 0 and asd["cost"]["tiers_run"][0] == "smollm2-135m"
    assert asd["fallback"] is None
    assert body["usage"]["completion_tokens"] <= 3


def test_chat_completion_streams_openai_chunks_ending_with_asd_and_done(client):
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert events[-1]["asd"]["stopped_at_tier"] in ("smollm2-135m", "gemma3-270m")
    plain = client.post("/v1/chat/completions", json={**body, "stream": False}).json()
    assert plain["choices"][0]["message"]["content"] == text  # greedy: the same answer


@pytest.mark.parametrize("body, where", [
    ({}, "prompt"),
    ({"prompt": PROMPT, "max_tokens": 0}, "max_tokens"),
    ({"prompt": PROMPT, "n": 2}, "n"),
    ({"prompt": [PROMPT, PROMPT]}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 42}, "prompt"),
])
def test_malformed_completion_requests_get_400_with_an_openai_error_body(client, body, where):
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith(where)
    assert error["param"] == where  # a list of two prompts or a blank one gave param null


def test_null_n_and_stream_are_the_openai_defaults(client):
    for extra in ({"n": None}, {"stream": None}, {"n": None, "stream": None}):
        response = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2, **extra})
        assert response.status_code == 200, (extra, response.text)
        assert response.json()["object"] == "text_completion"  # not streamed
    chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": PROMPT}],
                                                      "max_tokens": 2, "n": None, "stream": None})
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"
    empty = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": ""}]})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "messages"


def test_malformed_json_chat_roles_and_routes_get_openai_error_bodies(client):
    broken = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
    no_messages = client.post("/v1/chat/completions", json={"messages": []})
    assert no_messages.status_code == 400 and no_messages.json()["error"]["message"].startswith("messages")
    bad_role = client.post("/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "hi"}]})
    assert bad_role.status_code == 400 and "role" in bad_role.json()["error"]["message"]
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    wrong_method = client.get("/v1/completions")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_a_prompt_longer_than_the_context_is_a_400_and_leaves_the_tier_servers_up(client):
    """llama-cpp-python's server (n_ctx 512) cuts the stream of a too-long prompt; that was taken
    for a dying server: both replicas marked down, a 503 for everyone for 5 s. It is the
    request's own fault: a 400 naming the tier and its context, every tier left up."""
    before = client.get("/stats").json()
    response = client.post("/v1/completions", json={"prompt": "word " * 3000, "max_tokens": 4})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert error["param"] == "prompt"
    assert error["message"].startswith("prompt: too long for tier 'smollm2-135m' (its context is 512 tokens)")
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    stats = client.get("/stats").json()
    assert [r["up"] for t in stats["tiers"] for r in t["replicas"]] == [True, True]
    assert stats["rejected"] == before["rejected"] + 1 and stats["failed"] == before["failed"]
    long_chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "word " * 3000}]})
    assert long_chat.status_code == 400 and long_chat.json()["error"]["code"] == "context_length_exceeded", long_chat.text
    other = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 3})  # another client
    assert other.status_code == 200 and other.json()["asd"]["fallback"] is None
    errors = {s.labels["kind"]: s.value for f in text_string_to_metric_families(client.get("/metrics").text)
              for s in f.samples if s.name == "asd_errors_total"}
    assert errors.get("context_length_exceeded", 0) >= 2 and "no_tier" not in errors


def test_a_too_long_prompt_is_a_400_even_when_the_tier_config_gives_no_context(llama_server, gemma_server, policy_file):
    """The built-in ladder gives no n_ctx and llama-cpp-python's server reports none: a server that
    cut this prompt's stream and tokenizes it at once is refusing the prompt, not failing."""
    with TestClient(make_app(served_ladder(llama_server, gemma_server, max_tokens=3), policy_file)) as client:
        response = client.post("/v1/completions", json={"prompt": "word " * 3000, "max_tokens": 4})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded"
        assert error["message"].startswith("prompt: too long for tier 'smollm2-135m' (its context is not known to asd)")
        assert client.get("/health").json()["status"] == "ok"
        assert client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize("body, where", [
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages.0.content.0.text"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}, "messages.0.content.0.text"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": ["a"]}]}]}, "messages.0.content.0.text"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": {"a": 1}}]}]}, "messages.0.content.0.text"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text"),
    ({"messages": [{"role": "user", "content": ["hi"]}]}, "messages.0.content.0"),
])
def test_content_parts_whose_text_is_not_a_string_get_a_400_naming_the_part(client, body, where):
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == where
    assert error["message"].startswith(f"{where}:")
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT},
                                                        {"type": "image_url", "image_url": {"url": "http://x"}}]}],
             "max_tokens": 2}
    assert client.post("/v1/chat/completions", json=parts).status_code == 200


@pytest.mark.parametrize("route, raw, where", [
    ("/v1/completions", '{"prompt": "\\ud800 hi", "max_tokens": 2}', "prompt"),
    ("/v1/completions", '{"prompt": ["\\udfff"], "max_tokens": 2}', "prompt.0"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi \\ud800"}]}', "messages.0.content"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud800"}]}]}',
     "messages.0.content.0.text"),
])
def test_an_unpaired_surrogate_is_a_400_naming_the_field(client, route, raw, where):
    response = client.post(route, content=raw.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == where and "unpaired surrogate" in error["message"]
    assert client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}).status_code == 200


def test_an_unhandled_exception_is_an_openai_500_that_is_logged_and_counted(client, monkeypatch, caplog):
    import asd.live.server

    def broken(result, stops):
        raise RuntimeError("boom")

    monkeypatch.setattr(asd.live.server, "apply_stop", broken)
    with caplog.at_level("ERROR", logger="asd.serve"):
        response = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2})
    assert response.status_code == 500
    assert response.json()["error"] == {"message": "internal server error (RuntimeError); it is logged",
                                        "type": "server_error", "code": "internal_error", "param": None}
    (record,) = [r for r in caplog.records if r.name == "asd.serve"]
    assert "RuntimeError: boom" in caplog.text and record.exc_info
    samples = [s for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples
               if s.name == "asd_requests_total" and s.labels == {"route": "/v1/completions", "code": "500"}]
    assert [s.value for s in samples] == [1.0]
    monkeypatch.undo()
    assert client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize("extra, where, phrase", [
    ({"max_tokens": True}, "max_tokens", "valid integer"),
    ({"max_tokens": "5"}, "max_tokens", "valid integer"),
    ({"temperature": "hot"}, "temperature", "valid number"),
    ({"temperature": -1}, "temperature", "only greedy decoding"),
    ({"temperature": 0.7}, "temperature", "only greedy decoding"),
    ({"logprobs": 2}, "logprobs", "logprobs are not returned"),
    ({"logprobs": True}, "logprobs", "logprobs are not returned"),
    ({"stop": 5}, "stop", "valid"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"stop": [""]}, "stop.0", "at least 1"),
])
def test_sampling_fields_are_strictly_typed_and_unsupported_sampling_is_refused(client, extra, where, phrase):
    response = client.post("/v1/completions", json={"prompt": PROMPT, **extra})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == where and error["message"].startswith(where) and phrase in error["message"]


def test_infinity_temperature_is_refused_and_stop_strings_cut_the_answer(client):
    infinite = client.post("/v1/completions", content=b'{"prompt": "hi", "temperature": Infinity}',
                           headers={"content-type": "application/json"})
    assert infinite.status_code == 400 and "finite" in infinite.json()["error"]["message"]
    body = {"prompt": PROMPT, "max_tokens": 3, "temperature": 0, "logprobs": None, "top_p": 1, "seed": 3}
    plain = client.post("/v1/completions", json=body)  # greedy and unknown fields: accepted
    assert plain.status_code == 200, plain.text
    text = plain.json()["choices"][0]["text"]
    assert len(text) >= 2
    stop = text[1:]  # the answer less its first character
    cut = client.post("/v1/completions", json={**body, "stop": [stop, "\u00a7never"]}).json()
    assert cut["choices"][0]["text"] == text[:text.find(stop)] and cut["choices"][0]["finish_reason"] == "stop"
    chat = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3}
    chat_text = client.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"]
    chat_cut = client.post("/v1/chat/completions", json={**chat, "stop": chat_text[1:], "stream": True})
    lines = [line for line in chat_cut.iter_lines() if line.startswith("data: {")]
    streamed = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content", "") for line in lines)
    assert streamed == chat_text[:1] and json.loads(lines[-1][6:])["choices"][0]["finish_reason"] == "stop"


def test_usage_counts_the_tokens_of_the_answer_a_stop_string_cut(client):
    """A stop string cuts the answer; usage counted every token decoded (12 for ' 1,2')."""
    body = {"prompt": "Count from one to ten: one, two,", "max_tokens": 12}
    whole = client.post("/v1/completions", json=body).json()
    text, decoded = whole["choices"][0]["text"], whole["usage"]["completion_tokens"]
    assert decoded > 3 and len(text) > 4
    stop = text[3:]  # every token past the third character or so is cut
    cut = client.post("/v1/completions", json={**body, "stop": stop}).json()
    assert cut["choices"][0]["text"] == text[:3]
    kept = cut["usage"]["completion_tokens"]
    assert 1 <= kept <= 3 and kept < decoded  # a token is at least one character
    assert cut["usage"]["total_tokens"] == cut["usage"]["prompt_tokens"] + kept


def test_head_health_answers_like_get_without_a_body(client):
    head = client.head("/health")
    assert head.status_code == 200 and head.content == b""
    broken = client.post("/v1/completions", content=b'{"prompt": ', headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["param"] is None


def test_metrics_are_prometheus_text_the_official_parser_reads(client):
    client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2})
    stats = client.get("/stats").json()
    text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("asd_requests", "asd_stops", "asd_request_latency_seconds", "asd_tier_latency_seconds",
                 "asd_errors", "asd_queue_depth", "asd_in_flight", "asd_fallbacks"):
        assert name in families, name
    stops = {s.labels["tier"]: s.value for s in families["asd_stops"].samples if s.name == "asd_stops_total"}
    assert sum(stops.values()) == stats["completed"] and set(stops) == {"smollm2-135m", "gemma3-270m"}
    count = [s.value for s in families["asd_request_latency_seconds"].samples
             if s.name == "asd_request_latency_seconds_count"]
    assert count == [stats["completed"]]
    depth = {s.labels["tier"] for s in families["asd_queue_depth"].samples}
    assert depth == {"smollm2-135m", "gemma3-270m"}


def test_health_and_stats_describe_the_ladder(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and set(health["tiers"]) == {"smollm2-135m", "gemma3-270m"}
    stats = client.get("/stats").json()
    assert [t["tier"] for t in stats["tiers"]] == ["smollm2-135m", "gemma3-270m"]
    assert stats["lambda"] > 0 and stats["feedback"]["path"].endswith("fb.json")


def test_bearer_token_guards_every_route_but_health(llama_server, gemma_server, policy_file):
    app = make_app(served_ladder(llama_server, gemma_server), policy_file, api_key="s3cret")
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        for route in ("/stats", "/metrics"):
            denied = client.get(route)
            assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
        assert client.post("/v1/completions", json={"prompt": PROMPT}).status_code == 401
        assert client.get("/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/stats", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        # the scheme is case-insensitive (RFC 7235); another scheme, or the token alone, is not it
        assert client.get("/stats", headers={"Authorization": "bearer s3cret"}).status_code == 200
        for given in ("Basic s3cret", "s3cret", "Bearer", "Bearer s3cret2"):
            assert client.get("/stats", headers={"Authorization": given}).status_code == 401, given


def test_feedback_that_cannot_be_saved_is_not_counted_and_may_be_retried(llama_server, gemma_server, policy_file,
                                                                          tmp_path):
    """The counts were folded into the live policy before the file was written, so each failed
    POST (500) still counted, a retry again, and opposite verdicts both."""
    tiers = served_ladder(llama_server, gemma_server, max_tokens=2)
    store = tmp_path / "feedback.json"
    with TestClient(make_app(tiers, policy_file, feedback_path=store)) as client:
        before = client.app.state.asd.runner.policy.tables
        answer = client.post("/v1/completions", json={"prompt": PROMPT}).json()["asd"]
        store.mkdir()  # the file can no longer be written (as a full disk or a removed volume)
        for verdict in (True, True, False):
            failed = client.post("/v1/feedback", json={"request_id": answer["request_id"], "accepted": verdict})
            assert failed.status_code == 503 and failed.json()["error"]["code"] == "feedback_not_saved"
            assert "the verdict is not counted" in failed.json()["error"]["message"]
        assert client.get("/stats").json()["feedback"]["observations"] == 0
        assert client.app.state.asd.runner.policy.tables is before
        store.rmdir()
        ok = client.post("/v1/feedback", json={"request_id": answer["request_id"], "accepted": False})
        assert ok.status_code == 200 and ok.json()["counted"] is True and ok.json()["observations"] == 1
    assert json.loads(store.read_text())["n"] == 1


def test_a_store_that_cannot_persist_counts_in_memory_as_serve_warns(policy_file, tmp_path):
    store = FeedbackStore(Policy.load(policy_file), policy_file, tmp_path / "fb.json")
    store.persist = False  # what `asd serve` sets beside a read-only policy, with its warning
    policy = store.add(0, 0, False, True)
    assert store.n == 1 and store.policy is policy and not (tmp_path / "fb.json").exists()
    assert policy.tables.alpha[0, 0] == Policy.load(policy_file).tables.alpha[0, 0] + 1


def test_feedback_updates_the_posterior_and_survives_a_restart(llama_server, gemma_server, policy_file, tmp_path):
    tiers = served_ladder(llama_server, gemma_server, max_tokens=2)
    store = tmp_path / "feedback.json"
    before = Policy.load(policy_file).tables
    with TestClient(make_app(tiers, policy_file, feedback_path=store)) as client:
        answer = client.post("/v1/completions", json={"prompt": PROMPT}).json()["asd"]
        unknown = client.post("/v1/feedback", json={"request_id": "nope", "accepted": True})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_request_id"
        bad = client.post("/v1/feedback", json={"request_id": answer["request_id"]})
        assert bad.status_code == 400
        for loose in ("yes", 1, "false", None):  # JSON booleans only
            refused = client.post("/v1/feedback", json={"request_id": answer["request_id"], "accepted": loose})
            assert refused.status_code == 400 and refused.json()["error"]["param"] == "accepted", loose
        ok = client.post("/v1/feedback", json={"request_id": answer["request_id"], "accepted": False})
        assert ok.status_code == 200, ok.text
        assert ok.json()["counted"] is True and ok.json()["observations"] == 1
        for _ in range(5):  # the same verdict again: answered, not counted again
            again = client.post("/v1/feedback", json={"request_id": answer["request_id"], "accepted": False})
            assert again.status_code == 200 and again.json()["counted"] is False
            assert again.json()["observations"] == 1
        conflict = client.post("/v1/feedback", json={"request_id": answer["request_id"], "accepted": True})
        assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "feedback_conflict"
        assert "already given (accepted: false)" in conflict.json()["error"]["message"]
        tier, bin_ = answer["stopped_at_tier_index"], ok.json()["bin"]
        running = client.app.state.asd.runner.policy  # the server decides with the updated posterior at once
        assert running.tables.beta[tier, bin_] == before.beta[tier, bin_] + 1
    assert ok.json()["cold"] is False  # this policy has no stage 0: every request climbs from tier 0
    saved = json.loads(store.read_text())
    assert saved["rejected"][0][tier][bin_] == 1 and saved["n"] == 1
    # Restart: a new server on the same policy file reads the feedback back.
    with TestClient(make_app(tiers, policy_file, feedback_path=store)) as client:
        assert client.get("/stats").json()["feedback"]["observations"] == 1
        policy = client.app.state.asd.runner.policy
        assert policy.tables.beta[tier, bin_] == before.beta[tier, bin_] + 1
        assert policy.tables.alpha[tier, bin_] == before.alpha[tier, bin_]
        assert np.array_equal(policy.tables.beta.sum() - before.beta.sum(), 1.0)


@contextmanager
def uvicorn_server(app):
    """The app under a real uvicorn on a free loopback port, in a thread; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_full_queue_is_429_with_retry_after(llama_server, gemma_server, policy_file):
    app = make_app(served_ladder(llama_server, gemma_server, max_tokens=2), policy_file, max_in_flight=1)

    async def burst(url):
        async with httpx.AsyncClient(timeout=120) as http:
            calls = [http.post(f"{url}/v1/completions", json={"prompt": PROMPT}) for _ in range(4)]
            return await asyncio.gather(*calls)

    with uvicorn_server(app) as url:
        responses = asyncio.run(asyncio.wait_for(burst(url), 240))
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        stats = httpx.get(f"{url}/stats", timeout=30).json()
    codes = sorted(r.status_code for r in responses)
    assert codes[0] == 200 and 429 in codes
    # the 429s are counted as overloaded; /stats' `rejected` is for requests refused for their length
    assert f"asd_overloaded_total {float(codes.count(429))}" in metrics.splitlines()
    assert stats["rejected"] == 0
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["code"] == "queue_full"


@pytest.mark.slow
def test_64_clients_with_a_tier_server_killed_mid_run_lose_no_request(smollm2, gemma3, policy_file, tmp_path):
    """Every request gets an answer or a clear error; the run is bounded in count and time:
    the server gives up on a request after 240 s (a clear 503), the clients wait 300 s, the
    whole run at most 420 s."""
    n_clients, deadline_s = 64, 420
    prompts = [row["prompt"] for row in load_prompts_rows(n_clients)]
    with llama_cpp_server(smollm2, tmp_path / "s.log") as (smol_url, _), \
            llama_cpp_server(gemma3, tmp_path / "g.log", logits_all=False) as (gemma_url, gemma):
        tiers = served_ladder(smol_url, gemma_url, max_tokens=2)
        app = make_app(tiers, policy_file, max_in_flight=n_clients, request_timeout_s=240)
        with uvicorn_server(app) as url:
            outcome = asyncio.run(asyncio.wait_for(load(url, prompts, gemma), deadline_s))
            stats = httpx.get(f"{url}/stats").json()
            metrics = httpx.get(f"{url}/metrics").text
    answered, errors, lost, killed_after = outcome
    print(f"sent {n_clients}, answered {len(answered)}, errors {len(errors)}, lost {len(lost)}, "
          f"Gemma killed after {killed_after} answers, {sum(bool(a['asd']['fallback']) for a in answered)} fallbacks")
    assert killed_after is not None
    assert len(answered) + len(errors) + len(lost) == n_clients
    assert lost == [], lost
    for status, body in errors:
        assert status in (429, 503, 504) and body["error"]["message"]
    assert answered  # the cascade kept answering from SmolLM2 after Gemma died
    fell_back = [a for a in answered if a["asd"]["fallback"]]
    assert fell_back and all(a["asd"]["stopped_at_tier"] == "smollm2-135m" for a in fell_back)
    assert stats["completed"] == len(answered) and stats["in_flight"] == 0
    assert list(text_string_to_metric_families(metrics))


def load_prompts_rows(n):
    """The first n prompts of the built-in set (four tasks, so some requests continue to Gemma)."""
    from asd.traces.bundle import builtin_bundle_path

    path = builtin_bundle_path().parent / "prompts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()[:n]]


async def load(url, prompts, victim, kill_after=8):
    """One concurrent client per prompt; SIGKILL `victim` once `kill_after` answers are in.
    → (answers, [(status, error body)], [lost: exceptions or bodies without an answer], answers at kill)."""
    answered, errors, lost = [], [], []
    killed_after = None

    async def one(http, i):
        nonlocal killed_after
        try:
            response = await http.post(f"{url}/v1/completions", json={"prompt": prompts[i]})
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            lost.append(f"{type(exc).__name__}: {exc}")
            return
        if response.status_code == 200 and body.get("choices"):
            answered.append(body)
        elif response.status_code >= 400 and "error" in body:
            errors.append((response.status_code, body))
        else:
            lost.append(body)
        if killed_after is None and len(answered) >= kill_after:
            killed_after = len(answered)
            victim.kill()

    limits = httpx.Limits(max_connections=len(prompts))
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        await asyncio.gather(*[one(http, i) for i in range(len(prompts))])
    return answered, errors, lost, killed_after


def _free_port() -> str:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def test_asd_serve_refuses_a_ladder_the_policy_was_not_calibrated_for_with_one_line(policy_file, tmp_path):
    import yaml
    from click.testing import CliRunner

    from asd.cli import main

    tiers = served_ladder("http://127.0.0.1:1", "http://127.0.0.1:2")
    tiers[1]["name"] = "llama-70b"
    config = tmp_path / "tiers.yaml"
    config.write_text(yaml.safe_dump({"tiers": tiers}))
    port = _free_port()  # not the default 8000: a server the developer runs there would answer first
    result = CliRunner().invoke(main, ["serve", "--tiers", str(config), "--policy", str(policy_file), "--port", port])
    assert result.exit_code == 2
    # no "serving" banner above it; both files named
    assert result.output.splitlines() == [f"error: {config} and {policy_file}: tier config names ['smollm2-135m', "
                                          "'llama-70b'] differ from the policy's tiers ['smollm2-135m', 'gemma3-270m']"]
    wide = CliRunner().invoke(main, ["serve", "--tiers", str(config), "--policy", str(policy_file), "--host", "0.0.0.0"])
    assert wide.exit_code == 2 and "binding beyond loopback needs --api-key" in wide.output


def test_asd_serve_refuses_a_tier_size_the_policy_was_not_calibrated_on(tmp_path):
    """The right names, a size the policy was not calibrated on: `asd check` refuses such a
    bundle; `asd serve` and `asd live` took the config."""
    import yaml
    from click.testing import CliRunner

    from asd.cli import main
    from tests.live.cascade import calibrated_builtin_policy

    policy = calibrated_builtin_policy()
    assert policy.calibrated_params_b() == [0.135, 0.27]
    policy.save(tmp_path / "policy.npz")
    tiers = served_ladder("http://127.0.0.1:1", "http://127.0.0.1:2")
    tiers[1]["params_b"] = 70
    config = tmp_path / "tiers.yaml"
    config.write_text(yaml.safe_dump({"tiers": tiers}))
    result = CliRunner().invoke(main, ["serve", "--tiers", str(config), "--policy", str(tmp_path / "policy.npz"),
                                       "--port", _free_port()])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"error: {config} and {tmp_path / 'policy.npz'}: tier config gives "
                                          "gemma3-270m params_b 70, but the policy was calibrated on a 0.27B gemma3-270m"]


def test_serve_on_a_port_in_use_is_one_error_line_before_anything_loads(tmp_path):
    """Another server on the port: one `error:` line naming host and port and exit 2 (uvicorn
    would log its own line and exit 3, after the ladder and policy had loaded)."""
    import socket

    from click.testing import CliRunner

    from asd.cli import main

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        missing = tmp_path / "never-read.yaml"
        result = CliRunner().invoke(main, ["serve", "--tiers", str(missing), "--policy", str(missing),
                                           "--port", str(port)])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"error: --host 127.0.0.1 --port {port}: cannot listen there (") and "in use" in line


class _ModelsOnly(QuietHandler):
    """A tier server that is there: it answers GET /v1/models, and counts the times it was asked."""

    asked = 0

    def do_GET(self):
        type(self).asked += 1
        self.reply(json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode())


@contextmanager
def models_server_on(port: int):
    """`_ModelsOnly` on a given loopback port (a server that comes up where a tier points)."""
    from http.server import HTTPServer

    server = HTTPServer(("127.0.0.1", port), _ModelsOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def unreachable_warning(*tiers_and_urls) -> str:
    """The pattern of serve's startup warning for these (tier, URL) pairs."""
    parts = [rf"tier '{tier}' not reachable \({url}/v1/models: ConnectError: All connection attempts failed\)"
             for tier, url in tiers_and_urls]
    return "^" + "; ".join(parts) + "; serving anyway: GET /health reports a tier down until its server answers$"


def test_health_asks_the_tier_servers_and_never_reports_a_dead_one_up(policy_file, monkeypatch):
    """/health said every tier was up before any request, with every server down; now each
    server is asked (GET /v1/models): all down is 503 "down", one down is "degraded", and a
    server that comes up later is reported up."""
    import asd.live.server

    monkeypatch.setattr(asd.live.server, "HEALTH_MAX_AGE_S", 0.0)  # ask again at every call
    smol_port, gemma_port = free_port(), free_port()
    smol, gemma = f"http://127.0.0.1:{smol_port}", f"http://127.0.0.1:{gemma_port}"
    app = make_app(served_ladder(smol, gemma), policy_file)
    with pytest.warns(UserWarning, match=unreachable_warning(("smollm2-135m", smol), ("gemma3-270m", gemma))):
        with TestClient(app) as client:
            down = client.get("/health")
            assert down.status_code == 503
            assert down.json() == {"status": "down", "tiers": {"smollm2-135m": False, "gemma3-270m": False}}
            replica = client.get("/stats").json()["tiers"][1]["replicas"][0]
            assert replica["reachable"] is False and replica["problem"].startswith(f"{gemma}/v1/models: ConnectError")
            with models_server_on(smol_port):
                degraded = client.get("/health")
                assert degraded.status_code == 200
                assert degraded.json() == {"status": "degraded", "tiers": {"smollm2-135m": True, "gemma3-270m": False}}
                with models_server_on(gemma_port):
                    ok = client.get("/health")
                    assert ok.status_code == 200
                    assert ok.json() == {"status": "ok", "tiers": {"smollm2-135m": True, "gemma3-270m": True}}
                    assert client.get("/stats").json()["tiers"][1]["replicas"][0]["reachable"] is True
            gone = client.get("/health")  # both servers stopped again
            assert gone.status_code == 503 and gone.json()["status"] == "down"


def test_health_asks_each_server_at_most_once_per_interval_and_no_warning_when_all_answer(policy_file, recwarn):
    with serving(_ModelsOnly) as url:
        _ModelsOnly.asked = 0
        with TestClient(make_app(served_ladder(url, url), policy_file)) as client:
            assert _ModelsOnly.asked == 2  # at startup, one per tier
            for _ in range(5):  # a load balancer polling: answered from the probe made at startup
                assert client.get("/health").json()["status"] == "ok"
            assert _ModelsOnly.asked == 2
    assert not [w for w in recwarn if "not reachable" in str(w.message)]


def test_a_server_busy_with_our_calls_is_not_asked(httpx_installed):
    """llama-cpp-python's server answers /v1/models only after the request it is running, so
    asking a busy server would report it down; its calls in flight say more."""

    async def go(url):
        pool = TierPool(0, {"name": "t", "backend": "openai", "url": url, "sampling": {"max_tokens": 4, "top_logprobs": 5}})
        try:
            pool.replicas[0].outstanding = 1
            assert await pool.probe(1.0) == [] and _ModelsOnly.asked == 0 and pool.replicas[0].reachable is None
            pool.replicas[0].outstanding = 0
            assert await pool.probe(1.0) == [] and _ModelsOnly.asked == 1 and pool.replicas[0].reachable is True
        finally:
            await pool.aclose()

    with serving(_ModelsOnly) as url:
        _ModelsOnly.asked = 0
        asyncio.run(go(url))


@pytest.fixture(scope="module")
def calibrated_policy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("calibrated") / "policy.npz"
    calibrated_builtin_policy().save(path)
    return path


def test_asd_serve_with_every_tier_server_down_starts_warns_in_one_line_and_reports_them_down(
        calibrated_policy_file, tmp_path):
    """The servers may come up later: serve starts, but says which tiers do not answer, and
    /health does not report them up."""
    import subprocess
    import sys

    import yaml

    dead = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "tiers.yaml"
    config.write_text(yaml.safe_dump({"tiers": served_ladder(dead, dead)}))
    port = free_port()
    command = [sys.executable, "-m", "asd.cli", "serve", "--tiers", str(config), "--policy", str(calibrated_policy_file),
               "--port", str(port)]
    server = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while not any(line.startswith("warning:") for line in lines):
            assert server.poll() is None and time.monotonic() < deadline, lines
            lines.append(server.stderr.readline().rstrip("\n"))
        assert lines[0] == f"asd serve: http://127.0.0.1:{port} (tiers {config}, policy {calibrated_policy_file})"
        (warning,) = [line for line in lines if line.startswith("warning:")]
        assert re.match(unreachable_warning(("smollm2-135m", dead), ("gemma3-270m", dead)),
                        warning[len("warning: "):]), warning
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
        assert health.status_code == 503
        assert health.json() == {"status": "down", "tiers": {"smollm2-135m": False, "gemma3-270m": False}}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_asd_serve_refuses_a_feedback_file_it_cannot_write_with_one_line(tmp_path, monkeypatch):
    """It started, and every POST /v1/feedback failed to persist."""
    from click.testing import CliRunner

    from asd.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("")
    for target, message in [("file/y.json", "error: file/y.json: cannot write --feedback-file (file is a file, not a directory)"),
                            ("/proc/x/y.json", "error: /proc/x/y.json: cannot write --feedback-file (")]:
        result = CliRunner().invoke(main, ["serve", "--tiers", "never-read.yaml", "--policy", "never-read.npz",
                                           "--port", str(free_port()), "--feedback-file", target])
        assert result.exit_code == 2, result.output
        assert result.output.startswith(message) and result.output.count("\n") == 1, result.output
