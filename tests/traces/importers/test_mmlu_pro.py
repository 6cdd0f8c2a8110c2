import re

import pandas as pd
import pyarrow as pa
import pytest

from asd.errors import ConfigError, TraceError
from asd.traces.bundle import open_bundle
from asd.traces.importers import import_trace, load_trace
from tests.traces.importers.tiny_sources import MMLU_MODELS, mmlu_pro_tables, replace_column, write_source

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


def test_prompt_and_output_tokens_are_estimated_and_marked(llama31_bundle):
    bundle, _ = llama31_bundle
    assert bundle.manifest["estimated_columns"] == ["outputs.n_prompt_tokens", "outputs.n_output_tokens"]
    assert "5-shot CoT prefix is not in the data" in bundle.manifest["provenance"]["token_estimate_rule"][
        "outputs.n_prompt_tokens"]
    assert bundle.manifest["provenance"]["source"]["commit"].startswith("f418b116")
    out = bundle.to_pandas("outputs", ["request_id", "output", "n_prompt_tokens", "n_output_tokens"]).head(50)
    expected = (out["output"].str.len() + 3) // 4
    assert out["n_output_tokens"].tolist() == expected.tolist()
    assert out["n_output_tokens"].notna().all()
    # a prompt is never free: ceil(characters / 4) of the question and options the bundle holds
    prompts = bundle.to_pandas("requests", ["request_id", "prompt"]).set_index("request_id")["prompt"]
    expected = (prompts.reindex(out["request_id"]).str.len().to_numpy() + 3) // 4
    assert out["n_prompt_tokens"].tolist() == expected.tolist()


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


# --- tiny sources the tests write themselves (no shared data needed) ---


def _tiny(tmp_path, change=None):
    return write_source(tmp_path / "mmlu_pro", mmlu_pro_tables(), change)


def test_tiny_source_end_to_end_gives_the_expected_bundle(tmp_path):
    summary = import_trace("mmlu-pro", _tiny(tmp_path), tmp_path / "b", models=",".join(MMLU_MODELS))
    bundle = open_bundle(tmp_path / "b")
    assert bundle.tier_names == MMLU_MODELS and [t["params_b"] for t in bundle.tiers] == [7.0, 13.0]
    requests = bundle.to_pandas("requests")
    assert requests["request_id"].tolist() == ["70", "71", "72"]
    assert requests["prompt"].tolist()[:2] == ["2 + 2 = ?\nA. 3\nB. 4", "Is a contract binding?\nA. Yes\nB. No\nC. Maybe"]
    assert requests["task"].tolist() == ["math", "law", "math"] and requests["reference"].tolist() == ["B", "A", "B"]
    out = bundle.to_pandas("outputs")
    assert out[["request_id", "tier"]].values.tolist() == [["70", 0], ["70", 1], ["71", 0], ["71", 1], ["72", 0], ["72", 1]]
    assert [None if pd.isna(v) else v for v in out["output"]] == [
        "The answer is (A)", "2+2=4 (B)", "Yes. (A)", None, "hmm", "9 (B)"  # 13b kept no CoT text for 71
    ]
    assert out["n_output_tokens"].fillna(-1).tolist() == [5, 3, 2, -1, 1, 2]  # ceil(chars / 4); -1: null
    assert out["quality"].tolist()[:5] == [0.0, 1.0, 1.0, 1.0, 0.0] and pd.isna(out["quality"].iloc[5])
    assert out["accepted"].tolist()[:5] == [False, True, True, True, False]
    assert [t["n_outputs"] for t in summary["tiers"]] == [3, 3] and [t["n_labelled"] for t in summary["tiers"]] == [3, 2]


def test_a_null_correct_gives_null_quality_and_null_accepted(tmp_path):
    trace = load_trace("mmlu-pro", _tiny(tmp_path), models=",".join(MMLU_MODELS))
    unlabelled = trace.outputs[(trace.outputs["request_id"] == "72") & (trace.outputs["tier"] == 1)].iloc[0]
    assert pd.isna(unlabelled["quality"]) and pd.isna(unlabelled["accepted"]) and pd.isna(unlabelled["label_source"])
    assert unlabelled["output"] == "9 (B)"  # the output itself is kept
    labelled = trace.outputs.drop(index=unlabelled.name)
    assert labelled["accepted"].notna().all() and (labelled["label_source"] == "exact_match").all()


