"""TraceView: dense grids equal to the bundle's rows, NaN where not recorded, drafts at the
verify tier, lazily read token lists, subsets, and one build path for bundles and live rows."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings

from asd.calibration.views import ACCEPT_THRESHOLD, acceptable, load_view, view_from_outputs, view_from_records
from asd.errors import ConfigError, TraceError
from asd.traces.bundle import open_bundle, write_bundle
from asd.traces.summary import summarize_bundle
from asd.traces.synth import synthesize, write_synthetic_bundle
from tests.strategies import trace_bundles


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


@pytest.fixture(scope="module")
def builtin():
    return load_view("builtin")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "b"
    manifest, requests, outputs, drafts = synthesize(40, 4, seed=3, token_lists=True)
    # Drop some outputs rows and one draft pair: the grids must say "not recorded" there.
    keep = np.ones(outputs.num_rows, dtype=bool)
    keep[[1, 6, 13]] = False
    outputs = outputs.filter(pa.array(keep))
    drafts = drafts.filter(pa.array(np.arange(drafts.num_rows) != 4))
    write_bundle(path, manifest, requests, outputs, drafts)
    return path


def test_acceptable_prefers_accepted_then_quality_threshold_and_nan_when_unlabelled():
    quality = np.array([0.9, 0.2, np.nan, 0.5, np.nan, 0.1])
    accepted = np.array([0.0, 1.0, 1.0, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(acceptable(quality, accepted), [0.0, 1.0, 1.0, 1.0, np.nan, 0.0])
    assert ACCEPT_THRESHOLD == 0.5
    np.testing.assert_array_equal(acceptable(quality, accepted, threshold=0.95)[3], 0.0)


def test_builtin_view_has_the_contract_shapes_and_types(builtin):
    v = builtin
    n, k = v.n_requests, v.n_tiers
    assert (n, k) == (600, 2) and v.tier_names == ["smollm2-135m", "gemma3-270m"]
    for name in ("quality", "accepted", "acceptable", "n_prompt_tokens", "n_output_tokens", "ttft_ms", "e2e_ms",
                 "mean_logprob", "min_logprob", "mean_entropy", "draft_n_accepted", "draft_n_tokens", "draft_verify_ms"):
        grid = getattr(v, name)
        assert grid.shape == (n, k) and grid.dtype == np.float64, name
    for name in ("request_ids", "tasks", "split", "prompts", "references"):
        assert getattr(v, name).shape == (n,) and getattr(v, name).dtype == object, name
    assert v.outputs.shape == (n, k) and v.has_output.dtype == bool and v.has_output.all()
    assert v.params_b.tolist() == [0.135, 0.27] and v.tensor_parallel.tolist() == [1, 1]
    assert v.max_tokens.tolist() == [48.0, 48.0]
    assert v.has_drafts and v.has_logprobs and v.has_text and len(v.content_hash) == 64


def test_grids_equal_the_outputs_rows_and_acceptable_matches_inspect(builtin):
    bundle = open_bundle("builtin")
    rows = bundle.read("outputs").to_pandas()
    index = {rid: r for r, rid in enumerate(builtin.request_ids)}
    for row in rows.sample(50, random_state=0).itertuples():
        r, k = index[row.request_id], row.tier
        assert builtin.outputs[r, k] == row.output
        assert builtin.n_output_tokens[r, k] == row.n_output_tokens
        assert builtin.mean_logprob[r, k] == pytest.approx(row.mean_logprob, nan_ok=True)
    summary = summarize_bundle(bundle)
    for k, tier in enumerate(summary["tiers"]):
        assert np.nanmean(builtin.acceptable[:, k]) == pytest.approx(tier["acceptable_rate"])


def test_missing_outputs_and_drafts_are_nan_and_drafts_sit_at_the_verify_tier(synth):
    v = load_view(synth)
    bundle = open_bundle(synth)
    assert (~v.has_output).sum() == 3
    assert np.isnan(v.quality[~v.has_output]).all() and np.isnan(v.n_output_tokens[~v.has_output]).all()
    assert np.isnan(v.draft_n_tokens[:, 0]).all()
    drafts = bundle.read("drafts").to_pandas()
    index = {rid: r for r, rid in enumerate(v.request_ids)}
    recorded = np.zeros(v.draft_n_tokens.shape, dtype=bool)
    for row in drafts.itertuples():
        r = index[row.request_id]
        assert row.verify_tier == row.draft_tier + 1
        assert v.draft_n_tokens[r, row.verify_tier] == row.n_draft_tokens
        assert v.draft_n_accepted[r, row.verify_tier] == row.n_accepted
        recorded[r, row.verify_tier] = True
    assert np.isnan(v.draft_n_tokens[~recorded]).all() and (~recorded[:, 1:]).sum() == 1


def test_token_lists_are_read_lazily_and_agree_with_the_row_summaries(synth):
    v = load_view(synth)
    assert v._source._lists == {}  # nothing read yet
    lists = v.token_lists("token_logprobs")
    assert set(v._source._lists) == {"token_logprobs"}
    for r in range(v.n_requests):
        for k in range(v.n_tiers):
            cell = lists.cell(r, k)
            if not v.has_output[r, k]:
                assert cell is None
            else:
                assert len(cell) == v.n_output_tokens[r, k]
                assert cell.mean() == pytest.approx(v.mean_logprob[r, k], rel=1e-5, abs=1e-6)
    verifier = v.token_lists("verifier_logprobs")
    assert not verifier.present[:, 0].any()
    np.testing.assert_array_equal(verifier.length[verifier.present], v.draft_n_tokens[verifier.present])
    with pytest.raises(ConfigError, match="unknown token list"):
        v.token_lists("logits")


def test_subset_takes_rows_of_every_per_request_array_and_the_token_lists(synth):
    v = load_view(synth)
    rows = np.array([5, 2, 2, 30])
    s = v.subset(rows)
    assert s.n_requests == 4 and s.n_tiers == v.n_tiers
    np.testing.assert_array_equal(s.request_ids, v.request_ids[rows])
    np.testing.assert_array_equal(s.outputs, v.outputs[rows])
    np.testing.assert_array_equal(s.e2e_ms, v.e2e_ms[rows])
    np.testing.assert_array_equal(s.draft_n_accepted, v.draft_n_accepted[rows])
    full, part = v.token_lists("token_entropy"), s.token_lists("token_entropy")
    for i, r in enumerate(rows):
        for k in range(v.n_tiers):
            a, b = full.cell(r, k), part.cell(i, k)
            assert (a is None and b is None) or np.array_equal(a, b)
    mask = np.zeros(v.n_requests, dtype=bool)
    mask[[0, 7]] = True
    assert v.subset(mask).request_ids.tolist() == v.request_ids[[0, 7]].tolist()
    np.testing.assert_array_equal(s.params_b, v.params_b)
    with pytest.raises(ConfigError, match="mask"):
        v.subset(np.ones(3, dtype=bool))
    with pytest.raises(ConfigError, match="out of range"):
        v.subset([v.n_requests])


def test_in_memory_rows_give_the_same_view_as_the_bundle(synth):
    """One code path, two drivers: the live runner's rows and a recorded bundle."""
    bundle = open_bundle(synth)
    disk = load_view(bundle)
    memory = view_from_records(
        None, _rows(bundle.read("requests")), _rows(bundle.read("outputs")), _rows(bundle.read("drafts")),
        manifest=bundle.manifest,
    )
    for name in ("quality", "acceptable", "n_output_tokens", "mean_logprob", "min_logprob", "mean_entropy",
                 "ttft_ms", "draft_n_accepted", "draft_n_tokens", "draft_verify_ms"):
        np.testing.assert_array_equal(getattr(memory, name), getattr(disk, name), err_msg=name)
    np.testing.assert_array_equal(memory.outputs, disk.outputs)
    np.testing.assert_array_equal(memory.has_output, disk.has_output)
    a, b = memory.token_lists("verifier_logprobs"), disk.token_lists("verifier_logprobs")
    np.testing.assert_array_equal(a.present, b.present)
    assert memory.path is None and len(memory.content_hash) == 64


