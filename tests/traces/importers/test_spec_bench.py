import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from asd.errors import ConfigError, TraceError
from asd.traces.bundle import open_bundle
from asd.traces.importers import import_trace, load_trace
from asd.traces.importers.spec_bench import accepted_from_steps
from tests.traces.importers.tiny_sources import replace_column, spec_bench_tables, write_source


def test_accepted_draft_tokens_exclude_the_verifiers_own_token_per_step():
    assert accepted_from_steps([1, 1, 1]) == 0
    assert accepted_from_steps([3, 1, 5]) == 6


@pytest.fixture(scope="module")
def sps_bundle(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("spec") / "bundle"
    import_trace("spec-bench", shared_data / "spec_bench", out)
    return open_bundle(out)


def test_sps_run_becomes_one_drafts_row_per_turn(shared_data, sps_bundle):
    traces = pd.read_parquet(shared_data / "spec_bench" / "decoding_traces.parquet")
    mine = traces[(traces["source_repo"] == "yukiki-jc/Spec-Bench") & (traces["dataset"] == "spec_bench")]
    sps = mine[mine["method"] == "sps-68m"]
    sps = sps.set_index(sps["question_id"] + ":" + sps["turn"].astype(str))
    drafts = sps_bundle.to_pandas("drafts").set_index("request_id")
    assert len(drafts) == len(sps) == 560
    expected = (sps["new_tokens"] - sps["decoding_steps"]).reindex(drafts.index)
    assert (drafts["n_accepted"] == expected).all()
    assert (drafts["draft_tier"] == 0).all() and (drafts["verify_tier"] == 1).all()
    assert drafts["n_draft_tokens"].isna().all()  # not logged by the harness


def test_verify_tier_output_and_timing_come_from_its_vanilla_run(shared_data, sps_bundle):
    assert sps_bundle.tier_names == ["vicuna-68m", "vicuna-7b-v1.3"]
    assert [t["params_b"] for t in sps_bundle.tiers] == [0.068, 7.0]
    traces = pd.read_parquet(shared_data / "spec_bench" / "decoding_traces.parquet")
    vanilla = traces[(traces["source_repo"] == "yukiki-jc/Spec-Bench") & (traces["method"] == "vanilla")
                     & (traces["dataset"] == "spec_bench")]
    vanilla = vanilla.set_index(vanilla["question_id"] + ":" + vanilla["turn"].astype(str))
    out = sps_bundle.to_pandas("outputs")
    verify = out[out["tier"] == 1].set_index("request_id")
    np.testing.assert_allclose(verify["e2e_ms"], vanilla["wall_time_s"].reindex(verify.index) * 1000)
    assert (verify["n_output_tokens"] == vanilla["new_tokens"].reindex(verify.index)).all()
    assert verify["output"].equals(vanilla["output"].reindex(verify.index).rename("output"))
    draft = out[out["tier"] == 0]
    assert draft[["output", "n_output_tokens", "e2e_ms", "ttft_ms"]].isna().all().all()
    assert out["quality"].isna().all()


def test_requests_are_turns_with_their_own_prompt_and_reference(sps_bundle):
    requests = sps_bundle.to_pandas("requests").set_index("request_id")
    assert requests.loc["81:0", "prompt"].startswith("Compose an engaging travel blog")
    assert requests.loc["81:1", "task"] == "writing"
    translation = requests[requests["task"] == "translation"]
    assert translation["reference"].notna().all() and not translation["reference"].iloc[0].startswith("[")


def test_heads_methods_are_not_a_draft_tier(shared_data):
    with pytest.raises(ConfigError, match=r"--method 'eagle': not a draft-model run .*draft-model runs: sps-68m"):
        load_trace("spec-bench", shared_data / "spec_bench", method="eagle")
    with pytest.raises(ConfigError, match=r"--source-repo 'me/Spec-Bench': not in .*available: BNukhkadiev/Spec-Bench"):
        load_trace("spec-bench", shared_data / "spec_bench", source_repo="me/Spec-Bench")


# --- tiny sources the tests write themselves (no shared data needed) ---


def _tiny(tmp_path, change=None):
    return write_source(tmp_path / "spec_bench", spec_bench_tables(), change)


def test_tiny_source_end_to_end_gives_the_expected_bundle(tmp_path):
    summary = import_trace("spec-bench", _tiny(tmp_path), tmp_path / "b")
    bundle = open_bundle(tmp_path / "b")
    assert bundle.tier_names == ["vicuna-68m", "vicuna-7b-v1.3"]
    requests = bundle.to_pandas("requests")
    assert requests["request_id"].tolist() == ["81:0", "81:1", "300:0"]
    assert requests["prompt"].tolist() == ["Write a blog post.", "Rewrite it as a poem.", "Translate: Guten Tag"]
    assert requests["task"].tolist() == ["writing", "writing", "translation"]
    assert requests["reference"].fillna("-").tolist() == ["-", "-", "Good day"]
    out = bundle.to_pandas("outputs")
    verify = out[out["tier"] == 1]
    assert verify["output"].tolist() == ["Post.", "Poem.", "Good day"]
    assert verify["n_output_tokens"].tolist() == [4, 3, 2]
    assert verify["e2e_ms"].tolist() == pytest.approx([80.0, 60.0, 40.0])
    assert out[out["tier"] == 0].drop(columns=["request_id", "tier"]).isna().all().all()
    drafts = bundle.to_pandas("drafts")
    assert drafts["n_accepted"].tolist() == [2, 2, 0]  # sum(length - 1) of the sps-68m steps
    assert bundle.manifest["draft_acceptance"] == "sps_steps"  # a sum over steps, not a longest prefix
    assert drafts["n_draft_tokens"].isna().all()
    # The draft tier has a row per request but recorded nothing: the summary says 0 outputs.
    assert [t["n_outputs"] for t in summary["tiers"]] == [0, 3]


def test_tiny_source_with_a_null_step_list_gives_null_accepted_and_a_bad_step_an_error(tmp_path):
    lists = [[1, 1, 1, 1], [1, 1, 1], [1, 1], [3, 1], None, [1, 1], [4]]
    null_list = ("decoding_traces.parquet", lambda t: replace_column(t, "accept_lengths", pa.array(lists, pa.list_(pa.int64()))))
    trace = load_trace("spec-bench", _tiny(tmp_path / "a", null_list))
    assert trace.drafts["n_accepted"].tolist()[0] == 2 and pd.isna(trace.drafts["n_accepted"].iloc[1])
    lists[4] = [0, 3]
    zero_step = ("decoding_traces.parquet", lambda t: replace_column(t, "accept_lengths", pa.array(lists, pa.list_(pa.int64()))))
    with pytest.raises(TraceError, match=r"column 'accept_lengths': turn '81:1' of the draft run: accepted length 0 is not"):
        load_trace("spec-bench", _tiny(tmp_path / "b", zero_step))


@pytest.mark.parametrize("value, shown", [(None, "null"), (np.nan, "null"), (np.inf, "inf"), (-1.0, "-1")])
def test_a_vanilla_wall_time_that_is_not_a_finite_count_of_seconds_names_the_source_turn(tmp_path, value, shown):
    """It was reported against the bundle's derived column ("outputs.parquet: column 'e2e_ms'
    row 3: infinite"), and a null or NaN silently became a null e2e_ms."""
    from click.testing import CliRunner

    from asd.cli import main

    tables = spec_bench_tables()
    walls = tables["decoding_traces.parquet"].column("wall_time_s").to_pylist()
    walls[1] = value  # vanilla, question 81, turn 1
    tables["decoding_traces.parquet"] = replace_column(tables["decoding_traces.parquet"], "wall_time_s",
                                                       pa.array(walls, pa.float64()))
    src = write_source(tmp_path / "spec_bench", tables)
    result = CliRunner().invoke(main, ["traces", "import", "spec-bench", str(src), "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and result.output == (
        f"error: {src / 'decoding_traces.parquet'}, column 'wall_time_s': question_id 81, turn 1 of the vanilla run "
        f"of vicuna-7b-v1.3: {shown} (a wall time must be a finite number of seconds >= 0)\n"), result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec_bench"]
    # the SpS run's wall time is not imported: a bad one there is no error
    walls[1], walls[3] = 0.06, None
    tables["decoding_traces.parquet"] = replace_column(tables["decoding_traces.parquet"], "wall_time_s",
                                                       pa.array(walls, pa.float64()))
    trace = load_trace("spec-bench", write_source(tmp_path / "ok", tables))
    assert trace.outputs["e2e_ms"].dropna().round(6).tolist() == [80.0, 60.0, 40.0]
