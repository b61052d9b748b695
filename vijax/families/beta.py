"""Beta distribution as an exponential family."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln, xlog1py, xlogy

from vijax.families.base import (Array, ExponentialFamily, Natural, as_float_arrays,
                                 check_param, family)
from vijax.families.dirichlet import concentration_from_mean_log
from vijax.families.quantiles import beta_quantile


def _log_beta(a: Array, b: Array) -> Array:
    return gammaln(a) + gammaln(b) - gammaln(a + b)


@family
class Beta(ExponentialFamily):
    """Beta distribution with concentrations ``a`` (of ``x``) and ``b`` (of ``1 - x``).

    Statistics ``T(x) = {"log": log x, "log1m": log(1 - x)}``; natural parameters
    ``eta = {"log": a - 1, "log1m": b - 1}``; ``log h(x) = 0``; log-normalizer

    .. math:: A(\\eta) = \\log\\Gamma(a) + \\log\\Gamma(b) - \\log\\Gamma(a + b).

    Mean parameters ``{"log": digamma(a) - digamma(a+b), "log1m": digamma(b) -
    digamma(a+b)}``; the inverse is the two-component Dirichlet solver.

    Example:
        >>> q = Beta.from_concentrations(2.0, 6.0)
        >>> float(q.mean())
        0.25
    """

    stat_names = ("log", "log1m")
    stat_event_ndims = {"log": 0, "log1m": 0}
    event_ndim = 0
    support = "unit_interval"
    walk_stats = {("log", 1.0): "log", ("log1m", 1.0): "log1m"}
    count_stats = ("log", "log1m")

    @classmethod
    def stats(cls, x: Array) -> Natural:
        return {"log": jnp.log(x), "log1m": jnp.log1p(-x)}

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        return jnp.zeros(jnp.shape(x), as_float_arrays(x)[0].dtype)

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        return _log_beta(natural["log"] + 1.0, natural["log1m"] + 1.0)

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        a, b = natural["log"] + 1.0, natural["log1m"] + 1.0
        d_ab = digamma(a + b)
        return {"log": digamma(a) - d_ab, "log1m": digamma(b) - d_ab}

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        m1, m0 = jnp.broadcast_arrays(mean["log"], mean["log1m"])
        alpha = concentration_from_mean_log(jnp.stack([m1, m0], -1))
        return {"log": alpha[..., 0] - 1.0, "log1m": alpha[..., 1] - 1.0}

    @classmethod
    def mode(cls, natural: Mapping[str, Array]) -> tuple[Array, Array]:
        """``(a - 1) / (a + b - 2)``, valid where ``a > 1`` and ``b > 1``."""
        e1, e2 = natural["log"], natural["log1m"]
        valid = (e1 > 0) & (e2 > 0) & jnp.isfinite(e1) & jnp.isfinite(e2)
        e1, e2 = jnp.where(valid, e1, 1.0), jnp.where(valid, e2, 1.0)
        x = e1 / (e1 + e2)
        return x, jnp.broadcast_to(valid, jnp.shape(x))

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        a, b = natural["log"] + 1.0, natural["log1m"] + 1.0
        return (a > 0) & (b > 0) & jnp.isfinite(a) & jnp.isfinite(b)

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        return jnp.logaddexp(mean["log"], mean["log1m"]) < 0

    @classmethod
    def from_concentrations(cls, concentration1: Array, concentration0: Array) -> "Beta":
        """``Beta(a=concentration1, b=concentration0)``; both positive and finite."""
        a, b = as_float_arrays(concentration1, concentration0)
        for name, v in (("concentration1", a), ("concentration0", b)):
            check_param("Beta.from_concentrations", name, v, jnp.isfinite(v) & (v > 0),
                        "positive and finite")
        a, b = jnp.broadcast_arrays(a, b)
        return cls({"log": a - 1.0, "log1m": b - 1.0})

    @property
    def concentration1(self) -> Array:
        return self.natural["log"] + 1.0

    @property
    def concentration0(self) -> Array:
        return self.natural["log1m"] + 1.0

    def mean(self) -> Array:
        a, b = self.concentration1, self.concentration0
        return a / (a + b)

    def variance(self) -> Array:
        a, b = self.concentration1, self.concentration0
        total = a + b
        return (a / total) * (b / total) / (total + 1.0)

    def quantile(self, q: Array) -> Array:
        """Inverse of the regularized incomplete beta function."""
        return beta_quantile(self.concentration1, self.concentration0,
                             self._quantile_shape(q))

    def usual_params(self) -> dict[str, Array]:
        return {"concentration1": self.concentration1,
                "concentration0": self.concentration0}

    def log_prob(self, x: Array) -> Array:
        a, b = self.concentration1, self.concentration0
        return xlogy(a - 1.0, x) + xlog1py(b - 1.0, -x) - _log_beta(a, b)

    def expected_log_base_measure(self) -> Array:
        return self._constant(0.0)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """``x = g_a / (g_a + g_b)`` from gamma draws, in log space
        (``sigmoid(log g_a - log g_b)``) so small concentrations do not give 0/0;
        reparameterized through ``jax.random.loggamma``."""
        shape = tuple(sample_shape) + self.batch_shape + (2,)
        alpha = jnp.stack([self.concentration1, self.concentration0], -1)
        log_g = jax.random.loggamma(key, jnp.broadcast_to(alpha, shape), shape, self.dtype)
        return jax.nn.sigmoid(log_g[..., 0] - log_g[..., 1])

    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "Beta":
        """Uniform: ``Beta(1, 1)``."""
        ones = jnp.ones(info.support.shape, dtype)
        return cls.from_concentrations(ones, ones)

    def to_unconstrained(self) -> dict[str, Array]:
        """``{"log_concentration1": log a, "log_concentration0": log b}``."""
        return {"log_concentration1": jnp.log(self.concentration1),
                "log_concentration0": jnp.log(self.concentration0)}

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "Beta":
        la, lb = jnp.broadcast_arrays(u["log_concentration1"], u["log_concentration0"])
        return cls({"log": jnp.expm1(la), "log1m": jnp.expm1(lb)})
