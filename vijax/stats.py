"""Log densities jax.scipy.stats does not provide, written in plain JAX.

They are ordinary jittable functions (the conjugacy compiler reads them like any user
code: a Wishart prior on a ``vj.positive_definite`` latent is read as its ``x`` and
``logdet`` statistics).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax.scipy.special import gammaln


def _multigammaln(a, d: int):
    """``log Gamma_D(a) = D(D-1)/4 log(pi) + sum_{j=0}^{D-1} lgamma(a - j/2)``."""
    j = jnp.arange(d, dtype=jnp.result_type(a, float))
    return d * (d - 1) / 4.0 * math.log(math.pi) + jnp.sum(
        gammaln(jnp.asarray(a)[..., None] - 0.5 * j), -1)


def wishart_logpdf(x, scale, df):
    """Log density of the Wishart ``W(scale, df)`` at positive-definite ``x``:

    ``(df-D-1)/2 log|x| - tr(scale^{-1} x)/2 - df D/2 log 2 - df/2 log|scale|
    - log Gamma_D(df/2)``.

    ``x`` and ``scale`` are ``[..., D, D]`` (batch axes broadcast), ``df`` broadcasts
    against the batch shape; valid for ``df > D - 1`` (scipy.stats.wishart's
    parameterization: ``E[x] = df * scale``).
    """
    x = jnp.asarray(x)
    scale = jnp.asarray(scale, x.dtype)
    df = jnp.asarray(df, x.dtype)
    d = x.shape[-1]
    _, logdet_x = jnp.linalg.slogdet(x)
    _, logdet_s = jnp.linalg.slogdet(scale)
    prec = jnp.linalg.inv(scale)
    trace = jnp.einsum("...ij,...ji->...", prec, x)
    return (0.5 * (df - d - 1.0) * logdet_x - 0.5 * trace - 0.5 * df * d * math.log(2.0)
            - 0.5 * df * logdet_s - _multigammaln(0.5 * df, d))


__all__ = ["wishart_logpdf"]