def test_view_from_outputs_builds_one_request_with_tiers_not_run_as_missing():
    v = view_from_outputs(
        "What is 2+2?",
        [{"output": "4", "n_output_tokens": 1, "token_logprobs": [-0.1]}, None, {"output": "The answer is 4."}],
        tiers=["s", "m", "l"],
        drafts=[None, None, {"n_draft_tokens": 1, "n_accepted": 1, "verifier_logprobs": [-0.2]}],
        task="math",
        sampling={"s": {"max_tokens": 8}},
    )
    assert v.n_requests == 1 and v.n_tiers == 3
    assert v.has_output.tolist() == [[True, False, True]]
    assert v.outputs.tolist() == [["4", None, "The answer is 4."]]
    assert v.mean_logprob[0, 0] == pytest.approx(-0.1) and np.isnan(v.mean_logprob[0, 2])
    assert v.draft_n_accepted[0].tolist()[2] == 1 and np.isnan(v.draft_n_accepted[0, 1])
    assert v.max_tokens[0] == 8 and np.isnan(v.max_tokens[1])
    assert v.tasks.tolist() == ["math"]
    with pytest.raises(ConfigError, match="ladder of 1 tiers"):
        view_from_outputs("p", [{"output": "a"}, {"output": "b"}], tiers=["s"])
    with pytest.raises(TraceError, match="unknown column"):
        view_from_outputs("p", [{"text": "a"}], tiers=["s"])


