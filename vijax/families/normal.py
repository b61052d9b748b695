"""Univariate normal distribution as an exponential family."""

from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

from vijax.families import start_random
from vijax.families.base import (Array, ExponentialFamily, Natural, as_float_arrays,
                                 check_param, family)

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@family
class Normal(ExponentialFamily):
    """Normal distribution ``N(m, s^2)``.

    Statistics ``T(x) = {"x": x, "x2": x^2}``; natural parameters
    ``eta = {"x": m / s^2, "x2": -1 / (2 s^2)}``; base measure
    ``log h(x) = -log(2 pi) / 2``; log-normalizer

    .. math:: A(\\eta) = -\\frac{\\eta_1^2}{4 \\eta_2} - \\tfrac12 \\log(-2 \\eta_2).

    Example:
        >>> import jax.numpy as jnp
        >>> q = Normal.from_loc_scale(jnp.array(1.0), jnp.array(2.0))
        >>> float(q.variance())
        4.0
    """

    stat_names = ("x", "x2")
    stat_event_ndims = {"x": 0, "x2": 0}
    event_ndim = 0
    support = "real"
    walk_stats = {("x", 1.0): "x", ("x", 2.0): "x2"}
    pair_stat = "x2"

    # ------------------------------------------------------------ exp. family
    @classmethod
    def stats(cls, x: Array) -> Natural:
        return {"x": x, "x2": x * x}

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        return jnp.full(jnp.shape(x), -_HALF_LOG_2PI, as_float_arrays(x)[0].dtype)

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        e1, e2 = natural["x"], natural["x2"]
        loc = -0.5 * e1 / e2      # A = loc * eta1 / 2 - log(-2 eta2) / 2, no eta1^2 overflow
        return 0.5 * loc * e1 - 0.5 * jnp.log(-2.0 * e2)

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        e1, e2 = natural["x"], natural["x2"]
        var = -0.5 / e2
        loc = e1 * var
        return {"x": loc, "x2": loc * loc + var}

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        loc = mean["x"]
        var = mean["x2"] - loc * loc
        return {"x": loc / var, "x2": -0.5 / var}

    @classmethod
    def mode(cls, natural: Mapping[str, Array]) -> tuple[Array, Array]:
        """``-eta_x / (2 eta_x2)`` (the mean), valid where ``eta_x2 < 0``."""
        e1, e2 = natural["x"], natural["x2"]
        valid = cls.is_valid_natural(natural)
        x = -e1 / (2.0 * jnp.where(valid, e2, -1.0))
        return x, jnp.broadcast_to(valid, jnp.shape(x))

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        e1, e2 = natural["x"], natural["x2"]
        return jnp.isfinite(e1) & jnp.isfinite(e2) & (e2 < 0)

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        return mean["x2"] - mean["x"] ** 2 > 0

    # ------------------------------------------------------------ usual params
    @classmethod
    def from_loc_scale(cls, loc: Array, scale: Array) -> "Normal":
        """``N(loc, scale^2)``; raises InvalidParameterError for scale <= 0."""
        loc, scale = as_float_arrays(loc, scale)
        check_param("Normal.from_loc_scale", "scale", scale,
                    jnp.isfinite(scale) & (scale > 0), "positive and finite")
        check_param("Normal.from_loc_scale", "loc", loc, jnp.isfinite(loc), "finite")
        loc, scale = jnp.broadcast_arrays(loc, scale)
        prec = 1.0 / (scale * scale)
        return cls({"x": loc * prec, "x2": -0.5 * prec})

    @property
    def loc(self) -> Array:
        return -0.5 * self.natural["x"] / self.natural["x2"]

    @property
    def scale(self) -> Array:
        return jnp.sqrt(-0.5 / self.natural["x2"])

    @property
    def log_scale(self) -> Array:
        return -0.5 * jnp.log(-2.0 * self.natural["x2"])

    def mean(self) -> Array:
        return self.loc

    def variance(self) -> Array:
        return -0.5 / self.natural["x2"]

    def quantile(self, q: Array) -> Array:
        """``loc + scale * ndtri(q)``."""
        return self.loc + self.scale * ndtri(self._quantile_shape(q))

    def usual_params(self) -> dict[str, Array]:
        return {"loc": self.loc, "scale": self.scale}

    # ------------------------------------------------------------ closed forms
    def log_prob(self, x: Array) -> Array:
        z = (x - self.loc) / self.scale
        return -0.5 * z * z - self.log_scale - _HALF_LOG_2PI

    def entropy(self) -> Array:
        return 0.5 + _HALF_LOG_2PI + self.log_scale

    def kl(self, other: "Normal") -> Array:
        self._check_same_family(other)
        ratio = jnp.exp(2.0 * (self.log_scale - other.log_scale))
        z = (self.loc - other.loc) / other.scale
        return 0.5 * (ratio + z * z - 1.0) - (self.log_scale - other.log_scale)

    def expected_log_base_measure(self) -> Array:
        return self._constant(-_HALF_LOG_2PI)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """Reparameterized draw ``loc + scale * eps``."""
        shape = tuple(sample_shape) + self.batch_shape
        eps = jax.random.normal(key, shape, self.dtype)
        return self.loc + self.scale * eps

    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "Normal":
        """Unit variance around small random means."""
        shape = info.support.shape
        return cls.from_loc_scale(0.1 * start_random.normal(key, shape, dtype),
                                  jnp.ones(shape, dtype))

    # ------------------------------------------------------------ gradient path
    def to_unconstrained(self) -> dict[str, Array]:
        """``{"loc": m, "log_scale": log s}``."""
        return {"loc": self.loc, "log_scale": self.log_scale}

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "Normal":
        loc, log_scale = jnp.broadcast_arrays(u["loc"], u["log_scale"])
        prec = jnp.exp(-2.0 * log_scale)
        return cls({"x": loc * prec, "x2": -0.5 * prec})
