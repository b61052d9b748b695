"""Gaussian models with an unknown precision matrix (Wishart factors)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import stats

from vijax.model import Model
from vijax.models.base import ZooModel
from vijax.stats import wishart_logpdf
from vijax.supports import positive_definite, real

DIM = 2
PRIOR_SCALE = np.eye(DIM)       # V0
PRIOR_DF = DIM + 1.0            # nu0
MEAN_PRIOR_COV = 4.0 * np.eye(DIM)


def _normal_wishart_lj(z, x):
    mu, prec = z["mu"], z["L"]
    d = x - mu
    n, dim = x.shape
    return (stats.multivariate_normal.logpdf(mu, jnp.zeros(dim), MEAN_PRIOR_COV)
            + wishart_logpdf(prec, PRIOR_SCALE, PRIOR_DF)
            - 0.5 * jnp.einsum("ni,ij,nj->", d, prec, d)
            + 0.5 * n * jnp.linalg.slogdet(prec)[1] - 0.5 * n * dim * jnp.log(2 * jnp.pi))


def normal_wishart() -> ZooModel:
    """mu ~ N(0, 4 I), L ~ Wishart(I, D + 1) independently, x_n ~ N(mu, L^{-1}) (D = 2);
    mean-field q(mu) q(L): a dense Gaussian and a Wishart."""
    def make_data(key, n=40):
        chol = jnp.array([[1.0, 0.0], [0.6, 0.8]])
        return jax.random.normal(key, (n, DIM)) @ chol.T + jnp.array([1.0, -1.0])
    model = Model(_normal_wishart_lj, {"mu": real((DIM,)), "L": positive_definite(DIM)})
    return ZooModel("normal_wishart", model, make_data, True,
                    {"mu": "MultivariateNormal", "L": "Wishart"})
