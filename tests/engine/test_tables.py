"""Engine tables: well-formed kernels, Beta counts, prior fallback, risk bounds, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.engine.tables import bin_index, build_tables, pooling_weights, risk_quality
from asd.errors import PolicyError
from tests.strategies import calibration_sets


@settings(max_examples=60, deadline=None)
@given(calibration_sets(), st.integers(1, 8), st.sampled_from(["quantile", "fixed"]), st.floats(0.0, 5.0),
       st.integers(0, 3))
def test_tables_are_well_formed_rows_of_every_kernel_sum_to_one(data, n_bins, binning, smoothing, pool):
    p_hat, accepted, costs = data
    n, n_tiers = p_hat.shape
    with pytest.warns(UserWarning) if np.isnan(accepted).all(axis=0).any() else _no_warning():
        t = build_tables(p_hat, accepted, costs, prompt_p=p_hat[:, 0], n_bins=n_bins, binning=binning,
                         smoothing=smoothing, n_prompt_bins=3, pool_bins=pool)
    weights = pooling_weights(n_bins, pool)
    assert t.trans.shape == (n_tiers - 1, n_bins, n_bins) and t.trans0.shape == (n_tiers, 3, n_bins)
    np.testing.assert_allclose(t.trans.sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(t.trans0.sum(axis=-1), 1.0, rtol=1e-12)
    assert (t.trans >= 0).all() and (t.trans0 >= 0).all()
    assert (np.diff(t.edges, axis=1) >= 0).all() and (t.edges[:, 0] == 0).all() and (t.edges[:, -1] == 1).all()
    # Beta counts: prior + (weighted) successes and failures of the labelled requests per bin,
    # each bin counting the bins within `pool` of it at the pooling weights
    for i in range(n_tiers):
        bins = bin_index(p_hat[:, i], t.edges[i])
        seen = ~np.isnan(accepted[:, i])
        for b in range(n_bins):
            w = weights[b, bins[seen]]
            assert t.alpha[i, b] == pytest.approx(1.0 + (w * accepted[seen, i]).sum())
            assert t.beta[i, b] == pytest.approx(1.0 + (w * (1.0 - accepted[seen, i])).sum())
            assert t.n_obs[i, b] == (bins[seen] == b).sum()
    assert (t.cnext >= 0).all() and (t.c0 >= 0).all()
    q_stop, q_mean = risk_quality(t.alpha, t.beta, 0.9)
    assert (q_stop <= q_mean).all() and (q_stop >= 0).all()


class _no_warning:
    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_expected_next_cost_is_the_per_bin_mean_shrunk_toward_overall():
    p_hat = np.array([[0.1, 0.5], [0.2, 0.5], [0.9, 0.5], [0.8, 0.5]])
    costs = np.array([[1.0, 10.0], [1.0, 20.0], [1.0, 30.0], [1.0, 40.0]])
    t = build_tables(p_hat, np.ones_like(p_hat), costs, n_bins=2, binning="fixed", smoothing=1.0)
    # bin 0 holds requests 0, 1 (costs 10, 20); overall mean 25; one pseudo-observation
    assert t.cnext[0, 0] == pytest.approx((10 + 20 + 25) / 3)
    assert t.cnext[0, 1] == pytest.approx((30 + 40 + 25) / 3)


def test_a_tier_with_no_observations_falls_back_to_the_prior_and_says_so():
    p_hat = np.full((5, 2), 0.5)
    accepted = np.array([[1.0, np.nan]] * 5)
    with pytest.warns(UserWarning, match="tier 1: no observed acceptance"):
        t = build_tables(p_hat, accepted, [1.0, 2.0], n_bins=3, prior_alpha=2.0, prior_beta=3.0)
    assert (t.alpha[1] == 2.0).all() and (t.beta[1] == 3.0).all()
    assert any("tier 1" in note for note in t.notes)


def test_lower_credible_bound_is_the_beta_quantile():
    from scipy import stats

    alpha, beta = np.array([[3.0, 50.0]]), np.array([[7.0, 2.0]])
    q_stop, q_mean = risk_quality(alpha, beta, 0.9)
    np.testing.assert_allclose(q_stop, np.minimum(stats.beta.ppf(0.1, alpha, beta), q_mean))
    assert (risk_quality(alpha, beta, "mean")[0] == q_mean).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"p_hat": [[0.5, np.nan]]}, r"p_hat\[0, 1\] = nan"),
        ({"p_hat": [[0.5, 1.5]]}, r"p_hat\[0, 1\] = 1.5: must be a probability"),
        ({"accepted": [[0.5, -0.1]]}, r"accepted\[0, 1\]"),
        ({"costs": [1.0, -2.0]}, r"costs\[0, 1\] = -2.0: costs must be finite and >= 0"),
        ({"p_hat": np.zeros((0, 2)), "accepted": np.zeros((0, 2))}, "calibration set is empty"),
        ({"accepted": [[1.0, 0.0, 1.0]]}, r"accepted has shape \(1, 3\), p_hat has \(1, 2\)"),
        ({"costs": [1.0, 2.0, 3.0]}, "costs has 3 tiers, p_hat has 2"),
        ({"n_bins": 0}, "n_bins=0"),
        ({"binning": "kmeans"}, "binning 'kmeans'"),
        ({"prompt_p": [0.1, 0.2]}, r"prompt_p has shape \(2,\)"),
        ({"prior_alpha": 0.0}, "Beta prior"),
        ({"p_hat_weight": 1.5}, r"p_hat_weight=1.5: must lie in \[0, 1\]"),
        ({"p_hat_weight": float("nan")}, "p_hat_weight=nan"),
        ({"p_hat_weight": "half"}, "p_hat_weight='half'"),
        ({"pool_bins": -1}, "pool_bins=-1: must be a whole number >= 0"),
        ({"pool_bins": 1.5}, "pool_bins=1.5"),
        ({"pool_bins": True}, "pool_bins=True"),
    ],
)
def test_bad_calibration_input_raises_policy_error_naming_the_problem(kwargs, message):
    args = {"p_hat": [[0.5, 0.6]], "accepted": [[1.0, 0.0]], "costs": [1.0, 2.0], **kwargs}
    with pytest.raises(PolicyError, match=message):
        build_tables(args.pop("p_hat"), args.pop("accepted"), args.pop("costs"), **args)


@pytest.mark.parametrize("risk", [0.3, 1.0, "high"])
def test_bad_risk_level_raises_policy_error(risk):
    with pytest.raises(PolicyError, match="risk"):
        risk_quality(np.ones((1, 1)), np.ones((1, 1)), risk)


def test_empirical_prior_centres_each_tier_on_its_own_acceptance_rate():
    # tier 0 accepts 1 of 4, tier 1 all 4: a bin with no request leans to the tier's rate, not 1/2
    p_hat = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.95], [0.4, 0.85]])
    accepted = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    t = build_tables(p_hat, accepted, [1.0, 2.0], n_bins=2, binning="fixed", prior_strength=3.0)
    rate = np.array([(1 + 1) / (4 + 2), (4 + 1) / (4 + 2)])
    np.testing.assert_allclose(t.prior_alpha, 3.0 * rate)
    np.testing.assert_allclose(t.prior_beta, 3.0 * (1 - rate))
    assert t.n_obs[0, 1] == 0 and t.n_obs[1, 0] == 0  # the empty bins: prior mean = the tier's rate
    q = t.alpha / (t.alpha + t.beta)
    assert q[0, 1] == pytest.approx(rate[0]) and q[1, 0] == pytest.approx(rate[1])
    np.testing.assert_allclose(t.alpha[0, 0], 3.0 * rate[0] + 1.0)  # 1 accepted of 4 in tier 0's bin 0
    np.testing.assert_allclose(t.beta[0, 0], 3.0 * (1 - rate[0]) + 3.0)


def test_empirical_prior_survives_a_policy_round_trip(tmp_path):
    from asd.engine import Policy, Predictor

    rng = np.random.default_rng(0)
    p_hat = rng.random((50, 2))
    accepted = (rng.random((50, 2)) < p_hat).astype(float)
    t = build_tables(p_hat, accepted, [1.0, 3.0], n_bins=4, prior_strength=2.0)
    policy = Policy(t, Predictor.identity(2), lam=5.0)
    loaded = Policy.load(policy.save(tmp_path / "p.npz"))
    assert loaded.tables.prior_alpha == t.prior_alpha and isinstance(t.prior_alpha, tuple)
    np.testing.assert_array_equal(loaded.stop_table, policy.stop_table)


@pytest.mark.parametrize("strength", [0.0, -1.0])
def test_empirical_prior_needs_positive_strength(strength):
    with pytest.raises(PolicyError, match="prior_strength"):
        build_tables([[0.5, 0.6]], [[1.0, 0.0]], [1.0, 2.0], prior_strength=strength)


def test_bins_count_labels_and_calibrated_p_hat_in_the_given_weights():
    """p_hat_weight w: each labelled request adds (1 − w)·label + w·p̂ to its bin (unlabelled ones
    are skipped); the cold tables count start_p_hat; the start evidence keeps the labels; w = 0
    is the labels alone."""
    p_hat = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.95], [0.6, 0.85], [0.3, 0.7]])
    start_p = p_hat.copy()
    start_p[:, 1] = [0.6, 0.55, 0.9, 0.9, 0.4]
    accepted = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0], [np.nan, 0.0]])
    low = np.array([True, True, False, False, True])  # tier 0's bin 0 (p̂ < 0.5)
    seen = ~np.isnan(accepted[:, 0])
    cold_high = start_p[:, 1] >= 0.5
    for w in (0.0, 0.5, 1.0):
        t = build_tables(p_hat, accepted, [1.0, 2.0], n_bins=2, binning="fixed", prompt_p=np.full(5, 0.5),
                         start_p_hat=start_p, empirical_start=True, p_hat_weight=w)
        counted = (1 - w) * accepted + w * p_hat
        assert t.alpha[0, 0] == pytest.approx(1.0 + counted[low & seen, 0].sum())
        assert t.beta[0, 0] == pytest.approx(1.0 + (1 - counted[low & seen, 0]).sum())
        assert t.n_obs[0, 0] == 2  # the unlabelled request is not counted
        assert t.alpha[1, 1] == pytest.approx(1.0 + counted[:, 1].sum())  # every tier-1 p̂ is in bin 1
        cold = (1 - w) * accepted[cold_high, 1] + w * start_p[cold_high, 1]
        assert t.alpha_cold[1, 1] == pytest.approx(1.0 + cold.sum())
        np.testing.assert_array_equal(t.evidence_accepted, accepted)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 12), st.integers(5, 30))
def test_counting_p_hat_alone_makes_acceptance_rise_with_the_bin(seed, n_bins, per_bin):
    """Quantile bins of equal size over distinct p̂: the posterior mean acceptance never falls from
    one bin to the next when the bins count p̂ alone (their labels may: a few dozen draws a bin)."""
    rng = np.random.default_rng(seed)
    n = n_bins * per_bin
    p_hat = rng.permutation(np.linspace(0.02, 0.98, n))[:, None]
    accepted = (rng.random((n, 1)) < p_hat).astype(float)
    t = build_tables(p_hat, accepted, [1.0], n_bins=n_bins, p_hat_weight=1.0, prior_strength=2.0)
    q = t.alpha[0] / (t.alpha[0] + t.beta[0])
    assert np.all(np.diff(q) >= -1e-12)


def test_pooling_weights_fall_linearly_to_zero_beyond_the_pool():
    np.testing.assert_array_equal(pooling_weights(3, 0), np.eye(3))
    np.testing.assert_allclose(pooling_weights(4, 1), [[1, .5, 0, 0], [.5, 1, .5, 0], [0, .5, 1, .5], [0, 0, .5, 1]])
    w = pooling_weights(7, 2)
    np.testing.assert_allclose(w[3], [0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3, 0])
    np.testing.assert_array_equal(w, w.T)


def test_pooled_bins_count_their_neighbours_requests_in_every_table():
    """pool_bins=1 over 3 fixed bins, weights 1 and 1/2: hand-counted posteriors (climbed and cold),
    transition rows and next-tier costs; n_obs and the start evidence stay each bin's own."""
    p_hat = np.array([[0.1, 0.2], [0.2, 0.9], [0.5, 0.5], [0.9, 0.9], [0.95, 0.1]])
    accepted = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [np.nan, 0.0]])
    costs = np.array([[1.0, 2.0], [1.0, 4.0], [1.0, 6.0], [1.0, 8.0], [1.0, 10.0]])
    start_p = p_hat.copy()
    start_p[:, 1] = [0.9, 0.9, 0.1, 0.5, 0.5]
    t = build_tables(p_hat, accepted, costs, n_bins=3, binning="fixed", pool_bins=1, smoothing=0.0,
                     prompt_p=np.full(5, 0.5), start_p_hat=start_p, empirical_start=True)
    assert t.pool_bins == 1
    # tier 0 bins: 0, 0, 1, 2, 2 (the last unlabelled); own labels: bin 0 {0, 1}, bin 1 {1}, bin 2 {1}
    np.testing.assert_allclose(t.alpha[0], 1.0 + np.array([1 + .5 * 1, 1 + .5 * 1 + .5 * 1, 1 + .5 * 1]))
    np.testing.assert_allclose(t.beta[0], 1.0 + np.array([1, .5 * 1, 0]))
    np.testing.assert_array_equal(t.n_obs[0], [2, 1, 1])
    # tier 0 → tier 1 (tier 1 bins: 0, 2, 1, 2, 0); bin 0 pools bin 1 at 1/2: {0: 1, 2: 1} + .5 {1: 1}
    own = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=float)
    pooled = pooling_weights(3, 1) @ own
    np.testing.assert_allclose(t.trans[0], pooled / pooled.sum(axis=1, keepdims=True))
    # next-tier cost: bin 0 (2 + 4 + .5·6) / 2.5, bin 1 (.5·(2 + 4) + 6 + .5·(8 + 10)) / 3, bin 2 (.5·6 + 8 + 10) / 2.5
    np.testing.assert_allclose(t.cnext[0], [9 / 2.5, 18 / 3, 21 / 2.5])
    # cold tier 1 (start bins 2, 2, 0, 1, 1): bin 0 own {0} + .5 {1, 0}
    np.testing.assert_allclose(t.alpha_cold[1], 1.0 + np.array([0 + .5 * 1, 1 + .5 * 0 + .5 * 2, 2 + .5 * 1]))
    np.testing.assert_allclose(t.beta_cold[1], 1.0 + np.array([1 + .5 * 1, 1 + .5 * 1 + .5 * 0, 0 + .5 * 1]))
    np.testing.assert_array_equal(t.evidence_accepted, accepted)


