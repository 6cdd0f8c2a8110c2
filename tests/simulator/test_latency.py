"""Latency model: kernels = twins, and the closed form = the iterations it stands for."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from asd.errors import ConfigError
from asd.simulator import latency_grid
from asd.simulator.latency import latency_ms
from asd.simulator import reference as ref
from asd.simulator.latency_nb import latency_grid_nb, request_latency_ms_nb

coefficients = hnp.arrays(np.float64, (3, 4), elements=st.floats(0.0, 10.0, allow_nan=False))


@settings(max_examples=100, deadline=None)
@given(coefficients, st.integers(0, 3000), st.integers(0, 600), st.integers(0, 2))
def test_closed_form_equals_the_sum_of_its_iterations(coeffs, n_prompt, n_out, tier):
    # prefill iteration (kv = prompt), then one decode iteration per further token (kv grows)
    total = ref.iteration_ms(coeffs, tier, n_prompt, 0, n_prompt)
    for j in range(1, max(n_out, 1)):
        total += ref.iteration_ms(coeffs, tier, 0, 1, n_prompt + j)
    closed = request_latency_ms_nb(coeffs, tier, n_prompt, n_out)
    assert closed == pytest.approx(total, rel=1e-12, abs=1e-9)
    assert closed == ref.request_latency_ms(coeffs, tier, n_prompt, n_out)


@settings(max_examples=50, deadline=None)
@given(coefficients, hnp.arrays(np.int64, (5, 3), elements=st.integers(0, 500)),
       hnp.arrays(np.int64, (5, 3), elements=st.integers(0, 500)))
def test_latency_grid_kernel_equals_reference(coeffs, n_prompt, n_out):
    got, want = np.empty((5, 3)), np.empty((5, 3))
    latency_grid_nb(coeffs, n_prompt, n_out, got)
    ref.latency_grid(coeffs, n_prompt, n_out, want)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(latency_grid(coeffs, n_prompt, n_out), got)


def test_latency_grid_refuses_bad_coefficients():
    with pytest.raises(ConfigError, match="shape"):
        latency_grid(np.ones((2, 3)), np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(ConfigError, match=r"\[1, 2\]"):
        latency_grid(np.array([[1.0, 1, 1, 1], [1, 1, -1, 1]]), np.ones((1, 2)), np.ones((1, 2)))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_vectorised_latency_equals_the_kernel_grid_for_cold_requests(n_tiers, seed):
    """`latency_ms` (what the cost model prices with) is the kernels' closed form, cold."""
    rng = np.random.default_rng(seed)
    coeffs = rng.uniform(0.0, 3.0, (n_tiers, 4))
    n_prompt = rng.integers(0, 500, (20, n_tiers))
    n_out = rng.integers(0, 300, (20, n_tiers))
    np.testing.assert_allclose(latency_ms(coeffs[None, :, :], n_prompt, n_out), latency_grid(coeffs, n_prompt, n_out),
                               rtol=1e-12, atol=1e-9)


def test_vectorised_latency_refuses_bad_coefficients_and_token_counts():
    c = np.array([6.0, 0.03, 0.05, 2e-5])
    with pytest.raises(ConfigError, match=r"coeffs has shape \(3,\): expected \(\.\.\., 4\)"):
        latency_ms(c[:3], 10, 5)
    with pytest.raises(ConfigError, match=r"iteration coefficient \[0, 2\] = .*must be finite and >= 0"):
        latency_ms(c * [1, 1, -1, 1], 10, 5)
    for name, args in (("n_prompt", (-1, 5)), ("n_out", (10, np.nan)), ("n_draft", (10, 5, np.inf, 0)),
                       ("n_accepted", (10, 5, 4, -2))):
        with pytest.raises(ConfigError, match=f"{name} holds .*: token counts must be finite and >= 0"):
            latency_ms(c, *args)
    with pytest.raises(ConfigError, match="n_accepted exceeds n_draft"):
        latency_ms(c, 10, 5, np.array([4, 4]), np.array([4, 5]))
    # the cost model's alias is this function, checks included
    from asd.calibration.costs import request_latency_ms
    with pytest.raises(ConfigError, match="n_accepted exceeds n_draft"):
        request_latency_ms(c, 10, 5, 2, 3)
    # (1, L, 4) coefficients against (N, L) counts, as the cost model calls it, still price every request
    coeffs = np.tile(c, (3, 1))
    n_prompt, n_out = np.arange(6).reshape(2, 3), np.arange(6).reshape(2, 3) + 1
    np.testing.assert_allclose(latency_ms(coeffs[None], n_prompt, n_out), latency_grid(coeffs, n_prompt, n_out),
                               rtol=1e-12)
