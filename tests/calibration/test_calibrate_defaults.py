"""Defaults `asd calibrate` picks from the data size: tier bins, stage-0 prompt bins, and the
engine tables' empirical-Bayes prior."""

from __future__ import annotations

import numpy as np
import pytest

from asd.calibration.calibrate import DEFAULT_PRIOR_STRENGTH, calibrate, default_bins, default_prompt_bins


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
