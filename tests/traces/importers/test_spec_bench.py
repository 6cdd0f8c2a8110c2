import numpy as np
import pandas as pd
import pytest

from asd.errors import ConfigError
from asd.traces.bundle import open_bundle
from asd.traces.importers import import_trace, load_trace
from asd.traces.importers.spec_bench import accepted_from_steps


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