def test_no_pooling_is_the_tables_as_before():
    rng = np.random.default_rng(3)
    p_hat = rng.random((200, 3))
    accepted = (rng.random((200, 3)) < p_hat).astype(float)
    args = dict(n_bins=7, prompt_p=rng.random(200), start_p_hat=rng.random((200, 3)), empirical_start=True)
    a = build_tables(p_hat, accepted, [1.0, 2.0, 5.0], **args)
    b = build_tables(p_hat, accepted, [1.0, 2.0, 5.0], pool_bins=0, **args)
    for name in ("alpha", "beta", "n_obs", "trans", "cnext", "trans0", "c0", "alpha_cold", "trans_cold"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 12), st.integers(0, 4))
def test_a_pooled_bins_acceptance_lies_within_its_neighbours_own_rates(seed, n_bins, pool):
    """Pooling is a weighted average: each bin's rate (prior aside) lies between the smallest and
    the largest own rate of the filled bins within pool_bins of it."""
    rng = np.random.default_rng(seed)
    n = n_bins * 20
    p_hat = rng.random((n, 1))
    accepted = (rng.random((n, 1)) < p_hat).astype(float)
    t = build_tables(p_hat, accepted, [1.0], n_bins=n_bins, binning="fixed", pool_bins=pool, prior_alpha=1e-9,
                     prior_beta=1e-9)
    own = build_tables(p_hat, accepted, [1.0], n_bins=n_bins, binning="fixed", prior_alpha=1e-9, prior_beta=1e-9)
    rate = (own.alpha[0] - 1e-9) / np.maximum(own.n_obs[0], 1e-300)
    pooled = (t.alpha[0] - 1e-9) / (t.alpha[0] + t.beta[0] - 2e-9)
    for b in range(n_bins):
        window = [j for j in range(max(0, b - pool), min(n_bins, b + pool + 1)) if own.n_obs[0, j] > 0]
        if window:
            assert rate[window].min() - 1e-9 <= pooled[b] <= rate[window].max() + 1e-9


def test_bin_index_refuses_a_nan_probability():
    """searchsorted puts NaN past every edge: it landed in the top bin without a word."""
    assert bin_index([0.2, 0.7], [0.0, 0.5, 1.0]).tolist() == [0, 1]
    with pytest.raises(PolicyError, match="p̂ holds NaN"):
        bin_index([0.2, np.nan], [0.0, 0.5, 1.0])
