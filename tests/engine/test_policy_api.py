"""The engine's Python API as a new user meets it (issue 7, item 8), the policy's meta header
and compatibility check, and the online update of the Beta posteriors (item 7)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import asd.engine as engine
from asd.engine import POLICY_VERSION, Policy, Predictor, bin_index, build_tables, make_edges
from asd.errors import PolicyError
from tests.engine.test_policy import make_policy, synthetic_ladder


def scores(seed=0, n=2000, n_tiers=3):
    rng = np.random.default_rng(seed)
    p = rng.random((n, n_tiers))
    return p, (rng.random((n, n_tiers)) < p).astype(float), rng


# -- precomputed scores, feature widths, table options, binning helpers -----------------------

def test_precomputed_scores_need_no_dummy_predictor_row():
    p, accepted, _ = scores()
    tables = build_tables(p, accepted, [1.0, 2.0, 4.0], n_bins=6)
    by_identity = Policy(tables, Predictor.identity(3), lam=8.0)
    assert by_identity.predict(1, np.array([0.37])) == pytest.approx(0.37)
    # a 3-row logistic predictor for a 3-tier ladder without stage 0: row 0 is padded inside
    logit = np.log(p / (1 - p))[:, :, None]
    three_rows = Policy(tables, Predictor.logistic(np.ones((3, 1)), np.zeros(3)), lam=8.0)
    assert three_rows.predictor.n_rows == 4
    np.testing.assert_array_equal(three_rows.tier_bins(logit), by_identity.tier_bins(p[:, :, None]))
    np.testing.assert_array_equal(three_rows.walk(None, three_rows.tier_bins(logit)).stop,
                                  by_identity.walk(None, by_identity.tier_bins(p[:, :, None])).stop)
    assert three_rows.start(np.zeros(1)) == 0


def test_prompt_features_may_have_their_own_width():
    rng = np.random.default_rng(1)
    n, n_tiers, tier_width, prompt_width = 500, 3, 5, 2
    weights = [rng.normal(size=prompt_width)] + [rng.normal(size=tier_width) for _ in range(n_tiers)]
    predictor = Predictor.logistic(weights, np.zeros(n_tiers + 1), has_prompt=True)
    assert (predictor.n_prompt_features, predictor.n_features) == (prompt_width, tier_width)
    tier_x, prompt_x = rng.normal(size=(n, n_tiers, tier_width)), rng.normal(size=(n, prompt_width))
    oof_p = np.stack([predictor.predict_proba(i + 1, tier_x[:, i]) for i in range(n_tiers)], axis=1)
    oof_prompt = predictor.predict_proba(0, prompt_x)
    accepted = (rng.random((n, n_tiers)) < oof_p).astype(float)
    policy = Policy.from_calibration(predictor, tier_x, accepted, [1.0, 2.0, 4.0], oof_p=oof_p, prompt_x=prompt_x,
                                     oof_prompt_p=oof_prompt, n_bins=5, lam=10.0)
    assert policy.tables.n_prompt_bins == 5  # default: min(n_bins, 10)
    expected = 1 / (1 + np.exp(-(prompt_x[0] @ weights[0])))
    assert policy.predict(None, prompt_x[0]) == pytest.approx(expected)
    assert policy.start(prompt_x[0]) == policy.start_batch(prompt_x[:1])[0]
    np.testing.assert_array_equal(policy.start_batch(prompt_x), policy.start_table[policy.prompt_bins(prompt_x)])
    with pytest.raises(PolicyError, match="array of 2 values"):
        policy.start(tier_x[0, 0])
    with pytest.raises(PolicyError, match="array of 5 values"):
        policy.decide(0, prompt_x[0])


def test_prompt_bins_default_and_refusal_without_a_prompt_score():
    p, accepted, _ = scores()
    assert build_tables(p, accepted, [1, 2, 4], prompt_p=p[:, 0], n_bins=30).n_prompt_bins == 10
    assert build_tables(p, accepted, [1, 2, 4], prompt_p=p[:, 0], n_bins=4).n_prompt_bins == 4
    with pytest.raises(PolicyError, match="n_prompt_bins=8 without prompt_p"):
        build_tables(p, accepted, [1, 2, 4], n_prompt_bins=8)


def test_walk_without_prompt_bins_on_a_stage0_policy_is_refused():
    policy, features, prompt_features = make_policy(np.random.default_rng(2), with_prompt=True)
    with pytest.raises(PolicyError, match="prompt bins are None but this policy has a stage 0 with 8"):
        policy.walk(None, policy.tier_bins(features))
    policy.walk(policy.prompt_bins(prompt_features), policy.tier_bins(features))


def test_an_unknown_table_option_names_itself_and_the_valid_ones():
    predictor, features, _, p_true, accepted = synthetic_ladder(np.random.default_rng(3), n=300, with_prompt=False)
    with pytest.raises(PolicyError, match=r"unknown table option 'nbins': valid options are start_costs, n_bins"):
        Policy.from_calibration(predictor, features, accepted, [1, 2, 4, 8], oof_p=p_true, nbins=4)
    with pytest.raises(PolicyError, match="from oof_prompt_p"):
        Policy.from_calibration(predictor, features, accepted, [1, 2, 4, 8], oof_p=p_true, prompt_p=p_true[:, 0])


def test_binning_helpers_are_public_and_match_the_tables():
    assert {"bin_index", "make_edges", "search_lambda_quality", "distinct_policies"} <= set(engine.__all__)
    p, accepted, _ = scores()
    edges = make_edges(p[:, 1], 7)
    t = build_tables(p, accepted, [1, 2, 4], n_bins=7)
    np.testing.assert_array_equal(edges, t.edges[1])
    np.testing.assert_array_equal(bin_index(p[:, 1], edges), Policy(t, Predictor.identity(3)).tier_bins(
        p[:, :, None])[:, 1])
    with pytest.raises(PolicyError, match="binning 'kmeans'"):
        make_edges(p[:, 0], 4, "kmeans")


# -- from_calibration: features + out-of-fold p̂ of the same predictor family ------------------

def test_from_calibration_checks_shapes_and_that_oof_p_agrees_with_the_predictor():
    predictor, features, prompt_features, p_true, accepted = synthetic_ladder(np.random.default_rng(4), n=400)
    prompt_p = 1 / (1 + np.exp(-prompt_features[:, 0]))
    ok = dict(oof_p=p_true, prompt_x=prompt_features, oof_prompt_p=prompt_p)
    Policy.from_calibration(predictor, features, accepted, [1, 2, 4, 8], **ok)
    cases = [
        (dict(ok, oof_p=p_true[:, :3]), r"oof_p has shape \(400, 3\): expected \(400, 4\)"),
        (dict(ok, oof_p=1 - p_true), "out-of-fold p̂ of tier 0 disagrees with the predictor"),
        (dict(ok, oof_prompt_p=1 - prompt_p), "of the prompt stage disagrees"),
        (dict(oof_p=p_true), "has a prompt stage but no prompt_x"),
        (dict(ok, oof_prompt_p=None), "prompt_x and oof_prompt_p come together"),
        (dict(ok, cold_x=features), "cold_x and oof_cold_p come together"),
        (dict(ok, cold_x=features[:, :2], oof_cold_p=p_true), "cold features have shape"),
    ]
    for kwargs, message in cases:
        with pytest.raises(PolicyError, match=message):
            Policy.from_calibration(predictor, features, accepted, [1, 2, 4, 8], **kwargs)
    with pytest.raises(PolicyError, match="tier features have 3 columns; the predictor reads 16"):
        Policy.from_calibration(predictor, features[:, :, :3], accepted, [1, 2, 4, 8], **ok)
    with pytest.raises(PolicyError, match="p̂ and predictor must come from one fit on these features"):
        Policy.from_calibration(predictor, features, accepted, [1, 2, 4, 8], **dict(ok, oof_p=1 - p_true))
    # on a dozen requests the same gap is what fold models of a few rows do by chance: say so
    few = slice(0, 12)
    with pytest.raises(PolicyError, match="with 12 calibration requests the fold models can differ this much by "
                                          "chance: calibrate on at least 100"):
        Policy.from_calibration(predictor, features[few], accepted[few], [1, 2, 4, 8], oof_p=1 - p_true[few],
                                prompt_x=prompt_features[few], oof_prompt_p=prompt_p[few])


def test_from_calibration_with_cold_features_builds_cold_start_tables():
    predictor, features, prompt_features, p_true, accepted = synthetic_ladder(np.random.default_rng(5), n=800)
    cold = features.copy()
    cold[:, 1:, 0] *= 0.8  # less evidence when started cold
    cold_p = 1 / (1 + np.exp(-cold[:, :, 0]))
    policy = Policy.from_calibration(predictor, features, accepted, [1, 2, 4, 8], oof_p=p_true,
                                     prompt_x=prompt_features, oof_prompt_p=1 / (1 + np.exp(-prompt_features[:, 0])),
                                     cold_x=cold, oof_cold_p=cold_p, lam=30.0)
    assert policy.tables.cold_start
    walk = policy.walk(policy.prompt_bins(prompt_features), policy.tier_bins(features), policy.cold_tier_bins(cold))
    assert walk.stop.shape == (800,)


# -- meta, compatibility, file version ---------------------------------------------------------

META = {"features": ["logprob", "agreement"], "cost_model": {"kind": "params"}, "tier_params_b": [8, 13, 34, 70],
        "bundle_content_hash": "ab" * 32, "calibration": {"auroc": [0.7, 0.8, 0.8, 0.9]}}


def test_meta_is_saved_in_the_header_and_restored(tmp_path):
    policy, _, _ = make_policy(np.random.default_rng(6), with_prompt=False)
    policy = Policy(policy.tables, policy.predictor, lam=5.0, meta=META, tier_names=["8B", "13B", "34B", "70B"])
    path = policy.save(tmp_path / "policy.npz")
    with np.load(path) as data:
        assert json.loads(str(data["header"]))["meta"] == META
    assert Policy.load(path).meta == META
    with pytest.raises(PolicyError, match="JSON-able"):
        Policy(policy.tables, policy.predictor, meta={"x": np.zeros(2)})


def test_a_policy_for_another_ladder_or_bundle_is_refused_in_one_line(tmp_path):
    policy, _, _ = make_policy(np.random.default_rng(7), with_prompt=False)
    policy = Policy(policy.tables, policy.predictor, meta=META, tier_names=["8B", "13B", "34B", "70B"])
    path = policy.save(tmp_path / "policy.npz")
    Policy.load(path, expect_tiers=["8B", "13B", "34B", "70B"], expect_params_b=[8, 13, 34, 70])
    with pytest.raises(PolicyError) as err:
        Policy.load(path, expect_tiers=["7B", "13B", "34B", "70B"], expect_params_b=[7, 13, 34, 70],
                    expect_content_hash="cd" * 32)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"policy file {path}: policy does not fit this ladder")
    assert "tiers ['7B'" in message and "params_b [7.0" in message and "bundle hash cdcd" in message

    class View:  # anything with tier_names and params_b, like a TraceView
        tier_names = ["8B", "13B", "34B", "70B"]
        params_b = np.array([8.0, 13.0, 34.0, 72.0])

    with pytest.raises(PolicyError, match=r"params_b \[8.0, 13.0, 34.0, 72.0\] != policy params_b"):
        policy.check_compatible(View())


def test_check_compatible_reads_the_bundle_block_asd_calibrate_writes():
    policy, _, _ = make_policy(np.random.default_rng(14), with_prompt=False)
    meta = {"bundle": {"content_hash": "ef" * 32, "tiers": [{"name": n, "params_b": p} for n, p in
                                                            zip(["8B", "13B", "34B", "70B"], [8, 13, 34, 70])]}}
    policy = Policy(policy.tables, policy.predictor, meta=meta, tier_names=["8B", "13B", "34B", "70B"])
    policy.check_compatible(["8B", "13B", "34B", "70B"], [8, 13, 34, 70], "ef" * 32)
    with pytest.raises(PolicyError, match=r"params_b \[8.0, 13.0, 30.0, 70.0\] .*; bundle hash 000000000000…"):
        policy.check_compatible(None, [8, 13, 30, 70], "0" * 64)
    with pytest.raises(PolicyError, match=r"params_b=\['8B', 13, 34, 70\]: must be numbers, one per tier"):
        policy.check_compatible(None, ["8B", 13, 34, 70])


def test_a_string_where_a_number_belongs_names_the_argument():
    policy, _, _ = make_policy(np.random.default_rng(3), with_prompt=False)
    for bad in ("ten", True, None):
        with pytest.raises(PolicyError, match=rf"^λ={bad!r}: must be a number$"):
            policy.solve(bad)
    with pytest.raises(PolicyError, match=r"^start_lam='5': must be a number$"):
        policy.solve(100.0, start_lam="5")
    with pytest.raises(PolicyError, match=r"^target='400ms': must be a number$"):
        engine.bisect_lambda(lambda lam: lam, "400ms")
    with pytest.raises(PolicyError, match=r"^lam_hi='1e3': must be a number$"):
        engine.distinct_policies(policy, lam_hi="1e3")
    assert policy.solve(np.float32(100.0)).lam == 100.0  # numpy scalars are numbers


def saved_as_version(policy, tmp_path, version):
    """policy's file with its header's format version rewritten."""
    path = policy.save(tmp_path / "policy.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(str(arrays["header"]))
    arrays["header"] = np.array(json.dumps({**header, "version": version}))
    np.savez(tmp_path / f"v{version}.npz", **arrays)
    return tmp_path / f"v{version}.npz"


def test_a_version_1_policy_file_is_refused_with_a_clear_message(tmp_path):
    policy, _, _ = make_policy(np.random.default_rng(8), with_prompt=False)
    old = saved_as_version(policy, tmp_path, 1)
    assert POLICY_VERSION == 4
    with pytest.raises(PolicyError, match=r"has version 1; this asd .* reads versions 2, 3, 4: recalibrate"):
        Policy.load(old)


def test_a_version_2_policy_file_without_start_evidence_still_loads_with_the_models_stage0(tmp_path):
    """Version 3 only added the optional start evidence: a version-2 file re-solves to the tables
    it stored, its stage 0 chosen by the model."""
    policy, _, _ = make_policy(np.random.default_rng(8))
    assert not policy.tables.has_start_evidence
    loaded = Policy.load(saved_as_version(policy, tmp_path, 2))
    np.testing.assert_array_equal(loaded.start_table, policy.start_table)
    np.testing.assert_array_equal(loaded.stop_table, policy.stop_table)


# -- online update ------------------------------------------------------------------------------

def test_update_adds_the_observed_counts_to_the_posteriors():
    policy, features, _ = make_policy(np.random.default_rng(9), with_prompt=False)
    rng = np.random.default_rng(10)
    tiers, bins = rng.integers(0, 4, 300), rng.integers(0, policy.tables.n_bins, 300)
    accepted = (rng.random(300) < 0.5).astype(float)
    updated = policy.update(tiers, accepted, bins=bins)
    t, u = policy.tables, updated.tables
    expected_alpha, expected_beta, expected_n = t.alpha.copy(), t.beta.copy(), t.n_obs.copy()
    for tier, b, a in zip(tiers, bins, accepted):
        expected_alpha[tier, b] += a
        expected_beta[tier, b] += 1 - a
        expected_n[tier, b] += 1
    np.testing.assert_allclose(u.alpha, expected_alpha)
    np.testing.assert_allclose(u.beta, expected_beta)
    np.testing.assert_allclose(u.n_obs, expected_n)
    assert u.n_obs.sum() - t.n_obs.sum() == 300 and updated.meta["online_updates"] == 300
    assert updated.lam == policy.lam and np.array_equal(t.trans, u.trans)
    # features are binned with the policy's own predictor: the same as passing those bins
    x = features[:50, 1]
    by_features = policy.update(np.ones(50, int), accepted[:50], features=x)
    by_bins = policy.update(np.ones(50, int), accepted[:50], bins=policy.tier_bins(features[:50])[:, 1])
    np.testing.assert_array_equal(by_features.tables.alpha, by_bins.tables.alpha)


def test_a_stream_of_rejections_flips_a_stopping_bin_to_continue_and_survives_save_load(tmp_path):
    policy, _, _ = make_policy(np.random.default_rng(11), with_prompt=False, lam=20.0)
    stopping = np.flatnonzero(policy.stop_table[1])
    assert stopping.size
    b = int(stopping[-1])
    updated = policy.update(np.ones(2000, int), np.zeros(2000), bins=np.full(2000, b))
    assert policy.stop_table[1, b] == 1 and updated.stop_table[1, b] == 0
    loaded = Policy.load(updated.save(tmp_path / "updated.npz"))
    np.testing.assert_array_equal(loaded.tables.beta, updated.tables.beta)
    np.testing.assert_array_equal(loaded.stop_table, updated.stop_table)
    assert loaded.meta["online_updates"] == 2000


def test_update_folds_cold_start_answers_into_the_cold_posteriors():
    rng = np.random.default_rng(13)
    p_hat = rng.random((2000, 4))
    accepted = (rng.random((2000, 4)) < p_hat) * 1.0
    tables = build_tables(p_hat, accepted, [1.0, 2.0, 4.0, 8.0], prompt_p=rng.random(2000),
                          start_p_hat=np.clip(p_hat + rng.normal(0, 0.1, p_hat.shape), 0, 1), n_bins=6)
    policy = Policy(tables, Predictor.identity(4, has_prompt=True), lam=20.0)
    assert policy.tables.cold_start
    tiers, bins = np.array([0, 2, 2, 3]), np.array([1, 1, 1, 1])
    updated = policy.update(tiers, np.ones(4), bins=bins, cold=[True, True, False, False])
    t, u = policy.tables, updated.tables
    assert u.alpha_cold[2, 1] - t.alpha_cold[2, 1] == 1 and u.alpha[2, 1] - t.alpha[2, 1] == 1
    assert u.alpha_cold[3, 1] == t.alpha_cold[3, 1] and u.alpha[3, 1] - t.alpha[3, 1] == 1
    assert u.alpha[0, 1] - t.alpha[0, 1] == 1 == u.alpha_cold[0, 1] - t.alpha_cold[0, 1]  # tier 0: one state


def pooled_policy(seed=14, pool_bins=2):
    rng = np.random.default_rng(seed)
    predictor, features, _, p_true, accepted = synthetic_ladder(rng, with_prompt=False)
    return Policy.from_calibration(predictor, features, accepted, np.array([1.0, 2.0, 4.0, 8.0]), oof_p=p_true,
                                   lam=20.0, n_bins=24, pool_bins=pool_bins)


def test_update_of_pooled_tables_counts_each_outcome_in_the_neighbouring_bins_too():
    """With pool_bins the calibration counted each request in the bins around its own; an online
    outcome is counted the same way (n_obs still counts each bin's own)."""
    policy = pooled_policy()
    assert policy.tables.pool_bins == 2
    rng = np.random.default_rng(15)
    tiers, bins = rng.integers(0, 4, 200), rng.integers(0, 24, 200)
    accepted = (rng.random(200) < 0.5).astype(float)
    updated = policy.update(tiers, accepted, bins=bins)
    t, u = policy.tables, updated.tables
    weights = engine.tables.pooling_weights(24, 2)
    expected_alpha, expected_beta, expected_n = t.alpha.copy(), t.beta.copy(), t.n_obs.copy()
    for tier, b, a in zip(tiers, bins, accepted):
        expected_alpha[tier] += weights[b] * a
        expected_beta[tier] += weights[b] * (1 - a)
        expected_n[tier, b] += 1
    np.testing.assert_allclose(u.alpha, expected_alpha)
    np.testing.assert_allclose(u.beta, expected_beta)
    np.testing.assert_array_equal(u.n_obs, expected_n)
    assert u.pool_bins == 2


def test_pooled_tables_survive_save_load_and_older_files_load_unpooled(tmp_path):
    policy = pooled_policy()
    loaded = Policy.load(policy.save(tmp_path / "pooled.npz"))
    assert loaded.tables.pool_bins == 2
    np.testing.assert_array_equal(loaded.stop_table, policy.stop_table)
    path = policy.save(tmp_path / "policy.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(str(arrays["header"]))
    del header["pool_bins"]  # written before pooling existed
    arrays["header"] = np.array(json.dumps(header))
    np.savez(tmp_path / "older.npz", **arrays)
    assert Policy.load(tmp_path / "older.npz").tables.pool_bins == 0


def test_bad_update_input_raises_policy_error():
    policy, features, _ = make_policy(np.random.default_rng(12), with_prompt=False)
    with pytest.raises(PolicyError, match="exactly one of bins= or features="):
        policy.update([0], [1.0])
    with pytest.raises(PolicyError, match=r"accepted\[1\] = 2.0"):
        policy.update([0, 0], [1.0, 2.0], bins=[0, 0])
    with pytest.raises(PolicyError, match="tiers must lie in 0..3"):
        policy.update([9], [1.0], bins=[0])
    with pytest.raises(PolicyError, match="bins must lie in"):
        policy.update([0], [1.0], bins=[999])


@pytest.mark.skipif(not __import__("os").path.exists("/dev/full"), reason="no /dev/full on this system")
def test_a_device_is_not_read_to_look_for_a_policy_header():
    """check_policy_target read /dev/full to the end of memory; a non-regular file is refused at once."""
    from asd.engine.policy import check_policy_target

    with pytest.raises(PolicyError, match="/dev/full: exists and is not an asd policy file"):
        check_policy_target("/dev/full")


@pytest.mark.parametrize("policy_file", ["builtin-calibrated", "synthetic-3-tier", "no-stage0"])
def test_warm_up_runs_every_one_request_decision_and_changes_nothing(policy_file, tmp_path):
    """`asd live` and `asd serve` call it before the first request: on a cold numba cache the
    first request had paid 4 s of compiling."""
    from asd.calibration.calibrate import calibrate
    from asd.traces.synth import write_synthetic_bundle

    if policy_file == "builtin-calibrated":
        policy = calibrate("builtin").policy
    else:
        write_synthetic_bundle(tmp_path / "s", 200, 3, 0)
        policy = calibrate(tmp_path / "s", split=None, stage0=policy_file != "no-stage0").policy
    before = policy.stop_table.copy(), policy.start_table.copy()
    policy.warm_up()
    assert np.array_equal(policy.stop_table, before[0]) and np.array_equal(policy.start_table, before[1])
    x = np.zeros(policy.predictor.n_features)
    assert policy.decide(0, x) == bool(policy.decide_batch(np.zeros(1, dtype=np.int64), x[None])[0])


@pytest.mark.parametrize("field, index, value, message", [
    ("knot_counts", (1,), 10**8, "isotonic knot counts"),  # read past the table: a segfault
    ("knot_counts", (1,), 0, "isotonic knot counts"),
    ("w1", (1, 0, 0), np.nan, "predictor w1 contains NaN"),  # a p̂ of NaN never stops
    ("b2", (0,), np.inf, "predictor b2 contains NaN"),
    ("iso_x", (1, 0), 1e9, "knots x must be non-decreasing"),
    ("iso_y", (1, 0), 1.5, "y must lie in [0, 1]"),
])
def test_a_policy_file_whose_predictor_the_kernels_cannot_trust_is_refused(tmp_path, field, index, value, message):
    policy = make_policy(np.random.default_rng(3))[0]
    policy.save(tmp_path / "p.npz")
    arrays = dict(np.load(tmp_path / "p.npz"))
    damaged = arrays[f"predictor.{field}"].copy()
    damaged[index] = value
    np.savez(tmp_path / "bad.npz", **{**arrays, f"predictor.{field}": damaged})
    with pytest.raises(PolicyError, match=rf"policy file {re.escape(str(tmp_path / 'bad.npz'))}: .*{re.escape(message)}") as refused:
        Policy.load(tmp_path / "bad.npz")
    assert "\n" not in str(refused.value)


def test_cold_outcomes_count_as_climbed_where_the_tables_have_no_cold_state():
    """They went into cold posteriors that such tables never read: live feedback on requests
    that started cold was lost without a word."""
    rng = np.random.default_rng(0)
    p = rng.random((300, 3))
    acc = (rng.random((300, 3)) < p) * 1.0
    policy = Policy(build_tables(p, acc, [1, 2, 3], n_bins=5), Predictor.identity(3), lam=12.0)
    assert not policy.tables.cold_start
    obs = dict(tiers=np.full(1000, 1), accepted=np.zeros(1000), bins=np.full(1000, 4))
    cold = policy.update(**obs, cold=np.ones(1000, dtype=bool))
    climbed = policy.update(**obs)
    np.testing.assert_array_equal(cold.tables.beta, climbed.tables.beta)
    assert cold.tables.beta[1, 4] == policy.tables.beta[1, 4] + 1000
    assert cold.stop_table[1, 4] == 0 != policy.stop_table[1, 4]  # a thousand rejections: go on


def test_engine_arguments_of_the_wrong_kind_are_one_policy_error():
    rng = np.random.default_rng(0)
    p = rng.random((200, 3))
    acc = (rng.random((200, 3)) < p) * 1.0
    for kwargs in ({"prior_alpha": np.inf}, {"prior_strength": np.inf}, {"smoothing": np.inf}, {"smoothing": "x"}):
        with pytest.raises(PolicyError, match="must be"):  # an infinite prior built NaN tables that never stop
            build_tables(p, acc, [1, 2, 3], n_bins=4, **kwargs)
    tables = build_tables(p, acc, [1, 2, 3], n_bins=4)
    with pytest.raises(PolicyError, match="risk=None: must be a number"):
        Policy(tables, Predictor.identity(3), risk=None)
    policy = Policy(tables, Predictor.identity(3), lam=5.0)
    for tier in (1.5, "a", True):  # 1.5 was read as tier 1 on the cold path
        with pytest.raises(PolicyError, match="must be a whole number in 0..2"):
            policy.decide(tier, np.array([0.5]), cold=True)


def test_tables_of_the_wrong_shape_are_refused_before_the_kernels_read_past_them():
    import dataclasses

    rng = np.random.default_rng(0)
    p = rng.random((2000, 4))
    acc = (rng.random((2000, 4)) < p) * 1.0
    tables = build_tables(p, acc, [1, 2, 3, 4], n_bins=64)
    with pytest.raises(PolicyError, match=r"tables: trans has shape \(1, 1, 1\): expected \(3, 64, 64\)"):
        dataclasses.replace(tables, trans=np.zeros((1, 1, 1)))
    with pytest.raises(PolicyError, match=r"tables: edges has shape"):
        dataclasses.replace(tables, edges=tables.edges[:, :3])
    with pytest.raises(PolicyError, match="alpha/beta must be finite"):
        dataclasses.replace(tables, alpha=np.full_like(tables.alpha, np.nan))


@pytest.mark.parametrize("call, message", [
    (lambda p: p.decide_batch([0], [["a"]]), "features: list: must be numbers"),
    (lambda p: p.decide_batch([0.5], [[0.3]]), r"tiers: must be whole numbers"),  # was read as tier 0
    (lambda p: p.update(["a"], [1], bins=[0]), r"tiers: must be whole numbers"),
    (lambda p: p.update([0], ["a"], bins=[0]), "update: accepted list: must be numbers"),
    (lambda p: p.update([0], [1], bins=[0.7]), r"update: bins: must be whole numbers"),  # was bin 0
    (lambda p: p.walk(None, np.zeros((2, 3)) + 0.5), r"tier bins: must be whole numbers"),
    (lambda p: p.walk(None, [["a", "b", "c"]]), r"tier bins: must be whole numbers"),
])
def test_arrays_of_the_wrong_kind_are_one_policy_error_not_numpys_or_truncated(call, message):
    rng = np.random.default_rng(0)
    p = rng.random((300, 3))
    acc = (rng.random((300, 3)) < p) * 1.0
    policy = Policy(build_tables(p, acc, [1, 2, 3], n_bins=5), Predictor.identity(3), lam=5.0)
    with pytest.raises(PolicyError, match=message):
        call(policy)
    assert policy.walk(None, np.zeros((2, 3))).stop.tolist() == policy.walk(None, np.zeros((2, 3), int)).stop.tolist()


def test_make_edges_refuses_a_nan_score_as_bin_index_does():
    with pytest.raises(PolicyError, match=r"p\[0\] = nan: must be a probability"):
        make_edges([np.nan, 0.5], 2)
    np.testing.assert_array_equal(make_edges([0.2, 0.5, 0.9], 2), [0.0, 0.5, 1.0])
