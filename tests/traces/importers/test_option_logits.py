import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.errors import ConfigError, TraceError
from asd.traces.importers import load_trace
from asd.traces.importers.option_logits import option_signals

QWEN = ["Qwen-1_8B", "Qwen-7B", "Qwen-14B"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-30, 30), min_size=6, max_size=6), st.integers(0, 5))
def test_option_signals_are_a_logprob_and_a_bounded_entropy(logits, chosen):
    logprob, entropy = option_signals(np.array([logits]), np.array([chosen]))
    probs = np.exp(np.array(logits) - np.max(logits))
    probs /= probs.sum()
    assert logprob[0] <= 0 and logprob[0] == pytest.approx(np.log(probs[chosen]), abs=1e-9)
    assert 0 <= entropy[0] <= np.log(6) + 1e-9


@pytest.fixture(scope="module")
def qwen_trace(shared_data):
    return load_trace("option-logits", shared_data / "option_logits_emotion", models=",".join(QWEN))


def test_default_variant_is_task_icl1_and_labels_match_the_data(shared_data, qwen_trace):
    data = pd.read_parquet(shared_data / "option_logits_emotion" / "option_logits.parquet")
    data = data[(data["prompt_style"] == "task") & (data["icl_demos"] == 1)]
    assert qwen_trace.manifest["sampling"]["prompt_style"] == "task"
    out = qwen_trace.outputs
    assert len(qwen_trace.requests) == 10000 and len(out) == 30000
    for tier, model in enumerate(QWEN):
        rows = data[data["model"] == model].sort_values("id")
        mine = out[out["tier"] == tier]
        assert mine["quality"].mean() == pytest.approx(rows["correct"].mean())
        # The signal is the data's p_pred (softmax prob of the chosen option) in log space; the
        # data's p_pred was rounded at lower precision upstream, hence the tolerance.
        logprob = np.array([lp[0] for lp in mine["token_logprobs"]])
        np.testing.assert_allclose(np.exp(logprob), rows["p_pred"].to_numpy(), atol=2e-3)
        assert (mine["output"].to_numpy() == rows["pred"].to_numpy()).all()
    assert qwen_trace.manifest["tiers"][0]["params_b"] == 1.8
    assert (out["n_output_tokens"] == 1).all()
    assert qwen_trace.requests["reference"].isin(list("ABCD")).all()


def test_variant_and_model_errors_list_what_exists(shared_data):
    src = shared_data / "option_logits_emotion"
    with pytest.raises(TraceError, match=r"unknown model 'Yi-6B'; available: .*Qwen-14B"):
        load_trace("option-logits", src, models="Yi-6B,Qwen-14B", prompt_style="base", icl_demos=0)
    with pytest.raises(ConfigError, match=r"--prompt-style fancy --icl-demos 1: not in .*variants are base/0"):
        load_trace("option-logits", src, models="Qwen-7B", prompt_style="fancy")
