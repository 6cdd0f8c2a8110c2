import pandas as pd
import pytest

from asd.errors import ConfigError, TraceError
from asd.traces.bundle import open_bundle
from asd.traces.importers import import_trace, load_trace

LLAMA_31 = ["Meta-Llama-3_1-8B", "Meta-Llama-3_1-70B"]


@pytest.fixture(scope="module")
def llama31_bundle(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("mmlu") / "bundle"
    summary = import_trace("mmlu-pro", shared_data / "mmlu_pro", out, models=",".join(LLAMA_31))
    return open_bundle(out), summary


def test_per_tier_mean_quality_equals_published_strict_accuracy(shared_data, llama31_bundle):
    bundle, summary = llama31_bundle
    published = pd.read_csv(shared_data / "mmlu_pro" / "per_model_accuracy.csv").set_index("model")
    outputs = bundle.to_pandas("outputs", ["tier", "quality"])
    for tier, model in enumerate(LLAMA_31):
        mean = outputs.loc[outputs["tier"] == tier, "quality"].astype("float64").mean()
        assert round(mean * 100, 2) == published.loc[model, "acc_strict"]
        assert summary["tiers"][tier]["mean_quality"] == pytest.approx(mean)
    assert bundle.tier_names == LLAMA_31
    assert [t["params_b"] for t in bundle.tiers] == [8.0, 70.0]


def test_requests_carry_question_options_category_and_answer_letter(shared_data, llama31_bundle):
    bundle, _ = llama31_bundle
    requests = bundle.to_pandas("requests")
    questions = pd.read_parquet(shared_data / "mmlu_pro" / "questions.parquet")
    assert len(requests) == len(questions) == 12032
    first = questions.set_index(questions["question_id"].astype(str)).loc[requests["request_id"][0]]
    row = requests.iloc[0]
    assert row["prompt"].startswith(first["question"] + "\nA. ")
    assert row["task"] == first["category"] and row["reference"] == first["answer"]


def test_output_tokens_are_estimated_and_marked(llama31_bundle):
    bundle, _ = llama31_bundle
    assert bundle.manifest["estimated_columns"] == ["outputs.n_output_tokens"]
    assert bundle.manifest["provenance"]["source"]["commit"].startswith("f418b116")
    out = bundle.to_pandas("outputs", ["output", "n_output_tokens"]).head(50)
    expected = (out["output"].str.len() + 3) // 4
    assert out["n_output_tokens"].tolist() == expected.tolist()
    assert out["n_output_tokens"].notna().all()


def test_unknown_model_lists_the_available_ones(shared_data, tmp_path):
    with pytest.raises(TraceError, match=r"unknown model 'Llama-3.1-8B'; available: .*Meta-Llama-3_1-70B"):
        import_trace("mmlu-pro", shared_data / "mmlu_pro", tmp_path / "b", models="Llama-3.1-8B,Meta-Llama-3_1-70B")
    assert not (tmp_path / "b").exists()


def test_models_missing_questions_need_drop_incomplete(shared_data):
    models = "gemini-1.5-flash-002,gemini-1.5-pro-002"
    with pytest.raises(TraceError, match=r"has no row for tier 'gemini-1.5-(flash|pro)-002' \(and \d+ more"):
        load_trace("mmlu-pro", shared_data / "mmlu_pro", models=models)
    trace = load_trace("mmlu-pro", shared_data / "mmlu_pro", models=models, drop_incomplete=True)
    rows = pd.read_parquet(shared_data / "mmlu_pro" / "outputs.parquet", columns=["model", "question_id"])
    answered = rows[rows["model"].isin(models.split(","))].groupby("question_id")["model"].nunique()
    assert len(trace.requests) == (answered == 2).sum()
    assert trace.report["dropped_incomplete"] == (answered == 1).sum() > 0
    # Their archives keep only the extracted letter: the text is not recorded, the label is.
    assert trace.outputs["output"].isna().all() and trace.outputs["quality"].notna().all()


def test_models_flag_is_required(shared_data):
    with pytest.raises(ConfigError, match="mmlu-pro needs --models"):
        load_trace("mmlu-pro", shared_data / "mmlu_pro")


def test_a_directory_without_the_files_is_named(tmp_path):
    with pytest.raises(TraceError, match=r"not an MMLU-Pro export \(questions.parquet missing\)"):
        load_trace("mmlu-pro", tmp_path, models="a,b")
