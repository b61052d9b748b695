"""Gaussian zoo models: bivariate Gaussian, normal-gamma, known-variance normal,
Bayesian linear regression (dense weights, Gamma precisions)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import stats

from vijax.model import Model
from vijax.models.base import ZooModel
from vijax.supports import positive, real


def _bivariate_lj(z, data):
    x = jnp.stack([z["z1"], z["z2"]])
    return stats.multivariate_normal.logpdf(x, data["mean"], data["cov"])


def bivariate_gaussian() -> ZooModel:
    """Target N(mean, cov) in 2-D with one latent per coordinate (textbook mean field)."""
    def make_data(key=None, rho=0.9):
        return {"mean": jnp.array([1.0, -1.0]),
                "cov": jnp.array([[1.0, rho], [rho, 1.0]])}
    return ZooModel("bivariate_gaussian", Model(_bivariate_lj, {"z1": real(), "z2": real()}),
                    make_data, True, {"z1": "Normal", "z2": "Normal"})


def _normal_gamma_lj(z, x):
    lp = stats.gamma.logpdf(z["tau"], 2.0, scale=1.0 / 2.0)
    lp += stats.norm.logpdf(z["mu"], 0.0, 1.0 / jnp.sqrt(0.5 * z["tau"]))
    lp += jnp.sum(stats.norm.logpdf(x, z["mu"], 1.0 / jnp.sqrt(z["tau"])))
    return lp


NORMAL_GAMMA_PRIOR = {"mu0": 0.0, "lambda0": 0.5, "a0": 2.0, "b0": 2.0}


def normal_gamma() -> ZooModel:
    """Unknown mean and precision: tau ~ Gamma(a0, b0), mu | tau ~ N(mu0, 1/(lambda0 tau)),
    x_i ~ N(mu, 1/tau); prior constants in ``NORMAL_GAMMA_PRIOR``."""
    def make_data(key, n=20):
        return 1.5 + 0.8 * jax.random.normal(key, (n,))
    return ZooModel("normal_gamma", Model(_normal_gamma_lj, {"mu": real(), "tau": positive()}),
                    make_data, True, {"mu": "Normal", "tau": "Gamma"})


def _known_var_lj(z, x):
    return stats.norm.logpdf(z["mu"], 0.0, 2.0) + jnp.sum(stats.norm.logpdf(x, z["mu"], 0.5))


def normal_known_variance() -> ZooModel:
    """mu ~ N(0, 2^2), x_i ~ N(mu, 0.5^2)."""
    def make_data(key, n=10):
        return 0.7 + 0.5 * jax.random.normal(key, (n,))
    return ZooModel("normal_known_variance", Model(_known_var_lj, {"mu": real()}), make_data,
                    True, {"mu": "Normal"})


def _linreg_lj(z, data):
    X, y = data["X"], data["y"]
    w, alpha, beta = z["w"], z["alpha"], z["beta"]
    lp = stats.gamma.logpdf(alpha, 1.0, scale=1.0) + stats.gamma.logpdf(beta, 1.0, scale=1.0)
    lp += jnp.sum(stats.norm.logpdf(w, 0.0, 1.0 / jnp.sqrt(alpha)))
    lp += jnp.sum(stats.norm.logpdf(y, X @ w, 1.0 / jnp.sqrt(beta)))
    return lp


def _make_regression(key, n=50, d=3, noise=0.3):
    k1, k2, k3 = jax.random.split(key, 3)
    X = jax.random.normal(k1, (n, d))
    w = jax.random.normal(k2, (d,))
    y = X @ w + noise * jax.random.normal(k3, (n,))
    return {"X": X, "y": y}


def linear_regression(d=3) -> ZooModel:
    """y ~ N(X w, 1/beta), w ~ N(0, 1/alpha), alpha, beta ~ Gamma(1, 1); q(w) dense."""
    model = Model(_linreg_lj, {"w": real((d,)), "alpha": positive(), "beta": positive()})
    return ZooModel("linear_regression", model,
                    lambda key, n=50: _make_regression(key, n, d), True,
                    {"w": "MultivariateNormal", "alpha": "Gamma", "beta": "Gamma"})


LINREG_KNOWN = {"alpha": 1.0, "beta": 4.0}


def _linreg_known_lj(z, data):
    X, y = data["X"], data["y"]
    lp = jnp.sum(stats.norm.logpdf(z["w"], 0.0, 1.0 / jnp.sqrt(LINREG_KNOWN["alpha"])))
    lp += jnp.sum(stats.norm.logpdf(y, X @ z["w"], 1.0 / jnp.sqrt(LINREG_KNOWN["beta"])))
    return lp


def linear_regression_known_noise(d=3) -> ZooModel:
    """y ~ N(X w, 1/4), w ~ N(0, I): a single dense-Gaussian block (exact in one sweep)."""
    return ZooModel("linear_regression_known_noise",
                    Model(_linreg_known_lj, {"w": real((d,))}),
                    lambda key, n=50: _make_regression(key, n, d, noise=0.5), True,
                    {"w": "MultivariateNormal"})
