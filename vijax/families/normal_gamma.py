"""Normal-Gamma: the joint factor ``q(mu, tau) = q(mu | tau) q(tau)`` of a mean and its
precision, elementwise over a batch (used only for declared blocks, ``blocks=[["mu",
"tau"]]``), and the Student-t marginal of its mean."""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from vijax.families import start_random
from vijax.families.base import (Array, ExponentialFamily, Natural, as_float_arrays,
                                 check_param, family, format_array, register_fields)
from vijax.families.gamma import Gamma

_LOG_2PI = math.log(2.0 * math.pi)


@family
class NormalGamma(ExponentialFamily):
    """``tau ~ Gamma(a, b)``, ``mu | tau ~ N(m, 1/(kappa tau))``, per element.

    Statistics ``T(mu, tau) = {"tau": tau, "log_tau": log tau, "tau_mu": tau mu,
    "tau_mu2": tau mu^2}`` (base measure 1 on ``R x (0, inf)``); natural parameters
    ``eta = (-b - kappa m^2/2, a - 1/2, kappa m, -kappa/2)`` and

    .. math:: A(\\eta) = \\tfrac12\\log(2\\pi) - \\tfrac12\\log\\kappa + \\log\\Gamma(a)
              - a \\log b.

    Mean parameters ``E[tau] = a/b``, ``E[log tau] = digamma(a) - log b``,
    ``E[tau mu] = m a/b``, ``E[tau mu^2] = m^2 a/b + 1/kappa``. A value is the dict
    ``{"mean": mu, "precision": tau}`` (``sample``, ``mean``, ``mode``, ``log_prob``).
    Marginals: ``tau ~ Gamma(a, b)`` and ``mu ~ StudentT(2a, m, sqrt(b/(a kappa)))``.

    Example:
        >>> q = NormalGamma.from_params(1.0, 2.0, 3.0, 4.0)
        >>> [round(float(v), 4) for v in q.mean().values()]
        [1.0, 0.75]
    """

    stat_names = ("tau", "log_tau", "tau_mu", "tau_mu2")
    stat_event_ndims = {"tau": 0, "log_tau": 0, "tau_mu": 0, "tau_mu2": 0}
    event_ndim = 0
    support = "real"  # of the mean; the precision is positive (see ``role_supports``)
    #: block roles: the member latents' supports and mean-field families
    roles = ("mean", "precision")
    role_supports = {"mean": "real", "precision": "positive"}
    role_families = {"mean": "Normal", "precision": "Gamma"}
    #: ``{(role, mean-field statistic), ...} -> joint statistic`` of a term's block atoms,
    #: all on one element (``elementwise``)
    joint_stats = {
        frozenset({("precision", "x")}): "tau",
        frozenset({("precision", "log")}): "log_tau",
        frozenset({("precision", "x"), ("mean", "x")}): "tau_mu",
        frozenset({("precision", "x"), ("mean", "x2")}): "tau_mu2",
    }
    joint_kind = "elementwise"
    requirement = ("mu | tau ~ N(m, 1/(kappa tau)): every term with the mean is "
                   "multiplied by the precision of the same element (tau*mu, tau*mu^2), "
                   "and the precision appears as tau and log(tau)")

    # ------------------------------------------------------------ core
    @staticmethod
    def _parts(natural: Mapping[str, Array]):
        """``(m, kappa, a, b)``."""
        kappa = -2.0 * natural["tau_mu2"]
        m = natural["tau_mu"] / kappa
        a = natural["log_tau"] + 0.5
        b = -natural["tau"] - 0.5 * natural["tau_mu"] * m
        return m, kappa, a, b

    @classmethod
    def stats(cls, x) -> Natural:
        mu, tau = as_float_arrays(x["mean"], x["precision"])
        return {"tau": tau, "log_tau": jnp.log(tau), "tau_mu": tau * mu,
                "tau_mu2": tau * mu * mu}

    @classmethod
    def log_base_measure(cls, x) -> Array:
        mu, tau = as_float_arrays(x["mean"], x["precision"])
        return jnp.zeros(jnp.broadcast_shapes(mu.shape, tau.shape), mu.dtype)

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        _, kappa, a, b = cls._parts(natural)
        return 0.5 * _LOG_2PI - 0.5 * jnp.log(kappa) + gammaln(a) - a * jnp.log(b)

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        m, kappa, a, b = cls._parts(natural)
        et = a / b
        return {"tau": et, "log_tau": digamma(a) - jnp.log(b), "tau_mu": m * et,
                "tau_mu2": m * m * et + 1.0 / kappa}

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        g = Gamma.natural_from_mean({"x": mean["tau"], "log": mean["log_tau"]})
        m = mean["tau_mu"] / mean["tau"]
        kappa = 1.0 / (mean["tau_mu2"] - m * mean["tau_mu"])
        return {"tau": g["x"] - 0.5 * kappa * m * m, "log_tau": g["log"] + 0.5,
                "tau_mu": kappa * m, "tau_mu2": -0.5 * kappa}

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        m, kappa, a, b = cls._parts(natural)
        return (kappa > 0) & (a > 0) & (b > 0) & jnp.isfinite(m) & jnp.isfinite(b)

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        t = mean["tau"]
        return ((t > 0) & (mean["log_tau"] < jnp.log(t))
                & (mean["tau_mu2"] * t > mean["tau_mu"] ** 2))

    @classmethod
    def mode(cls, natural: Mapping[str, Array]):
        """Joint mode: ``mu = m``, ``tau = (a - 1/2)/b``; valid where ``a > 1/2``."""
        m, kappa, a, b = cls._parts(natural)
        valid = (a > 0.5) & (kappa > 0) & (b > 0)
        return {"mean": m, "precision": (a - 0.5) / b}, valid

    # ------------------------------------------------------------ usual params
    @classmethod
    def from_params(cls, loc, kappa, concentration, rate) -> "NormalGamma":
        """``NG(m, kappa, a, b)``: ``tau ~ Gamma(a, b)``, ``mu | tau ~ N(m, 1/(kappa tau))``."""
        loc, kappa, a, b = as_float_arrays(loc, kappa, concentration, rate)
        where = "NormalGamma.from_params"
        check_param(where, "loc", loc, jnp.isfinite(loc), "finite")
        for name, v in (("kappa", kappa), ("concentration", a), ("rate", b)):
            check_param(where, name, v, jnp.isfinite(v) & (v > 0), "finite and > 0")
        loc, kappa, a, b = jnp.broadcast_arrays(loc, kappa, a, b)
        return cls({"tau": -b - 0.5 * kappa * loc * loc, "log_tau": a - 0.5,
                    "tau_mu": kappa * loc, "tau_mu2": -0.5 * kappa})

    def params(self):
        """``(m, kappa, a, b)``."""
        return self._parts(self.natural)

    def usual_params(self) -> dict[str, Array]:
        m, kappa, a, b = self.params()
        return {"loc": m, "kappa": kappa, "concentration": a, "rate": b}

    def marginal_precision(self) -> Gamma:
        """``q(tau) = Gamma(a, b)`` (exact)."""
        _, _, a, b = self.params()
        return Gamma({"x": -b, "log": a - 1.0})

    def marginal_mean(self) -> "StudentT":
        """``q(mu) = StudentT(2a, m, sqrt(b / (a kappa)))`` (exact)."""
        m, kappa, a, b = self.params()
        return StudentT(2.0 * a, m, jnp.sqrt(b / (a * kappa)))

    def marginals(self) -> dict:
        return {"mean": self.marginal_mean(), "precision": self.marginal_precision()}

    def mean(self) -> dict:
        """``{"mean": m, "precision": a/b}``."""
        m, _, a, b = self.params()
        return {"mean": m, "precision": a / b}

    def variance(self) -> dict:
        """Marginal variances: ``b/(kappa (a - 1))`` (inf for ``a <= 1``) and ``a/b^2``."""
        m, kappa, a, b = self.params()
        vm = jnp.where(a > 1, b / (kappa * jnp.where(a > 1, a - 1.0, 1.0)), jnp.inf)
        return {"mean": vm, "precision": a / (b * b)}

    def expected_log_base_measure(self) -> Array:
        return self._constant(0.0)

    def log_prob(self, x) -> Array:
        """``log q(mu, tau)`` of a value ``{"mean": mu, "precision": ...}``."""
        return self.inner(self.natural, self.stats(x)) - self.log_normalizer(self.natural)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> dict:
        """``tau ~ Gamma(a, b)``, then ``mu = m + eps / sqrt(kappa tau)``."""
        m, kappa, a, b = self.params()
        k1, k2 = jax.random.split(key)
        shape = tuple(sample_shape) + self.batch_shape
        tau = jax.random.gamma(k1, jnp.broadcast_to(a, shape), shape, self.dtype) / b
        mu = m + jax.random.normal(k2, shape, self.dtype) / jnp.sqrt(kappa * tau)
        return {"mean": mu, "precision": tau}

    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "NormalGamma":
        """Small random means (symmetry breaking), ``kappa = a = b = 1``."""
        shape = tuple(info.support.shape)
        ones = jnp.ones(shape, dtype)
        return cls.from_params(0.1 * start_random.normal(key, shape, dtype), ones, ones, ones)

    # ------------------------------------------------------------ gradient path
    def to_unconstrained(self) -> dict[str, Array]:
        """``{"loc": m, "log_kappa", "log_concentration", "log_mean": log(a/b)}``."""
        m, kappa, a, b = self.params()
        return {"loc": m, "log_kappa": jnp.log(kappa), "log_concentration": jnp.log(a),
                "log_mean": jnp.log(a) - jnp.log(b)}

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "NormalGamma":
        a = jnp.exp(u["log_concentration"])
        b = a * jnp.exp(-u["log_mean"])
        kappa = jnp.exp(u["log_kappa"])
        m = u["loc"]
        return cls({"tau": -b - 0.5 * kappa * m * m, "log_tau": a - 0.5,
                    "tau_mu": kappa * m, "tau_mu2": -0.5 * kappa})


