"""A discrete first-order Markov chain as an exponential family (the variational HMM's
factor over the hidden states)."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vijax.errors import InvalidParameterError, ModelSpecError
from vijax.families import start_random
from vijax.families.base import (Array, ExponentialFamily, Natural, as_float_arrays,
                                 check_param, family, is_tracer)
from vijax.families.quantiles import class_quantile


def _to_time_major(a: Array, nd: int) -> Array:
    """Move the time axis (``nd`` axes before the end) to the front."""
    return jnp.moveaxis(a, a.ndim - nd - 1, 0)


def _pair_layout(unary: Array, pair: Array) -> bool:
    """True for a homogeneous pair array (``[..., K, K]``: no time axis, the same at
    every step), False for a per-step one (``[..., T-1, K, K]``), given the unary
    ``[..., T, K]``. Decided from the full shapes: the pair carries exactly the unary's
    batch axes (a per-step pair shared by a batch of chains must be broadcast first, or
    it would read as a homogeneous one per chain); any other shape raises."""
    u, p = jnp.shape(unary), jnp.shape(pair)
    k = u[-1:]
    if p == u[:-2] + k + k:
        return True
    if p == u[:-2] + (u[-2] - 1,) + k + k:
        return False
    raise InvalidParameterError(
        f"MarkovChain: pair has shape {p}; with unary {u} it must be {u[:-2] + k + k} "
        f"(homogeneous) or {u[:-2] + (u[-2] - 1,) + k + k} (per step), with the unary's "
        "batch axes (broadcast a pair shared by several chains)")


def is_homogeneous(natural: Mapping[str, Array]) -> bool:
    """Whether the pair array has no time axis (:func:`_pair_layout`, from the shapes)."""
    return _pair_layout(natural["unary"], natural["pair"])


def _potentials(unary: Array, pair: Array):
    """Time-major unary ``[T, ..., K]``, the pair potential (time-major ``[T-1, ..., K,
    K]``, or ``[..., K, K]`` unchanged when homogeneous) and the homogeneity flag."""
    hom = _pair_layout(unary, pair)
    return _to_time_major(unary, 1), (pair if hom else _to_time_major(pair, 2)), hom


def _steps(p, hom, xs):
    """Scan inputs: ``xs`` alone (a homogeneous potential is closed over) or with the
    per-step potentials; and how a step reads ``(potential, x)`` from them."""
    if hom:
        return xs, lambda x: (p, x)
    return (p, xs), lambda x: x


def _log_forward(u: Array, p: Array, hom: bool) -> tuple[Array, Array]:
    """Normalized log forward messages ``alpha_t = log p(z_t | x_{<=t})`` (time-major
    ``[T, ..., K]``) and ``A = sum_t log n_t`` (the per-step normalizers)."""
    xs, read = _steps(p, hom, u[1:])
    z0 = jax.nn.logsumexp(u[0], -1, keepdims=True)
    _, (rest, zs) = jax.lax.scan(lambda a, x: _log_fwd_step(a, read(x)), u[0] - z0, xs)
    return jnp.concatenate([(u[0] - z0)[None], rest], 0), z0[..., 0] + jnp.sum(zs, 0)


def _log_fwd_step(alpha, x):
    p_t, u_t = x
    nxt = jax.nn.logsumexp(alpha[..., :, None] + p_t, axis=-2) + u_t
    z = jax.nn.logsumexp(nxt, -1, keepdims=True)
    return nxt - z, (nxt - z, z[..., 0])


def _log_forward_backward(unary: Array, pair: Array) -> tuple[Natural, Array]:
    """Forward-backward in log space, messages normalized per step (their rounding error
    does not grow with ``T``): short chains, the gradient path, and the fallback of the
    scaled pass. Marginals normalized per step."""
    u, p, hom = _potentials(unary, pair)
    alpha, log_z = _log_forward(u, p, hom)
    xs, read = _steps(p, hom, u[1:])

    def bwd(beta, x):
        p_t, u_next = read(x)
        prev = jax.nn.logsumexp(p_t + (u_next + beta)[..., None, :], axis=-1)
        prev = prev - jnp.max(prev, -1, keepdims=True)
        return prev, prev

    beta = jax.lax.scan(bwd, jnp.zeros_like(u[0]), xs, reverse=True)[1]
    beta = jnp.concatenate([beta, jnp.zeros_like(u[None, 0])], 0)
    uni = jax.nn.softmax(alpha + beta, -1)
    pw = alpha[:-1, ..., :, None] + p + (u[1:] + beta[1:])[..., None, :]
    pw = jnp.exp(pw - jax.nn.logsumexp(pw, (-2, -1), keepdims=True))
    pw = jnp.sum(pw, 0) if hom else jnp.moveaxis(pw, 0, -3)
    return {"unary": jnp.moveaxis(uni, 0, -2), "pair": pw}, log_z


#: chains at least this long use the scaled linear-space forward-backward (several times
#: faster per step on CPU; its ``lax.cond`` fallback doubles the compiled program, which
#: short chains do not repay)
SCALED_MIN_STEPS = 1024


def _matvec(a: Array, m: Array, left: bool) -> Array:
    """``a @ m`` (``left``) or ``m @ a`` over the last axes; for small ``K`` as ``K``
    broadcast multiply-adds, which XLA fuses into one loop (a batched dot per step is
    several times slower inside a scan on CPU)."""
    K = m.shape[-1]
    if K > 16:
        return jnp.einsum("...k,...kl->...l" if left else "...lk,...k->...l", a, m)
    if left:
        return sum(a[..., j, None] * m[..., j, :] for j in range(K))
    return sum(m[..., :, j] * a[..., j, None] for j in range(K))


def _scaled_forward_backward(unary: Array, pair: Array):
    """Forward-backward in linear space with a normalization per step (Rabiner 1989).

    With ``b_t = exp(u_t - max u_t)`` and ``M = exp(pair - max pair)`` (once when the
    potential is homogeneous, else per step): ``a_t = (a_{t-1} M) * b_t / n_t``,
    ``beta_{t-1} = M (b_t beta_t) / max``, ``log Z = sum_t (log n_t + max u_t) + sum of
    the pair shifts``; marginals ``gamma_t = a_t beta_t / s_t`` (``s_t`` their sum) and
    ``xi_t = a_t[k] M[k, l] w_{t+1}[l]``, ``w_t = b_t beta_t / (n_t s_t)`` (each ``xi_t``
    sums to 1). The backward scan forms the marginals as it goes; a homogeneous chain's
    pair statistic ``M * sum_t a_t w_{t+1}^T`` is accumulated in its carry: no ``[T, K,
    K]`` array. Returns ``((marginals, log Z), ok)``; ``ok`` is False where a message
    under- or overflowed (potentials whose range exceeds the dtype's exponent range)."""
    u, p, hom = _potentials(unary, pair)
    m = jnp.max(u, -1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    b = jnp.exp(u - m)
    c = jnp.max(p, (-2, -1), keepdims=True)
    c = jnp.where(jnp.isfinite(c), c, 0.0)
    mat = jnp.exp(p - c)
    n0 = jnp.sum(b[0], -1, keepdims=True)
    xs, read = _steps(mat, hom, b[1:])

    def fwd(a, x):
        m_t, b_t = read(x)
        a = _matvec(a, m_t, True) * b_t
        n = jnp.sum(a, -1, keepdims=True)
        return a / n, (a / n, n)

    alpha, n = jax.lax.scan(fwd, b[0] / n0, xs)[1]
    shift = (u.shape[0] - 1) * c[..., 0, 0] if hom else jnp.sum(c[..., 0, 0], 0)
    log_z = jnp.sum(m[..., 0], 0) + jnp.log(n0[..., 0]) + jnp.sum(jnp.log(n[..., 0]), 0) + shift
    alpha = jnp.concatenate([(b[0] / n0)[None], alpha], 0)

    def bwd(beta, x):
        (m_t, b_next), a_t, b_t = read(x[0]), x[1], x[2]
        beta = _matvec(b_next * beta, m_t, False)
        beta = beta / jnp.max(beta, -1, keepdims=True)
        g = a_t * beta
        s = jnp.sum(g, -1, keepdims=True)
        return beta, (g / s, b_t * beta / s)

    # (a scan reading four arrays per step, or carrying a [K, K] sum, ran 10-20x slower)
    uni, v = jax.lax.scan(bwd, jnp.ones_like(b[0]), (xs, alpha[:-1], b[:-1]), reverse=True)[1]
    s_last = jnp.sum(alpha[-1], -1, keepdims=True)
    uni = jnp.concatenate([uni, (alpha[-1] / s_last)[None]], 0)
    v = jnp.concatenate([v[1:], (b[-1] / s_last)[None]], 0) / n  # w_{t+1}, t < T-1
    if hom:
        pw = mat * jnp.einsum("t...k,t...l->...kl", alpha[:-1], v)
    else:
        pw = jnp.moveaxis(alpha[:-1, ..., :, None] * mat * v[..., None, :], 0, -3)
    # finite normalizers and finite marginals (a NaN or Inf anywhere reaches the sums)
    ok = jnp.all(jnp.isfinite(log_z)) & jnp.all(jnp.isfinite(jnp.sum(v, (0, -1))))
    return ({"unary": jnp.moveaxis(uni, 0, -2), "pair": pw}, log_z), ok


@jax.jit  # one program per shape for eager use (fit.posterior["z"].probs), not one per op
def forward_backward(natural: Mapping[str, Array]) -> tuple[Natural, Array]:
    """Unary marginals ``[..., T, K]``, the pair statistic's mean and ``A``: pairwise
    marginals ``p(z_t = k, z_{t+1} = l)`` ``[..., T-1, K, K]``, or their sum over ``t``
    ``[..., K, K]`` for a homogeneous pair potential (:func:`is_homogeneous`).

    Chains of ``T >= SCALED_MIN_STEPS`` run in linear space with scaling
    (:func:`_scaled_forward_backward`); where that under- or overflows, the log-space
    scans (:func:`_log_forward_backward`, used for shorter chains) give the answer
    instead (a ``lax.cond``)."""
    unary, pair = natural["unary"], natural["pair"]
    if unary.shape[-2] < SCALED_MIN_STEPS:
        return _log_forward_backward(unary, pair)
    (mu, log_z), ok = _scaled_forward_backward(unary, pair)
    return jax.lax.cond(ok, lambda: (mu, log_z), lambda: _log_forward_backward(unary, pair))


def _path_stats(oh: Array, summed: bool) -> Natural:
    """Statistics of one-hot paths ``[..., T, K]`` (the pair one summed over time when
    ``summed``)."""
    if summed:
        return {"unary": oh, "pair": jnp.einsum("...tk,...tl->...kl", oh[..., :-1, :],
                                                oh[..., 1:, :])}
    return {"unary": oh, "pair": oh[..., :-1, :, None] * oh[..., 1:, None, :]}


@family
class MarkovChain(ExponentialFamily):
    """First-order Markov chain over ``T`` states in ``{0, ..., K-1}`` (the last axis of
    a sample); samples are integer paths ``[..., T]``.

    Statistics ``T(z) = {"unary": one_hot(z_t) [..., T, K],
    "pair": one_hot(z_t) one_hot(z_{t+1})^T [..., T-1, K, K]}``; natural parameters
    ``eta = {"unary": log-potentials, "pair": log-potentials}`` (over-parameterized);
    ``log h(z) = 0``; log-normalizer the forward algorithm,

    .. math:: A(\\eta) = \\log \\sum_{z} \\exp\\Big(\\sum_t \\eta^u_t[z_t]
              + \\sum_{t<T-1} \\eta^p_t[z_t, z_{t+1}]\\Big).

    **Homogeneous chains.** A pair potential without the time axis, ``[..., K, K]`` (the
    same at every step, e.g. the variational HMM's ``E[log A]``), goes with the summed
    statistic ``sum_t one_hot(z_t) one_hot(z_{t+1})^T`` ``[..., K, K]`` (its mean is
    ``sum_t xi_t``): the compiler picks it when every transition term is the same at
    every step, and forward-backward then never forms a ``[T, K, K]`` array.

    Mean parameters are the unary and pairwise marginals (forward-backward, equal to
    ``grad A``); entropy ``A(eta) - <eta, mu>``; samples by forward filtering, backward
    sampling; :meth:`mode` is Viterbi. :attr:`pair_probs` are the per-step pairwise
    marginals in both layouts.

    Example:
        >>> import jax.numpy as jnp
        >>> q = MarkovChain({"unary": jnp.zeros((3, 2)), "pair": jnp.zeros((2, 2, 2))})
        >>> jnp.round(q.probs, 12).tolist()
        [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]
    """

    stat_names = ("unary", "pair")
    stat_event_ndims = {"unary": 2, "pair": 3}  # a homogeneous pair potential: 2
    event_ndim = 1
    support = "categorical"
    walk_stats = {("onehot", 1.0): "unary"}
    natural_domain_is_real = True
    #: for the compiler: the statistic holding ``one_hot(z_t) one_hot(z_{t+1})^T``
    chain_pair_stat = "pair"

    # ------------------------------------------------------------ statistics
    @classmethod
    def stats(cls, x: Array, num_classes: int | None = None, summed: bool = False) -> Natural:
        """``{"unary": one_hot(x), "pair": one_hot(x[:-1]) (x) one_hot(x[1:])}`` over
        the last axis (``summed``: the pair statistic summed over time); ``num_classes``
        is required."""
        if num_classes is None:
            raise ValueError("MarkovChain.stats needs num_classes (the number of states K)")
        return _path_stats(jax.nn.one_hot(jnp.asarray(x).astype(jnp.int32), num_classes),
                           summed)

    @classmethod
    def point_stats(cls, x: Array, support, summed: bool = False) -> Natural:
        """Statistics over the support's ``num_categories`` states (float default dtype)."""
        return _path_stats(jax.nn.one_hot(x, support.num_categories,
                                          dtype=jnp.zeros(()).dtype), summed)

    @classmethod
    def latent_stat_shape(cls, support, stat: str, homogeneous: bool = False) -> tuple:
        """Shape of statistic ``stat`` for a latent of ``support`` (time on its last
        axis): ``S + (K,)``, and ``S[:-1] + (T-1, K, K)`` (``S[:-1] + (K, K)`` summed
        over time for a ``homogeneous`` chain)."""
        S, K = tuple(support.shape), support.num_categories
        if stat == "unary":
            return S + (K,)
        return S[:-1] + ((K, K) if homogeneous else (S[-1] - 1, K, K))

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        return jnp.zeros(jnp.shape(x)[:-1], jnp.result_type(float))

    @classmethod
    def inner(cls, a: Mapping[str, Array], b: Mapping[str, Array]) -> Array:
        """``<a, b>`` over the event axes (2 or 3 for the pair statistic, by layout)."""
        nd = 2 if is_homogeneous(a) else 3
        return (jnp.sum(a["unary"] * b["unary"], (-2, -1))
                + jnp.sum(a["pair"] * b["pair"], tuple(range(-nd, 0))))

    # ------------------------------------------------------------ log-normalizer
    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        """The forward algorithm (a ``lax.scan`` of log-sum-exps)."""
        return _log_forward(*_potentials(natural["unary"], natural["pair"]))[1]

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        return forward_backward(natural)[0]

    @classmethod
    def mean_and_log_normalizer(cls, natural: Mapping[str, Array]) -> tuple[Natural, Array]:
        return forward_backward(natural)

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        """The representative with ``A = 0``: ``eta^u_t = log p_t``, ``eta^p_t =
        log p_{t,t+1} - log p_t - log p_{t+1}`` (a chain factorizes over its cliques).
        Per-step pairwise marginals only: a summed pair statistic does not determine them."""
        if is_homogeneous(mean):
            raise InvalidParameterError(
                "MarkovChain.natural_from_mean: the pair mean is summed over time "
                f"(shape {jnp.shape(mean['pair'])}); the natural parameters of a homogeneous "
                "chain have no closed form in its mean parameters. Pass per-step pairwise "
                "marginals [..., T-1, K, K]")
        tiny = jnp.finfo(jnp.result_type(mean["unary"])).tiny
        lu = jnp.log(jnp.maximum(mean["unary"], tiny))
        lp = jnp.log(jnp.maximum(mean["pair"], tiny))
        return {"unary": lu, "pair": lp - lu[..., :-1, :, None] - lu[..., 1:, None, :]}

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        nd = 2 if is_homogeneous(natural) else 3
        return (jnp.all(jnp.isfinite(natural["unary"]), (-2, -1))
                & jnp.all(jnp.isfinite(natural["pair"]), tuple(range(-nd, 0))))

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        """Non-negative marginals, unary rows summing to 1, pairwise marginals (or their
        sum over time) whose row and column sums are the unary ones."""
        u, p = mean["unary"], mean["pair"]
        tol = 10.0 * u.shape[-1] ** 2 * jnp.finfo(u.dtype).eps
        hom = is_homogeneous(mean)
        ok = jnp.all(u >= 0, (-2, -1)) & jnp.all(p >= 0, (-2, -1) if hom else (-3, -2, -1))
        ok &= jnp.all(jnp.abs(jnp.sum(u, -1) - 1.0) <= tol, -1)
        if hom:  # sums over time: the rounding of T steps
            rows, cols, tol = jnp.sum(u[..., :-1, :], -2), jnp.sum(u[..., 1:, :], -2), \
                tol * u.shape[-2]
            axes = -1
        else:
            rows, cols, axes = u[..., :-1, :], u[..., 1:, :], (-2, -1)
        ok &= jnp.all(jnp.abs(jnp.sum(p, -1) - rows) <= tol, axes)
        return ok & jnp.all(jnp.abs(jnp.sum(p, -2) - cols) <= tol, axes)

    # ------------------------------------------------------------ usual quantities
    @property
    def num_classes(self) -> int:
        return self.natural["unary"].shape[-1]

    @property
    def num_steps(self) -> int:
        return self.natural["unary"].shape[-2]

    @property
    def homogeneous(self) -> bool:
        """The pair potential has no time axis (the same at every step)."""
        return is_homogeneous(self.natural)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.natural["unary"])[:-2])

    @property
    def probs(self) -> Array:
        """Unary marginals ``p(z_t = k)``, ``[..., T, K]``."""
        return self.mean_parameters()["unary"]

    @property
    def pair_probs(self) -> Array:
        """Pairwise marginals ``p(z_t = k, z_{t+1} = l)``, ``[..., T-1, K, K]`` (also for
        a homogeneous chain, whose mean pair statistic is their sum over ``t``)."""
        nat = self.natural
        if self.homogeneous:
            p = nat["pair"][..., None, :, :]
            nat = {"unary": nat["unary"],
                   "pair": jnp.broadcast_to(p, p.shape[:-3] + (self.num_steps - 1,)
                                            + p.shape[-2:])}
        return self.mean_params(nat)["pair"]

    def mean(self) -> Array:
        """The unary marginals (the mean of the one-hot statistic, as for a
        :class:`~vijax.families.Categorical`)."""
        return self.probs

    def variance(self) -> Array:
        p = self.probs
        return p * (1.0 - p)

    def quantile(self, q: Array) -> Array:
        """Per-step marginal quantiles (class index order), ``jnp.shape(q) + batch +
        (T,)``; NaN outside ``[0, 1]``."""
        q = jnp.asarray(q, self.dtype)
        q = jnp.reshape(q, q.shape + (1,) * (len(self.batch_shape) + 1))
        return class_quantile(self.probs, q)

    def usual_params(self) -> dict[str, Array]:
        return {"marginals": self.probs}

    def expected_log_base_measure(self) -> Array:
        return self._constant(0.0)

    def entropy(self) -> Array:
        """``A(eta) - <eta, mu>`` from one forward-backward pass."""
        mu, log_z = forward_backward(self.natural)
        return log_z - self.inner(self.natural, mu)

    def log_prob(self, x: Array) -> Array:
        """``<eta, T(x)> - A(eta)`` for integer paths ``x`` ``[sample, ..., T]``."""
        st = self.stats(x, self.num_classes, self.homogeneous)
        return self.inner(self.natural, st) - self.log_normalizer(self.natural)

    # ------------------------------------------------------------ sampling and mode
    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """Integer paths ``sample_shape + batch + (T,)`` by forward filtering, backward
        sampling: ``z_{T-1} ~ alpha_{T-1}``, ``z_t ~ alpha_t + pair_t[:, z_{t+1}]``."""
        shape = tuple(sample_shape) + self.batch_shape
        u, p, hom = _potentials(self.natural["unary"], self.natural["pair"])
        alpha, _ = _log_forward(u, p, hom)  # [T, ..., K]
        K = self.num_classes
        lead = (1,) * len(tuple(sample_shape))
        alpha = jnp.broadcast_to(alpha.reshape(alpha.shape[:1] + lead + alpha.shape[1:]),
                                 alpha.shape[:1] + shape + (K,))
        if hom:
            p = jnp.broadcast_to(p.reshape(lead + p.shape), shape + (K, K))
        else:
            p = jnp.broadcast_to(p.reshape(p.shape[:1] + lead + p.shape[1:]),
                                 p.shape[:1] + shape + (K, K))
        keys = jax.random.split(key, self.num_steps)
        last = jax.random.categorical(keys[-1], alpha[-1], -1)
        xs, read = _steps(p, hom, (alpha[:-1], keys[:-1]))

        def step(nxt, x):
            p_t, (a_t, k_t) = read(x)
            col = jnp.take_along_axis(p_t, nxt[..., None, None], -1)[..., 0]
            cur = jax.random.categorical(k_t, a_t + col, -1)
            return cur, cur

        _, rest = jax.lax.scan(step, last, xs, reverse=True)
        path = jnp.concatenate([rest, last[None]], 0)
        return jnp.moveaxis(path, 0, -1)

    @classmethod
    def mode(cls, natural: Mapping[str, Array]) -> tuple[Array, Array]:
        """The most probable path (Viterbi, max-product in log space)."""
        u, p, hom = _potentials(natural["unary"], natural["pair"])
        xs, read = _steps(p, hom, u[1:])

        def fwd(delta, x):
            p_t, u_t = read(x)
            scores = delta[..., :, None] + p_t
            return jnp.max(scores, -2) + u_t, jnp.argmax(scores, -2)

        last, back = jax.lax.scan(fwd, u[0], xs)
        end = jnp.argmax(last, -1)

        def bwd(nxt, b_t):
            cur = jnp.take_along_axis(b_t, nxt[..., None], -1)[..., 0]
            return cur, cur

        _, rest = jax.lax.scan(bwd, end, back, reverse=True)
        path = jnp.moveaxis(jnp.concatenate([rest, end[None]], 0), 0, -1)
        return path, jnp.broadcast_to(cls.is_valid_natural(natural)[..., None], path.shape)

    # ------------------------------------------------------------ starts, gradient path
    @classmethod
    def default_start(cls, key: Array, info, dtype) -> "MarkovChain":
        """Random unary marginals (normalized ``Exp(1)`` draws, as for the
        Categorical: symmetry breaking) and flat transitions (without a time axis when
        the compiler found the chain ``time_homogeneous``)."""
        sup = info.support
        K, S = sup.num_categories, tuple(sup.shape)
        e = start_random.exponential(key, S + (K,), dtype)
        unary = jnp.log(e / jnp.sum(e, -1, keepdims=True))
        pair = cls.latent_stat_shape(sup, "pair", getattr(info, "time_homogeneous", False))
        return cls({"unary": unary, "pair": jnp.zeros(pair, dtype)})

    @classmethod
    def from_marginals(cls, probs: Array) -> "MarkovChain":
        """The chain with independent steps of marginals ``probs`` ``[..., T, K]``."""
        (p,) = as_float_arrays(probs)
        check_param("MarkovChain.from_marginals", "probs", p, (p >= 0) & (p <= 1), "in [0, 1]")
        tiny = jnp.finfo(p.dtype).tiny
        K = p.shape[-1]
        return cls({"unary": jnp.log(jnp.maximum(p, tiny)),
                    "pair": jnp.zeros(p.shape[:-2] + (p.shape[-2] - 1, K, K), p.dtype)})

    @classmethod
    def from_user_value(cls, value) -> "MarkovChain":
        """From per-step probabilities ``[..., T, K]`` (independent steps)."""
        return cls.from_marginals(jnp.asarray(value))

    @classmethod
    def conform_natural(cls, natural: Mapping[str, Array], shapes, name: str = "z") -> Natural:
        """Natural parameters in the pair layout of ``shapes`` (a fit's): a homogeneous
        potential is broadcast over the steps; per-step potentials become homogeneous
        when they are (concretely) equal at every step, else :class:`ModelSpecError`."""
        pair = natural["pair"]
        want = tuple(shapes["pair"])
        if jnp.shape(pair) == want:
            return natural
        if jnp.ndim(pair) == len(want) - 1:  # homogeneous -> per step
            p = jnp.asarray(pair)[..., None, :, :]
            return {**natural, "pair": jnp.broadcast_to(p, want)}
        if jnp.ndim(pair) == len(want) + 1 and not is_tracer(pair):
            p = np.asarray(pair)
            if np.all(p == p[..., :1, :, :]):
                return {**natural, "pair": jnp.asarray(p[..., 0, :, :])}
        raise ModelSpecError(
            f"init for '{name}': its pair potential has shape {jnp.shape(pair)} and differs "
            f"between steps, but the model's chain is homogeneous (one transition potential, "
            f"shape {want}): pass a MarkovChain whose pair potential has shape {want} (or "
            "MarkovChain.from_marginals(probs))")

    def to_unconstrained(self) -> dict[str, Array]:
        """The natural parameters themselves (every real value is valid)."""
        return {"unary": self.natural["unary"], "pair": self.natural["pair"]}

    @classmethod
    def from_unconstrained(cls, u: Mapping[str, Array]) -> "MarkovChain":
        return cls({"unary": u["unary"], "pair": u["pair"]})

    @classmethod
    def factor_from_unconstrained(cls, u: Mapping[str, Array]):
        """Marginals, entropy ``A - <eta, mu>`` (one forward-backward) and the sampler.

        The gradient path differentiates this through forward-backward: the log-space
        scans (one program, no fallback branch: a third of the scaled version's
        compile time under ``grad``)."""
        q = cls.from_unconstrained(u)
        mu, log_z = _log_forward_backward(q.natural["unary"], q.natural["pair"])
        return mu, jnp.sum(log_z - cls.inner(q.natural, mu)), q.sample
