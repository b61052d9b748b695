"""A linear-Gaussian state-space model written with ``jax.lax.scan``."""

from __future__ import annotations

import jax
from jax.scipy import stats

from vijax.model import Model
from vijax.models.base import ZooModel
from vijax.supports import real

SSM_PARAMS = {"a": 0.9, "q": 0.5, "r": 0.4}


def _ssm_lj(z, y):
    x = z["x"]
    a, q, r = SSM_PARAMS["a"], SSM_PARAMS["q"], SSM_PARAMS["r"]

    def step(lp, inputs):
        xt, xprev, yt = inputs
        lp = lp + stats.norm.logpdf(xt, a * xprev, q) + stats.norm.logpdf(yt, xt, r)
        return lp, None

    lp0 = stats.norm.logpdf(x[0], 0.0, 1.0) + stats.norm.logpdf(y[0], x[0], r)
    lp, _ = jax.lax.scan(step, lp0, (x[1:], x[:-1], y[1:]))
    return lp


def state_space(t=25) -> ZooModel:
    """x_0 ~ N(0, 1), x_t ~ N(0.9 x_{t-1}, 0.5^2), y_t ~ N(x_t, 0.4^2); q(x) is one dense
    Gaussian over the whole path (the exact smoother)."""
    def make_data(key):
        k1, k2 = jax.random.split(key)
        eps = jax.random.normal(k1, (t,))

        def step(xp, e):
            xn = SSM_PARAMS["a"] * xp + SSM_PARAMS["q"] * e
            return xn, xn
        _, xs = jax.lax.scan(step, 0.0, eps)
        return xs + SSM_PARAMS["r"] * jax.random.normal(k2, (t,))
    return ZooModel("state_space", Model(_ssm_lj, {"x": real((t,))}), make_data, True,
                    {"x": "MultivariateNormal"})
