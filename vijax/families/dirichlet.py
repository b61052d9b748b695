"""Dirichlet distribution as an exponential family, and its mean-to-natural solver."""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln, xlogy

from vijax.families.base import (Array, ExponentialFamily, Natural, as_float_arrays,
                                 check_param, family)
from vijax.families.gamma import trigamma
from vijax.families.quantiles import beta_quantile

_EULER = 0.5772156649015329
# Offsets (in log total concentration) searched for a sign change before Newton.
_BRACKET_OFFSETS = (-32.0, -16.0, -8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0, 16.0,
                    32.0)


def inv_digamma(y: Array, num_iters: int = 6) -> Array:
    """Solve ``digamma(x) = y`` for ``x > 0`` (Minka's start, then Newton)."""
    x = jnp.where(y >= -2.22, jnp.exp(jnp.minimum(y, 80.0)) + 0.5,
                  -1.0 / (jnp.minimum(y, -2.22) + _EULER))
    def newton(_, x):
        x_new = x - (digamma(x) - y) / trigamma(x)
        return jnp.maximum(x_new, 0.1 * x)   # digamma is concave: guard the first step
    return jax.lax.fori_loop(0, num_iters, newton, x)


def _components(log_total: Array, mean_log: Array):
    """alpha_k(s) = inv_digamma(digamma(s) + E[log x_k]) for s = exp(log_total)."""
    s = jnp.exp(log_total)
    alpha = inv_digamma(digamma(s)[..., None] + mean_log)
    return s, alpha


def _excess(log_total: Array, mean_log: Array) -> Array:
    """H(u) = log(sum_k alpha_k(e^u)) - u: strictly decreasing, zero at the solution."""
    _, alpha = _components(log_total, mean_log)
    return jnp.log(jnp.sum(alpha, -1)) - log_total


@functools.partial(jax.jit, static_argnames=("num_iters",))
def concentration_from_mean_log(mean_log: Array, num_iters: int = 12) -> Array:
    """Dirichlet concentrations ``alpha`` with ``digamma(alpha) - digamma(sum alpha) = m``.

    The K-dimensional problem reduces to one dimension in the total ``s = sum alpha``
    (Minka, "Estimating a Dirichlet distribution", 2000): ``alpha_k(s) =
    digamma^{-1}(digamma(s) + m_k)`` and ``H(u) = log sum_k alpha_k(e^u) - u`` is strictly
    decreasing in ``u = log s`` (since ``x trigamma(x)`` decreases). A fixed grid of
    offsets brackets the root, then ``num_iters`` safeguarded Newton/bisection steps
    refine it; one final K-dimensional Newton step (Minka's diagonal-plus-rank-one
    Hessian) polishes the answer and carries the gradient w.r.t. ``m``. Jittable.

    Args:
        mean_log: ``E[log x]``, shape ``[..., K]``, entries < 0 with
            ``sum_k exp(m_k) < 1``.
    """
    m = jax.lax.stop_gradient(mean_log)
    k = m.shape[-1]
    # Large-s asymptotics: 1 - sum exp(m_k) ~ (K - 1) / (2 s).
    gap = jnp.maximum(-jnp.expm1(jax.nn.logsumexp(m, -1)), jnp.finfo(m.dtype).eps)
    u0 = jnp.clip(jnp.log((k - 1) / (2.0 * gap) + 1e-3), -30.0, 30.0)
    offsets = jnp.asarray(_BRACKET_OFFSETS, m.dtype)
    grid = u0[..., None] + offsets                                    # [..., G]
    h_grid = _excess(grid, m[..., None, :])              # [..., G]
    positive = h_grid > 0
    lo = jnp.max(jnp.where(positive, grid, u0[..., None] - 64.0), -1)
    hi = jnp.min(jnp.where(positive, u0[..., None] + 64.0, grid), -1)

    def safeguarded_newton(_, carry):
        u, lo, hi = carry
        s, alpha = _components(u, m)
        total = jnp.sum(alpha, -1)
        h = jnp.log(total) - u
        dh = s * trigamma(s) * jnp.sum(1.0 / trigamma(alpha), -1) / total - 1.0
        lo = jnp.where(h > 0, u, lo)
        hi = jnp.where(h > 0, hi, u)
        u_newton = u - h / dh
        inside = (u_newton >= lo) & (u_newton <= hi)
        return jnp.where(inside, u_newton, 0.5 * (lo + hi)), lo, hi

    u, _, _ = jax.lax.fori_loop(0, num_iters, safeguarded_newton, (0.5 * (lo + hi), lo, hi))
    _, alpha = _components(u, m)
    return _newton_step(jax.lax.stop_gradient(alpha), mean_log)


def _newton_step(alpha: Array, mean_log: Array) -> Array:
    """One Newton step for ``digamma(alpha) - digamma(alpha_0) = m`` (Hessian is
    ``-diag(trigamma(alpha)) + trigamma(alpha_0) 1 1^T``, inverted in O(K))."""
    total = jnp.sum(alpha, -1, keepdims=True)
    g = mean_log - digamma(alpha) + digamma(total)
    q = -trigamma(alpha)
    z = trigamma(total)
    b = jnp.sum(g / q, -1, keepdims=True) / (1.0 / z + jnp.sum(1.0 / q, -1, keepdims=True))
    step = (g - b) / q
    new = alpha - step
    ok = jnp.all(new > 0, -1, keepdims=True)
    return jnp.where(ok, new, alpha + jax.lax.stop_gradient(step) - step)


