"""Inverse-gamma distribution as an exponential family."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from vijax.families.base import (Array, ExponentialFamily, Natural, as_float_arrays,
                                 check_param, family)
from vijax.families.gamma import gamma_entropy_core, gamma_kl, gamma_shape_from_gap
from vijax.families.quantiles import gamma_quantile


@family
class InverseGamma(ExponentialFamily):
    """Inverse-gamma distribution with shape (concentration) ``a`` and scale ``b``.

    Density ``b^a / Gamma(a) x^(-a-1) exp(-b / x)``; ``1/x ~ Gamma(a, rate=b)``.
    Statistics ``T(x) = {"inv": 1/x, "log": log x}``; natural parameters
    ``eta = {"inv": -b, "log": -a - 1}``; ``log h(x) = 0``; log-normalizer

    .. math:: A(\\eta) = \\log\\Gamma(a) - a \\log b.

    Mean parameters ``{"inv": a / b, "log": log b - digamma(a)}``.

    Example:
        >>> q = InverseGamma.from_shape_scale(3.0, 4.0)
        >>> float(q.mean())
        2.0
    """

    stat_names = ("inv", "log")
    stat_event_ndims = {"inv": 0, "log": 0}
    event_ndim = 0
    support = "positive"
    walk_stats = {("x", -1.0): "inv", ("log", 1.0): "log"}
    scale_stat = ("inv", -1.0)

    @classmethod
    def stats(cls, x: Array) -> Natural:
        return {"inv": 1.0 / x, "log": jnp.log(x)}

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        return jnp.zeros(jnp.shape(x), as_float_arrays(x)[0].dtype)

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        a, b = -natural["log"] - 1.0, -natural["inv"]
        return gammaln(a) - a * jnp.log(b)

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        a, b = -natural["log"] - 1.0, -natural["inv"]
        return {"inv": a / b, "log": jnp.log(b) - digamma(a)}

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        a = gamma_shape_from_gap(jnp.log(mean["inv"]) + mean["log"])
        return {"inv": -a / mean["inv"], "log": -a - 1.0}

    @classmethod
    def mode(cls, natural: Mapping[str, Array]) -> tuple[Array, Array]:
        """``b / (a + 1) = eta_inv / eta_log``, valid where both are negative."""
        e_inv, e_log = natural["inv"], natural["log"]
        valid = (e_inv < 0) & (e_log < 0) & jnp.isfinite(e_inv) & jnp.isfinite(e_log)
        x = jnp.where(valid, e_inv, 1.0) / jnp.where(valid, e_log, 1.0)
        return x, jnp.broadcast_to(valid, jnp.shape(x))

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        a, b = -natural["log"] - 1.0, -natural["inv"]
        return (a > 0) & (b > 0) & jnp.isfinite(a) & jnp.isfinite(b)

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        return (mean["inv"] > 0) & (jnp.log(mean["inv"]) + mean["log"] > 0)

    @classmethod
    def from_shape_scale(cls, concentration: Array, scale: Array) -> "InverseGamma":
        """``InverseGamma(concentration, scale)``; both must be positive and finite."""
        a, b = as_float_arrays(concentration, scale)
        for name, v in (("concentration", a), ("scale", b)):
            check_param("InverseGamma.from_shape_scale", name, v,
                        jnp.isfinite(v) & (v > 0), "positive and finite")
        a, b = jnp.broadcast_arrays(a, b)
        return cls({"inv": -b, "log": -a - 1.0})

    @property
    def concentration(self) -> Array:
        return -self.natural["log"] - 1.0

    @property
    def scale(self) -> Array:
        return -self.natural["inv"]

    def mean(self) -> Array:
        """``b / (a - 1)`` for ``a > 1``, else ``inf``."""
        a, b = self.concentration, self.scale
        ok = a > 1
        return jnp.where(ok, b / jnp.where(ok, a - 1.0, 1.0), jnp.inf)

    def variance(self) -> Array:
        """``b^2 / ((a - 1)^2 (a - 2))`` for ``a > 2``, else ``inf``."""
        a, b = self.concentration, self.scale
        ok = a > 2
        am1 = jnp.where(ok, a - 1.0, 2.0)
        return jnp.where(ok, b * b / (am1 * am1 * (am1 - 1.0)), jnp.inf)

    def quantile(self, q: Array) -> Array:
        """``scale / g`` with ``g`` the Gamma(a, 1) quantile of the upper tail ``q``."""
        return self.scale / gamma_quantile(self.concentration, self._quantile_shape(q),
                                           upper=True)

    def usual_params(self) -> dict[str, Array]:
        return {"concentration": self.concentration, "scale": self.scale}

    def log_prob(self, x: Array) -> Array:
        a, b = self.concentration, self.scale
        return a * jnp.log(b) - gammaln(a) - (a + 1.0) * jnp.log(x) - b / x

    def entropy(self) -> Array:
        a = self.concentration
        return gamma_entropy_core(a) + jnp.log(self.scale) - 2.0 * digamma(a)

    def kl(self, other: "InverseGamma") -> Array:
        """Equal to the KL between the gamma laws of ``1/x`` (KL is bijection-invariant)."""
        self._check_same_family(other)
        return gamma_kl(self.concentration, self.scale, other.concentration, other.scale)

    def expected_log_base_measure(self) -> Array:
        return self._constant(0.0)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """``scale / g`` with ``g ~ Gamma(a, 1)`` (implicit reparameterization)."""
        shape = tuple(sample_shape) + self.batch_shape
        a = jnp.broadcast_to(self.concentration, shape)
        return self.scale / jax.random.gamma(key, a, shape, self.dtype)

    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "InverseGamma":
        """Shape 2, scale 1 (mean 1)."""
        shape = info.support.shape
        return cls.from_shape_scale(jnp.full(shape, 2.0, dtype), jnp.ones(shape, dtype))

    def to_unconstrained(self) -> dict[str, Array]:
        """``{"log_concentration": log a, "log_mean_inverse": log(a / b)}``: shape and
        ``E[1/x]`` (orthogonal in the Fisher metric, as for the Gamma)."""
        return {"log_concentration": jnp.log(self.concentration),
                "log_mean_inverse": jnp.log(self.concentration) - jnp.log(self.scale)}

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "InverseGamma":
        la, lm = jnp.broadcast_arrays(u["log_concentration"], u["log_mean_inverse"])
        return cls({"inv": -jnp.exp(la - lm), "log": -jnp.exp(la) - 1.0})
