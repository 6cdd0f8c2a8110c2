"""Defaults `asd calibrate` picks from the data size: tier bins and their pooling, stage-0 prompt
bins, and the engine tables' empirical-Bayes prior."""

from __future__ import annotations

import numpy as np
import pytest

from asd.calibration.calibrate import (BIN_REFINE, DEFAULT_P_HAT_WEIGHT, DEFAULT_PRIOR_STRENGTH, calibrate,
                                      default_bins, default_prompt_bins, default_tier_bins)
from asd.engine.tables import pooling_weights


@pytest.mark.parametrize("n, bins", [(10, 1), (399, 1), (480, 2), (640, 3), (1000, 5), (2000, 5), (100_000, 5)])
def test_prompt_bins_hold_at_least_200_requests_each_up_to_5(n, bins):
    assert default_prompt_bins(n) == bins


@pytest.mark.parametrize("n, bins", [(10, 4), (400, 10), (8000, 20)])
def test_tier_bins_grow_with_the_square_root_of_the_data(n, bins):
    assert default_bins(n) == bins


@pytest.mark.parametrize("n, bins, pool", [(5, 4, 0), (11, 8, 2), (16, 16, 4), (400, 40, 4), (8000, 80, 4)])
def test_tier_bins_are_refined_and_pooled_where_the_requests_fill_them(n, bins, pool):
    assert BIN_REFINE == 4
    assert default_tier_bins(n) == (bins, pool)
    assert bins <= max(n, default_bins(n))


def test_calibrate_pools_its_default_bins_and_keeps_bins_asked_for_as_they_are():
    cal = calibrate("builtin", cost_model="params")
    bins, pool = default_tier_bins(cal.rows.size)
    assert (cal.policy.tables.n_bins, cal.policy.tables.pool_bins) == (bins, pool) == (4 * default_bins(600), 4)
    assert cal.policy.meta["calibration"]["pool_bins"] == cal.report["pool_bins"] == 4
    assert cal.policy.meta["calibration"]["seed"] == 0  # it draws the folds the tables' p̂ come from
    asked = calibrate("builtin", cost_model="params", n_bins=12, seed=3)
    assert asked.policy.meta["calibration"]["seed"] == 3
    assert (asked.policy.tables.n_bins, asked.policy.tables.pool_bins) == (12, 0)
    pooled = calibrate("builtin", cost_model="params", n_bins=12, pool_bins=2)
    assert pooled.policy.tables.pool_bins == 2


def test_builtin_policy_uses_the_data_sized_prompt_bins_and_the_tier_centred_prior():
    cal = calibrate("builtin", cost_model="params")
    t = cal.policy.tables
    assert t.n_prompt_bins == default_prompt_bins(600) == 3
    y = cal.view.acceptable
    rate = (np.nansum(y, axis=0) + 1) / ((~np.isnan(y)).sum(axis=0) + 2)
    np.testing.assert_allclose(t.prior_alpha, DEFAULT_PRIOR_STRENGTH * rate)
    np.testing.assert_allclose(t.prior_beta, DEFAULT_PRIOR_STRENGTH * (1 - rate))


def test_bins_count_each_requests_label_and_its_out_of_fold_p_hat_half_each():
    cal = calibrate("builtin", cost_model="params")
    assert cal.policy.meta["calibration"]["p_hat_weight"] == DEFAULT_P_HAT_WEIGHT == 0.5
    assert cal.report["p_hat_weight"] == 0.5
    t, y, p = cal.policy.tables, cal.view.acceptable[cal.rows], cal.p_climb
    bins = cal.oof_bins()[1]
    pool = pooling_weights(t.n_bins, t.pool_bins)  # each bin pools its neighbours' counts
    for i in range(cal.view.n_tiers):
        counted = np.bincount(bins[:, i], weights=0.5 * y[:, i] + 0.5 * p[:, i], minlength=t.n_bins)
        np.testing.assert_allclose(t.alpha[i], t.prior_alpha[i] + pool @ counted)
        np.testing.assert_array_equal(t.n_obs[i], np.bincount(bins[:, i], minlength=t.n_bins))
    labels_only = calibrate("builtin", cost_model="params", p_hat_weight=0.0).policy.tables
    counted = np.bincount(bins[:, 0], weights=y[:, 0], minlength=t.n_bins)
    np.testing.assert_allclose(labels_only.alpha[0], labels_only.prior_alpha[0] + pool @ counted)


def test_the_report_names_a_lower_bound_risk_as_it_was_asked_for():
    """--risk lcb:0.9 was reported as `risk 0.9` (and "risk": 0.9 in --json): a bare number."""
    assert calibrate("builtin", cost_model="params", risk=0.9).report["risk"] == "lcb:0.9"
    assert calibrate("builtin", cost_model="params").report["risk"] == "mean"
