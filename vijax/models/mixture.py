"""Bayesian Gaussian mixture with diagonal precisions (pi, z, mu, tau)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import stats

from vijax.model import Model
from vijax.models.base import ZooModel
from vijax.supports import categorical, positive, real, simplex

GMM_PRIOR = {"alpha0": 1.0, "beta0": 0.01, "a0": 1.0, "b0": 1.0}


def make_mixture_log_joint(prior=GMM_PRIOR):
    """Log joint of the diagonal Bayesian GMM; ``data`` is the (N, D) array."""
    def log_joint(z, x):
        pi, c, mu, tau = z["pi"], z["z"], z["mu"], z["tau"]
        K = pi.shape[-1]
        lp = stats.dirichlet.logpdf(pi, jnp.full((K,), prior["alpha0"]))
        lp += jnp.sum(stats.gamma.logpdf(tau, prior["a0"], scale=1.0 / prior["b0"]))
        lp += jnp.sum(stats.norm.logpdf(mu, 0.0, 1.0 / jnp.sqrt(prior["beta0"] * tau)))
        lp += jnp.sum(jnp.log(pi)[c])
        lp += jnp.sum(stats.norm.logpdf(x, mu[c], 1.0 / jnp.sqrt(tau[c])))
        return lp
    return log_joint


def make_mixture_data(key, n=60, k=3, d=2, sep=6.0):
    """Well-separated clusters: means on a scaled simplex-like layout, unit noise."""
    k1, k2, k3 = jax.random.split(key, 3)
    centers = sep * jax.random.normal(k1, (k, d))
    labels = jax.random.randint(k2, (n,), 0, k)
    x = centers[labels] + jax.random.normal(k3, (n, d))
    return x


def gaussian_mixture(n=60, k=3, d=2) -> ZooModel:
    """x_n ~ N(mu_{z_n}, diag(1/tau_{z_n})), z_n ~ Cat(pi), pi ~ Dir(alpha0),
    tau_kd ~ Gamma(a0, b0), mu_kd | tau ~ N(0, 1/(beta0 tau_kd))."""
    supports = {"pi": simplex(k), "z": categorical(k, shape=(n,)),
                "mu": real((k, d)), "tau": positive((k, d))}
    return ZooModel("gaussian_mixture", Model(make_mixture_log_joint(), supports),
                    lambda key: make_mixture_data(key, n, k, d), True,
                    {"pi": "Dirichlet", "z": "Categorical", "mu": "Normal", "tau": "Gamma"})
