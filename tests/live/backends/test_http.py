"""The OpenAI-compatible HTTP backend against a real llama.cpp server serving SmolLM2-135M,
checked against the in-process llama.cpp backend on the same model file."""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx", reason="httpx not installed (pip install '.[live]')")

from asd.errors import BackendError  # noqa: E402
from asd.live.backends import make_backend  # noqa: E402
from tests.live.conftest import CHAT, QuietHandler, free_port, serving  # noqa: E402

QUESTION = "What is the capital of Japan? Answer with one word."


@pytest.fixture(scope="module")
def http(llama_server):
    backend = make_backend({"name": "h", "backend": "openai", "url": llama_server, "template": CHAT,
                            "stop": ["<|im_end|>"]})
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def local(smollm2):
    backend = make_backend({"name": "l", "backend": "llama_cpp", "model": smollm2, "template": CHAT,
                            "stop": ["<|im_end|>"], "n_ctx": 512, "n_threads": 1})
    yield backend
    backend.close()


def test_server_generation_matches_in_process_generation(http, local):
    prompt = http.format_prompt(QUESTION)
    remote = http.generate([prompt], max_tokens=10, temperature=0.0, top_logprobs=3)[0]
    here = local.generate([prompt], max_tokens=10, temperature=0.0, top_logprobs=3)[0]
    assert remote.text == here.text
    assert remote.token_logprobs == pytest.approx(here.token_logprobs, abs=1e-3)
    assert remote.n_output_tokens == here.n_output_tokens
    assert remote.n_prompt_tokens == here.n_prompt_tokens
    assert 0 < remote.ttft_ms <= remote.e2e_ms
    assert len(remote.token_entropy) == remote.n_output_tokens


def test_echo_scoring_matches_in_process_scoring(http, local):
    prompt = http.format_prompt(QUESTION)
    draft = "Kyoto is the capital."
    remote, here = http.score(prompt, draft), local.score(prompt, draft)
    assert remote.token_logprobs == pytest.approx(here.token_logprobs, abs=1e-3)
    assert remote.greedy_agrees == here.greedy_agrees
    assert remote.n_accepted == here.n_accepted


def test_echo_shift_for_a_model_without_bos_is_detected_and_score_prefix_fixes_it(llama_server):
    plain = {"name": "p", "backend": "openai", "url": llama_server, "template": "Question: {prompt}\nAnswer:"}
    shifted = make_backend(plain)
    prompt = shifted.format_prompt("What is the capital of Japan?")
    with pytest.raises(BackendError, match="score_prefix"):
        shifted.score(prompt, " Tokyo is a big city")
    fixed = make_backend({**plain, "score_prefix": "<|im_start|>"})
    score = fixed.score(prompt, " Tokyo is a big city")
    assert score.n_draft_tokens >= 4 and all(lp <= 0 for lp in score.token_logprobs)


def test_unreachable_server_is_one_backend_error_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BackendError, match=rf"{url}/v1/models: server unreachable after 2 tries"):
        make_backend({"name": "down", "backend": "openai", "url": url, "retries": 1, "backoff_s": 0.01})


def test_concurrent_requests_come_back_in_prompt_order(llama_server):
    backend = make_backend({"name": "c", "backend": "openai", "url": llama_server, "template": CHAT,
                            "stop": ["<|im_end|>"], "concurrency": 2})
    try:
        prompts = [backend.format_prompt(q) for q in ("Say yes.", "Say no.", "What is 1 plus 1?")]
        together = backend.generate(prompts, max_tokens=5)
        alone = [backend.generate([p], max_tokens=5)[0] for p in prompts]
    finally:
        backend.close()
    assert [g.text for g in together] == [g.text for g in alone]


def test_describe_reports_the_served_model_its_url_and_the_server_version(http, llama_server):
    served = httpx.get(f"{llama_server}/v1/models").json()["data"][0]["id"]
    info = http.describe()
    assert info["model_id"] == served and info["url"] == llama_server
    assert info["backend"] == "openai"
    import llama_cpp  # installed: the llama_server fixture skips otherwise

    assert info["backend_version"] == f"llama-cpp-python server {llama_cpp.__version__}"


class _InfoServer(QuietHandler):
    """Answers only the informational GET routes, as the given server kind would."""

    routes: dict = {}

    def do_GET(self):
        if self.path not in self.routes:
            self.send_response(404)
            self.end_headers()
            return
        self.reply(json.dumps(self.routes[self.path]).encode())


@pytest.mark.parametrize("routes, model, expected", [
    ({"/v1/models": {"data": [{"id": "meta-llama/Llama-3.1-8B-Instruct", "owned_by": "vllm"}]},
      "/version": {"version": "0.6.3"}}, None, "vllm 0.6.3"),
    ({"/v1/models": {"data": [{"id": "gemma.gguf", "owned_by": "llamacpp"}]},
      "/props": {"build_info": "b5200-abc123"}}, "gemma.gguf", "llama.cpp server b5200-abc123"),
    ({"/v1/models": {"data": [{"id": "m", "owned_by": "someone"}]},
      "/openapi.json": {"info": {"title": "FastAPI", "version": "0.1.0"}}}, None,
     "openai-compatible server (version unknown)"),
])
def test_describe_maps_each_servers_version_route(routes, model, expected):
    with serving(type("Handler", (_InfoServer,), {"routes": routes})) as url:
        backend = make_backend({"name": "x", "backend": "openai", "url": url + "/v1", "model": model})
        info = backend.describe()
        backend.close()
    assert info == {"backend": "openai", "backend_version": expected,
                    "model_id": routes["/v1/models"]["data"][0]["id"], "url": url}


def test_a_stop_string_the_server_cuts_from_the_text_is_cut_from_the_tokens_too(llama_server, smollm2):
    """llama.cpp's server leaves the stop string out of `text` but sends its token, logprob and
    count: " Tokyo" was recorded as 2 tokens ("\\n" the second), the in-process tier as 1."""
    tier = {"template": "<|im_start|>Question: {prompt}\nAnswer:", "stop": ["\n"]}
    remote_backend = make_backend({"name": "h", "backend": "openai", "url": llama_server, **tier})
    local_backend = make_backend({"name": "l", "backend": "llama_cpp", "model": smollm2, "n_ctx": 512,
                                  "n_threads": 1, **tier})
    try:
        prompt = remote_backend.format_prompt(QUESTION)
        remote = remote_backend.generate([prompt], max_tokens=24, temperature=0.0, top_logprobs=3)[0]
        here = local_backend.generate([prompt], max_tokens=24, temperature=0.0, top_logprobs=3)[0]
    finally:
        remote_backend.close()
        local_backend.close()
    assert remote.finish_reason == "stop" and "\n" not in remote.text  # the stop string was met
    assert remote.text == here.text
    assert remote.n_output_tokens == here.n_output_tokens == len(remote.token_logprobs) == len(remote.tokens)
    assert "".join(remote.tokens) == remote.text
    assert remote.token_logprobs == pytest.approx(here.token_logprobs, abs=1e-3)
