import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from asd.errors import ConfigError, TraceError
from asd.traces.bundle import open_bundle
from asd.traces.importers import import_trace, load_trace
from asd.traces.importers.alpaca_eval import preference_to_quality
from tests.traces.importers.tiny_sources import ALPACA_MODELS, alpaca_eval_tables, replace_column, write_source

LLAMA_2 = ["llama-2-7b-chat-hf", "llama-2-13b-chat-hf", "llama-2-70b-chat-hf"]


def test_preference_mapping_covers_discrete_draws_and_weighted_judges():
    quality = preference_to_quality([1.0, 2.0, 1.5, 0.0, 1.25, np.nan])
    assert quality[:5].tolist() == [0.0, 1.0, 0.5, 0.5, 0.25] and np.isnan(quality[5])
    with pytest.raises(ValueError, match=r"^preference 0\.5 is neither 0 nor in \[1, 2\]$"):  # not np.float64(0.5)
        preference_to_quality([0.5])


@pytest.fixture(scope="module")
def llama2_bundle(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("alpaca") / "bundle"
    summary = import_trace("alpaca-eval", shared_data / "alpaca_eval", out, models=",".join(LLAMA_2), drop_incomplete=True)
    return open_bundle(out), summary


def test_llama2_ladder_uses_the_v1_judge_and_drops_the_prompt_70b_lacks(llama2_bundle):
    bundle, summary = llama2_bundle
    assert bundle.tier_names == LLAMA_2 and [t["params_b"] for t in bundle.tiers] == [7.0, 13.0, 70.0]
    assert summary["dropped_incomplete"] == 1 and summary["n_requests"] == 804
    assert bundle.manifest["provenance"]["annotator"] == "alpaca_eval_gpt4"
    assert "alpaca_eval_gpt4" in bundle.manifest["label_rule"]
    assert "691" not in set(bundle.to_pandas("requests")["request_id"])


def test_quality_is_the_mapped_preference_of_each_example(shared_data, llama2_bundle):
    bundle, _ = llama2_bundle
    annotations = pd.read_parquet(shared_data / "alpaca_eval" / "annotations.parquet")
    v1 = annotations[(annotations["annotator"] == "alpaca_eval_gpt4") & annotations["model"].isin(LLAMA_2)]
    v1 = v1[v1["output_2_matches_model_outputs"]]
    outputs = bundle.to_pandas("outputs", ["request_id", "tier", "quality", "label_source"])
    outputs["model"] = outputs["tier"].map(dict(enumerate(LLAMA_2)))
    outputs["prompt_idx"] = outputs["request_id"].astype(int)
    joined = outputs.merge(v1, on=["model", "prompt_idx"])
    expected = preference_to_quality(joined["preference"].to_numpy())
    np.testing.assert_allclose(joined["quality"].to_numpy(dtype=float), expected, equal_nan=True)
    # Null preferences stay unlabelled rather than being dropped.
    assert outputs["quality"].isna().sum() >= 1 and (outputs["label_source"] == "alpaca_eval_gpt4").sum() > 2000
    means = outputs.groupby("tier")["quality"].mean()
    assert means[0] < means[1] < means[2]


def test_token_counts_are_estimated_from_text(llama2_bundle):
    bundle, _ = llama2_bundle
    assert bundle.manifest["estimated_columns"] == ["outputs.n_prompt_tokens", "outputs.n_output_tokens"]
    out = bundle.to_pandas("outputs", ["output", "n_output_tokens", "ttft_ms", "e2e_ms"])
    assert out["n_output_tokens"].tolist() == ((out["output"].str.len() + 3) // 4).tolist()
    assert out["ttft_ms"].isna().all() and out["e2e_ms"].isna().all()  # never invented


def test_weighted_judge_gives_continuous_quality_and_stored_twice_rows_count_once(shared_data):
    trace = load_trace("alpaca-eval", shared_data / "alpaca_eval", models="vicuna-7b-v1.5,vicuna-13b-v1.5")
    assert trace.manifest["provenance"]["annotator"] == "weighted_alpaca_eval_gpt4_turbo"
    quality = trace.outputs["quality"].astype(float)
    assert len(trace.outputs) == 2 * 805
    assert ((quality > 0.01) & (quality < 0.99)).sum() > 100
    assert quality.between(0, 1).all()


def test_no_covering_annotator_is_an_error_unless_none(shared_data):
    models = "Meta-Llama-3.1-8B-Instruct-Turbo,Meta-Llama-3.1-70B-Instruct-Turbo"
    with pytest.raises(TraceError, match="no annotator labels all of .*--annotator none"):
        load_trace("alpaca-eval", shared_data / "alpaca_eval", models=models)
    trace = load_trace("alpaca-eval", shared_data / "alpaca_eval", models=models, annotator="none")
    assert "quality" not in trace.outputs and trace.manifest["label_rule"] is None
    assert len(trace.requests) == 805


def test_annotator_lacking_a_model_or_unknown_is_refused(shared_data):
    with pytest.raises(TraceError, match="alpaca_eval_cot_gpt4_turbo_fn has no labels for llama-2-7b-chat-hf"):
        load_trace("alpaca-eval", shared_data / "alpaca_eval", models=",".join(LLAMA_2), annotator="alpaca_eval_cot_gpt4_turbo_fn")
    with pytest.raises(ConfigError, match="--annotator 'gpt5': unknown"):
        load_trace("alpaca-eval", shared_data / "alpaca_eval", models=",".join(LLAMA_2), annotator="gpt5")


def test_unknown_model_lists_the_available_ones(shared_data):
    with pytest.raises(TraceError, match=r"unknown model 'llama-2-7b'; available: .*llama-2-7b-chat-hf"):
        load_trace("alpaca-eval", shared_data / "alpaca_eval", models="llama-2-7b,llama-2-13b-chat-hf")


# --- tiny sources the tests write themselves (no shared data needed) ---


def test_tiny_source_end_to_end_gives_the_expected_bundle(tmp_path):
    src = write_source(tmp_path / "alpaca_eval", alpaca_eval_tables())
    summary = import_trace("alpaca-eval", src, tmp_path / "b", models=",".join(ALPACA_MODELS))
    bundle = open_bundle(tmp_path / "b")
    # The weighted judge labels only 7b, so the default falls back to the v1 judge.
    assert bundle.manifest["provenance"]["annotator"] == "alpaca_eval_gpt4"
    assert bundle.manifest["provenance"]["baseline"] == "text_davinci_003"
    assert [t["params_b"] for t in bundle.tiers] == [7.0, 13.0]  # 13b has no hand label: from its name
    requests = bundle.to_pandas("requests")
    assert requests["request_id"].tolist() == ["0", "1", "2"]
    assert requests["prompt"].tolist() == ["Name a fruit.", "Write a haiku about rain.", "Why is the sky blue?"]
    assert requests["task"].tolist() == ["helpful_base", "koala", "oasst"]
    out = bundle.to_pandas("outputs")
    assert out["output"].tolist() == ["Apple", "Pear", "Rain falls", "Soft rain", "Rayleigh scattering.", "Scattering"]
    # 7b: preferences 1, 2, 1.5; 13b: 0 (a draw), null, and a judged text that is not the output.
    assert out["quality"].fillna(-1).tolist() == [0.0, 0.5, 1.0, -1, 0.5, -1]
    assert out["label_source"].fillna("-").tolist() == ["alpaca_eval_gpt4"] * 3 + ["-", "alpaca_eval_gpt4", "-"]
    assert out["n_prompt_tokens"].tolist() == [4, 4, 7, 7, 5, 5]  # ceil(len(instruction) / 4)
    assert out["n_output_tokens"].tolist() == [2, 1, 3, 3, 5, 3]
    assert out["accepted"].isna().all() and out["e2e_ms"].isna().all()
    assert [t["n_labelled"] for t in summary["tiers"]] == [3, 1]
    assert "1 label nulled: the judged text differs from the imported output" in summary["notes"]
    assert "1 label null: alpaca_eval_gpt4 gave no preference" in summary["notes"]
    provenance = bundle.manifest["provenance"]
    assert (provenance["labels_nulled_text_mismatch"], provenance["labels_null_no_preference"]) == (1, 1)


def test_the_notes_count_only_the_outputs_imported(tmp_path):
    """A nulled label of a request --drop-incomplete dropped was still reported as nulled (the
    README's own Llama-2 example said '1 label nulled' of prompt 691, which is not in the bundle)."""
    tables = alpaca_eval_tables()
    outputs = tables["outputs.parquet"]
    keep = [i for i in range(outputs.num_rows) if i != 5]  # 13b's output for prompt 2, whose label is stale
    tables["outputs.parquet"] = outputs.take(keep)
    summary = import_trace("alpaca-eval", write_source(tmp_path / "alpaca_eval", tables), tmp_path / "b",
                           models=",".join(ALPACA_MODELS), drop_incomplete=True)
    assert summary["dropped_incomplete"] == 1
    assert not any("label nulled" in note for note in summary["notes"])
    assert open_bundle(tmp_path / "b").manifest["provenance"]["labels_nulled_text_mismatch"] == 0
    weighted = import_trace("alpaca-eval", write_source(tmp_path / "alpaca_eval2", alpaca_eval_tables()),
                            tmp_path / "w", models=ALPACA_MODELS[0], annotator="weighted_alpaca_eval_gpt4_turbo")
    assert "1 output not judged by weighted_alpaca_eval_gpt4_turbo" in weighted["notes"]  # prompt 2


def test_tiny_source_with_a_chosen_weighted_annotator_lacking_a_model_is_refused(tmp_path):
    src = write_source(tmp_path / "alpaca_eval", alpaca_eval_tables())
    with pytest.raises(TraceError, match="weighted_alpaca_eval_gpt4_turbo has no labels for llama-2-13b-chat-hf"):
        load_trace("alpaca-eval", src, models=",".join(ALPACA_MODELS), annotator="weighted_alpaca_eval_gpt4_turbo")
    trace = load_trace("alpaca-eval", src, models=ALPACA_MODELS[0], annotator="weighted_alpaca_eval_gpt4_turbo",
                       drop_incomplete=True)
    assert trace.outputs["quality"].fillna(-1).tolist() == [0.25, 0.75, -1]  # prompt 2 was not judged


def test_a_null_match_flag_nulls_the_label_rather_than_trusting_it(tmp_path):
    tables = alpaca_eval_tables()
    flags = pa.array([True, None, True, True, True, False, True, True], pa.bool_())
    tables["annotations.parquet"] = replace_column(tables["annotations.parquet"], "output_2_matches_model_outputs", flags)
    trace = load_trace("alpaca-eval", write_source(tmp_path / "alpaca_eval", tables), models=",".join(ALPACA_MODELS))
    assert trace.outputs["quality"].astype(float).fillna(-1).tolist() == [0.0, 0.5, -1, -1, 0.5, -1]
    assert trace.manifest["provenance"]["labels_nulled_match_unknown"] == 1
    assert "1 label nulled: not known whether the judged text is the imported output" in trace.report["notes"]


def _cli_error(src, out, models):
    from click.testing import CliRunner

    from asd.cli import main

    result = CliRunner().invoke(main, ["traces", "import", "alpaca-eval", str(src), "--models", models, "-o", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.import-*"))
    return lines[0]


@pytest.mark.parametrize("value, shown", [(-7.0, "-7"), (0.0, "0"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_a_params_b_hand_label_that_is_not_a_positive_finite_count_names_the_source(tmp_path, value, shown):
    """-7 and 0 were reported against the bundle's temporary manifest.json; inf was imported
    (the summary printed 'infB', the manifest stored null)."""
    tables = alpaca_eval_tables()
    params = pa.array([7.0, value, 7.0, None, None, None], pa.float64())
    tables["outputs.parquet"] = replace_column(tables["outputs.parquet"], "params_b", params)
    src = write_source(tmp_path / "alpaca_eval", tables)
    line = _cli_error(src, tmp_path / "b", ",".join(ALPACA_MODELS))
    assert line == (f"error: {src / 'outputs.parquet'}, column 'params_b': {shown} for model 'llama-2-7b-chat-hf' "
                    "(a parameter count in billions must be a finite number > 0, or null)")


def test_two_params_b_hand_labels_for_one_model_are_refused_not_the_first_taken(tmp_path):
    tables = alpaca_eval_tables()
    params = pa.array([7.0, 8.0, None, None, None, None], pa.float64())  # a null beside a value is no conflict
    tables["outputs.parquet"] = replace_column(tables["outputs.parquet"], "params_b", params)
    src = write_source(tmp_path / "alpaca_eval", tables)
    assert _cli_error(src, tmp_path / "b", ",".join(ALPACA_MODELS)) == (
        f"error: {src / 'outputs.parquet'}, column 'params_b': model 'llama-2-7b-chat-hf' has different values 7, 8 "
        "(one parameter count per model)")
    params = pa.array([None, 7.0, 7.0, None, None, None], pa.float64())
    tables["outputs.parquet"] = replace_column(tables["outputs.parquet"], "params_b", params)
    trace = load_trace("alpaca-eval", write_source(tmp_path / "ok", tables), models=",".join(ALPACA_MODELS))
    assert [t["params_b"] for t in trace.manifest["tiers"]] == [7.0, 13.0]


@pytest.mark.parametrize("drop_incomplete", [False, True])
def test_a_null_output_names_the_column_model_and_prompt_not_a_missing_tier(tmp_path, drop_incomplete):
    """It was dropped as if the row were absent: "request '1' has no row for tier ...", or with
    --drop-incomplete the request left out silently."""
    tables = alpaca_eval_tables()
    outputs = tables["outputs.parquet"]
    texts = outputs.column("output").to_pylist()
    texts[4] = None  # 13b, prompt_idx 1
    tables["outputs.parquet"] = replace_column(outputs, "output", pa.array(texts, outputs.schema.field("output").type))
    src = write_source(tmp_path / "alpaca_eval", tables)
    with pytest.raises(TraceError) as error:
        load_trace("alpaca-eval", src, models=",".join(ALPACA_MODELS), drop_incomplete=drop_incomplete)
    assert str(error.value) == (f"{src / 'outputs.parquet'}, column 'output': null for model 'llama-2-13b-chat-hf', "
                                "prompt_idx 1 (a value is required)")
    assert _cli_error(src, tmp_path / "b", ",".join(ALPACA_MODELS)) == f"error: {error.value}"
