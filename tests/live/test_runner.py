"""The cascade runner against real llama.cpp servers on loopback: decisions are the policy's,
speculative continuation keeps the verifier's agreed prefix, replicas are balanced and retried,
and a tier that fails falls back without losing the request."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("httpx", reason="httpx not installed (pip install '.[live]')")

from asd.live.backends.base import Score
from asd.live.runner import CascadeError, CascadeRequest, accepted_prefix, build_runner
from tests.live.cascade import builtin_policy, served_ladder, simple_features
from tests.live.conftest import CHAT, free_port

PROMPTS = [
    "What is 76 plus 34? Answer with just the number.",
    "What is the chemical symbol for zinc? Answer with just the symbol.",
    "Write these words in capital letters: winter summer yellow",
    "Is a lemon sour or sweet? Answer with one word.",
]


@pytest.fixture(scope="module")
def policy():
    return builtin_policy()


def run_all(tiers, policy, prompts, events: list | None = None, **options):
    """(results, stats) of the prompts run at once; `events` collects what observers hear."""
    async def go():
        runner = build_runner(tiers, policy, simple_features, **options)
        if events is not None:
            runner.observers.append(lambda event, payload: events.append((event, payload)))
        try:
            results = await asyncio.gather(*[runner.run(CascadeRequest(p)) for p in prompts], return_exceptions=True)
            return results, runner.stats()
        finally:
            await runner.aclose()

    return asyncio.run(go())


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_each_request_stops_where_the_policy_decides_on_its_features(llama_server, gemma_server, policy):
    results, stats = run_all(served_ladder(llama_server, gemma_server), policy, PROMPTS)
    assert all(not isinstance(r, Exception) for r in results), results
    for result in results:
        first = result.runs[0]
        assert first.tier == 0 and first.p_accept is not None
        x = simple_features_after(result, 0)
        assert first.stop == policy.decide(0, x)
        assert first.p_accept == pytest.approx(policy.predict(0, x))
        assert result.stopped_at_tier == (0 if first.stop else 1)
        # usage is the answering tier's own prompt count (another tokenizer than tier 0's)
        assert result.n_prompt_tokens == result.runs[-1].generation.n_prompt_tokens
        assert len(result.runs) == result.stopped_at_tier + 1 and result.fallback is None
        assert result.text == result.runs[-1].generation.text
    assert sum(stats["stops"].values()) == len(PROMPTS)


def simple_features_after(result, tier):
    from asd.live.runner import RequestState

    state = RequestState(CascadeRequest("x"), 2)
    state.runs = [r for r in result.runs if r.tier <= tier]
    return simple_features(state)


def test_speculative_continuation_of_a_tiers_own_greedy_answer_keeps_every_token(llama_server, policy):
    # Both tiers are the same SmolLM2 server: the verifier's greedy choice is the draft's.
    tier = {"backend": "openai", "url": llama_server, "template": CHAT, "stop": ["<|im_end|>"],
            "sampling": {"max_tokens": 6, "top_logprobs": 5}, "score_prefix": "<|im_start|>"}
    tiers = [dict(tier, name="smollm2-135m"), dict(tier, name="gemma3-270m")]
    results, _ = run_all(tiers, builtin_policy(lam=100.0, last_tier_always_right=True), PROMPTS[:1])
    (result,) = results
    draft_run, verify_run = result.runs
    assert verify_run.draft is not None and verify_run.draft.n_draft_tokens > 0
    assert verify_run.n_accepted == verify_run.draft.n_draft_tokens
    assert verify_run.accepted_text == draft_run.generation.text
    assert result.text.startswith(draft_run.generation.text)
    assert verify_run.verify_ms > 0


@given(st.lists(st.text(alphabet="ab c", min_size=1, max_size=3), min_size=1, max_size=8), st.data())
def test_accepted_prefix_is_the_text_of_the_first_accepted_tokens(tokens, data):
    draft = "".join(tokens)
    n = data.draw(st.integers(0, len(tokens)))
    score = Score([0.0] * len(tokens), [True] * n + [False] * (len(tokens) - n), 1.0, tokens=tokens)
    assert accepted_prefix(draft, score, n) == "".join(tokens[:n])


def test_accepted_prefix_drops_the_part_of_a_token_that_reaches_into_the_prompt():
    score = Score([0.0] * 3, [True] * 3, 1.0, tokens=[":Hel", "lo", " you"])
    assert accepted_prefix("Hello you", score, 2) == "Hello"


def test_requests_spread_over_replicas_by_least_outstanding_calls(llama_server, gemma_server, policy):
    tiers = served_ladder([llama_server, llama_server], gemma_server)
    results, stats = run_all(tiers, policy, PROMPTS[:2] * 2)
    assert all(not isinstance(r, Exception) for r in results)
    calls = [r["calls"] for r in stats["tiers"][0]["replicas"]]
    assert calls[0] >= 1 and calls[1] >= 1 and sum(calls) == 4


def test_a_dead_replica_is_retried_on_the_live_one_without_a_fallback(llama_server, gemma_server, policy):
    tiers = served_ladder([dead_url(), llama_server], gemma_server)
    tiers[0]["cooldown_s"] = 600  # stays marked down for the whole test
    results, stats = run_all(tiers, policy, PROMPTS[:2])
    assert all(not isinstance(r, Exception) and r.fallback is None for r in results), results
    dead, live = stats["tiers"][0]["replicas"]
    assert dead["calls"] == dead["failures"] == 1 and not dead["up"]
    assert live["calls"] == 2 and live["failures"] == 0


def test_a_dead_last_tier_answers_from_the_tier_already_computed(llama_server, policy):
    continuing = builtin_policy(lam=100.0, last_tier_always_right=True)
    events = []
    results, stats = run_all(served_ladder(llama_server, dead_url()), continuing, PROMPTS[:2], events)
    for result in results:
        assert not isinstance(result, Exception)
        assert result.stopped_at_tier == 0 and result.text
        (event,) = result.fallback
        assert event["tier"] == "gemma3-270m" and event["action"] == "answered from smollm2-135m"
    assert stats["fallbacks"] == 2
    assert [payload["tier"] for event, payload in events if event == "fallback"] == [1, 1]


def test_a_dead_first_tier_skips_to_the_next_tier_cold(gemma_server, policy):
    results, _ = run_all(served_ladder(dead_url(), gemma_server), policy, PROMPTS[:1])
    (result,) = results
    assert result.stopped_at_tier == 1 and result.runs[0].draft is None
    assert result.fallback[0]["action"] == "skipped to gemma3-270m"


def test_no_tier_up_is_one_clear_error_not_a_hang(policy):
    events = []
    results, stats = run_all(served_ladder(dead_url(), dead_url()), policy, PROMPTS[:1], events)
    (error,) = results
    assert isinstance(error, CascadeError) and "no tier could answer" in str(error)
    # every tier tried, with its reason: it named the last one only ("every replica is down")
    assert "tier 'smollm2-135m': " in str(error) and "; tier 'gemma3-270m': " in str(error)
    assert stats["failed"] == 1
    # an unanswered request absorbed no failure: asd_fallbacks_total counted both tiers of each 503
    assert [event for event, _ in events] == ["error"] and stats["fallbacks"] == 0


def test_features_are_a_1d_float_vector_of_the_policys_width(policy):
    from asd.live.runner import RequestState

    state = RequestState(CascadeRequest("hello"), 2)
    x = simple_features(state)
    assert x.shape == (policy.predictor.n_features,) and np.isfinite(x).all()


def test_gemma_in_process_verifies_a_smollm2_draft_and_continues_after_the_agreed_prefix(llama_server, gemma3):
    """Speculative continuation across two different models: the verifier (Gemma in-process,
    which reads its own logits, so scoring is cheap) keeps only the prefix its greedy choice agrees
    with, and its answer is that prefix followed by what it generated from prompt + prefix."""
    smollm2, gemma = served_ladder(llama_server, "http://127.0.0.1:1", max_tokens=6)
    gemma = {"name": "gemma3-270m", "backend": "llama_cpp", "model": gemma3, "template": gemma["template"],
             "stop": ["\n"], "draft_separator": " ", "n_ctx": 256, "n_threads": 1,
             "sampling": {"max_tokens": 6, "temperature": 0.0, "top_logprobs": 5}}
    results, stats = run_all([smollm2, gemma], builtin_policy(lam=100.0, last_tier_always_right=True), PROMPTS[1:2])
    (result,) = results
    assert not isinstance(result, Exception), result
    draft_run, verify_run = result.runs
    assert verify_run.draft is not None and verify_run.draft.n_draft_tokens >= 1
    assert 0 <= verify_run.n_accepted <= verify_run.draft.n_draft_tokens
    assert verify_run.n_accepted == verify_run.draft.n_accepted  # below max_tokens: nothing capped
    assert result.text.startswith(verify_run.accepted_text)
    assert (" " + draft_run.generation.text).startswith(verify_run.accepted_text)
    assert verify_run.generation.n_output_tokens >= verify_run.n_accepted
    assert stats["tiers"][1]["replicas"][0]["url"].startswith("in-process:llama_cpp")


def test_a_dead_start_tier_at_the_top_falls_back_to_a_skipped_tier_below(llama_server, policy):
    """Stage 0 sent the request straight to the last tier, which is down: the tier it skipped answers."""
    async def go():
        runner = build_runner(served_ladder(llama_server, dead_url()), policy, simple_features)
        runner._start_tier = lambda state, fallback: 1  # stage 0's choice, fixed for the test
        try:
            return await runner.run(CascadeRequest(PROMPTS[0]))
        finally:
            await runner.aclose()

    result = asyncio.run(go())
    assert result.start_tier == 1 and result.stopped_at_tier == 0 and result.text
    assert result.fallback[0]["action"] == "skipped to smollm2-135m"
    assert len(result.runs) == 1 and result.runs[0].draft is None


def test_probe_asks_each_http_tier_server_and_takes_an_in_process_model_as_there(smollm2, policy):
    """`asd live` asks every tier before a run and `asd serve` for /health: an in-process
    llama.cpp tier has no server to ask and always answers."""
    dead = dead_url()
    tiers = [{"name": "smollm2-135m", "backend": "llama_cpp", "model": smollm2, "template": CHAT, "n_ctx": 256,
              "n_threads": 1, "sampling": {"max_tokens": 4, "top_logprobs": 5}},
             {"name": "gemma3-270m", "backend": "openai", "url": dead, "sampling": {"max_tokens": 4, "top_logprobs": 0}}]

    async def go():
        runner = build_runner(tiers, policy, simple_features)
        try:
            return await runner.probe(2.0), [p.healthy for p in runner.pools], runner.stats()
        finally:
            await runner.aclose()

    unreachable, healthy, stats = asyncio.run(go())
    assert list(unreachable) == ["gemma3-270m"]
    (problem,) = unreachable["gemma3-270m"]
    assert problem.startswith(f"{dead}/v1/models: ConnectError")
    assert healthy == [True, False]
    assert [t["replicas"][0]["reachable"] for t in stats["tiers"]] == [True, False]
