"""Inverse CDFs that the families share.

JAX has ``ndtri`` but no ``gammaincinv`` or ``betaincinv``, so the Gamma and Beta
quantiles solve ``CDF(x) = q`` by a safeguarded Newton iteration in an unconstrained
coordinate (``t = log x`` for the Gamma, ``t = logit x`` for the Beta), bracketed so that
a step that leaves the bracket becomes a bisection; a fixed number of steps keeps it
jittable. Probabilities above 1/2 are matched through the survival function, which keeps
the upper tail accurate. Counts use a bisection over the integers.

At ``q = 0`` and ``q = 1`` the quantile is the support's end (0 or ``inf`` for positive
laws); probabilities outside ``[0, 1]`` give NaN.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import betainc, gammainc, gammaincc, gammaln

Array = jax.Array
_NUM_ITERS = 64


def _tails(q: Array, upper: bool) -> tuple[Array, Array]:
    """``(P(X <= x), P(X > x))`` targets from ``q`` (the lower tail unless ``upper``)."""
    return (1.0 - q, q) if upper else (q, 1.0 - q)


def solve_increasing(residual: Callable[[Array], tuple[Array, Array]], t0: Array,
                     lo: Array, hi: Array, num_iters: int = _NUM_ITERS) -> Array:
    """Root of an increasing ``residual(t) -> (r, dr/dt)`` inside ``[lo, hi]``.

    Newton steps that leave the current bracket (or are not finite) are replaced by
    bisection, so the iteration converges from any start inside the bracket.
    """
    def step(_, carry):
        t, lo, hi = carry
        r, dr = residual(t)
        below = r < 0
        lo, hi = jnp.where(below, t, lo), jnp.where(below, hi, t)
        t_new = t - r / dr
        ok = jnp.isfinite(t_new) & (t_new >= lo) & (t_new <= hi)
        return jnp.where(ok, t_new, 0.5 * (lo + hi)), lo, hi

    t0 = jnp.clip(t0, lo, hi)
    t, _, _ = jax.lax.fori_loop(0, num_iters, step, (t0, lo, hi))
    return t


def _edges(x: Array, q: Array, at_zero, at_one) -> Array:
    """Put the support's ends at ``q = 0`` and ``q = 1`` and NaN outside ``[0, 1]``."""
    x = jnp.where(q <= 0, at_zero, jnp.where(q >= 1, at_one, x))
    return jnp.where((q >= 0) & (q <= 1), x, jnp.nan)


def gamma_quantile(a: Array, q: Array, upper: bool = False) -> Array:
    """Quantile of ``Gamma(a, rate=1)``: ``x`` with ``P(X <= x) = q``, or with
    ``P(X > x) = q`` when ``upper`` (accurate for tiny ``q`` on either side)."""
    a, q = jnp.broadcast_arrays(a, q)
    p_raw, pc = _tails(q, upper)
    inside = (q > 0) & (q < 1)
    p, pc = jnp.where(inside, p_raw, 0.5), jnp.where(inside, pc, 0.5)
    use_upper = p > 0.5
    log_norm = gammaln(a)

    def residual(t):
        x = jnp.exp(t)
        r = jnp.where(use_upper, pc - gammaincc(a, x), gammainc(a, x) - p)
        return r, jnp.exp(a * t - x - log_norm)

    finfo = jnp.finfo(q.dtype)
    lo = jnp.full_like(q, jnp.log(finfo.tiny))
    hi = jnp.full_like(q, jnp.log(finfo.max) - 1.0)
    # Start: Wilson-Hilferty for large shapes, the small-x power law otherwise.
    z = jax.scipy.special.ndtri(p)
    base = 1.0 - 1.0 / (9.0 * a) + z / (3.0 * jnp.sqrt(a))
    t_wh = jnp.log(a) + 3.0 * jnp.log(jnp.maximum(base, 1e-3))
    t_small = (jnp.log(p) + gammaln(a + 1.0)) / a
    t0 = jnp.where((a > 1.0) & (base > 0.1), t_wh, t_small)
    x = jnp.exp(solve_increasing(residual, t0, lo, hi))
    return _edges(x, p_raw, 0.0, jnp.inf)


