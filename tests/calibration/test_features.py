"""Features: finite everywhere, causal (tier i sees only tiers ≤ i), the cold-start state
differs only in the documented features, groups are selectable, the spec round-trips, the
live path gives the bundle's numbers, and agreement carries signal on a real ladder."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asd.calibration.features import (
    COLD_FEATURES, FEATURE_GROUPS, FEATURES, GROUPS, HEDGE_WORDS, PROMPT_FEATURES, FeatureSpec, compute_features,
    ragged_max,
    ragged_mean, ragged_min, ragged_share_below, ragged_tail_mean,
)
from asd.calibration.views import load_view, view_from_outputs, view_from_records
from asd.errors import ConfigError
from asd.traces.bundle import open_bundle, write_bundle
from asd.traces.synth import synthesize
from tests.strategies import ragged_token_lists, trace_bundles


@pytest.fixture(scope="module")
def builtin_bundle():
    return open_bundle("builtin")


@pytest.fixture(scope="module")
def builtin(builtin_bundle):
    return load_view(builtin_bundle)


@pytest.fixture(scope="module")
def synth_lists(tmp_path_factory):
    """A 4-tier synthetic bundle with token lists and drafts, plus made-up answer texts."""
    manifest, requests, outputs, drafts = synthesize(60, 4, seed=5, token_lists=True)
    rng = np.random.default_rng(0)
    texts = rng.choice(["The answer is (B).", "42", "1,234", '{"answer": "C"}', "", "Paris is the capital."], outputs.num_rows)
    outputs = outputs.append_column("output", [texts.tolist()])
    path = tmp_path_factory.mktemp("s") / "b"
    write_bundle(path, manifest, requests, outputs, drafts)
    return path


def _assert_finite(fs):
    assert np.isfinite(fs.tier_x).all() and np.isfinite(fs.cold_x).all() and np.isfinite(fs.prompt_x).all()


def test_registry_groups_cover_every_feature_once():
    assert list(FEATURE_GROUPS) == list(GROUPS)
    names = [f.name for f in FEATURES]
    assert len(names) == len(set(names)) == sum(len(v) for v in FEATURE_GROUPS.values())
    assert set(COLD_FEATURES) == set(FEATURE_GROUPS["agreement"]) | set(FEATURE_GROUPS["draft"]) | {"cold_start"}


def test_builtin_trace_gets_every_group_with_finite_values(builtin):
    fs = compute_features(builtin)
    assert fs.groups == list(GROUPS) and fs.missing_groups == {}
    assert fs.tier_x.shape == (600, 2, len(fs.names)) and fs.prompt_x.shape == (600, len(fs.prompt_names))
    _assert_finite(fs)
    assert fs.prompt_names[: len(PROMPT_FEATURES)] == list(PROMPT_FEATURES)
    assert fs.prompt_names[len(PROMPT_FEATURES):] == ["task=arithmetic", "task=classification", "task=copying", "task=facts"]


def test_a_trace_without_logprobs_or_drafts_gets_the_text_groups_and_says_why(tmp_path):
    rows = [{"request_id": "a", "tier": k, "output": t} for k, t in enumerate(["4", "The answer is 4."])]
    view = view_from_records(["s", "l"], [{"request_id": "a", "prompt": "2+2?"}], rows)
    fs = compute_features(view)
    assert fs.groups == ["length", "format", "content", "agreement", "stage"]
    assert fs.missing_groups == {"logprob": "no logprobs in trace", "entropy": "no token entropies in trace",
                                 "draft": "no drafts (consecutive tiers) in trace"}
    assert fs.tier_x[0, 1, fs.column("agree_prev")] == 1.0
    with pytest.raises(ConfigError, match="'logprob' is not available: no logprobs in trace"):
        compute_features(view, ["logprob"])


def test_groups_are_selectable_stage_always_and_unknown_names_fail(builtin):
    fs = compute_features(builtin, "agreement,logprob")
    assert fs.groups == ["logprob", "agreement", "stage"]
    assert fs.names == FEATURE_GROUPS["logprob"] + FEATURE_GROUPS["agreement"] + FEATURE_GROUPS["stage"]
    with pytest.raises(ConfigError, match="unknown feature group 'vibes'; groups are logprob, entropy"):
        compute_features(builtin, ["vibes"])


def test_cold_state_differs_only_in_the_documented_features(builtin, synth_lists):
    for view in (builtin, load_view(synth_lists)):
        fs = compute_features(view)
        for j, name in enumerate(fs.names):
            feature = next(f for f in FEATURES if f.name == name)
            if feature.cold is None:
                np.testing.assert_array_equal(fs.cold_x[..., j], fs.tier_x[..., j], err_msg=name)
            else:
                assert (fs.cold_x[..., j] == feature.cold).all(), name
        assert (fs.cold_x[..., fs.column("cold_start")] == 1).all() and (fs.tier_x[..., fs.column("cold_start")] == 0).all()
        # At tier 0 nothing was skipped: the states differ only in the flag.
        other = [j for j, n in enumerate(fs.names) if n != "cold_start"]
        np.testing.assert_array_equal(fs.cold_x[:, 0, other], fs.tier_x[:, 0, other])
        assert fs.cold_features == [n for n in fs.names if n in COLD_FEATURES]


def _later_tiers_scrambled(bundle, tier, seed):
    """The bundle's rows with every tier > `tier` replaced: its outputs rows (texts, tokens,
    logprobs, labels) and its drafts rows permuted across requests, some dropped."""
    rng = np.random.default_rng(seed)
    requests = bundle.read("requests").to_pylist()
    ids = [r["request_id"] for r in requests]
    outputs, drafts = [], []
    for table, key, out in (("outputs", "tier", outputs), ("drafts", "verify_tier", drafts)):
        if not bundle.has(table):
            continue
        rows = bundle.read(table).to_pylist()
        later = [r for r in rows if r[key] > tier]
        out.extend(r for r in rows if r[key] <= tier)
        shuffled = rng.permutation(len(later))
        for r, j in zip(later, shuffled):
            if rng.random() < 0.1:
                continue  # a later tier that never ran
            moved = dict(later[j])
            moved.update(request_id=r["request_id"], **{k: r[k] for k in ("tier", "draft_tier", "verify_tier") if k in r})
            out.append(moved)
    return requests, outputs, drafts or None, ids


@pytest.mark.parametrize("fixture", ["builtin_bundle", "synth_lists"])
def test_features_at_tier_i_do_not_change_when_later_tiers_change(request, fixture):
    bundle = request.getfixturevalue(fixture)
    bundle = bundle if hasattr(bundle, "read") else open_bundle(bundle)
    original = compute_features(load_view(bundle))
    for tier in range(bundle.n_tiers - 1):
        for seed in range(2):
            requests, outputs, drafts, _ = _later_tiers_scrambled(bundle, tier, seed)
            view = view_from_records(None, requests, outputs, drafts, manifest=bundle.manifest)
            changed = compute_features(view, spec=original.spec)
            assert changed.names == original.names
            for j, name in enumerate(original.names):
                for state in ("tier_x", "cold_x"):
                    np.testing.assert_array_equal(
                        getattr(changed, state)[:, : tier + 1, j], getattr(original, state)[:, : tier + 1, j],
                        err_msg=f"{state} {name} at tiers <= {tier}",
                    )
            np.testing.assert_array_equal(changed.prompt_x, original.prompt_x)
            later = changed.tier_x[:, tier + 1 :] != original.tier_x[:, tier + 1 :]
            assert later.any()  # the scramble did change something later


def _rows_of(columns):
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace_bundles(max_tiers=4), st.integers(0, 3), st.randoms(use_true_random=False))
def test_random_traces_give_finite_causal_features(tables, tier, rnd):
    manifest, requests, outputs, drafts = tables
    tier = min(tier, len(manifest["tiers"]) - 1)
    full = view_from_records(None, _rows_of(requests), _rows_of(outputs), _rows_of(drafts) if drafts else None, manifest=manifest)
    fs = compute_features(full)
    _assert_finite(fs)
    # Drop every row of the later tiers: what tier ≤ `tier` sees must not move.
    keep_out = [r for r in _rows_of(outputs) if r["tier"] <= tier]
    keep_drafts = [r for r in _rows_of(drafts) if r["verify_tier"] <= tier] if drafts else []
    rnd.shuffle(keep_out)
    cut = view_from_records(None, _rows_of(requests), keep_out, keep_drafts or None, manifest=manifest)
    fs_cut = compute_features(cut, spec=fs.spec)
    _assert_finite(fs_cut)
    np.testing.assert_array_equal(fs_cut.tier_x[:, : tier + 1], fs.tier_x[:, : tier + 1])
    np.testing.assert_array_equal(fs_cut.cold_x[:, : tier + 1], fs.cold_x[:, : tier + 1])


def test_spec_round_trips_through_json_and_reproduces_the_columns_on_new_data(builtin):
    fs = compute_features(builtin, ["logprob", "agreement"])
    spec = FeatureSpec.from_dict(json.loads(json.dumps(fs.spec.to_dict())))
    assert spec == fs.spec
    one = view_from_outputs(
        "What is 1+1?", [{"output": "2"}, {"output": "2"}], tiers=builtin.tier_names, task="never-seen",
    )
    live = compute_features(one, spec=spec)
    assert live.names == fs.names and live.prompt_names == fs.prompt_names
    assert set(live.missing_groups) == {"logprob"}  # a spec computes it anyway, from fill values, and says so
    assert live.prompt_x[0, len(PROMPT_FEATURES):].sum() == 0  # unknown task: all-zero one-hot
    bad = fs.spec.to_dict() | {"names": ["logprob_mean"]}
    with pytest.raises(ConfigError, match="do not match"):
        FeatureSpec.from_dict(bad)
    with pytest.raises(ConfigError, match="unknown feature group"):
        FeatureSpec.from_dict(fs.spec.to_dict() | {"groups": ["nope"]})


def test_live_request_gets_the_same_features_as_the_recorded_bundle(builtin_bundle, builtin):
    """One code path, two drivers: a request rebuilt from its rows as the live runner would."""
    fs = compute_features(builtin)
    rows = builtin_bundle.read("outputs").to_pandas()
    drafts = builtin_bundle.read("drafts").to_pandas()
    for r in (0, 17, 311):
        rid = builtin.request_ids[r]
        mine = rows[rows.request_id == rid].sort_values("tier")
        outputs = [
            {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in row.items() if k not in ("request_id", "tier")}
            for row in mine.to_dict("records")
        ]
        d = drafts[drafts.request_id == rid].iloc[0].to_dict()
        draft = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in d.items()
                 if k in ("n_draft_tokens", "n_accepted", "verifier_logprobs", "verify_ms")}
        one = view_from_outputs(
            builtin.prompts[r], outputs, tiers=builtin.tier_names, drafts=[None, draft],
            task=builtin.tasks[r], sampling=builtin_bundle.manifest["sampling"],
        )
        live = compute_features(one, spec=fs.spec)
        np.testing.assert_array_equal(live.tier_x[0], fs.tier_x[r])
        np.testing.assert_array_equal(live.prompt_x[0], fs.prompt_x[r])


@settings(max_examples=60, deadline=None)
@given(ragged_token_lists(), st.integers(1, 8))
def test_ragged_reductions_equal_plain_python_per_cell(data, last):
    lists, cells = data
    expected = {
        "mean": lambda c: np.mean(np.float32(c), dtype=np.float64),
        "tail": lambda c: np.mean(np.float32(c[-last:]), dtype=np.float64),
        "below": lambda c: np.mean(np.float32(c) < -1.0),
        "max": lambda c: float(np.max(np.float32(c))),
        "min": lambda c: float(np.min(np.float32(c))),
    }
    got = {
        "mean": ragged_mean(lists), "tail": ragged_tail_mean(lists, last), "below": ragged_share_below(lists, -1.0),
        "max": ragged_max(lists), "min": ragged_min(lists),
    }
    for name, fn in expected.items():
        for r, row in enumerate(cells):
            for k, cell in enumerate(row):
                value = got[name][r, k]
                if not cell:
                    assert np.isnan(value), name
                else:
                    assert value == pytest.approx(fn(cell), rel=1e-9, abs=1e-9), name


def test_token_list_features_use_the_lists(synth_lists):
    view = load_view(synth_lists)
    fs = compute_features(view)
    lists = view.token_lists("token_logprobs")
    r, k = 3, 2
    cell = lists.cell(r, k).astype(np.float64)
    assert fs.tier_x[r, k, fs.column("logprob_last32")] == pytest.approx(cell[-32:].mean())
    assert fs.tier_x[r, k, fs.column("logprob_below_2_3")] == pytest.approx((cell < -2.3).mean())
    assert fs.imputed == {}
    draft = fs.tier_x[:, 1:, fs.column("draft_accept_share")]
    np.testing.assert_allclose(draft, view.draft_n_accepted[:, 1:] / view.draft_n_tokens[:, 1:])


def _hedge_rates(texts):
    rows = [{"request_id": "a", "tier": k, "output": t} for k, t in enumerate(texts)]
    view = view_from_records([f"t{k}" for k in range(len(texts))], [{"request_id": "a", "prompt": "?"}], rows)
    fs = compute_features(view)
    return fs.tier_x[0, :, fs.column("hedge_rate")].tolist()


def test_hedge_rate_counts_hedging_words_per_100_words_of_the_answer():
    rates = _hedge_rates([
        "I think it might work, but I'm not sure.",  # i think, might, but, not sure: 4 of 10 words
        "MAY the best one win; However...",  # case and punctuation do not matter: 2 of 6
        "Mayday! The maybe-likelihood is 3.",  # only whole words: none
        "",
        None,
    ])
    assert rates == pytest.approx([40.0, 100 * 2 / 6, 0.0, 0.0, 0.0])


_WORDS = ["I", "think", "not", "sure", "it", "depends", "might", "May", "BUT", "however", "likely", "the",
          "answer", "is", "42", "perhaps", "maybe", "unclear", "possibly", "approximately"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_WORDS), st.sampled_from([" ", ", ", ". ", "! ", "\n", " -- "])),
                min_size=1, max_size=40))
def test_hedge_rate_equals_counting_words_and_word_pairs_in_plain_python(pieces):
    text = "".join(w + sep for w, sep in pieces)
    words = [w.casefold() for w, _ in pieces]
    singles = {h for h in HEDGE_WORDS if " " not in h}
    pairs = {tuple(h.split()) for h in HEDGE_WORDS if " " in h}
    hits = sum(w in singles for w in words) + sum(p in pairs for p in zip(words, words[1:]))
    (rate,) = _hedge_rates([text])
    assert rate == pytest.approx(100.0 * hits / len(words))
    assert 0.0 <= rate <= 100.0


def test_hedging_at_the_7b_tier_says_it_is_less_often_preferred_on_alpaca_eval(shared_data, tmp_path):
    """Real-data sanity: Llama-2-7B-chat answers that hedge more are less often preferred to the
    reference (AlpacaEval). Not a tuned number: just clearly away from chance."""
    from sklearn.metrics import roc_auc_score

    from asd.traces.importers import import_trace

    if not (shared_data / "alpaca_eval").is_dir():
        pytest.skip("alpaca_eval not in shared data")
    import_trace("alpaca-eval", shared_data / "alpaca_eval", tmp_path / "alpaca",
                 models="llama-2-7b-chat-hf,llama-2-13b-chat-hf", drop_incomplete=True)
    view = load_view(tmp_path / "alpaca")
    fs = compute_features(view, ["content"])
    labelled = np.isfinite(view.acceptable[:, 0])
    auc = roc_auc_score(view.acceptable[labelled, 0], fs.tier_x[labelled, 0, fs.column("hedge_rate")])
    assert auc < 0.4


def test_agreement_at_tier_1_predicts_acceptability_on_the_mmlu_pro_ladder(shared_data, tmp_path):
    """Real-data sanity: when Llama-3.1-70B-Instruct gives the 8B's answer, it is more often
    right (MMLU-Pro 5-shot CoT, exact match). Not a tuned number: just clearly above chance."""
    from sklearn.metrics import roc_auc_score

    from asd.traces.importers import import_trace

    if not (shared_data / "mmlu_pro" / "outputs.parquet").is_file():
        pytest.skip("mmlu_pro not in shared data")
    import_trace("mmlu-pro", shared_data / "mmlu_pro", tmp_path / "mmlu",
                 models="Meta-Llama-3_1-8B-Instruct,Meta-Llama-3_1-70B-Instruct")
    view = load_view(tmp_path / "mmlu")
    fs = compute_features(view, ["agreement", "format"])
    assert set(fs.missing_groups) == {"logprob", "entropy", "draft"}
    _assert_finite(fs)
    labelled = np.isfinite(view.acceptable[:, 1])
    y = view.acceptable[labelled, 1]
    auc = roc_auc_score(y, fs.tier_x[labelled, 1, fs.column("agree_prev")])
    assert auc > 0.6
    # The tier-0 answer is found for nearly every output (the normaliser reads CoT answers).
    option = fs.tier_x[:, :, fs.column("answer_option")]
    assert option.mean() > 0.85


@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool])
def test_features_refuse_a_dtype_that_would_truncate_them(dtype):
    with pytest.raises(ConfigError, match=r"features dtype .*: use float32 or float64"):
        compute_features(load_view("builtin"), dtype=dtype)


def test_a_task_of_one_request_gets_no_one_hot_and_a_task_per_request_calibrates(tmp_path):
    """A task of one request is its id in another name: its one-hot let the full fit memorise it
    where the out-of-fold fits could not, and calibrating 110 requests with a task each failed the
    p̂ consistency check ("out-of-fold p̂ ... disagrees with the predictor") (found by a hunt)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from asd.calibration.calibrate import calibrate
    from asd.calibration.features import task_vocabulary
    from asd.traces.synth import write_synthetic_bundle

    assert task_vocabulary(np.array(["a", "b", "b", None, "c", "c", "c"], dtype=object)) == ["b", "c"]
    path = tmp_path / "b"
    write_synthetic_bundle(path, 110, 3, seed=0)
    requests = pq.read_table(path / "requests.parquet")
    tasks = pa.array([f"task{i}" for i in range(requests.num_rows)], type=requests.schema.field("task").type)
    pq.write_table(requests.set_column(requests.schema.get_field_index("task"), "task", tasks),
                   path / "requests.parquet")
    view = load_view(path)
    assert compute_features(view).spec.tasks == ()
    assert calibrate(path).policy.n_tiers == 3
