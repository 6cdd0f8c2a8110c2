"""Stage predictors: the engine's numba forward pass equals scikit-learn predict_proba → isotonic,
cross-fitted isotonic calibration fixes a miscalibrated score, CV folds never split a request,
degenerate stages get the documented constant fallback, and stacking gives a usable Predictor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.calibration.metrics import ece
from asd.calibration.predictors import PREDICTORS, fit_stage, group_folds, stack_predictor
from asd.engine import Policy, build_tables
from asd.engine.decide_nb import predict_packed_nb
from asd.errors import PolicyError


def synthetic_stage(seed, n, n_features, link=lambda z: z):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)) * rng.uniform(0.1, 10.0, n_features) + rng.normal(0, 5, n_features)
    z = ((X - X.mean(0)) / X.std(0)) @ rng.normal(size=n_features)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-link(z)))).astype(float)
    return X, y, rng


def policy_for(fits, kind, prompt_fit=None):
    predictor = stack_predictor(prompt_fit, fits, kind)
    n_tiers = len(fits)
    rng = np.random.default_rng(0)
    p_hat = rng.random((50, n_tiers))
    tables = build_tables(p_hat, (rng.random((50, n_tiers)) < p_hat).astype(float), np.arange(1.0, n_tiers + 1),
                          n_bins=4, prompt_p=rng.random(50) if prompt_fit is not None else None)
    return Policy(tables, predictor, lam=1.0)


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(["logistic", "mlp"]), st.integers(0, 2**31 - 1), st.integers(40, 400),
       st.integers(1, 6), st.integers(2, 5), st.integers(2, 12))
def test_engine_forward_equals_sklearn_predict_proba_then_isotonic(kind, seed, n, n_features, folds, hidden):
    X, y, rng = synthetic_stage(seed, n, n_features)
    fit = fit_stage(kind, X, y, folds=folds, seed=seed, hidden=hidden)
    probe = np.vstack([X[:30], rng.normal(size=(10, n_features)) * 20.0])  # inside and far outside the data
    if fit.constant is None:
        expected = fit.calibrator.predict(fit.model.pipeline.predict_proba(probe)[:, 1])
    else:
        expected = np.full(len(probe), fit.constant)
    policy = policy_for([fit], kind)
    engine = np.array([predict_packed_nb(policy._blob, policy._layout, 1, x) for x in probe])
    np.testing.assert_allclose(engine, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fit.predict(probe), engine, rtol=0, atol=1e-9)  # numpy vs loop summation order
    np.testing.assert_allclose([policy.predict(0, x) for x in probe[:3]], engine[:3], rtol=0, atol=0)


def test_export_has_the_engine_row_shapes():
    X, y, _ = synthetic_stage(3, 600, 4)
    logistic = fit_stage("logistic", X, y).export()
    assert logistic["w1"].shape == (1, 4) and logistic["b1"].shape == (1,) and logistic["w2"].shape == (1,)
    assert isinstance(logistic["b2"], float) and logistic["iso_x"].shape == logistic["iso_y"].shape
    mlp = fit_stage("mlp", X, y, hidden=7).export()
    assert mlp["w1"].shape == (7, 4) and mlp["b1"].shape == (7,) and mlp["w2"].shape == (7,)
    assert np.all(np.diff(mlp["iso_x"]) > 0) and 0.0 <= mlp["iso_y"].min() <= mlp["iso_y"].max() <= 1.0


def test_isotonic_calibration_repairs_a_deliberately_miscalibrated_score():
    # Acceptance is a plateau (15% or 85%) in the score: the logistic's sigmoid runs to 0 and 1 at
    # the ends, so its raw output is miscalibrated; the isotonic map restores the plateaus.
    rng = np.random.default_rng(7)
    score = rng.normal(size=20_000) * 3.0
    y = (rng.random(20_000) < 0.15 + 0.7 * (score > 0)).astype(float)
    fit = fit_stage("logistic", score[:, None], y)
    raw_ece, calibrated_ece = ece(y, fit.oof_raw), ece(y, fit.oof_p)
    assert raw_ece > 0.1  # the raw score really is miscalibrated
    assert calibrated_ece < raw_ece / 10 and calibrated_ece < 0.01
    assert fit.metrics["ece"] == pytest.approx(calibrated_ece)
    assert fit.oof_p[score < -1].mean() == pytest.approx(0.15, abs=0.02)
    assert fit.oof_p[score > 1].mean() == pytest.approx(0.85, abs=0.02)


def test_calibrated_oof_p_are_cross_fitted_not_in_sample():
    """Fold k's calibrated p̂ come from the isotonic map fitted on the other folds' out-of-fold raw
    scores and labels only: fold k's labels never calibrate fold k."""
    X, y, _ = synthetic_stage(11, 3000, 3)
    fit = fit_stage("logistic", X, y, folds=3)
    from sklearn.isotonic import IsotonicRegression

    for k in range(3):
        test = fit.fold == k
        iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(fit.oof_raw[~test], y[~test])
        np.testing.assert_allclose(fit.oof_p[test], iso.predict(fit.oof_raw[test]), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=200), st.integers(2, 8), st.integers(0, 1000))