def dirichlet_log_normalizer(alpha: Array) -> Array:
    """``sum_k lgamma(alpha_k) - lgamma(sum_k alpha_k)`` (over the last axis)."""
    return jnp.sum(gammaln(alpha), -1) - gammaln(jnp.sum(alpha, -1))


@family
class Dirichlet(ExponentialFamily):
    """Dirichlet distribution with concentration ``alpha`` (last axis, K >= 2).

    Statistics ``T(x) = {"log": log x}`` (shape ``[..., K]``); natural parameters
    ``eta = {"log": alpha - 1}``; ``log h(x) = 0``; log-normalizer

    .. math::

        A(\\eta) = \\sum_k \\log\\Gamma(\\alpha_k) - \\log\\Gamma(\\textstyle\\sum_k \\alpha_k).

    Mean parameters ``digamma(alpha) - digamma(alpha_0)``; the inverse is
    :func:`concentration_from_mean_log`.

    Example:
        >>> import jax.numpy as jnp
        >>> q = Dirichlet.from_concentration(jnp.array([1.0, 3.0]))
        >>> q.mean().tolist()
        [0.25, 0.75]
    """

    stat_names = ("log",)
    stat_event_ndims = {"log": 1}
    event_ndim = 1
    support = "simplex"
    walk_stats = {("log", 1.0): "log"}
    count_stats = ("log",)

    @classmethod
    def stats(cls, x: Array) -> Natural:
        return {"log": jnp.log(x)}

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        return jnp.zeros(jnp.shape(x)[:-1], as_float_arrays(x)[0].dtype)

    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        return dirichlet_log_normalizer(natural["log"] + 1.0)

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        alpha = natural["log"] + 1.0
        return {"log": digamma(alpha) - digamma(jnp.sum(alpha, -1, keepdims=True))}

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        return {"log": concentration_from_mean_log(mean["log"]) - 1.0}

    @classmethod
    def mode(cls, natural: Mapping[str, Array]) -> tuple[Array, Array]:
        """``(alpha - 1) / sum(alpha - 1) = eta / sum(eta)``, valid where every
        ``eta_k > 0`` (the maximizer of ``sum_k eta_k log x_k`` on the simplex)."""
        eta = natural["log"]
        valid = jnp.all((eta > 0) & jnp.isfinite(eta), -1, keepdims=True)
        e = jnp.where(valid, eta, 1.0)
        x = e / jnp.sum(e, -1, keepdims=True)
        return x, jnp.broadcast_to(valid, jnp.shape(x))

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        alpha = natural["log"] + 1.0
        return jnp.all((alpha > 0) & jnp.isfinite(alpha), -1)

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        return jax.nn.logsumexp(mean["log"], -1) < 0

    @classmethod
    def from_concentration(cls, concentration: Array) -> "Dirichlet":
        """``Dirichlet(concentration)``; entries positive and finite, K >= 2."""
        (alpha,) = as_float_arrays(concentration)
        if alpha.ndim < 1 or alpha.shape[-1] < 2:
            raise ValueError("Dirichlet.from_concentration: concentration needs a last "
                             f"axis of size >= 2, got shape {alpha.shape}.")
        check_param("Dirichlet.from_concentration", "concentration", alpha,
                    jnp.isfinite(alpha) & (alpha > 0), "positive and finite")
        return cls({"log": alpha - 1.0})

    @property
    def concentration(self) -> Array:
        return self.natural["log"] + 1.0

    def mean(self) -> Array:
        alpha = self.concentration
        return alpha / jnp.sum(alpha, -1, keepdims=True)

    def variance(self) -> Array:
        alpha = self.concentration
        total = jnp.sum(alpha, -1, keepdims=True)
        p = alpha / total
        return p * (1.0 - p) / (total + 1.0)

    def quantile(self, q: Array) -> Array:
        """Per-coordinate quantiles of the marginals ``x_k ~ Beta(alpha_k, alpha_0 -
        alpha_k)``, shape ``jnp.shape(q) + batch_shape + (K,)``."""
        alpha = self.concentration
        rest = jnp.sum(alpha, -1, keepdims=True) - alpha
        return beta_quantile(alpha, rest, self._quantile_shape(q, alpha.shape[-1:]))

    def usual_params(self) -> dict[str, Array]:
        return {"concentration": self.concentration}

    def log_prob(self, x: Array) -> Array:
        alpha = self.concentration
        return jnp.sum(xlogy(alpha - 1.0, x), -1) - dirichlet_log_normalizer(alpha)

    def expected_log_base_measure(self) -> Array:
        return self._constant(0.0)

    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """Normalized gamma draws, computed in log space (``softmax`` of log-gammas) so
        that small concentrations do not underflow to 0/0; reparameterized."""
        alpha = self.concentration
        shape = tuple(sample_shape) + alpha.shape
        log_g = jax.random.loggamma(key, jnp.broadcast_to(alpha, shape), shape, self.dtype)
        return jax.nn.softmax(log_g, -1)

    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "Dirichlet":
        """Uniform: all concentrations 1."""
        return cls.from_concentration(jnp.ones(info.support.value_shape, dtype))

    def to_unconstrained(self) -> dict[str, Array]:
        """``{"log_concentration": log alpha}``."""
        return {"log_concentration": jnp.log(self.concentration)}

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "Dirichlet":
        return cls({"log": jnp.expm1(u["log_concentration"])})