def test_malformed_options_or_a_repeated_row_is_one_error_naming_file_and_column(tmp_path):
    bad_options = ("questions.parquet", lambda t: replace_column(t, "options", pa.array(["[\"3\", \"4\"]", "nope", "[]"])))
    src = _tiny(tmp_path / "a", bad_options)
    with pytest.raises(TraceError, match=r"questions.parquet, column 'options': question 71: 'nope' is not JSON"):
        load_trace("mmlu-pro", src, models=",".join(MMLU_MODELS))
    repeated = ("outputs.parquet", lambda t: pa.concat_tables([t, t.slice(0, 1)]))
    src = _tiny(tmp_path / "b", repeated)
    with pytest.raises(TraceError, match=r"outputs.parquet: two rows for model 'Llama-2-7b-hf', question_id 70$"):
        load_trace("mmlu-pro", src, models=",".join(MMLU_MODELS))


def test_params_b_gives_a_size_the_name_rule_cannot_read(shared_data, tmp_path):
    # 'Mixtral-8x7B' names no single size: the import leaves it unknown (the params cost model
    # then refuses, pointing at --params-b); --params-b gives it and the provenance says so
    models = "Mistral-7B-v0.1,Mixtral-8x7B-v0.1"
    import_trace("mmlu-pro", shared_data / "mmlu_pro", tmp_path / "plain", models=models)
    assert [t["params_b"] for t in open_bundle(tmp_path / "plain").tiers] == [7.0, None]
    summary = import_trace("mmlu-pro", shared_data / "mmlu_pro", tmp_path / "given", models=models,
                           params_b="Mixtral-8x7B-v0.1=46.7")
    bundle = open_bundle(tmp_path / "given")
    assert [t["params_b"] for t in bundle.tiers] == [7.0, 46.7] and [t["params_b"] for t in summary["tiers"]] == [7.0, 46.7]
    assert bundle.manifest["provenance"]["params_b_given"] == {"Mixtral-8x7B-v0.1": 46.7}


def test_params_b_overrides_the_name_rule_on_the_tiny_source(tmp_path):
    import_trace("mmlu-pro", _tiny(tmp_path), tmp_path / "b", models=",".join(MMLU_MODELS),
                 params_b={"Llama-2-13b-hf": 13.02})
    assert [t["params_b"] for t in open_bundle(tmp_path / "b").tiers] == [7.0, 13.02]


@pytest.mark.parametrize("given, message", [
    ("Llama-2-70b-hf=70", r"--params-b: no tier 'Llama-2-70b-hf'; the tiers are Llama-2-7b-hf, Llama-2-13b-hf"),
    ("Llama-2-13b-hf=0", r"Llama-2-13b-hf=0.0 is not a parameter count in billions > 0"),
    ("Llama-2-13b-hf=inf", r"Llama-2-13b-hf=inf is not a parameter count in billions > 0"),
    ("Llama-2-13b-hf=x", r"'Llama-2-13b-hf=x' is not NAME=BILLIONS"),
    ("Llama-2-13b-hf", r"'Llama-2-13b-hf' is not NAME=BILLIONS"),
    ("=13", r"'=13' is not NAME=BILLIONS"),
    ("Llama-2-13b-hf=13,Llama-2-13b-hf=14", r"'Llama-2-13b-hf' appears twice"),
    ({"Llama-2-13b-hf": float("nan")}, r"Llama-2-13b-hf=nan is not a parameter count in billions > 0"),
    ({"Llama-2-13b-hf": -13.0}, r"Llama-2-13b-hf=-13.0 is not a parameter count in billions > 0"),
    ({"Llama-2-13b-hf": True}, r"Llama-2-13b-hf=True is not a parameter count in billions > 0"),
])
def test_a_bad_params_b_is_one_error_and_writes_nothing(tmp_path, given, message):
    with pytest.raises(ConfigError, match=message):
        import_trace("mmlu-pro", _tiny(tmp_path), tmp_path / "b", models=",".join(MMLU_MODELS), params_b=given)
    assert not (tmp_path / "b").exists()


def test_params_b_on_the_command_line_lets_the_params_cost_model_run(tmp_path):
    from click.testing import CliRunner

    from asd.cli import main

    src = _tiny(tmp_path)
    runner = CliRunner()
    bad = runner.invoke(main, ["traces", "import", "mmlu-pro", str(src), "--models", ",".join(MMLU_MODELS),
                               "--params-b", "Llama-2-13b=13", "-o", str(tmp_path / "b")])
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == [
        "error: --params-b: no tier 'Llama-2-13b'; the tiers are Llama-2-7b-hf, Llama-2-13b-hf"]
    good = runner.invoke(main, ["traces", "import", "mmlu-pro", str(src), "--models", ",".join(MMLU_MODELS),
                                "--params-b", "Llama-2-7b-hf=6.74", "-o", str(tmp_path / "b")])
    assert good.exit_code == 0, good.output
    assert re.search(r"tier 0  Llama-2-7b-hf +6.74B", good.output)
    from asd.calibration.costs import fit_cost_model
    from asd.calibration.views import load_view

    view = load_view(tmp_path / "b")
    assert fit_cost_model(view, "params").params_b.tolist() == [6.74, 13.0]