def test_group_folds_never_put_one_request_in_two_folds(groups, folds, seed):
    fold = group_folds(np.array(groups), folds, seed)
    for g in set(groups):
        assert len(set(fold[np.array(groups) == g])) == 1
    assert fold.min() >= 0 and fold.max() < folds
    n_groups = len(set(groups))
    per_fold = np.bincount([fold[groups.index(g)] for g in set(groups)], minlength=folds)
    assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == n_groups


def test_fit_stage_folds_respect_request_groups():
    X, y, rng = synthetic_stage(5, 900, 3)
    groups = np.repeat(np.array([f"req-{i}" for i in range(300)], dtype=object), 3)
    fit = fit_stage("logistic", X, y, groups=groups)
    for g in np.unique(groups):
        assert len(set(fit.fold[groups == g])) == 1


def test_unlabelled_rows_get_the_final_models_p_hat():
    X, y, _ = synthetic_stage(2, 1000, 3)
    y[::7] = np.nan
    fit = fit_stage("logistic", X, y)
    assert np.isfinite(fit.oof_p).all() and fit.metrics["n"] == int((~np.isnan(y)).sum())
    np.testing.assert_allclose(fit.oof_p[::7], fit.predict(X[::7]), atol=1e-12)
    assert (fit.fold[::7] == -1).all()
    assert any("unlabelled" in note for note in fit.notes)


def test_soft_labels_are_fitted_and_stated():
    X, y, rng = synthetic_stage(4, 800, 3)
    soft = np.clip(y * 0.8 + rng.random(800) * 0.2, 0, 1)
    fit = fit_stage("logistic", X, soft)
    assert any("soft labels" in note for note in fit.notes)
    assert fit.metrics["auroc"] > 0.6 and np.isfinite(fit.oof_p).all()


@pytest.mark.parametrize("kind", list(PREDICTORS))
@pytest.mark.parametrize("case, rate, reason", [
    ("one class", 1.0, "every label is the same"),
    ("fewer requests than folds", 0.5, "fewer than 5 folds"),
    ("constant features", 0.25, "every feature is constant"),
    ("no labels", 0.5, "no labelled rows"),
])
def test_degenerate_stages_fall_back_to_a_constant_at_the_observed_rate(kind, case, rate, reason):
    if case == "one class":
        X, y = np.random.default_rng(0).normal(size=(50, 3)), np.ones(50)
    elif case == "fewer requests than folds":
        X, y = np.random.default_rng(0).normal(size=(4, 3)), np.array([1.0, 0.0, 1.0, 0.0])
    elif case == "constant features":
        X, y = np.ones((40, 3)), np.r_[np.ones(10), np.zeros(30)]
    else:
        X, y = np.random.default_rng(0).normal(size=(10, 3)), np.full(10, np.nan)
    fit = fit_stage(kind, X, y)
    assert fit.constant == pytest.approx(rate) and fit.folds == 0 and (fit.fold == -1).all()
    assert any(reason in note for note in fit.notes)
    np.testing.assert_allclose(fit.oof_p, rate)
    assert fit.metrics["auroc"] in (None, 0.5)
    if fit.metrics["n"]:
        assert fit.metrics["ece"] == pytest.approx(abs(np.nanmean(y) - rate))
    probe = np.random.default_rng(1).normal(size=(5, 3)) * 100
    np.testing.assert_allclose(fit.predict(probe), rate)
    if kind != "gbt-reference":
        policy = policy_for([fit, fit], kind)
        assert policy.predict(1, probe[0]) == pytest.approx(rate, abs=1e-9)


