"""Gamma distribution as an exponential family, and the special-function helpers and
shape solver that InverseGamma, Beta, Dirichlet and Poisson share."""

from __future__ import annotations

import functools
import math
from typing import Mapping

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln, xlogy

from vijax.families.base import (Array, ExponentialFamily, Natural, as_float_arrays,
                                 check_param, family)
from vijax.families.quantiles import gamma_quantile

_SERIES_FROM = 10.0  # use asymptotic series for shape >= this (cancellation-free)


def trigamma(x: Array) -> Array:
    """``polygamma(1, x)`` for ``x > 0``: ten recurrence steps, then the asymptotic
    series (relative error < 1e-14). Much cheaper to compile than ``polygamma``."""
    acc = sum(1.0 / (x + i) ** 2 for i in range(10))
    z = x + 10.0
    r = 1.0 / (z * z)
    return acc + 1.0 / z + r * (0.5 + (1.0 / z) * (
        1 / 6 - r * (1 / 30 - r * (1 / 42 - r * (1 / 30 - r * 5 / 66)))))


def _where_big(a: Array, series, direct) -> Array:
    """``series(a)`` for large ``a``, ``direct(a)`` otherwise, NaN-safe for grads."""
    big = a >= _SERIES_FROM
    return jnp.where(big, series(jnp.where(big, a, _SERIES_FROM)),
                     direct(jnp.where(big, 1.0, a)))


def log_minus_digamma(a: Array) -> Array:
    """``log a - digamma(a)`` (> 0, decreasing), accurate also for large ``a``."""
    def series(a):
        r = 1.0 / (a * a)
        return 0.5 / a + r * (1 / 12 - r * (1 / 120 - r * (1 / 252 - r * (
            1 / 240 - r * (1 / 132 - r * 691 / 32760)))))
    return _where_big(a, series, lambda a: jnp.log(a) - digamma(a))


def log_minus_digamma_grad(a: Array) -> Array:
    """Derivative of :func:`log_minus_digamma`: ``1/a - trigamma(a)`` (< 0)."""
    def series(a):
        r = 1.0 / (a * a)
        return -(0.5 * r + (r / a) * (1 / 6 - r * (1 / 30 - r * (1 / 42 - r * (
            1 / 30 - r * 5 / 66)))))
    return _where_big(a, series, lambda a: 1.0 / a - trigamma(a))


def gamma_entropy_core(a: Array) -> Array:
    """``lgamma(a) + (1 - a) digamma(a) + a``: the Gamma entropy at rate 1, stable for
    large ``a`` (asymptotic series above 10)."""
    def series(a):
        r = 1.0 / a
        return (0.5 * jnp.log(a) + 0.5 * math.log(2 * math.pi) + 0.5
                - r * (1 / 3 + r * (1 / 12 + r * (1 / 90 - r * (1 / 120 + r * (
                    1 / 210 - r * (1 / 252 + r * (1 / 210 - r * (1 / 240 + r * (
                        5 / 594 - r / 132))))))))))
    return _where_big(a, series, lambda a: gammaln(a) + (1.0 - a) * digamma(a) + a)


@functools.partial(jax.jit, static_argnames=("num_iters",))
def gamma_shape_from_gap(gap: Array, num_iters: int = 8) -> Array:
    """Solve ``log a - digamma(a) = gap`` for the shape ``a > 0``.

    Minka's initialisation and generalized Newton iteration ("Estimating a Gamma
    distribution", 2002), a fixed number of steps (jittable), then one Newton step
    through which gradients flow (``da/dgap`` is exact at the solution).
    ``gap <= 0`` is unattainable; it is clamped to a tiny positive value (huge shape).
    """
    tiny = jnp.finfo(jnp.result_type(gap)).eps ** 2
    gap = jnp.maximum(gap, tiny)
    s = jax.lax.stop_gradient(gap)
    # Minka's closed-form start, written stably on both sides of s = 3.
    root = jnp.sqrt((s - 3.0) ** 2 + 24.0 * s)
    a = jnp.where(s < 3.0, (3.0 - s + root) / (12.0 * s), 2.0 / (s - 3.0 + root))

    def generalized_newton(_, a):
        step = (log_minus_digamma(a) - s) / (a * a * log_minus_digamma_grad(a))
        inv = 1.0 / a + step
        return jnp.where(inv > 0, 1.0 / jnp.where(inv > 0, inv, 1.0), 10.0 * a)

    a = jax.lax.stop_gradient(jax.lax.fori_loop(0, num_iters, generalized_newton, a))
    return a + (gap - log_minus_digamma(a)) / log_minus_digamma_grad(a)


def gamma_kl(a_p, b_p, a_q, b_q) -> Array:
    """KL(Gamma(a_p, rate b_p) || Gamma(a_q, rate b_q)); zero exactly when equal."""
    return ((a_p - a_q) * digamma(a_p) - gammaln(a_p) + gammaln(a_q)
            + a_q * (jnp.log(b_p) - jnp.log(b_q)) + a_p * (b_q - b_p) / b_p)


