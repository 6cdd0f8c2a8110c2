"""Calibration metrics: ECE against hand-computed values, AUROC/Brier conventions, the best single
feature, and the reliability diagram as a real PNG file."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from asd.calibration.metrics import (auroc, best_single_feature, brier, ece, reliability_curve, reliability_plot,
                                     stage_metrics)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_ece_equals_hand_computed_weighted_bin_gaps():
    # one row per bin: |1-.05| + |0-.15| + |1-.85| + |1-.95| = 1.3 over 4 rows
    assert ece([1, 0, 1, 1], [0.05, 0.15, 0.85, 0.95]) == pytest.approx(0.325)
    # two rows share bin 3 (mean p .325, mean y .5) and p = 1.0 falls in the last bin: (2·.175 + 0) / 3
    assert ece([0, 1, 1], [0.31, 0.34, 1.0]) == pytest.approx(2 * 0.175 / 3)
    # p = 0.3 on an edge is in the lower bin (0.2, 0.3], as calibration_curve has it: (.3 + .65 + 0) / 3
    assert ece([0, 1, 1], [0.3, 0.35, 1.0]) == pytest.approx(0.95 / 3)
    assert ece([1, 0], [0.0, 0.1]) == pytest.approx(0.45)  # 0 and 0.1 both in the first bin [0, 0.1]
    # NaN labels are dropped, not counted
    assert ece([1, np.nan, 0], [0.95, 0.5, 0.05]) == pytest.approx(0.05)
    assert np.isnan(ece([np.nan], [0.5]))


def test_ece_with_more_bins_is_never_smaller_on_nested_bins():
    rng = np.random.default_rng(1)
    p = rng.random(500)
    y = (rng.random(500) < p ** 2).astype(float)
    assert ece(y, p, bins=20) >= ece(y, p, bins=10) - 1e-12  # 20 bins refine 10: triangle inequality


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(0, 1)), st.integers(1, 20))
def test_ece_is_zero_when_each_bin_is_calibrated_and_bounded_by_one(p, bins):
    assert 0.0 <= ece((p > 0.5).astype(float), p, bins) <= 1.0
    assert ece(p, p, bins) == pytest.approx(0.0, abs=1e-12)  # soft labels equal to p̂: perfectly calibrated


_EDGES = [k / 10 for k in range(11)] + np.linspace(0.0, 1.0, 11).tolist()  # 0.3 and 0.30000000000000004


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.one_of(st.sampled_from(_EDGES), st.floats(0, 1))), min_size=1,
                max_size=60))
def test_ece_equals_the_count_weighted_gaps_of_calibration_curves_bins(rows):
    """The ECE's bins are the reliability diagram's: Σ n_b/n |prob_true_b − prob_pred_b| over
    sklearn's calibration_curve (uniform, 10 bins), p̂ on bin edges included."""
    from sklearn.calibration import calibration_curve

    y, p = (np.array(c, dtype=np.float64) for c in zip(*rows))
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    # counts per bin (lo, hi], the first [0, hi]: the means they give must be calibration_curve's
    edges = np.linspace(0.0, 1.0, 11)
    members = [((p > lo) | (b == 0)) & (p <= hi) for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]
    members = [m for m in members if m.any()]
    np.testing.assert_allclose([p[m].mean() for m in members], prob_pred, rtol=1e-12)
    np.testing.assert_allclose([y[m].mean() for m in members], prob_true, rtol=1e-12)
    counts = np.array([m.sum() for m in members])
    assert ece(y, p) == pytest.approx(float(counts @ np.abs(prob_true - prob_pred)) / y.size, rel=1e-9, abs=1e-12)
    # the diagram draws these same bins: its curve is calibration_curve's, its counts these members'
    mean_p, mean_y, all_counts = reliability_curve(y, p)
    np.testing.assert_allclose(mean_p, prob_pred, rtol=1e-12)
    np.testing.assert_allclose(mean_y, prob_true, rtol=1e-12)
    np.testing.assert_array_equal(all_counts[all_counts > 0], counts)


