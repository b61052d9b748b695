"""Bernoulli distribution as an exponential family."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from vijax.families import start_random
from vijax.families.base import (Array, ExponentialFamily, Natural, as_float_arrays,
                                 check_param, family)


def _logit_limit(dtype) -> Array:
    """Largest logit magnitude stored: ``-log(tiny)`` (probabilities 0 and 1 map here)."""
    return -jnp.log(jnp.finfo(dtype).tiny)


def _safe_logit(p: Array) -> Array:
    """``log p - log(1 - p)`` clipped to ``[-L, L]``, ``L = -log(tiny)``."""
    limit = _logit_limit(p.dtype)
    logit = jnp.log(p) - jnp.log1p(-p)
    return jnp.clip(jnp.where(jnp.isnan(logit), 0.0, logit), -limit, limit)


@family
class Bernoulli(ExponentialFamily):
    """Bernoulli distribution on ``{0, 1}``.

    Statistics ``T(x) = {"x": x}``; natural parameters ``eta = {"x": logit(p)}``;
    ``log h(x) = 0``; log-normalizer

    .. math:: A(\\eta) = \\log(1 + e^{\\eta}) = \\mathrm{softplus}(\\eta).

    Probabilities 0 and 1 (and infinite logits) are stored as the finite logits
    ``-/+ log(1/tiny)`` of the dtype, so every quantity stays finite. Samples are
    returned as 0.0/1.0 in the parameters' dtype.

    Example:
        >>> q = Bernoulli.from_probs(0.25)
        >>> round(float(q.variance()), 6)
        0.1875
    """

    stat_names = ("x",)
    stat_event_ndims = {"x": 0}
    event_ndim = 0
    support = "binary"
    walk_stats = {("x", 1.0): "x"}
    natural_domain_is_real = True

    @classmethod
    def stats(cls, x: Array) -> Natural:
        return {"x": x}

    @classmethod
    def point_stats(cls, x: Array, support) -> Natural:
        """``{"x": x}`` as floats of the default dtype."""
        return {"x": jnp.asarray(x).astype(jnp.zeros(()).dtype)}

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        return jnp.zeros(jnp.shape(x), as_float_arrays(x)[0].dtype)

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        return jax.nn.softplus(natural["x"])

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        return {"x": jax.nn.sigmoid(natural["x"])}

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        return {"x": _safe_logit(mean["x"])}

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        return jnp.isfinite(natural["x"])

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        return (mean["x"] >= 0) & (mean["x"] <= 1)

    @classmethod
    def from_probs(cls, probs: Array) -> "Bernoulli":
        """From ``P(x = 1)`` in ``[0, 1]``."""
        (p,) = as_float_arrays(probs)
        check_param("Bernoulli.from_probs", "probs", p, (p >= 0) & (p <= 1), "in [0, 1]")
        return cls({"x": _safe_logit(p)})

    @classmethod
    def from_logits(cls, logits: Array) -> "Bernoulli":
        """From ``logit P(x = 1)``; ``+/-inf`` are clipped to ``+/-log(1/tiny)``."""
        (l,) = as_float_arrays(logits)
        check_param("Bernoulli.from_logits", "logits", l, ~jnp.isnan(l), "not NaN")
        limit = _logit_limit(l.dtype)
        return cls({"x": jnp.where(jnp.isinf(l), jnp.sign(l) * limit, l)})

    @property
    def logits(self) -> Array:
        return self.natural["x"]

    @property
    def probs(self) -> Array:
        return jax.nn.sigmoid(self.natural["x"])

    def mean(self) -> Array:
        return self.probs

    def variance(self) -> Array:
        eta = self.natural["x"]
        return jax.nn.sigmoid(eta) * jax.nn.sigmoid(-eta)

    def quantile(self, q: Array) -> Array:
        """0 where ``q <= 1 - p``, else 1 (the smallest x with ``CDF(x) >= q``); NaN
        outside ``[0, 1]``."""
        q = self._quantile_shape(q)
        x = jnp.where(q <= jax.nn.sigmoid(-self.natural["x"]), 0.0, 1.0).astype(q.dtype)
        return jnp.where((q >= 0) & (q <= 1), x, jnp.nan)

    def usual_params(self) -> dict[str, Array]:
        return {"probs": self.probs}

    def expected_log_base_measure(self) -> Array:
        return self._constant(0.0)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """0.0/1.0 draws in the parameters' dtype (not reparameterizable)."""
        shape = tuple(sample_shape) + self.batch_shape
        return jax.random.bernoulli(key, self.probs, shape).astype(self.dtype)

    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "Bernoulli":
        """Random probabilities in (0.2, 0.8) (symmetry breaking)."""
        return cls.from_probs(start_random.uniform(key, info.support.shape, dtype, 0.2, 0.8))

    @classmethod
    def from_user_value(cls, value) -> "Bernoulli":
        """From probabilities ``P(x = 1)``."""
        return cls.from_probs(jnp.asarray(value))

    def to_unconstrained(self) -> dict[str, Array]:
        """``{"logit": eta}``."""
        return {"logit": self.natural["x"]}

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "Bernoulli":
        return cls({"x": u["logit"]})
