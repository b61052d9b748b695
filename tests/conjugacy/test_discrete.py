"""Binary and categorical latents: guards, logpmfs, indexing and one_hot are exact.

DESIGN section 2: any expression of a discrete element ``s`` alone equals
``sum_k [s = k] f(k)``, linear in ``one_hot(s)``; products of statistics of one discrete
element collapse (``one_hot(s)_k one_hot(s)_l = [k = l] one_hot(s)_k``, ``b * b = b``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import vijax as vj
from vijax.conjugacy.compile import compile_model

from .helpers import assert_exact, assert_expectation_matches_mc, families_of

N = 7
K = 3
X = jnp.asarray(np.random.default_rng(3).normal(0.5, 1.5, N))


def binary_where(z, x):
    b = z["b"]
    lp = jnp.sum(stats.bernoulli.logpmf(b, 0.3))
    lp += jnp.sum(jnp.where(b == 1, stats.norm.logpdf(x, 2.0, 1.0),
                            stats.norm.logpdf(x, -1.0, 0.5)))
    return lp


def binary_logpmf_latent_rate(z, x):
    b, rho = z["b"], z["rho"]
    lp = stats.beta.logpdf(rho, 2.0, 3.0)
    lp += jnp.sum(stats.bernoulli.logpmf(b, rho))
    lp += jnp.sum(stats.norm.logpdf(x, 2.0 * b - 1.0, 1.0))  # b used in arithmetic too
    return lp


def binary_where_latent_means(z, x):
    b, m0, m1 = z["b"], z["m0"], z["m1"]
    lp = stats.norm.logpdf(m0, 0.0, 3.0) + stats.norm.logpdf(m1, 0.0, 3.0)
    lp += jnp.sum(stats.bernoulli.logpmf(b, 0.4))
    lp += jnp.sum(jnp.where(b == 1, stats.norm.logpdf(x, m1, 1.0), stats.norm.logpdf(x, m0, 1.0)))
    return lp


def binary_index_constant_table(z, x):
    b = z["b"]
    mu = jnp.array([-1.0, 2.0])
    sd = jnp.array([0.5, 1.5])
    return jnp.sum(stats.bernoulli.logpmf(b, 0.3)) + jnp.sum(stats.norm.logpdf(x, mu[b], sd[b]))


def binary_index_latent_means(z, x):
    b, mu, rho = z["b"], z["mu"], z["rho"]
    lp = stats.beta.logpdf(rho, 2.0, 2.0) + jnp.sum(stats.norm.logpdf(mu, 0.0, 3.0))
    lp += jnp.sum(stats.bernoulli.logpmf(b, rho))
    lp += jnp.sum(stats.norm.logpdf(x, mu[b], 1.0))
    return lp


def categorical_index(z, x):
    c, pi, mu = z["c"], z["pi"], z["mu"]
    lp = stats.dirichlet.logpdf(pi, jnp.full((K,), 2.0)) + jnp.sum(stats.norm.logpdf(mu, 0.0, 3.0))
    lp += jnp.sum(jnp.log(pi)[c])
    lp += jnp.sum(stats.norm.logpdf(x, mu[c], 1.0))
    return lp


def categorical_one_hot_matmul(z, x):
    c, pi, mu = z["c"], z["pi"], z["mu"]
    onehot = jax.nn.one_hot(c, K)
    lp = stats.dirichlet.logpdf(pi, jnp.full((K,), 2.0)) + jnp.sum(stats.norm.logpdf(mu, 0.0, 3.0))
    lp += jnp.sum(onehot @ jnp.log(pi))
    lp += jnp.sum(stats.norm.logpdf(x, onehot @ mu, 1.0))
    return lp


def categorical_one_hot_constant_means(z, x):
    onehot = jax.nn.one_hot(z["c"], K)
    means = jnp.array([-2.0, 0.5, 3.0])
    return jnp.sum(stats.norm.logpdf(x, onehot @ means, 0.7)) - N * jnp.log(K)


def categorical_one_hot_weights_only(z, x):
    onehot = jax.nn.one_hot(z["c"], K)
    return jnp.sum(onehot @ jnp.log(z["pi"])) + stats.dirichlet.logpdf(z["pi"], jnp.ones(K))


def categorical_power_and_guard(z, x):
    c = z["c"]
    lp = jnp.sum(jnp.where(c == 2, -0.5 * x ** 2, -0.1 * (x - c) ** 2))
    return lp + jnp.sum(stats.norm.logpdf(z["mu"], 0.0, 1.0) * (c + 1.0) ** 2 / 4.0)


B = vj.binary((N,))
C = vj.categorical(K, (N,))

# (id, log joint, supports, expected families)
CASES = [
    ("binary_where", binary_where, {"b": B}, {"b": "Bernoulli"}),
    ("binary_logpmf", binary_logpmf_latent_rate, {"b": B, "rho": vj.unit_interval()},
     {"b": "Bernoulli", "rho": "Beta"}),
    ("binary_where_latent_means", binary_where_latent_means,
     {"b": B, "m0": vj.real(), "m1": vj.real()},
     {"b": "Bernoulli", "m0": "Normal", "m1": "Normal"}),
    ("binary_index_table", binary_index_constant_table, {"b": B}, {"b": "Bernoulli"}),
    ("binary_index_latent", binary_index_latent_means,
     {"b": B, "mu": vj.real((2,)), "rho": vj.unit_interval()},
     {"b": "Bernoulli", "mu": "Normal", "rho": "Beta"}),
    ("categorical_index", categorical_index,
     {"c": C, "pi": vj.simplex(K), "mu": vj.real((K,))},
     {"c": "Categorical", "pi": "Dirichlet", "mu": "Normal"}),
    ("one_hot_weights", categorical_one_hot_weights_only, {"c": C, "pi": vj.simplex(K)},
     {"c": "Categorical", "pi": "Dirichlet"}),
    ("one_hot_constant_means", categorical_one_hot_constant_means, {"c": C},
     {"c": "Categorical"}),
    ("one_hot_matmul", categorical_one_hot_matmul,
     {"c": C, "pi": vj.simplex(K), "mu": vj.real((K,))},
     {"c": "Categorical", "pi": "Dirichlet", "mu": "Normal"}),
    ("categorical_power_guard", categorical_power_and_guard,
     {"c": C, "mu": vj.real((N,))}, {"c": "Categorical", "mu": "Normal"}),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("tag,fn,supports,families", CASES, ids=IDS)
def test_discrete_and_neighbouring_latents_get_their_families(tag, fn, supports, families):
    c = compile_model(vj.Model(fn, supports), X)
    got = families_of(c)
    reasons = {n: i.reason for n, i in c.infos.items() if i.reason}
    assert got == families, (got, reasons)


@pytest.mark.parametrize("tag,fn,supports,families", CASES, ids=IDS)
def test_discrete_models_exact_at_random_points(tag, fn, supports, families, rng):
    model = vj.Model(fn, supports)
    c = compile_model(model, X)
    bad = {n: i.reason for n, i in c.infos.items() if i.family is None}
    assert not bad, bad
    assert_exact(model, X, rng, n_points=3, compiled=c)


def test_every_binary_configuration_is_exact():
    """Exhaustive over {0,1}^4: one point would miss a dropped branch."""
    def lj(z, x):
        b = z["b"]
        lp = jnp.sum(stats.bernoulli.logpmf(b, jnp.array([0.1, 0.4, 0.6, 0.9])))
        return lp + jnp.sum(jnp.where(b > 0, jnp.log(x[:4] ** 2 + 1.0), -x[:4]))
    model = vj.Model(lj, {"b": vj.binary((4,))})
    c = compile_model(model, X)
    grid = jnp.asarray(np.array(np.meshgrid(*[[0, 1]] * 4)).reshape(4, -1).T, jnp.int32)
    got = jax.vmap(lambda b: c.F(c.stats_at({"b": b})))(grid)
    want = jax.vmap(lambda b: lj({"b": b}, X))(grid)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("tag", ["binary_logpmf", "categorical_index"])
def test_discrete_models_expectation_matches_monte_carlo(tag, rng):
    _, fn, supports, _ = next(c for c in CASES if c[0] == tag)
    assert_expectation_matches_mc(vj.Model(fn, supports), X, rng, n_samples=4000)
