"""Defaults `asd calibrate` picks from the data size: tier bins, stage-0 prompt bins, and the
engine tables' empirical-Bayes prior."""

from __future__ import annotations

import numpy as np
import pytest

from asd.calibration.calibrate import (DEFAULT_P_HAT_WEIGHT, DEFAULT_PRIOR_STRENGTH, calibrate, default_bins,
                                      default_prompt_bins)


@pytest.mark.parametrize("n, bins", [(10, 1), (399, 1), (480, 2), (640, 3), (1000, 5), (2000, 5), (100_000, 5)])
def test_prompt_bins_hold_at_least_200_requests_each_up_to_5(n, bins):
    assert default_prompt_bins(n) == bins


@pytest.mark.parametrize("n, bins", [(10, 4), (400, 10), (8000, 20)])
def test_tier_bins_grow_with_the_square_root_of_the_data(n, bins):
    assert default_bins(n) == bins


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
    for i in range(cal.view.n_tiers):
        counted = np.bincount(bins[:, i], weights=0.5 * y[:, i] + 0.5 * p[:, i], minlength=t.n_bins)
        np.testing.assert_allclose(t.alpha[i], t.prior_alpha[i] + counted)
    labels_only = calibrate("builtin", cost_model="params", p_hat_weight=0.0).policy.tables
    counted = np.bincount(bins[:, 0], weights=y[:, 0], minlength=t.n_bins)
    np.testing.assert_allclose(labels_only.alpha[0], labels_only.prior_alpha[0] + counted)