def beta_quantile(a: Array, b: Array, q: Array) -> Array:
    """Quantile of ``Beta(a, b)`` at lower-tail probability ``q``."""
    a, b, q = jnp.broadcast_arrays(a, b, q)
    inside = (q > 0) & (q < 1)
    p = jnp.where(inside, q, 0.5)
    use_upper = p > 0.5
    log_norm = gammaln(a) + gammaln(b) - gammaln(a + b)

    def residual(t):
        x, xc = jax.nn.sigmoid(t), jax.nn.sigmoid(-t)
        r = jnp.where(use_upper, (1.0 - p) - betainc(b, a, xc), betainc(a, b, x) - p)
        log_x, log_xc = jax.nn.log_sigmoid(t), jax.nn.log_sigmoid(-t)
        return r, jnp.exp(a * log_x + b * log_xc - log_norm)

    bound = -jnp.log(jnp.finfo(q.dtype).tiny)
    lo, hi = jnp.full_like(q, -bound), jnp.full_like(q, bound)
    mean = a / (a + b)
    t0 = jnp.log(mean) - jnp.log1p(-mean)
    x = jax.nn.sigmoid(solve_increasing(residual, t0, lo, hi))
    return _edges(x, q, 0.0, 1.0)


def count_quantile(cdf_at_least: Callable[[Array], Array], q: Array, upper_bound: Array,
                   num_iters: int = _NUM_ITERS) -> Array:
    """Smallest integer ``k >= 0`` with ``CDF(k) >= q``, by bisection on ``[-1, bound]``.

    ``cdf_at_least(k)`` says (elementwise) whether ``CDF(k) >= q``; it must hold at
    ``upper_bound`` (a float array of integers broadcastable with ``q``). ``q = 0``
    gives 0 (the smallest value), ``q = 1`` gives ``inf``.
    """
    hi = jnp.broadcast_to(upper_bound, q.shape).astype(q.dtype)
    lo = jnp.full_like(hi, -1.0)

    def step(_, carry):
        lo, hi = carry
        mid = jnp.floor(0.5 * (lo + hi))
        ok = (mid >= 0) & cdf_at_least(jnp.maximum(mid, 0.0))
        return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

    _, k = jax.lax.fori_loop(0, num_iters, step, (lo, hi))
    return _edges(k, q, 0.0, jnp.inf)


def poisson_quantile(rate: Array, q: Array) -> Array:
    """Smallest count ``k`` with ``P(X <= k) >= q`` for ``X ~ Poisson(rate)``."""
    rate, q = jnp.broadcast_arrays(rate, q)
    p = jnp.where((q > 0) & (q < 1), q, 0.5)

    def cdf_at_least(k):
        # P(X <= k) = Q(k + 1, rate); P(X > k) = P(k + 1, rate) (the upper tail).
        return jnp.where(p > 0.5, gammainc(k + 1.0, rate) <= 1.0 - p,
                         gammaincc(k + 1.0, rate) >= p)

    bound = jnp.ceil(rate + 40.0 * jnp.sqrt(rate) + 60.0)
    return count_quantile(cdf_at_least, q, bound)


def class_quantile(probs: Array, q: Array) -> Array:
    """The smallest class index ``k`` with ``p_0 + ... + p_k >= q`` (classes in index
    order; ``probs`` ``[..., K]``, ``q`` broadcastable to its leading axes), as a float of
    ``q``'s dtype; NaN outside ``[0, 1]``."""
    cdf = jnp.cumsum(probs, -1)
    k = jnp.sum(cdf < q[..., None], -1)
    x = jnp.minimum(k, probs.shape[-1] - 1).astype(q.dtype)
    return jnp.where((q >= 0) & (q <= 1), x, jnp.nan)