@family
class Gamma(ExponentialFamily):
    """Gamma distribution with shape (concentration) ``a`` and rate ``b``.

    Statistics ``T(x) = {"x": x, "log": log x}``; natural parameters
    ``eta = {"x": -b, "log": a - 1}``; ``log h(x) = 0``; log-normalizer

    .. math:: A(\\eta) = \\log\\Gamma(a) - a \\log b.

    Mean parameters ``{"x": a / b, "log": digamma(a) - log b}``; the inverse solves
    ``log a - digamma(a) = log E[x] - E[log x]`` by Newton's method.

    Example:
        >>> q = Gamma.from_shape_rate(2.0, 4.0)
        >>> float(q.mean())
        0.5
    """

    stat_names = ("x", "log")
    stat_event_ndims = {"x": 0, "log": 0}
    event_ndim = 0
    support = "positive"
    walk_stats = {("x", 1.0): "x", ("log", 1.0): "log"}
    scale_stat = ("x", 1.0)

    @classmethod
    def stats(cls, x: Array) -> Natural:
        return {"x": x, "log": jnp.log(x)}

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        return jnp.zeros(jnp.shape(x), as_float_arrays(x)[0].dtype)

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        a, b = natural["log"] + 1.0, -natural["x"]
        return gammaln(a) - a * jnp.log(b)

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        a, b = natural["log"] + 1.0, -natural["x"]
        return {"x": a / b, "log": digamma(a) - jnp.log(b)}

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        a = gamma_shape_from_gap(jnp.log(mean["x"]) - mean["log"])
        return {"x": -a / mean["x"], "log": a - 1.0}

    @classmethod
    def mode(cls, natural: Mapping[str, Array]) -> tuple[Array, Array]:
        """``(a - 1) / b = eta_log / (-eta_x)``, valid where ``a > 1`` and ``b > 0``."""
        e_log, e_x = natural["log"], natural["x"]
        valid = (e_log > 0) & (e_x < 0) & jnp.isfinite(e_log) & jnp.isfinite(e_x)
        x = jnp.where(valid, e_log, 1.0) / jnp.where(valid, -e_x, 1.0)
        return x, jnp.broadcast_to(valid, jnp.shape(x))

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        a, b = natural["log"] + 1.0, -natural["x"]
        return (a > 0) & (b > 0) & jnp.isfinite(a) & jnp.isfinite(b)

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        return (mean["x"] > 0) & (jnp.log(mean["x"]) > mean["log"])

    @classmethod
    def from_shape_rate(cls, concentration: Array, rate: Array) -> "Gamma":
        """``Gamma(concentration, rate)``; both must be positive and finite."""
        a, b = as_float_arrays(concentration, rate)
        for name, v in (("concentration", a), ("rate", b)):
            check_param("Gamma.from_shape_rate", name, v, jnp.isfinite(v) & (v > 0),
                        "positive and finite")
        a, b = jnp.broadcast_arrays(a, b)
        return cls({"x": -b, "log": a - 1.0})

    @property
    def concentration(self) -> Array:
        return self.natural["log"] + 1.0

    @property
    def rate(self) -> Array:
        return -self.natural["x"]

    def mean(self) -> Array:
        return self.concentration / self.rate

    def variance(self) -> Array:
        return self.concentration / self.rate ** 2

    def quantile(self, q: Array) -> Array:
        """Inverse of the regularized incomplete gamma function, over the rate."""
        return gamma_quantile(self.concentration, self._quantile_shape(q)) / self.rate

    def usual_params(self) -> dict[str, Array]:
        return {"concentration": self.concentration, "rate": self.rate}

    def log_prob(self, x: Array) -> Array:
        a, b = self.concentration, self.rate
        return xlogy(a - 1.0, x) - b * x + a * jnp.log(b) - gammaln(a)

    def entropy(self) -> Array:
        return gamma_entropy_core(self.concentration) - jnp.log(self.rate)

    def kl(self, other: "Gamma") -> Array:
        self._check_same_family(other)
        return gamma_kl(self.concentration, self.rate, other.concentration, other.rate)

    def expected_log_base_measure(self) -> Array:
        return self._constant(0.0)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """Draws via ``jax.random.gamma`` (implicit reparameterization gradients)."""
        shape = tuple(sample_shape) + self.batch_shape
        a = jnp.broadcast_to(self.concentration, shape)
        return jax.random.gamma(key, a, shape, self.dtype) / self.rate

    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "Gamma":
        """Shape 1, rate 1 (mean 1)."""
        ones = jnp.ones(info.support.shape, dtype)
        return cls.from_shape_rate(ones, ones)

    def to_unconstrained(self) -> dict[str, Array]:
        """``{"log_concentration": log a, "log_mean": log(a / b)}``.

        Shape and mean are orthogonal in the Fisher metric, so gradient fits converge
        far faster than in (log a, log b), where the two directions are nearly parallel
        for a large shape.
        """
        return {"log_concentration": jnp.log(self.concentration),
                "log_mean": jnp.log(self.concentration) - jnp.log(self.rate)}

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "Gamma":
        la, lm = jnp.broadcast_arrays(u["log_concentration"], u["log_mean"])
        return cls({"x": -jnp.exp(la - lm), "log": jnp.expm1(la)})
