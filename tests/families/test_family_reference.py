"""Densities and entropies against scipy, and normalization of 1-D densities/pmfs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats as ss
from family_cases import CASE_BY_NAME, CASES, as_jnp, jit_entropy, jit_log_prob
from hypothesis import given, settings
from hypothesis import strategies as st

from vijax.families import Categorical, Poisson

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)
WITH_SCIPY = [c for c in CASES if c.scipy is not None]
WITH_NORMALIZER = [c for c in CASES if c.normalizer is not None]


def _scipy_log_density(ref, x):
    return ref.logpdf(x) if hasattr(ref, "logpdf") else ref.logpmf(x)


@pytest.mark.parametrize("case", WITH_SCIPY, ids=str)
@SETTINGS
@given(data=st.data())
def test_log_prob_and_entropy_match_scipy(case, data):
    params = data.draw(case.params)
    fam = case.build(as_jnp(params))
    ref = case.scipy(params)
    x = np.asarray(ref.rvs(size=7, random_state=data.draw(st.integers(0, 2**31))), float)
    expected = _scipy_log_density(ref, case.to_scipy(x))
    np.testing.assert_allclose(jit_log_prob(fam, jnp.asarray(x)), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(jit_entropy(fam), ref.entropy(), rtol=1e-8, atol=1e-9)


@SETTINGS
@given(data=st.data())
def test_categorical_matches_log_softmax(data):
    params = data.draw(CASE_BY_NAME["categorical"].params)
    fam = Categorical.from_logits(jnp.asarray(params["logits"]))
    log_p = scipy.special.log_softmax(params["logits"])
    np.testing.assert_allclose(jit_log_prob(fam, jnp.arange(4)), log_p, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jit_entropy(fam), ss.entropy(np.exp(log_p)), rtol=1e-10)


@pytest.mark.parametrize("case", WITH_NORMALIZER, ids=str)
@settings(max_examples=5, deadline=None, derandomize=True)
@given(data=st.data())
def test_density_normalizes(case, data):
    params = data.draw(case.params)
    fam = case.build(as_jnp(params))

    def log_prob(x):
        return np.asarray(jit_log_prob(fam, jnp.asarray(x, jnp.float64)))

    np.testing.assert_allclose(case.normalizer(log_prob, params), 1.0, atol=1e-7)


def _expected_lgamma_reference(rate: float) -> float:
    sd = math.sqrt(rate)
    k = np.arange(max(0, int(rate - 40 * sd)), int(rate + 40 * sd + 200), dtype=float)
    lg = scipy.special.gammaln(k + 1)
    log_pmf = k * math.log(rate) - rate - lg
    w = np.exp(log_pmf - log_pmf.max())
    return math.fsum(w * lg) / math.fsum(w)


def test_poisson_expected_log_base_measure():
    """Both regimes (exact sum <= 50 < quadrature) against a high-precision sum."""
    rates = np.array([1e-3, 0.7, 5.0, 49.0, 51.0, 120.0, 1e3, 1e5])
    got = jax.jit(lambda r: Poisson.from_rate(r).expected_log_base_measure())(rates)
    expected = [_expected_lgamma_reference(r) for r in rates]
    np.testing.assert_allclose(-np.asarray(got), expected, rtol=1e-10, atol=1e-12)
