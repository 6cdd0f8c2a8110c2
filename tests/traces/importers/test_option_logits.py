import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.errors import ConfigError, TraceError
from asd.traces.bundle import open_bundle
from asd.traces.importers import import_trace, load_trace
from asd.traces.importers.option_logits import option_signals
from tests.traces.importers.tiny_sources import LOGITS, OPTION_MODELS, option_logits_tables, replace_column, write_source

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
    assert all(qwen_trace.manifest["sampling"][name]["prompt_style"] == "task" for name in QWEN)
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


# --- tiny sources the tests write themselves (no shared data needed) ---


def _tiny(tmp_path, change=None):
    return write_source(tmp_path / "option_logits", option_logits_tables(), change)


def test_tiny_source_end_to_end_gives_the_expected_bundle(tmp_path):
    import_trace("option-logits", _tiny(tmp_path), tmp_path / "b", models=",".join(OPTION_MODELS))
    bundle = open_bundle(tmp_path / "b")
    assert bundle.tier_names == OPTION_MODELS and [t["params_b"] for t in bundle.tiers] == [1.8, 7.0]
    assert all(bundle.manifest["sampling"][name] == {"prompt_style": "task", "icl_demos": 1, "decoding": "next-token option logits"}
               for name in OPTION_MODELS)
    requests = bundle.to_pandas("requests")
    assert requests["request_id"].tolist() == ["0", "1"] and requests["reference"].tolist() == ["B", "A"]
    assert requests["prompt"][1] == (
        "i often feel lonely\nWhich sentiment best describes the context?\n"
        "A. Sadness\nB. Joy\nC. Anger\nD. Fear\nE. I don't know\nF. None"
    )
    out = bundle.to_pandas("outputs")
    # The base/0 row of Qwen-7B (pred A for id 0) is another variant and must not appear.
    assert out["output"].tolist() == ["A", "B", "A", "A"]
    assert out["quality"].tolist() == [0.0, 1.0, 1.0, 1.0] and out["accepted"].tolist() == [False, True, True, True]
    for (request_id, tier, logprobs, entropies) in out[["request_id", "tier", "token_logprobs", "token_entropy"]].values:
        logits = np.array(LOGITS[OPTION_MODELS[tier], int(request_id)])
        probs = np.exp(logits) / np.exp(logits).sum()
        chosen = "ABCDEF".index(out.loc[(out["request_id"] == request_id) & (out["tier"] == tier), "output"].iloc[0])
        assert logprobs.tolist() == pytest.approx([np.log(probs[chosen])], abs=1e-6)
        assert entropies.tolist() == pytest.approx([-(probs * np.log(probs)).sum()], abs=1e-6)
    assert (out["n_output_tokens"] == 1).all()
    # the prompt is read at every tier a request visits: ceil(characters / 4), not free
    by_id = requests.set_index("request_id")["prompt"].str.len()
    assert out["n_prompt_tokens"].tolist() == [(by_id[r] + 3) // 4 for r in out["request_id"]]
    assert bundle.manifest["estimated_columns"] == ["outputs.n_prompt_tokens"]


def test_tiny_source_with_a_nan_logit_or_bad_choices_is_one_error_naming_the_column(tmp_path):
    nan_logit = ("option_logits.parquet", lambda t: replace_column(t, "logit_D", pa.array([0.0, float("nan"), 0, 0, 0], pa.float32())))
    with pytest.raises(TraceError, match=r"option_logits.parquet, column 'logit_D': nan for model 'Qwen-1_8B', id 1 "):
        load_trace("option-logits", _tiny(tmp_path / "a", nan_logit), models=",".join(OPTION_MODELS))
    bad_choices = ("questions.parquet", lambda t: replace_column(t, "choices", pa.array(['["Sadness"]', "{}"])))
    with pytest.raises(TraceError, match=r"questions.parquet, column 'choices': id 0: not a JSON object"):
        load_trace("option-logits", _tiny(tmp_path / "b", bad_choices), models=",".join(OPTION_MODELS))


@pytest.mark.parametrize("answer, letters", [("Z", "A, B, C, D, E, F"), ("AB", "A, B, C, D, E, F"), ("C", "A, B")])
def test_a_gold_answer_that_is_not_one_of_the_questions_option_letters_is_refused(tmp_path, answer, letters):
    """A gold 'Z' was imported: every output at that question counted wrong, silently."""
    from click.testing import CliRunner

    from asd.cli import main

    def edit(table):
        table = replace_column(table, "answer", pa.array(["B", answer], table.schema.field("answer").type))
        if letters == "A, B":  # a question offering only two options
            two = json.dumps({"A": "Sadness", "B": "Joy"})
            table = replace_column(table, "choices", pa.array([table.column("choices")[0].as_py(), two],
                                                              table.schema.field("choices").type))
        return table

    src = _tiny(tmp_path / "src", ("questions.parquet", edit))
    result = CliRunner().invoke(main, ["traces", "import", "option-logits", str(src), "--models", ",".join(OPTION_MODELS),
                                       "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and result.output == (
        f"error: {src / 'questions.parquet'}, column 'answer': id 1: {answer!r} is not one of its option letters "
        f"{letters}\n"), result.output
    assert not (tmp_path / "b").exists()
