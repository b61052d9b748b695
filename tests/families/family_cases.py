"""The parameter table shared by the family tests: one row per family.

Each row draws usual parameters (numpy float64) with hypothesis, builds the family
from them, and gives the scipy reference, a 1-D normalization check, extreme-but-valid
parameters and invalid ones. Arrays are made inside the tests (float64 is switched on
by the conftest fixture there).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate
from jax.flatten_util import ravel_pytree
import scipy.stats as ss
from hypothesis import strategies as st

from vijax.families import (Bernoulli, Beta, Categorical, Dirichlet, Gamma, InverseGamma,
                            MultivariateNormal, Normal, Poisson)

Params = dict[str, np.ndarray]


def log_uniform(lo: float, hi: float) -> st.SearchStrategy:
    return st.floats(np.log(lo), np.log(hi)).map(np.exp)


def _spd(seed: int, scale: float, dim: int = 3) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(dim, dim)) * scale
    return a @ a.T + 0.3 * np.eye(dim)


def _quad(f: Callable[[float], float], lo: float, mid: float, hi: float) -> float:
    """Integral over (lo, hi), split at ``mid`` (handles endpoint singularities)."""
    return (scipy.integrate.quad(f, lo, mid, limit=200, epsabs=1e-11)[0]
            + scipy.integrate.quad(f, mid, hi, limit=200, epsabs=1e-11)[0])


@dataclasses.dataclass(frozen=True)
class Case:
    """One family's row. ``build`` makes the family from drawn params; ``scipy`` the
    frozen reference distribution; ``to_scipy`` maps our sample to scipy's layout;
    ``normalizer`` integrates/sums the density given ``log_prob``; ``examples`` are
    three fixed moderate rows for the non-hypothesis tests."""

    name: str
    cls: type
    params: st.SearchStrategy
    examples: tuple[Params, ...]
    build: Callable[[Params], Any]
    scipy: Callable[[Params], Any] | None
    extreme: tuple[Params, ...]
    invalid: tuple[tuple[Callable[[], Any], str], ...]
    normalizer: Callable[[Callable, Params], float] | None = None
    to_scipy: Callable[[np.ndarray], np.ndarray] = lambda x: x
    reparameterized: bool = True

    def __str__(self) -> str:
        return self.name


_ROT = np.linalg.qr(np.random.default_rng(7).normal(size=(3, 3)))[0]

CASES = (
    Case(
        name="normal", cls=Normal,
        params=st.fixed_dictionaries({"loc": st.floats(-5, 5),
                                      "scale": log_uniform(0.1, 10.0)}),
        examples=({"loc": 0.5, "scale": 1.3}, {"loc": -2.0, "scale": 0.4},
                  {"loc": 3.0, "scale": 5.0}),
        build=lambda p: Normal.from_loc_scale(p["loc"], p["scale"]),
        scipy=lambda p: ss.norm(p["loc"], p["scale"]),
        normalizer=lambda lp, p: _quad(lambda x: np.exp(lp(x)), -np.inf, p["loc"], np.inf),
        extreme=({"loc": 10.0, "scale": 1e-6}, {"loc": -3.0, "scale": 1e8},
                 {"loc": 1e6, "scale": 1e3}),
        invalid=((lambda: Normal.from_loc_scale(0.0, -1.0), "scale"),
                 (lambda: Normal.from_loc_scale(0.0, 0.0), "scale"),
                 (lambda: Normal.from_loc_scale(np.nan, 1.0), "loc"),
                 (lambda: Normal.from_natural({"x": 0.0, "x2": 1.0}), "natural"),
                 (lambda: Normal.from_mean({"x": 1.0, "x2": 0.5}), "mean")),
    ),
    Case(
        name="mvn", cls=MultivariateNormal,
        params=st.fixed_dictionaries({
            "loc": st.lists(st.floats(-3, 3), min_size=3, max_size=3).map(np.array),
            "cov": st.tuples(st.integers(0, 2**31), log_uniform(0.3, 3.0)).map(
                lambda s: _spd(*s))}),
        examples=({"loc": np.array([0.5, -1.0, 2.0]), "cov": _spd(1, 1.0)},
                  {"loc": np.array([0.0, 1.0, 0.0]), "cov": _spd(2, 0.5)},
                  {"loc": np.array([-1.0, 0.0, 3.0]), "cov": _spd(3, 2.0)}),
        build=lambda p: MultivariateNormal.from_loc_cov(p["loc"], p["cov"]),
        scipy=lambda p: ss.multivariate_normal(p["loc"], p["cov"]),
        extreme=({"loc": np.array([1.0, -2.0, 3.0]),
                  "cov": _ROT @ np.diag([1e-8, 1e-4, 1.0]) @ _ROT.T},
                 {"loc": np.zeros(3), "cov": np.diag([1e-8, 1.0, 1e4])}),
        invalid=((lambda: MultivariateNormal.from_loc_cov(
                      np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]])), "cov"),
                 (lambda: MultivariateNormal.from_loc_cov(
                      np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]])), "cov"),
                 (lambda: MultivariateNormal.from_loc_cov(
                      np.zeros(2), np.array([[np.nan, 0.0], [0.0, 1.0]])), "cov"),
                 (lambda: MultivariateNormal.from_loc_precision(
                      np.zeros(2), -np.eye(2)), "precision"),
                 (lambda: MultivariateNormal.from_natural(
                      {"x": np.zeros(2), "xxT": np.eye(2)}), "natural")),
    ),
    Case(
        name="gamma", cls=Gamma,
        params=st.fixed_dictionaries({"concentration": log_uniform(0.3, 30.0),
                                      "rate": log_uniform(0.1, 10.0)}),
        examples=({"concentration": 2.5, "rate": 1.5}, {"concentration": 0.7, "rate": 0.3},
                  {"concentration": 12.0, "rate": 4.0}),
        build=lambda p: Gamma.from_shape_rate(p["concentration"], p["rate"]),
        scipy=lambda p: ss.gamma(p["concentration"], scale=1.0 / p["rate"]),
        normalizer=lambda lp, p: _quad(lambda x: np.exp(lp(x)), 0.0,
                                       p["concentration"] / p["rate"], np.inf),
        extreme=({"concentration": 1e-3, "rate": 1.0}, {"concentration": 1e6, "rate": 1.0},
                 {"concentration": 1e6, "rate": 1e6}, {"concentration": 1e-3, "rate": 1e3}),
        invalid=((lambda: Gamma.from_shape_rate(0.0, 1.0), "concentration"),
                 (lambda: Gamma.from_shape_rate(-1.0, 1.0), "concentration"),
                 (lambda: Gamma.from_shape_rate(1.0, -2.0), "rate"),
                 (lambda: Gamma.from_shape_rate(np.array([1.0, np.nan]), 1.0),
                  "concentration"),
                 (lambda: Gamma.from_mean({"x": 1.0, "log": 1.0}), "mean")),
    ),
    Case(
        name="inverse_gamma", cls=InverseGamma,
        params=st.fixed_dictionaries({"concentration": log_uniform(0.5, 30.0),
                                      "scale": log_uniform(0.1, 10.0)}),
        examples=({"concentration": 3.5, "scale": 2.0}, {"concentration": 0.8, "scale": 0.5},
                  {"concentration": 15.0, "scale": 6.0}),
        build=lambda p: InverseGamma.from_shape_scale(p["concentration"], p["scale"]),
        scipy=lambda p: ss.invgamma(p["concentration"], scale=p["scale"]),
        normalizer=lambda lp, p: _quad(lambda x: np.exp(lp(x)), 0.0,
                                       p["scale"] / (p["concentration"] + 1.0), np.inf),
        extreme=({"concentration": 3.0, "scale": 1e-6}, {"concentration": 1e6, "scale": 1e6},
                 {"concentration": 2.5, "scale": 1e6}),
        invalid=((lambda: InverseGamma.from_shape_scale(-1.0, 1.0), "concentration"),
                 (lambda: InverseGamma.from_shape_scale(1.0, 0.0), "scale")),
    ),
    Case(
        name="beta", cls=Beta,
        params=st.fixed_dictionaries({"a": log_uniform(0.3, 30.0),
                                      "b": log_uniform(0.3, 30.0)}),
        examples=({"a": 2.0, "b": 3.5}, {"a": 0.5, "b": 0.8}, {"a": 12.0, "b": 1.5}),
        build=lambda p: Beta.from_concentrations(p["a"], p["b"]),
        scipy=lambda p: ss.beta(p["a"], p["b"]),
        normalizer=lambda lp, p: _quad(lambda x: np.exp(lp(x)), 0.0, 0.5, 1.0),
        extreme=({"a": 1e-3, "b": 1e-3}, {"a": 1e5, "b": 1e5}, {"a": 1e-3, "b": 1e5},
                 {"a": 1e5, "b": 1e-3}),
        invalid=((lambda: Beta.from_concentrations(0.0, 1.0), "concentration1"),
                 (lambda: Beta.from_concentrations(1.0, -1.0), "concentration0")),
    ),
    Case(
        name="dirichlet", cls=Dirichlet,
        params=st.fixed_dictionaries({"alpha": st.lists(
            log_uniform(0.3, 30.0), min_size=3, max_size=3).map(np.array)}),
        examples=({"alpha": np.array([1.5, 2.0, 4.0])}, {"alpha": np.array([0.5, 0.7, 0.4])},
                  {"alpha": np.array([10.0, 3.0, 20.0])}),
        build=lambda p: Dirichlet.from_concentration(p["alpha"]),
        scipy=lambda p: ss.dirichlet(p["alpha"]),
        to_scipy=lambda x: np.moveaxis(x, -1, 0),
        extreme=({"alpha": np.array([1e-3, 1e-3, 1e-3])},
                 {"alpha": np.array([1e-3, 1e3, 1e-3])},
                 {"alpha": np.array([1e3, 1e3, 1e-3])},
                 {"alpha": np.array([1e5, 1e5, 1e5])}),
        invalid=((lambda: Dirichlet.from_concentration(np.array([1.0, -1.0, 2.0])),
                  "concentration"),
                 (lambda: Dirichlet.from_concentration(np.array([1.0, 0.0])),
                  "concentration"),
                 (lambda: Dirichlet.from_mean({"log": np.array([-0.1, -0.2])}), "mean")),
    ),
    Case(
        name="categorical", cls=Categorical,
        params=st.fixed_dictionaries({"logits": st.lists(
            st.floats(-3, 3), min_size=4, max_size=4).map(np.array)}),
        examples=({"logits": np.array([0.1, -0.5, 1.2, 0.0])},
                  {"logits": np.array([2.0, -2.0, 0.5, 0.3])},
                  {"logits": np.array([-1.0, -1.0, -1.0, 2.5])}),
        build=lambda p: Categorical.from_logits(p["logits"]),
        scipy=None,
        normalizer=lambda lp, p: float(np.sum(np.exp(lp(np.arange(4))))),
        extreme=({"logits": np.array([0.0, -np.inf, -np.inf, -np.inf])},
                 {"logits": np.array([80.0, -80.0, 0.0, 0.0])}),
        invalid=((lambda: Categorical.from_probs(np.array([-0.1, 0.6, 0.5])), "probs"),
                 (lambda: Categorical.from_probs(np.array([0.3, 0.3, 0.3])), "sum"),
                 (lambda: Categorical.from_logits(np.array([0.0, np.nan])), "logits")),
        reparameterized=False,
    ),
    Case(
        name="bernoulli", cls=Bernoulli,
        params=st.fixed_dictionaries({"p": st.floats(0.02, 0.98)}),
        examples=({"p": 0.3}, {"p": 0.05}, {"p": 0.9}),
        build=lambda p: Bernoulli.from_probs(p["p"]),
        scipy=lambda p: ss.bernoulli(p["p"]),
        normalizer=lambda lp, p: float(np.sum(np.exp(lp(np.array([0.0, 1.0]))))),
        extreme=({"p": 0.0}, {"p": 1.0}, {"p": 1e-12}),
        invalid=((lambda: Bernoulli.from_probs(1.5), "probs"),
                 (lambda: Bernoulli.from_probs(-0.1), "probs"),
                 (lambda: Bernoulli.from_logits(np.nan), "logits")),
        reparameterized=False,
    ),
    Case(
        name="poisson", cls=Poisson,
        params=st.fixed_dictionaries({"rate": log_uniform(0.05, 200.0)}),
        examples=({"rate": 3.5}, {"rate": 0.4}, {"rate": 80.0}),
        build=lambda p: Poisson.from_rate(p["rate"]),
        scipy=lambda p: ss.poisson(p["rate"]),
        normalizer=lambda lp, p: float(np.sum(np.exp(lp(np.arange(
            int(p["rate"] + 20 * np.sqrt(p["rate"]) + 50)).astype(float))))),
        extreme=({"rate": 1e-6}, {"rate": 1e8}),
        invalid=((lambda: Poisson.from_rate(0.0), "rate"),
                 (lambda: Poisson.from_rate(-1.0), "rate"),
                 (lambda: Poisson.from_rate(np.nan), "rate")),
        reparameterized=False,
    ),
)

CASE_BY_NAME = {c.name: c for c in CASES}


def as_jnp(params: Params, dtype=jnp.float64) -> dict[str, jnp.ndarray]:
    return {k: jnp.asarray(v, dtype) for k, v in params.items()}


def support_points(fam, n: int) -> jnp.ndarray:
    """``n`` deterministic points in the support, shape ``(n,) + batch + event``."""
    w = jnp.linspace(0.1, 0.9, n, dtype=fam.dtype).reshape((n,) + (1,) * len(fam.batch_shape))
    if fam.support in ("binary", "categorical", "count"):
        hi = {"binary": 1, "categorical": 3, "count": 6}[fam.support]
        k = jnp.round(w * hi).astype(jnp.int32)
        return jnp.broadcast_to(k, (n,) + fam.batch_shape)
    if fam.support == "unit_interval":
        return jnp.broadcast_to(w, (n,) + fam.batch_shape)
    if fam.support == "positive":
        return 4.0 * w * jnp.exp(fam.mean_parameters()["log"])   # around exp(E[log x])
    mean = fam.mean()
    if fam.support == "simplex":
        return (1 - w[..., None]) * mean + w[..., None] / mean.shape[-1]
    if fam.event_ndim:
        return mean + (w[..., None] - 0.5) * jnp.sqrt(fam.variance())
    return mean + (w - 0.5) * jnp.sqrt(fam.variance())


@functools.partial(jax.jit, static_argnums=0)
def jit_natural_from_mean(cls, mean):
    """``eta = natural_from_mean(mu)``, ``mean_params(eta)`` and, for minimal families,
    ``(d eta/d mu)(d mu/d eta)`` (the identity when gradients flow through the solvers)."""
    back = cls.natural_from_mean(mean)
    if cls in (Categorical, MultivariateNormal):   # over-parameterized / symmetric
        return back, cls.mean_params(back), None
    eta, unravel = ravel_pytree(back)
    mu, unravel_mu = ravel_pytree(mean)
    d_mu = jax.jacobian(lambda e: ravel_pytree(cls.mean_params(unravel(e)))[0])(eta)
    d_eta = jax.jacobian(lambda m: ravel_pytree(cls.natural_from_mean(unravel_mu(m)))[0])(mu)
    return back, cls.mean_params(back), d_eta @ d_mu


jit_entropy = jax.jit(lambda fam: fam.entropy())
jit_log_prob = jax.jit(lambda fam, x: fam.log_prob(x))
jit_sample = jax.jit(lambda fam, key: fam.sample(key, (3,)))


def assert_matrix_family_maps(r, stat, nus, scales):
    """For a Wishart-type family with matrix statistic ``stat`` and ``logdet``: A'(eta)
    by autodiff equals the closed-form mean parameters (``r["ad"]``, ``r["mu"]``), the
    mean -> (df, scale) inverse (Newton on nu) returns ``nus`` and ``scales``, and the
    unconstrained map round-trips the natural parameters (``r["rt"]``, ``r["nat"]``)."""
    mu, ad = r["mu"], r["ad"]
    for s in (stat, "logdet"):
        np.testing.assert_allclose(ad[s], mu[s], rtol=1e-10)
        np.testing.assert_allclose(r["rt"][s], r["nat"][s], rtol=1e-10)
    np.testing.assert_allclose(r["back_df"], nus, rtol=1e-9)
    np.testing.assert_allclose(r["back_scale"], scales, rtol=1e-9)
