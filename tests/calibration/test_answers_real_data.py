"""Answer extraction on real model outputs from ../shared/data (skipped when absent): the
agreement features hinge on it, so it is checked against the published graders' own reading.

- MMLU-Pro: wherever asd reads an option letter, it is the letter the benchmark's harness
  extracted (`pred`), for base, instruct and chat models alike.
- GSM8K (RouteLLM's Mixtral-8x7B and GPT-4-1106 responses): when both models are graded correct
  their answers must agree (they share the gold number); when exactly one is, they must not,
  up to the grader's own slips ("$20.00" graded wrong against "20")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from asd.calibration.answers import extract_answer

MMLU_MODELS = ("Llama-2-7b-hf", "Llama-2-70b-hf", "Meta-Llama-3_1-8B-Instruct", "Qwen1.5-7B-Chat")


def _keys(texts) -> pd.Series:
    return pd.Series([extract_answer(t).key for t in texts], dtype=object)


@pytest.fixture(scope="module")
def mmlu_outputs(shared_data):
    path = shared_data / "mmlu_pro" / "outputs.parquet"
    if not path.is_file():
        pytest.skip(f"MMLU-Pro outputs not found at {path}")
    table = pq.read_table(path, columns=["model", "pred", "generated_text"],
                          filters=[("model", "in", list(MMLU_MODELS))])
    return table.to_pandas()


@pytest.mark.parametrize("model", MMLU_MODELS)
def test_option_letters_are_the_harness_letters(mmlu_outputs, model):
    rows = mmlu_outputs[(mmlu_outputs.model == model) & (mmlu_outputs.generated_text.str.len() > 0)]
    keys = _keys(rows.generated_text)
    pred = rows.pred.reset_index(drop=True)
    option = keys.str.startswith("opt:", na=False) & pred.notna()
    same = float((keys[option] == "opt:" + pred[option]).mean())
    print(f"{model}: {option.mean():.3f} read as an option, {same:.4f} of them the harness's letter")
    assert option.mean() >= 0.75  # the rest are run-on or unfinished chains of thought with no letter
    assert same >= 0.995


@pytest.fixture(scope="module")
def gsm8k(shared_data):
    path = shared_data / "routellm_evals" / "gsm8k_responses.parquet"
    if not path.is_file():
        pytest.skip(f"RouteLLM GSM8K responses not found at {path}")
    frame = pd.read_parquet(path)
    small, large = _keys(frame.mixtral_8x7b_response), _keys(frame.gpt4_1106_response)
    agree = ((small == large) & small.notna()).to_numpy()
    return agree, frame.mixtral_8x7b_correct.to_numpy(bool), frame.gpt4_1106_correct.to_numpy(bool)


def test_gsm8k_answers_agree_exactly_when_the_grades_say_they_should(gsm8k):
    agree, small_ok, large_ok = gsm8k
    both, one = small_ok & large_ok, small_ok ^ large_ok
    print(f"agree: both correct {agree[both].mean():.3f} of {both.sum()}, one correct {agree[one].mean():.3f} of {one.sum()}")
    assert agree[both].mean() >= 0.97
    assert agree[one].mean() <= 0.10


def test_gsm8k_agreement_predicts_the_larger_models_grade(gsm8k):
    agree, _, large_ok = gsm8k
    auroc = roc_auc_score(large_ok, agree.astype(np.float64))
    print(f"AUROC of agreement for GPT-4's grade: {auroc:.3f}")
    assert auroc >= 0.65
