"""The backend protocol's shared pieces: entropy from top-k, accepted prefix, registry."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.errors import ConfigError
from asd.live.backends import BACKENDS, make_backend
from asd.live.backends.base import Backend, Score, entropy_from_top, longest_agreeing_prefix


def test_registry_lists_the_three_backends():
    assert {"llama_cpp", "openai", "vllm"} <= set(BACKENDS)
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        make_backend({"name": "t", "backend": "nope"})


def test_entropy_of_uniform_top_k_is_log_k():
    assert entropy_from_top({str(i): math.log(0.25) for i in range(4)}) == pytest.approx(math.log(4))
    assert entropy_from_top({"a": 0.0}) == pytest.approx(0.0)
    assert math.isnan(entropy_from_top({})) and math.isnan(entropy_from_top(None))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-30, 0), min_size=1, max_size=20))
def test_entropy_is_between_zero_and_log_k(values):
    h = entropy_from_top({str(i): v for i, v in enumerate(values)})
    assert -1e-9 <= h <= math.log(len(values)) + 1e-9


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), max_size=30))
def test_accepted_prefix_is_the_run_of_agreement_before_the_first_rejection(agrees):
    n = longest_agreeing_prefix(agrees)
    assert all(agrees[:n]) and (n == len(agrees) or not agrees[n])
    score = Score([-0.1] * len(agrees), agrees, 1.0)
    assert score.n_accepted == n and score.n_draft_tokens == len(agrees)


def test_templates_wrap_prompts():
    backend = Backend({"name": "t", "template": "Q: {prompt}\nA:"})
    assert backend.format_prompt("2+2? {x}") == "Q: 2+2? {x}\nA:"
    assert Backend({"name": "t"}).format_prompt("raw") == "raw"
    with pytest.raises(ConfigError, match="cannot apply a chat template"):
        Backend({"name": "t", "template": "chat"}).format_prompt("x")


def test_tokens_of_text_keeps_the_tokens_that_spell_the_returned_text():
    from asd.live.backends.base import tokens_of_text

    assert tokens_of_text(" Zn", [" Zn", "\n"]) == 1  # the stop string's token
    assert tokens_of_text("", ["\n"]) == 0
    assert tokens_of_text("ab", ["a", "b"]) == 2
    assert tokens_of_text("abc", ["ab", "cd"]) == 2  # a token the text ends inside stays
    assert tokens_of_text("xy", ["a", "b", "c"]) == 3  # tokens that do not spell the text: all kept
