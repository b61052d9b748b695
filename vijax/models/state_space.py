"""A linear-Gaussian state-space model written with ``jax.lax.scan`` (and the same model
written with whole-array operations, for long series)."""

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


def _ssm_lj_vectorized(z, y):
    x = z["x"]
    a, q, r = SSM_PARAMS["a"], SSM_PARAMS["q"], SSM_PARAMS["r"]
    return (stats.norm.logpdf(x[0], 0.0, 1.0) + stats.norm.logpdf(x[1:], a * x[:-1], q).sum()
            + stats.norm.logpdf(y, x, r).sum())


def state_space(t=25, vectorized=False) -> ZooModel:
    """x_0 ~ N(0, 1), x_t ~ N(0.9 x_{t-1}, 0.5^2), y_t ~ N(x_t, 0.4^2); q(x) is a
    Gauss-Markov chain over the whole path (the exact Kalman smoother, linear in T).

    ``vectorized``: the log joint written with whole-array operations instead of a
    ``lax.scan`` (the compiler walks a scan step by step, so its analysis grows with T;
    the vectorized form's does not)."""
    def make_data(key):
        k1, k2 = jax.random.split(key)
        eps = jax.random.normal(k1, (t,))

        def step(xp, e):
            xn = SSM_PARAMS["a"] * xp + SSM_PARAMS["q"] * e
            return xn, xn
        _, xs = jax.lax.scan(step, 0.0, eps)
        return xs + SSM_PARAMS["r"] * jax.random.normal(k2, (t,))
    lj = _ssm_lj_vectorized if vectorized else _ssm_lj
    return ZooModel("state_space", Model(lj, {"x": real((t,))}), make_data, True,
                    {"x": "GaussMarkov"})
