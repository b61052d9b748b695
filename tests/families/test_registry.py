"""Adding a family is one module plus one registry line.

The module below defines a test-only family, the square-root gamma law of a positive
latent that a log joint uses as ``s**2`` and ``log s`` (``s**2 ~ Gamma(k, rate b)``).
Registering it (one line) is all it takes for the compiler to pick it, for CAVI to fit
it in closed form, and for the gradient path to use it: no other module changes.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import gammaln

import vijax as vj
from vijax.conjugacy.program import clear_cache
from vijax.families import Gamma, MultivariateNormal, Normal, Poisson, registry
from vijax.families.base import Array, ExponentialFamily, family


# ------------------------------------------------------------------ the one module
@family
class SquareRootGamma(ExponentialFamily):
    """``p(x) = 2 b^k / Gamma(k) x^(2k - 1) exp(-b x^2)`` on ``x > 0``.

    Statistics ``{"x2": x^2, "log": log x}``; natural parameters ``{"x2": -b,
    "log": 2k - 1}``; ``log h = 0``; ``A = lgamma(k) - k log b - log 2``.
    """

    stat_names = ("x2", "log")
    stat_event_ndims = {"x2": 0, "log": 0}
    support = "positive"
    walk_stats = {("x", 2.0): "x2", ("log", 1.0): "log"}

    @staticmethod
    def _kb(natural):
        return 0.5 * (natural["log"] + 1.0), -natural["x2"]

    @classmethod
    def stats(cls, x):
        return {"x2": x * x, "log": jnp.log(x)}

    @classmethod
    def log_base_measure(cls, x):
        return jnp.zeros(jnp.shape(x))

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]):
        k, b = cls._kb(natural)
        return gammaln(k) - k * jnp.log(b) - jnp.log(2.0)

    @classmethod
    def is_valid_natural(cls, natural):
        k, b = cls._kb(natural)
        return (k > 0) & (b > 0)

    @classmethod
    def from_unconstrained(cls, u):
        return cls({"x2": -jnp.exp(u["log_rate"]), "log": 2.0 * jnp.exp(u["log_k"]) - 1.0})

    def to_unconstrained(self):
        k, b = self._kb(self.natural)
        return {"log_k": jnp.log(k), "log_rate": jnp.log(b)}

    @classmethod
    def default_start(cls, key, info, dtype):
        ones = jnp.ones(info.support.shape, dtype)
        return cls({"x2": -ones, "log": ones})

    def expected_log_base_measure(self):
        return self._constant(0.0)

    def sample(self, key, sample_shape=()):
        k, b = self._kb(self.natural)
        shape = tuple(sample_shape) + self.batch_shape
        return jnp.sqrt(jax.random.gamma(key, jnp.broadcast_to(k, shape), shape) / b)

    def mean(self):
        k, b = self._kb(self.natural)
        return jnp.exp(gammaln(k + 0.5) - gammaln(k)) / jnp.sqrt(b)

    def variance(self):
        k, b = self._kb(self.natural)
        return k / b - self.mean() ** 2


# ------------------------------------------------------------------ a model using it
K0, B0 = 2.0, 1.5
Y = np.array([0.3, -1.2, 0.8, 2.0, -0.4])


def log_joint(z, y):
    s = z["s"]
    prior = (2 * K0 - 1) * jnp.log(s) - B0 * s ** 2
    return prior + jnp.sum(jnp.log(s) - 0.5 * (s * y) ** 2)


MODEL = vj.Model(log_joint, {"s": vj.positive()})


@pytest.fixture
def sqrt_gamma():
    clear_cache()  # analyses cached before the registration knew no such family
    with registry.registered(SquareRootGamma):  # <- the one registry line
        yield SquareRootGamma
    clear_cache()


def test_registry_knows_the_builtins_in_order():
    assert registry.default_family("real") is Normal
    assert registry.default_family("count") is Poisson
    assert registry.select("real", {("x", 1.0)}, coupled=True) is MultivariateNormal
    assert registry.select("positive", {("log", 1.0)}) is Gamma
    assert registry.conjugate_families("count") == ()
    with pytest.raises(ValueError, match="unknown family"):
        registry.get("NoSuchFamily")
    with pytest.raises(ValueError, match="support"):
        registry.register(type("Bad", (ExponentialFamily,), {"support": "torus"}))


def test_without_the_family_s_squared_is_not_conjugate():
    a = vj.analyze(MODEL, Y)
    assert a.families["s"] is None
    assert "s**2" in a.reasons["s"]


def test_registered_family_is_picked_and_fitted_in_closed_form(sqrt_gamma):
    a = vj.analyze(MODEL, Y)
    assert a.families["s"] is sqrt_gamma
    assert a.statistics["s"] == ("x2", "log")
    fit = vj.cavi(MODEL, Y, key=jax.random.key(0), max_iters=5)
    q = fit.posterior["s"]
    assert isinstance(q, sqrt_gamma)
    expected = {"log": 2 * K0 - 1 + len(Y), "x2": -B0 - 0.5 * np.sum(Y ** 2)}
    for k, v in expected.items():
        np.testing.assert_allclose(q.natural[k], v, rtol=1e-10)
    # the log joint is <eta_post, T(s)>, so the evidence is exp(A(eta_post)): the ELBO
    # at the exact posterior
    np.testing.assert_allclose(fit.elbo, q.log_normalizer_value(), rtol=1e-8)
    assert repr(q).startswith("SquareRootGamma(")


@pytest.mark.filterwarnings("ignore:The gradient fit stopped")
def test_registered_family_on_the_gradient_path(sqrt_gamma):
    fit = vj.fit_gradient(MODEL, Y, jax.random.key(1), num_steps=300)
    q = fit.posterior["s"]
    assert isinstance(q, sqrt_gamma)
    exact_k = 0.5 * (2 * K0 + len(Y))
    exact_b = B0 + 0.5 * np.sum(Y ** 2)
    exact_mean = np.exp(float(gammaln(exact_k + 0.5) - gammaln(exact_k))) / np.sqrt(exact_b)
    np.testing.assert_allclose(q.mean(), exact_mean, rtol=0.05)
