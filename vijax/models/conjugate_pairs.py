"""Single-block conjugate pairs: Beta-Bernoulli, Gamma-Poisson, Dirichlet-Categorical."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import stats

from vijax.model import Model
from vijax.models.base import ZooModel
from vijax.supports import positive, simplex, unit_interval

BETA_PRIOR = (2.0, 3.0)
GAMMA_PRIOR = (3.0, 2.0)  # shape, rate
DIRICHLET_PRIOR = (1.0, 2.0, 3.0)


def _beta_bernoulli_lj(z, x):
    a, b = BETA_PRIOR
    return stats.beta.logpdf(z["p"], a, b) + jnp.sum(stats.bernoulli.logpmf(x, z["p"]))


def beta_bernoulli() -> ZooModel:
    """p ~ Beta(2, 3), x_i ~ Bernoulli(p)."""
    def make_data(key, n=30):
        return jax.random.bernoulli(key, 0.3, (n,)).astype(jnp.int32)
    return ZooModel("beta_bernoulli", Model(_beta_bernoulli_lj, {"p": unit_interval()}),
                    make_data, True, {"p": "Beta"})


def _gamma_poisson_lj(z, x):
    a, b = GAMMA_PRIOR
    return stats.gamma.logpdf(z["lam"], a, scale=1.0 / b) + jnp.sum(stats.poisson.logpmf(x, z["lam"]))


def gamma_poisson() -> ZooModel:
    """lam ~ Gamma(3, rate 2), x_i ~ Poisson(lam)."""
    def make_data(key, n=25):
        return jax.random.poisson(key, 2.5, (n,))
    return ZooModel("gamma_poisson", Model(_gamma_poisson_lj, {"lam": positive()}),
                    make_data, True, {"lam": "Gamma"})


def _dirichlet_categorical_lj(z, x):
    alpha = jnp.asarray(DIRICHLET_PRIOR)
    return stats.dirichlet.logpdf(z["pi"], alpha) + jnp.sum(jnp.log(z["pi"])[x])


def dirichlet_categorical() -> ZooModel:
    """pi ~ Dirichlet(1, 2, 3), x_i ~ Categorical(pi)."""
    def make_data(key, n=40):
        return jax.random.categorical(key, jnp.log(jnp.array([0.2, 0.3, 0.5])), shape=(n,))
    return ZooModel("dirichlet_categorical", Model(_dirichlet_categorical_lj, {"pi": simplex(3)}),
                    make_data, True, {"pi": "Dirichlet"})
