"""Log joints written the way people write them: each is conjugate, gets the right
family, and is exact (``F(T(z)) == log p(z)`` at random points)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats
from jax.scipy.special import gammaln

import vijax as vj
from vijax.conjugacy.compile import compile_model

from .helpers import assert_exact, assert_expectation_matches_mc, families_of

_r = np.random.default_rng(11)
COV3 = jnp.array([[2.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 1.5]])
REG = {"X": jnp.asarray(_r.normal(size=(8, 3))), "y": jnp.asarray(_r.normal(size=8))}
SHAPES = {"A": jnp.asarray(_r.normal(size=(3, 2))), "b": jnp.asarray(_r.normal(size=6)),
          "c": jnp.asarray(_r.normal(size=4))}
SERIES = jnp.asarray(_r.normal(size=6))
OBS = jnp.asarray(_r.normal(0.4, 1.3, size=9))


def mvn_prior_regression(z, d):
    w = z["w"]
    lp = stats.multivariate_normal.logpdf(w, jnp.zeros(3), COV3)
    return lp + jnp.sum(stats.norm.logpdf(d["y"], d["X"] @ w, 0.7))


def mvn_prior_batched(z, d):
    # four independent 3-vectors, each with the same correlated prior
    w = z["w"]
    return jnp.sum(stats.multivariate_normal.logpdf(w, jnp.zeros(3), COV3)) + jnp.sum(
        stats.norm.logpdf(d["y"][:4], w @ jnp.ones(3), 1.0))


def reshape_ops(z, d):
    W = z["W"]  # (2, 3)
    lp = jnp.sum(stats.norm.logpdf(W.reshape(-1), 0.0, 1.0))
    return lp + jnp.sum(stats.norm.logpdf(d["b"], jnp.reshape(W, (6,)), 0.5))


def transpose_ops(z, d):
    W = z["W"]
    lp = jnp.sum(stats.norm.logpdf(W, 0.0, 2.0))
    return lp + jnp.sum(stats.norm.logpdf(d["A"], W.T, 0.5)) + jnp.sum(
        stats.norm.logpdf(d["A"], jnp.transpose(W, (1, 0)), 0.8))


def slicing_ops(z, d):
    W = z["W"]
    lp = jnp.sum(stats.norm.logpdf(W, 0.0, 1.0))
    lp += jnp.sum(stats.norm.logpdf(d["c"][:2], W[0, :2], 0.5))
    lp += jnp.sum(stats.norm.logpdf(d["c"][2:], W[1, 1:], 0.5))
    return lp + stats.norm.logpdf(d["c"][0], W[-1, 0], 0.3)


def concatenate_two_latents(z, d):
    W, v = z["W"], z["v"]
    lp = jnp.sum(stats.norm.logpdf(W, 0.0, 1.0)) + jnp.sum(stats.norm.logpdf(v, 0.0, 2.0))
    both = jnp.concatenate([W[0, :2], v])
    return lp + jnp.sum(stats.norm.logpdf(d["c"], both, 0.5))


def concatenate_rows_of_one_latent(z, d):
    W = z["W"]
    lp = jnp.sum(stats.norm.logpdf(W, 0.0, 1.0))
    rows = jnp.concatenate([W[0], W[1]])
    return lp + jnp.sum(stats.norm.logpdf(d["b"], rows, 0.5))


COV6 = 0.5 * jnp.eye(6) + 0.5


def matrix_latent_with_full_covariance(z, d):
    W = z["W"]  # (2, 3), correlated across all six entries
    lp = stats.multivariate_normal.logpdf(W.reshape(-1), jnp.zeros(6), COV6)
    return lp + jnp.sum(stats.norm.logpdf(d["A"].T, W, 1.0))


def ar1_fori_loop(z, y):
    x = z["x"]

    def body(t, lp):
        lp = lp + stats.norm.logpdf(x[t], 0.8 * x[t - 1], 0.5)
        return lp + stats.norm.logpdf(y[t], x[t], 0.3)

    lp0 = stats.norm.logpdf(x[0], 0.0, 1.0) + stats.norm.logpdf(y[0], x[0], 0.3)
    return jax.lax.fori_loop(1, x.shape[0], body, lp0)


@jax.jit
def _jitted_likelihood(m, tau, x):
    return jnp.sum(stats.norm.logpdf(x, m, 1.0 / jnp.sqrt(tau)))


def nested_jit(z, x):
    lp = stats.norm.logpdf(z["mu"], 0.0, 2.0) + stats.gamma.logpdf(z["tau"], 2.0, scale=0.5)
    return lp + _jitted_likelihood(z["mu"], z["tau"], x)


def mean_instead_of_sum(z, x):
    lp = stats.norm.logpdf(z["mu"], 0.0, 2.0) + stats.gamma.logpdf(z["tau"], 2.0, scale=0.5)
    return lp + x.shape[0] * jnp.mean(stats.norm.logpdf(x, z["mu"], 1.0 / jnp.sqrt(z["tau"])))


IG_A, IG_B = 3.0, 2.0


def inverse_gamma_variance(z, x):
    s2 = z["sigma2"]
    lp = IG_A * jnp.log(IG_B) - gammaln(IG_A) - (IG_A + 1.0) * jnp.log(s2) - IG_B / s2
    lp += stats.norm.logpdf(z["mu"], 0.0, 3.0)
    return lp + jnp.sum(stats.norm.logpdf(x, z["mu"], jnp.sqrt(s2)))


def inverse_gamma_via_gamma_of_reciprocal(z, x):
    s2 = z["sigma2"]
    # density of s2 when 1/s2 ~ Gamma(a, rate b): change of variables
    lp = stats.gamma.logpdf(1.0 / s2, IG_A, scale=1.0 / IG_B) - 2.0 * jnp.log(s2)
    lp += stats.norm.logpdf(z["mu"], 0.0, 3.0)
    return lp + jnp.sum(stats.norm.logpdf(x, z["mu"], jnp.sqrt(s2)))


def take_along_axis_mixture(z, x):
    # log pi[c_n] written with take_along_axis (the gather has batching dimensions)
    logp = jnp.broadcast_to(jnp.log(z["pi"]), (x.shape[0], 2))
    lp = stats.dirichlet.logpdf(z["pi"], jnp.array([1.5, 2.0]))
    lp += jnp.sum(jnp.take_along_axis(logp, z["c"][:, None], -1))
    return lp + jnp.sum(stats.norm.logpdf(x, jnp.array([-1.0, 2.0])[z["c"]], 1.0))


MVN = "MultivariateNormal"
# (id, log joint, supports, data, expected families)
CASES = [
    ("mvn_logpdf", mvn_prior_regression, {"w": vj.real((3,))}, REG, {"w": MVN}),
    ("mvn_logpdf_batched", mvn_prior_batched, {"w": vj.real((4, 3))}, REG, {"w": MVN}),
    ("reshape", reshape_ops, {"W": vj.real((2, 3))}, SHAPES, {"W": "Normal"}),
    ("transpose", transpose_ops, {"W": vj.real((2, 3))}, SHAPES, {"W": "Normal"}),
    ("slicing", slicing_ops, {"W": vj.real((2, 3))}, SHAPES, {"W": "Normal"}),
    ("concatenate", concatenate_two_latents, {"W": vj.real((2, 3)), "v": vj.real((2,))},
     SHAPES, {"W": "Normal", "v": "Normal"}),
    ("concatenate_same_latent", concatenate_rows_of_one_latent, {"W": vj.real((2, 3))},
     SHAPES, {"W": "Normal"}),
    ("matrix_full_cov", matrix_latent_with_full_covariance, {"W": vj.real((2, 3))}, SHAPES,
     {"W": MVN}),
    ("fori_loop", ar1_fori_loop, {"x": vj.real((6,))}, SERIES, {"x": "GaussMarkov"}),
    ("nested_jit", nested_jit, {"mu": vj.real(), "tau": vj.positive()}, OBS,
     {"mu": "Normal", "tau": "Gamma"}),
    ("mean", mean_instead_of_sum, {"mu": vj.real(), "tau": vj.positive()}, OBS,
     {"mu": "Normal", "tau": "Gamma"}),
    ("inverse_gamma", inverse_gamma_variance, {"mu": vj.real(), "sigma2": vj.positive()}, OBS,
     {"mu": "Normal", "sigma2": "InverseGamma"}),
    ("inverse_gamma_reciprocal", inverse_gamma_via_gamma_of_reciprocal,
     {"mu": vj.real(), "sigma2": vj.positive()}, OBS,
     {"mu": "Normal", "sigma2": "InverseGamma"}),
    ("take_along_axis", take_along_axis_mixture,
     {"pi": vj.simplex(2), "c": vj.categorical(2, (4,))}, OBS[:4],
     {"pi": "Dirichlet", "c": "Categorical"}),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("tag,fn,supports,data,families", CASES, ids=IDS)
def test_written_style_gets_expected_family(tag, fn, supports, data, families):
    c = compile_model(vj.Model(fn, supports), data)
    reasons = {n: i.reason for n, i in c.infos.items() if i.reason}
    assert families_of(c) == families, reasons


@pytest.mark.parametrize("tag,fn,supports,data,families", CASES, ids=IDS)
def test_written_style_is_exact(tag, fn, supports, data, families, rng):
    assert_exact(vj.Model(fn, supports), data, rng, n_points=3)


def test_mvn_event_is_the_whole_vector():
    c = compile_model(vj.Model(mvn_prior_regression, {"w": vj.real((3,))}), REG)
    assert c.infos["w"].event_size == 3 and c.infos["w"].batch_shape == ()


def test_fori_loop_state_space_couples_the_whole_path():
    c = compile_model(vj.Model(ar1_fori_loop, {"x": vj.real((6,))}), SERIES)
    assert c.infos["x"].event_size == 6


@pytest.mark.parametrize("tag", ["inverse_gamma", "mvn_logpdf", "fori_loop"])
def test_written_style_expectation_matches_monte_carlo(tag, rng):
    _, fn, supports, data, _ = next(c for c in CASES if c[0] == tag)
    assert_expectation_matches_mc(vj.Model(fn, supports), data, rng, n_samples=4000)
