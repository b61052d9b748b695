"""Categorical distribution as an (over-parameterized) exponential family."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from vijax.families import start_random
from vijax.families.base import (Array, ExponentialFamily, Natural, as_float_arrays,
                                 check_param, family)
from vijax.families.quantiles import class_quantile


def _safe_log_probs(p: Array) -> Array:
    """``log p`` with zeros mapped to ``log(tiny)`` so logits stay finite."""
    return jnp.log(jnp.maximum(p, jnp.finfo(p.dtype).tiny))


@family
class Categorical(ExponentialFamily):
    """Categorical distribution over ``K`` classes; samples are integer indices.

    Statistics ``T(x) = {"onehot": one_hot(x, K)}`` (shape ``[..., K]``); natural
    parameters ``eta = {"onehot": logits}`` (defined up to an additive constant);
    ``log h(x) = 0``; log-normalizer

    .. math:: A(\\eta) = \\log \\sum_k \\exp(\\eta_k).

    Mean parameters are the probabilities ``softmax(logits)``. Probabilities of zero
    (and logits of ``-inf``) are stored as the finite logit ``log(tiny)`` of the dtype
    (``tiny`` = smallest normal number), so every quantity stays finite.

    Example:
        >>> import jax.numpy as jnp
        >>> q = Categorical.from_probs(jnp.array([0.25, 0.75]))
        >>> q.probs.round(4).tolist()
        [0.25, 0.75]
    """

    stat_names = ("onehot",)
    stat_event_ndims = {"onehot": 1}
    event_ndim = 0
    support = "categorical"
    walk_stats = {("onehot", 1.0): "onehot"}
    natural_domain_is_real = True

    @classmethod
    def stats(cls, x: Array, num_classes: int | None = None) -> Natural:
        """``{"onehot": one_hot(x, num_classes)}``; ``num_classes`` is required."""
        if num_classes is None:
            raise ValueError("Categorical.stats needs num_classes (the number of classes "
                             "K), e.g. Categorical.stats(x, num_classes=q.num_classes).")
        return {"onehot": jax.nn.one_hot(_as_index(x), num_classes)}

    @classmethod
    def point_stats(cls, x: Array, support) -> Natural:
        """One-hot over the support's ``num_categories`` classes."""
        return {"onehot": jax.nn.one_hot(x, support.num_categories,
                                         dtype=jnp.zeros(()).dtype)}

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        return jnp.zeros(jnp.shape(x), jnp.result_type(float))

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        return jax.nn.logsumexp(natural["onehot"], -1)

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        return {"onehot": jax.nn.softmax(natural["onehot"], -1)}

    @classmethod
    def mean_and_log_normalizer(cls, natural: Mapping[str, Array]) -> tuple[Natural, Array]:
        """Softmax and log-sum-exp from one pass of exponentials."""
        logits = natural["onehot"]
        top = jax.lax.stop_gradient(jnp.max(logits, -1, keepdims=True))
        ex = jnp.exp(logits - top)
        total = jnp.sum(ex, -1, keepdims=True)
        return {"onehot": ex / total}, (jnp.log(total) + top)[..., 0]

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        """Normalized logits ``log p`` (the representative with ``A(eta) = 0``)."""
        return {"onehot": _safe_log_probs(mean["onehot"])}

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        return jnp.all(jnp.isfinite(natural["onehot"]), -1)

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        p = mean["onehot"]
        return jnp.all(p >= 0, -1) & (jnp.abs(jnp.sum(p, -1) - 1.0) <= _sum_tol(p))

    @classmethod
    def from_probs(cls, probs: Array) -> "Categorical":
        """From probabilities ``[..., K]`` in ``[0, 1]`` summing to 1 (within ``10 K eps``)."""
        (p,) = as_float_arrays(probs)
        check_param("Categorical.from_probs", "probs", p,
                    (p >= 0) & (p <= 1), "in [0, 1]")
        check_param("Categorical.from_probs", "sum(probs, -1)", jnp.sum(p, -1),
                    jnp.abs(jnp.sum(p, -1) - 1.0) <= _sum_tol(p), "1",
                    "Normalize them, e.g. probs / probs.sum(-1, keepdims=True), or use "
                    "Categorical.from_logits.")
        return cls({"onehot": _safe_log_probs(p)})

    @classmethod
    def from_logits(cls, logits: Array) -> "Categorical":
        """From logits ``[..., K]`` (unnormalized); ``-inf`` becomes ``log(tiny)``."""
        (l,) = as_float_arrays(logits)
        check_param("Categorical.from_logits", "logits", l,
                    ~jnp.isnan(l) & (l < jnp.inf), "finite or -inf")
        floor = jnp.log(jnp.finfo(l.dtype).tiny)
        return cls({"onehot": jnp.where(l == -jnp.inf, floor, l)})

    @property
    def logits(self) -> Array:
        """The stored (unnormalized) logits."""
        return self.natural["onehot"]

    @property
    def probs(self) -> Array:
        return jax.nn.softmax(self.natural["onehot"], -1)

    @property
    def num_classes(self) -> int:
        return self.natural["onehot"].shape[-1]

    def mean(self) -> Array:
        """The class probabilities (the mean of the one-hot statistic)."""
        return self.probs

    def variance(self) -> Array:
        """``p (1 - p)``, the variance of each one-hot coordinate."""
        p = self.probs
        return p * (1.0 - p)

    def quantile(self, q: Array) -> Array:
        """The smallest class index ``k`` with ``p_0 + ... + p_k >= q`` (classes in
        index order), as a float of the parameters' dtype; NaN outside ``[0, 1]``."""
        return class_quantile(self.probs, self._quantile_shape(q))

    def usual_params(self) -> dict[str, Array]:
        return {"probs": self.probs}

    def log_prob(self, x: Array) -> Array:
        """``log p[x]`` for integer indices ``x`` (shape ``sample + batch``)."""
        log_p = jax.nn.log_softmax(self.natural["onehot"], -1)
        onehot = jax.nn.one_hot(_as_index(x), self.num_classes, dtype=log_p.dtype)
        return jnp.sum(onehot * log_p, -1)

    def expected_log_base_measure(self) -> Array:
        return self._constant(0.0)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """Integer class indices of shape ``sample_shape + batch_shape`` (not
        reparameterizable)."""
        shape = tuple(sample_shape) + self.batch_shape
        return jax.random.categorical(key, self.natural["onehot"], -1, shape)

    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "Categorical":
        """Random probabilities, ``Dirichlet(1, ..., 1)`` drawn as normalized ``Exp(1)``
        draws (the Gamma sampler behind ``jax.random.dirichlet`` is slow for millions
        of rows); symmetry breaking for mixtures."""
        e = start_random.exponential(key, info.support.value_shape
                                     + (info.support.num_categories,), dtype)
        return cls.from_probs(e / jnp.sum(e, -1, keepdims=True))

    @classmethod
    def from_user_value(cls, value) -> "Categorical":
        """From probabilities ``[..., K]``."""
        return cls.from_probs(jnp.asarray(value))

    def to_unconstrained(self) -> dict[str, Array]:
        """``{"logits": logits}``."""
        return {"logits": self.natural["onehot"]}

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "Categorical":
        return cls({"onehot": u["logits"]})


def _as_index(x: Array) -> Array:
    """Class indices as integers (float-valued indices such as 2.0 are accepted)."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.integer) else x.astype(jnp.int32)


def _sum_tol(p: Array) -> Array:
    return 10.0 * p.shape[-1] * jnp.finfo(p.dtype).eps