def test_a_fold_without_positives_scores_its_rate_and_says_so():
    X = np.random.default_rng(0).normal(size=(100, 2))
    y = np.zeros(100)
    y[3] = 1.0  # one positive: the fold holding it trains on negatives only
    fit = fit_stage("logistic", X, y)
    assert any("one class only" in note for note in fit.notes) and np.isfinite(fit.oof_p).all()


def test_gbt_reference_fits_but_refuses_export():
    X, y, _ = synthetic_stage(9, 1500, 4)
    fit = fit_stage("gbt-reference", X, y)
    assert fit.metrics["auroc"] > 0.7
    with pytest.raises(PolicyError, match="offline reference and cannot be exported"):
        fit.export()
    with pytest.raises(PolicyError, match="cannot be exported"):
        stack_predictor(None, [fit], "gbt-reference")


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_stacked_predictor_rows_compute_each_stage_fit(kind):
    rng = np.random.default_rng(0)
    tiers = [fit_stage(kind, *synthetic_stage(s, 600, 5)[:2], hidden=3 + s) for s in range(3)]
    Xp, yp, _ = synthetic_stage(42, 600, 2)  # prompt stage: its own, narrower features
    prompt = fit_stage(kind, Xp, yp, hidden=4)
    probe = rng.normal(size=(8, 5)) * 3
    for prompt_fit in (None, prompt):
        policy = policy_for(tiers, kind, prompt_fit)
        predictor = policy.predictor
        assert predictor.n_rows == 4 and predictor.has_prompt == (prompt_fit is not None)
        for tier, fit in enumerate(tiers):
            np.testing.assert_allclose([policy.predict(tier, x) for x in probe], fit.predict(probe), atol=1e-9)
        if prompt_fit is not None:  # the prompt row reads its own 2 features
            np.testing.assert_allclose([policy.predict(None, x) for x in probe[:, :2]], prompt.predict(probe[:, :2]),
                                       atol=1e-9)


def test_stack_predictor_refuses_mixed_kinds_and_no_tiers():
    X, y, _ = synthetic_stage(1, 300, 2)
    with pytest.raises(PolicyError, match="fitted as 'logistic', not 'mlp'"):
        stack_predictor(None, [fit_stage("logistic", X, y)], "mlp")
    with pytest.raises(PolicyError, match="one fit per tier"):
        stack_predictor(None, [], "logistic")


def test_bad_input_is_one_policy_error():
    X = np.zeros((5, 2))
    with pytest.raises(PolicyError, match="predictor 'forest'"):
        fit_stage("forest", X, np.zeros(5))
    with pytest.raises(PolicyError, match=r"labels must lie in \[0, 1\].*row 1 is 2.0"):
        fit_stage("logistic", X, [0, 2, 0, 1, 1])
    with pytest.raises(PolicyError, match="NaN or infinite"):
        fit_stage("logistic", np.full((5, 2), np.nan), np.zeros(5))
    with pytest.raises(PolicyError, match="4 labels for 5 feature rows"):
        fit_stage("logistic", X, np.zeros(4))
    with pytest.raises(PolicyError, match="at least 2"):
        fit_stage("logistic", X, np.zeros(5), folds=1)
    with pytest.raises(PolicyError, match="option 'hiden' is unknown: mlp takes hidden, alpha, max_iter"):
        fit_stage("mlp", X, np.zeros(5), hiden=3)
    assert fit_stage("logistic", X, np.zeros(5), hidden=3).kind == "logistic"  # another kind's option: ignored


@pytest.mark.parametrize("kind", sorted(PREDICTORS))
def test_fits_run_two_at_a_time_and_give_what_one_at_a_time_gives(kind, monkeypatch):
    """fit_stage runs its cross-validation fits on FIT_THREADS threads: every number (and every
    note, in order) is the sequential loop's, with soft labels and unlabelled rows."""
    import asd.calibration.predictors as P

    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 4))
    y = (X[:, 0] + rng.normal(size=600) > 0).astype(float)
    y[:40] = 0.5  # soft labels: weighted fits
    y[40:60] = np.nan  # unlabelled rows: scored by the final model
    fits = {}
    for threads in (1, 2):
        monkeypatch.setattr(P, "FIT_THREADS", threads)
        fits[threads] = fit_stage(kind, X, y, np.arange(600) // 2, folds=4, seed=1)
    one, two = fits[1], fits[2]
    for name in ("oof_p", "oof_raw", "fold", "iso_x", "iso_y"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)
    assert one.notes == two.notes and one.metrics == two.metrics
    np.testing.assert_array_equal(one.predict(X), two.predict(X))
