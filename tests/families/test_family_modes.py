"""Closed-form modes (``mode``: argmax of the density, EM's conditional M-step) against
textbook formulas and against scipy's densities around them."""

import jax.numpy as jnp
import numpy as np
import pytest
from family_cases import CASES, as_jnp
from hypothesis import given, settings
from hypothesis import strategies as st

from vijax.families import (Bernoulli, Beta, Categorical, Dirichlet, Gamma, InverseGamma,
                            MultivariateNormal, Normal, Poisson)

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
WITH_MODE = [c for c in CASES if c.cls.has_mode()]


def test_which_families_have_modes():
    assert {c.cls for c in WITH_MODE} == {Normal, MultivariateNormal, Gamma, InverseGamma,
                                           Beta, Dirichlet}
    for cls in (Categorical, Bernoulli, Poisson):
        assert not cls.has_mode()
        with pytest.raises(NotImplementedError):
            cls.mode({})


def _textbook(case, p):
    """The mode from the usual parameters, or None where it is on the boundary."""
    if case.cls is Normal or case.cls is MultivariateNormal:
        return np.asarray(p["loc"])
    if case.cls is Gamma:
        a, b = p["concentration"], p["rate"]
        return (a - 1) / b if a > 1 else None
    if case.cls is InverseGamma:
        return p["scale"] / (p["concentration"] + 1)
    if case.cls is Beta:
        a, b = p["a"], p["b"]
        return (a - 1) / (a + b - 2) if a > 1 and b > 1 else None
    alpha = np.asarray(p["alpha"])
    return (alpha - 1) / (alpha.sum() - alpha.size) if np.all(alpha > 1) else None


def _nearby(case, x, rng, n=20):
    """Points of the support near x (the simplex stays the simplex)."""
    x = np.asarray(x, float)
    if case.cls is Dirichlet:
        out = x * np.exp(0.05 * rng.normal(size=(n,) + x.shape))
        return out / out.sum(-1, keepdims=True)
    step = 0.05 * rng.normal(size=(n,) + x.shape)
    if case.cls in (Gamma, InverseGamma):
        return x * np.exp(step)
    if case.cls is Beta:
        return np.clip(x + 0.1 * step * x * (1 - x), 1e-9, 1 - 1e-9)
    return x + step


@pytest.mark.parametrize("case", WITH_MODE, ids=str)
@SETTINGS
@given(data=st.data())
def test_mode_is_the_textbook_mode_and_scipy_peaks_there(case, data):
    p = data.draw(case.params)
    fam = case.build(as_jnp(p))
    x, valid = type(fam).mode(fam.natural)
    expected = _textbook(case, p)
    assert x.shape == valid.shape == jnp.shape(fam.mean())
    if expected is None:
        assert not bool(np.any(np.asarray(valid)))
        return
    assert bool(np.all(np.asarray(valid)))
    np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-9, atol=1e-12)
    ref = case.scipy(p)
    rng = np.random.default_rng(0)
    at_mode = ref.logpdf(case.to_scipy(np.asarray(x)))
    for y in _nearby(case, x, rng):
        assert ref.logpdf(case.to_scipy(y)) <= at_mode + 1e-9 * max(1.0, abs(at_mode))


def test_mode_validity_is_elementwise():
    """A batch of Gamma natural parameters: valid entries get the mode, others are
    flagged (EM keeps their old value)."""
    natural = {"x": jnp.array([-2.0, -1.0, 3.0]), "log": jnp.array([4.0, -0.5, 1.0])}
    x, valid = Gamma.mode(natural)
    np.testing.assert_array_equal(np.asarray(valid), [True, False, False])
    assert float(x[0]) == 2.0 and np.all(np.isfinite(np.asarray(x)))
    # a dense Gaussian whose precision is not positive definite has no maximum
    x, valid = MultivariateNormal.mode({"x": jnp.ones(2), "xxT": jnp.eye(2)})
    assert not bool(np.any(np.asarray(valid))) and np.all(np.isfinite(np.asarray(x)))