def test_content_hash_changes_with_the_bundle_and_not_between_loads(tmp_path):
    write_synthetic_bundle(tmp_path / "a", 20, 2, seed=0)
    write_synthetic_bundle(tmp_path / "b", 20, 2, seed=1)
    assert load_view(tmp_path / "a").content_hash == load_view(tmp_path / "a").content_hash
    assert load_view(tmp_path / "a").content_hash != load_view(tmp_path / "b").content_hash


def test_a_bad_bundle_path_is_a_trace_error(tmp_path):
    with pytest.raises(TraceError, match="no such bundle"):
        load_view(tmp_path / "nothing")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trace_bundles())
def test_random_bundles_have_nan_exactly_where_nothing_was_recorded(tmp_path_factory, tables):
    manifest, requests, outputs, drafts = tables
    path = tmp_path_factory.mktemp("v") / "b"
    write_bundle(path, manifest, requests, outputs, drafts)
    v = load_view(path)
    assert v.n_requests == len(requests["request_id"]) and v.n_tiers == len(manifest["tiers"])
    index = {rid: r for r, rid in enumerate(v.request_ids)}
    seen = np.zeros((v.n_requests, v.n_tiers), dtype=bool)
    for rid, tier, e2e, text in zip(outputs["request_id"], outputs["tier"], outputs["e2e_ms"], outputs["output"]):
        r = index[rid]
        seen[r, tier] = True
        assert (np.isnan(v.e2e_ms[r, tier]) if e2e is None else v.e2e_ms[r, tier] == e2e)
        assert v.outputs[r, tier] == text
    np.testing.assert_array_equal(v.has_output, seen)
    assert np.isnan(v.quality[~seen]).all() and all(o is None for o in v.outputs[~seen])
    lab = v.acceptable[np.isfinite(v.acceptable)]
    assert set(np.unique(lab)) <= {0.0, 1.0}


@pytest.mark.parametrize("tiers", ["t0", None, 5])
def test_in_memory_views_refuse_a_tier_list_that_is_not_a_list(tiers):
    """A plain string is a sequence too: tiers="t0" made a two-tier ladder of 't' and '0'."""
    with pytest.raises(ConfigError, match=r"tiers .*: give a list of tier names \(or manifest tier dicts\), in ladder order"):
        view_from_outputs("What is 2 + 2?", [{"output": "4"}], tiers=tiers)
    with pytest.raises(ConfigError, match="give a list of tier names"):
        view_from_records(tiers, [{"request_id": "r"}], [{"request_id": "r", "tier": 0, "output": "4"}])
    assert view_from_outputs("What is 2 + 2?", [{"output": "4"}], tiers=("small", "large")).tier_names == ["small", "large"]
