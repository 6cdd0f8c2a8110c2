"""The vLLM backend's mapping from vLLM output objects, on fakes built to vLLM's documented
structure (vllm.outputs.RequestOutput / CompletionOutput, vllm.sequence.Logprob,
RequestMetrics in V0 engines, RequestStateStats in V1). vLLM itself needs a GPU node; the
same mapping path runs for real in the llama.cpp tests (Generation / Score objects)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Optional

import pytest

from asd.errors import BackendError
from asd.live.backends import make_backend
from asd.live.backends.vllm import generation_from_output, score_from_output


@dataclass
class Logprob:
    logprob: float
    rank: Optional[int] = None
    decoded_token: Optional[str] = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: tuple
    cumulative_logprob: Optional[float]
    logprobs: Optional[list]
    finish_reason: Optional[str] = None
    stop_reason: Optional[str] = None


@dataclass
class RequestMetricsV0:
    arrival_time: float
    last_token_time: float
    first_scheduled_time: Optional[float]
    first_token_time: Optional[float]
    time_in_queue: Optional[float]
    finished_time: Optional[float] = None


@dataclass
class RequestStateStatsV1:
    num_generation_tokens: int = 0
    arrival_time: float = 0.0
    queued_ts: float = 0.0
    scheduled_ts: float = 0.0
    first_token_ts: float = 0.0
    last_token_ts: float = 0.0
    first_token_latency: float = 0.0


@dataclass
class RequestOutput:
    request_id: str
    prompt: Optional[str]
    prompt_token_ids: list
    prompt_logprobs: Optional[list]
    outputs: list
    finished: bool = True
    metrics: object = None


def completion_positions():
    # Two sampled tokens; each position holds the sampled token plus the top-2 (vLLM returns
    # the sampled token even when it is outside the top-k, hence up to k + 1 entries).
    return [
        {11: Logprob(-0.1, 1, " Paris"), 12: Logprob(-2.5, 2, " Lyon")},
        {13: Logprob(-1.2, 2, "."), 14: Logprob(-0.5, 1, "!"), 15: Logprob(-3.0, 3, ",")},
    ]


def test_request_output_maps_to_generation_with_v0_metrics():
    out = RequestOutput(
        "r1", "The capital of France is", [1, 2, 3, 4, 5], None,
        [CompletionOutput(0, " Paris.", (11, 13), -1.3, completion_positions(), "stop")],
        metrics=RequestMetricsV0(arrival_time=100.0, last_token_time=100.5, first_scheduled_time=100.01,
                                 first_token_time=100.2, time_in_queue=0.01, finished_time=100.6),
    )
    gen = generation_from_output(out, "t")
    assert gen.text == " Paris."
    assert gen.token_ids == [11, 13]
    assert gen.tokens == [" Paris", "."]
    assert gen.token_logprobs == [-0.1, -1.2]
    assert gen.top_logprobs[1] == {".": -1.2, "!": -0.5, ",": -3.0}
    assert gen.n_prompt_tokens == 5 and gen.n_output_tokens == 2
    assert gen.ttft_ms == pytest.approx(200.0) and gen.e2e_ms == pytest.approx(600.0)
    assert gen.finish_reason == "stop"
    assert gen.token_entropy[0] > 0


def test_v1_request_state_stats_give_ttft_and_e2e():
    stats = RequestStateStatsV1(first_token_ts=50.0, last_token_ts=50.4, first_token_latency=0.25)
    out = RequestOutput("r", None, [1], None, [CompletionOutput(0, " Paris.", (11, 13), None, completion_positions())], metrics=stats)
    gen = generation_from_output(out)
    assert gen.ttft_ms == pytest.approx(250.0) and gen.e2e_ms == pytest.approx(650.0)


def test_missing_metrics_leave_timings_null_not_zero():
    out = RequestOutput("r", None, [1], None, [CompletionOutput(0, " Paris.", (11, 13), None, completion_positions())])
    gen = generation_from_output(out)
    assert gen.ttft_ms is None and gen.e2e_ms is None


def test_no_logprobs_is_a_backend_error():
    out = RequestOutput("r", None, [1], None, [CompletionOutput(0, " Paris.", (11, 13), None, None)])
    with pytest.raises(BackendError, match="no logprobs"):
        generation_from_output(out, "big")


def test_prompt_logprobs_map_to_verifier_score_with_rank_one_as_greedy():
    # prompt [1, 2] + draft [11, 13]: prompt_logprobs has one entry per prompt token, None first.
    positions = [None, {2: Logprob(-3.0, 7, "b")}, {11: Logprob(-0.1, 1, " Paris")},
                 {13: Logprob(-1.2, 2, "."), 14: Logprob(-0.5, 1, "!")}]
    out = RequestOutput("r", None, [1, 2, 11, 13], positions, [CompletionOutput(0, "x", (9,), None, None)])
    score = score_from_output(out, n_prompt=2, draft_ids=[11, 13], verify_ms=12.5)
    assert score.token_logprobs == [-0.1, -1.2]
    assert score.greedy_agrees == [True, False]
    assert score.n_accepted == 1 and score.n_draft_tokens == 2
    assert score.verify_ms == 12.5


def test_unranked_logprobs_fall_back_to_comparing_values():
    positions = [None, {11: Logprob(-0.1)}, {13: Logprob(-1.2), 14: Logprob(-0.5)}]
    out = RequestOutput("r", None, [1, 11, 13], positions, [])
    assert score_from_output(out, 1, [11, 13], None).greedy_agrees == [True, False]


def test_backend_builds_the_engine_and_sampling_params_vllm_documents(monkeypatch):
    made = {}

    class LLM:
        def __init__(self, **kwargs):
            made["llm"] = kwargs

        def get_tokenizer(self):
            return types.SimpleNamespace(encode=lambda text, add_special_tokens=True: [1] + [ord(c) for c in text]
                                         if add_special_tokens else [ord(c) for c in text])

        def generate(self, prompts, params, use_tqdm=False):
            made.setdefault("params", []).append(params)
            if params.prompt_logprobs:
                ids = prompts[0]["prompt_token_ids"]
                positions = [None] + [{t: Logprob(-0.5, 1, chr(t))} for t in ids[1:]]
                return [RequestOutput("s", None, ids, positions, [])]
            return [RequestOutput("g", p, [1, 2], None, [CompletionOutput(0, " Paris.", (11, 13), None, completion_positions())],
                                  metrics=RequestMetricsV0(1.0, 1.3, 1.0, 1.1, 0.0, 1.3)) for p in prompts]

    @dataclass
    class SamplingParams:
        max_tokens: int = 16
        temperature: float = 1.0
        logprobs: Optional[int] = None
        prompt_logprobs: Optional[int] = None
        stop: Optional[list] = None
        seed: Optional[int] = None

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams, __version__="0.0-fake"))
    backend = make_backend({"name": "70b", "backend": "vllm", "model": "meta-llama/Llama-2-70b-hf",
                            "tensor_parallel": 4, "quantization": "bitsandbytes", "stop": ["\n"]})
    assert made["llm"]["tensor_parallel_size"] == 4
    assert made["llm"]["quantization"] == "bitsandbytes"
    assert made["llm"]["disable_log_stats"] is False
    gens = backend.generate(["a", "b"], max_tokens=8, temperature=0.0, top_logprobs=5)
    assert [g.text for g in gens] == [" Paris.", " Paris."] and gens[0].ttft_ms == pytest.approx(100.0)
    assert made["params"][0].logprobs == 5 and made["params"][0].stop == ["\n"]
    score = backend.score("ab", "cd")
    assert made["params"][1].prompt_logprobs == 1 and made["params"][1].max_tokens == 1
    assert score.n_draft_tokens == 2 and score.n_accepted == 2
    assert backend.describe()["backend_version"] == "vllm 0.0-fake"


def test_without_vllm_installed_the_tier_fails_with_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(BackendError, match="backend vllm needs vLLM"):
        make_backend({"name": "big", "backend": "vllm", "model": "x"})


def test_the_tokens_of_a_stop_string_vllm_cut_from_the_text_are_not_the_answers():
    """vLLM cuts a stop string from `text` and keeps its tokens in token_ids and logprobs."""
    positions = completion_positions()
    positions[1] = {13: Logprob(-0.4, 1, "\n"), 14: Logprob(-1.5, 2, "!")}
    out = RequestOutput("r1", "The capital of France is", [1, 2, 3], None,
                        [CompletionOutput(0, " Paris", (11, 13), -0.5, positions, "stop")])
    gen = generation_from_output(out, "t")
    assert gen.text == " Paris" and gen.tokens == [" Paris"] and gen.token_ids == [11]
    assert gen.token_logprobs == [-0.1] and gen.n_output_tokens == 1 and len(gen.top_logprobs) == 1
