"""Non-conjugate models (CAVI refuses them; the gradient path fits them)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import stats

from vijax.model import Model
from vijax.models.base import ZooModel
from vijax.supports import real


def _logistic_lj(z, data):
    w = z["w"]
    logits = data["X"] @ w
    lp = jnp.sum(stats.norm.logpdf(w, 0.0, 1.0))
    lp += jnp.sum(data["y"] * jax.nn.log_sigmoid(logits) + (1 - data["y"]) * jax.nn.log_sigmoid(-logits))
    return lp


def logistic_regression(d=2) -> ZooModel:
    """y_n ~ Bernoulli(sigmoid(x_n . w)), w ~ N(0, I)."""
    def make_data(key, n=100):
        k1, k2, k3 = jax.random.split(key, 3)
        X = jax.random.normal(k1, (n, d))
        w = jnp.linspace(1.0, -1.0, d) * 1.5
        y = jax.random.bernoulli(k3, jax.nn.sigmoid(X @ w)).astype(X.dtype)
        return {"X": X, "y": y}
    return ZooModel("logistic_regression", Model(_logistic_lj, {"w": real((d,))}), make_data,
                    False, {"w": None})


def _student_lj(z, x):
    return stats.norm.logpdf(z["mu"], 0.0, 10.0) + jnp.sum(stats.t.logpdf(x, 4.0, z["mu"], 1.0))


def student_t_location() -> ZooModel:
    """mu ~ N(0, 10^2), x_i ~ StudentT(4, mu, 1)."""
    def make_data(key, n=30):
        return 1.0 + jax.random.t(key, 4.0, (n,))
    return ZooModel("student_t_location", Model(_student_lj, {"mu": real()}), make_data, False,
                    {"mu": None})
