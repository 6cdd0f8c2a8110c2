"""The issue's acceptance bar on a real ladder: MMLU-Pro, Llama-3.1 8B → 70B Instruct (and the
Llama-2 7B → 13B → 70B base ladder). With a few text features computed here from the published
outputs (answer length, no extractable answer, the answer letter agreeing with each earlier tier,
prompt length, subject), the calibrated predictor's out-of-fold ECE is ≤ 0.03 at every tier and
its out-of-fold AUROC at least the best single feature's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from asd.calibration.metrics import best_single_feature
from asd.calibration.predictors import fit_stage, stack_predictor
from asd.engine.decide_nb import predict_packed_nb
from tests.calibration.test_predictors import policy_for

LADDERS = {
    "llama-3.1-instruct": ["Meta-Llama-3_1-8B-Instruct", "Meta-Llama-3_1-70B-Instruct"],
    "llama-2-base": ["Llama-2-7b-hf", "Llama-2-13b-hf", "Llama-2-70b-hf"],
}


@pytest.fixture(scope="module")
def mmlu_pro(shared_data):
    root = shared_data / "mmlu_pro"
    if not (root / "outputs.parquet").is_file():
        pytest.skip(f"MMLU-Pro outputs not found under {root}")
    outputs = pd.read_parquet(root / "outputs.parquet",
                              columns=["model", "question_id", "pred", "correct", "no_pred", "generated_chars"])
    questions = pd.read_parquet(root / "questions.parquet", columns=["question_id", "category", "question"])
    return outputs, questions


def ladder_stages(mmlu_pro, models):
    """Per tier: features (N, F) known after that tier, names, labels (correct), request ids."""
    outputs, questions = mmlu_pro
    ids = questions["question_id"]
    tiers = [outputs[outputs["model"] == m].set_index("question_id").reindex(ids) for m in models]
    subject = pd.get_dummies(questions["category"]).astype(float)
    prompt_chars = np.log1p(questions["question"].str.len().to_numpy(float))
    stages = []
    for i, tier in enumerate(tiers):
        columns = {"log_answer_chars": np.log1p(tier["generated_chars"].fillna(0).to_numpy(float)),
                   "no_answer_letter": tier["no_pred"].fillna(True).to_numpy(float),
                   "log_prompt_chars": prompt_chars}
        for j in range(i):
            same = (tier["pred"].to_numpy() == tiers[j]["pred"].to_numpy()) & tier["pred"].notna().to_numpy()
            columns[f"agrees_with_tier{j}"] = same.astype(float)
        columns.update({f"subject={c}": subject[c].to_numpy() for c in subject.columns})
        X = np.column_stack(list(columns.values()))
        stages.append((X, list(columns), tier["correct"].astype(float).to_numpy(), ids.to_numpy()))
    return stages


@pytest.mark.parametrize("ladder, kinds", [("llama-3.1-instruct", ["logistic", "mlp"]),
                                           ("llama-2-base", ["logistic"])])
def test_mmlu_pro_out_of_fold_ece_within_003_and_auroc_beats_best_single_feature(mmlu_pro, ladder, kinds):
    stages = ladder_stages(mmlu_pro, LADDERS[ladder])
    for kind in kinds:
        fits = []
        for tier, (X, names, y, ids) in enumerate(stages):
            fit = fit_stage(kind, X, y, groups=ids, hidden=32)
            best_name, best_auroc = best_single_feature(X, y, names)
            m = fit.metrics
            assert m["n"] == 12032 and fit.folds == 5 and fit.constant is None
            assert m["ece"] <= 0.03, f"{ladder} {kind} tier {tier}: ECE {m['ece']:.4f}"
            assert m["auroc"] >= best_auroc, f"{ladder} {kind} tier {tier}: AUROC {m['auroc']:.4f} < {best_name} {best_auroc:.4f}"
            assert m["brier"] < y.mean() * (1 - y.mean())  # better than the base rate
            fits.append(fit)
        # the exported policy reproduces the fitted p̂ on real rows
        policy = policy_for(fits, kind)
        X0 = stages[-1][0][:50]
        engine = [predict_packed_nb(policy._blob, policy._layout, len(fits), x) for x in X0]
        np.testing.assert_allclose(engine, fits[-1].predict(X0), atol=1e-9)
        assert stack_predictor(None, fits, kind).n_rows == len(fits)  # no stage 0: the Policy pads row 0