@dataclasses.dataclass(frozen=True)
class StudentT:
    """Student-t ``t_nu(loc, scale)`` (elementwise): the marginal of a Normal-Gamma's
    mean. Not an exponential family: ``mean``, ``variance``, ``std``, ``sample``,
    ``log_prob``, ``quantile``-free (summaries draw from it)."""

    df: Array
    loc: Array
    scale: Array
    support = "real"

    @property
    def batch_shape(self):
        return jnp.broadcast_shapes(*(jnp.shape(v) for v in (self.df, self.loc, self.scale)))

    @property
    def dtype(self):
        return jnp.result_type(self.loc)

    def mean(self) -> Array:
        """``loc`` (undefined, NaN, for ``df <= 1``)."""
        return jnp.where(self.df > 1, self.loc, jnp.nan) * jnp.ones(self.batch_shape, self.dtype)

    def variance(self) -> Array:
        """``scale^2 df / (df - 2)`` (inf for ``df <= 2``)."""
        safe = jnp.where(self.df > 2, self.df - 2.0, 1.0)
        return jnp.where(self.df > 2, self.scale ** 2 * self.df / safe, jnp.inf)

    def std(self) -> Array:
        return jnp.sqrt(self.variance())

    def log_prob(self, x: Array) -> Array:
        return jax.scipy.stats.t.logpdf(x, self.df, self.loc, self.scale)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        shape = tuple(sample_shape) + self.batch_shape
        return self.loc + self.scale * jax.random.t(key, self.df, shape, self.dtype)

    def usual_params(self) -> dict:
        return {"df": self.df, "loc": self.loc, "scale": self.scale}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={format_array(v)}" for k, v in self.usual_params().items())
        return f"StudentT({inner})"


register_fields(StudentT, ["df", "loc", "scale"], [])