def test_the_diagrams_count_panel_puts_a_value_on_an_edge_where_the_ece_does():
    """np.histogram puts 0.5 in the upper bin, calibration_curve and the ECE in the lower one."""
    _, _, counts = reliability_curve([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.45])
    assert counts[4] == 4 and counts.sum() == 4
    # a graded label enters as its value, as in the ECE
    mean_p, mean_y, _ = reliability_curve([0.25, 0.75], [0.4, 0.4])
    assert mean_y.tolist() == [0.5] and mean_p.tolist() == [0.4]


def test_auroc_is_none_with_one_class_and_brier_handles_soft_labels():
    assert auroc([1, 1, np.nan], [0.2, 0.3, 0.4]) is None
    assert auroc([0, 1, 1], [0.1, 0.2, 0.9]) == pytest.approx(1.0)
    assert brier([0.5, 1.0], [0.5, 0.5]) == pytest.approx(0.125)
    assert stage_metrics([np.nan], [0.5]) == {"auroc": None, "brier": None, "ece": None, "n": 0}


def test_best_single_feature_is_sign_free_and_skips_unlabelled_rows():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.5).astype(float)
    X = np.column_stack([rng.random(400), -y + 0.3 * rng.random(400), np.ones(400)])
    name, score = best_single_feature(X, y, ["noise", "reversed", "constant"])
    assert name == "reversed" and score == pytest.approx(1.0)
    y_nan = y.copy()
    y_nan[:10] = np.nan
    assert best_single_feature(X, y_nan, ["noise", "reversed", "constant"])[0] == "reversed"
    assert best_single_feature(X, np.ones(400), ["a", "b", "c"]) == (None, None)


def test_reliability_plot_writes_a_valid_png_with_one_line_per_stage(tmp_path):
    import matplotlib.image

    rng = np.random.default_rng(0)
    p = rng.random(300)
    curves = {"tier 0": ((rng.random(300) < p).astype(float), p),
              "tier 1": ((rng.random(300) < p ** 2).astype(float), p),
              "one class": (np.ones(20), np.full(20, 0.9))}
    path = reliability_plot(curves, tmp_path / "plots" / "reliability.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
    assert image.std() > 0.01  # something was drawn


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 6))
def test_fold_auroc_is_the_mean_of_each_folds_own_auroc(seed, folds):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = 200
    y = (rng.random(n) < 0.4).astype(float)
    score = 0.7 * rng.random(n) + 0.3 * y
    fold = rng.integers(0, folds, n)
    y[rng.random(n) < 0.1] = np.nan  # unlabelled rows drop out of every fold
    by_hand = []
    for k in range(folds):
        rows = (fold == k) & ~np.isnan(y)
        if 0 < y[rows].sum() < rows.sum():
            by_hand.append(roc_auc_score(y[rows], score[rows]))
    assert auroc(y, score, fold) == pytest.approx(np.mean(by_hand))
    assert stage_metrics(y, score, fold)["auroc"] == pytest.approx(np.mean(by_hand))


def test_fold_auroc_skips_one_class_folds_and_falls_back_to_pooled_without_folds():
    y = np.array([1, 1, 0, 1, 0, 1.0])
    score = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.3])
    fold = np.array([0, 0, 1, 1, 1, 1])  # fold 0 has one class: skipped
    assert auroc(y, score, fold) == auroc(y[2:], score[2:])
    assert auroc(y, score, np.full(6, -1)) == auroc(y, score)  # no fold at all: pooled


def test_a_fitted_stage_reports_one_models_ranking_not_the_pooled_folds():
    """A binary signal (agreement, say): within a fold the calibrated p̂ ranks exactly as the
    feature does, so the stage's AUROC is the feature's own per-fold AUROC. Pooled over folds it
    is lower: each fold's p̂ sits lower where that fold is more often accepted."""
    from asd.calibration.predictors import fit_stage

    rng = np.random.default_rng(3)
    n = 1300
    agree = (rng.random(n) < 0.6).astype(float)
    y = (rng.random(n) < np.where(agree == 1, 0.94, 0.72)).astype(float)
    fit = fit_stage("logistic", agree[:, None], y, folds=5, seed=0)
    per_fold = np.mean([auroc(y[fit.fold == k], agree[fit.fold == k]) for k in range(5)])
    assert fit.metrics["auroc"] == pytest.approx(per_fold)
    assert auroc(y, fit.oof_p) < fit.metrics["auroc"]
