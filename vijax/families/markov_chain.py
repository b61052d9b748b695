"""A discrete first-order Markov chain as an exponential family (the variational HMM's
factor over the hidden states)."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from vijax.families import start_random
from vijax.families.base import (Array, ExponentialFamily, Natural, as_float_arrays,
                                 check_param, family)
from vijax.families.quantiles import class_quantile


def _to_time_major(a: Array, nd: int) -> Array:
    """Move the time axis (``nd`` axes before the end) to the front."""
    return jnp.moveaxis(a, a.ndim - nd - 1, 0)


def _forward(unary: Array, pair: Array) -> tuple[Array, Array]:
    """Log forward messages ``alpha[t, k] = log sum_{z_<t} exp(...)`` with ``z_t = k``,
    time-major ``[T, ..., K]``, and ``A = logsumexp(alpha[T-1])``."""
    u = _to_time_major(unary, 1)
    p = _to_time_major(pair, 2)

    def step(alpha, xs):
        p_t, u_t = xs
        nxt = jax.nn.logsumexp(alpha[..., :, None] + p_t, axis=-2) + u_t
        return nxt, nxt

    last, rest = jax.lax.scan(step, u[0], (p, u[1:]))
    alphas = jnp.concatenate([u[None, 0], rest], 0)
    return alphas, jax.nn.logsumexp(last, -1)


def _backward(unary: Array, pair: Array) -> Array:
    """Log backward messages ``beta[t, k] = log sum_{z_>t} exp(...)`` given ``z_t = k``,
    time-major ``[T, ..., K]`` (``beta[T-1] = 0``)."""
    u = _to_time_major(unary, 1)
    p = _to_time_major(pair, 2)

    def step(beta, xs):
        p_t, u_next = xs
        prev = jax.nn.logsumexp(p_t + (u_next + beta)[..., None, :], axis=-1)
        return prev, prev

    _, rest = jax.lax.scan(step, jnp.zeros_like(u[0]), (p, u[1:]), reverse=True)
    return jnp.concatenate([rest, jnp.zeros_like(u[None, 0])], 0)


def _sequential_forward_backward(unary: Array, pair: Array) -> tuple[Natural, Array]:
    """Log-space forward-backward, one ``lax.scan`` each way, each message normalized
    per step (``log Z`` is the sum of the normalizers), marginals normalized per step: their
    rounding error does not grow with ``T``. Short chains, the fallback of the scaled
    version, and the gradient path use it."""
    u = _to_time_major(unary, 1)
    p = _to_time_major(pair, 2)

    def fwd(alpha, xs):
        p_t, u_t = xs
        nxt = jax.nn.logsumexp(alpha[..., :, None] + p_t, axis=-2) + u_t
        z = jax.nn.logsumexp(nxt, -1, keepdims=True)
        return nxt - z, (nxt - z, z[..., 0])

    z0 = jax.nn.logsumexp(u[0], -1, keepdims=True)
    _, (rest, zs) = jax.lax.scan(fwd, u[0] - z0, (p, u[1:]))
    alpha = jnp.concatenate([(u[0] - z0)[None], rest], 0)
    log_z = z0[..., 0] + jnp.sum(zs, 0)

    def bwd(beta, xs):
        p_t, u_next = xs
        prev = jax.nn.logsumexp(p_t + (u_next + beta)[..., None, :], axis=-1)
        prev = prev - jnp.max(prev, -1, keepdims=True)
        return prev, prev

    _, rest = jax.lax.scan(bwd, jnp.zeros_like(u[0]), (p, u[1:]), reverse=True)
    beta = jnp.concatenate([rest, jnp.zeros_like(u[None, 0])], 0)
    uni = jax.nn.softmax(alpha + beta, -1)
    pw = alpha[:-1, ..., :, None] + p + (u[1:] + beta[1:])[..., None, :]
    pw = jnp.exp(pw - jax.nn.logsumexp(pw, (-2, -1), keepdims=True))
    return ({"unary": jnp.moveaxis(uni, 0, -2), "pair": jnp.moveaxis(pw, 0, -3)}, log_z)


#: chains at least this long use the scaled linear-space forward-backward (about 5x
#: faster per step on CPU; its ``lax.cond`` fallback doubles the compiled program, which
#: short chains do not repay)
SCALED_MIN_STEPS = 1024


def _step_matrices(u: Array, p: Array):
    """Time-major step matrices ``M_t = exp(p_t + u_{t+1} - c_t)`` ``[T-1, ..., K, K]``
    (largest entry 1) and their log scales ``c_t``."""
    s = p + u[1:, ..., None, :]
    c = jnp.max(s, (-2, -1), keepdims=True)
    c = jnp.where(jnp.isfinite(c), c, 0.0)
    return jnp.exp(s - c), c[..., 0, 0]


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
    """Forward-backward in linear space with a normalization per step (Rabiner 1989):
    ``a_t = a_{t-1} M_t / n_t``, ``b_{t-1} = M_t b_t / max``, ``log Z = sum_t (log n_t +
    c_t)``. Marginals are normalized per time step, so their rounding error does not grow
    with ``T``. Returns ``((marginals, log Z), ok)``: ``ok`` is False where a message
    under- or overflowed (potentials whose range exceeds the dtype's exponent range; then
    :func:`forward_backward` falls back to log space)."""
    u = _to_time_major(unary, 1)
    p = _to_time_major(pair, 2)
    m, c = _step_matrices(u, p)
    u0 = jnp.max(u[0], -1, keepdims=True)
    a0 = jnp.exp(u[0] - u0)
    n0 = jnp.sum(a0, -1, keepdims=True)

    def fwd(a, m_t):
        a = _matvec(a, m_t, True)
        n = jnp.sum(a, -1, keepdims=True)
        return a / n, (a / n, n[..., 0])

    _, (alpha, n) = jax.lax.scan(fwd, a0 / n0, m)
    log_z = u0[..., 0] + jnp.log(n0[..., 0]) + jnp.sum(jnp.log(n) + c, 0)

    def bwd(b, m_t):
        b = _matvec(b, m_t, False)
        b = b / jnp.max(b, -1, keepdims=True)
        return b, b

    _, beta = jax.lax.scan(bwd, jnp.ones_like(a0), m, reverse=True)
    alpha = jnp.concatenate([(a0 / n0)[None], alpha], 0)
    beta = jnp.concatenate([beta, jnp.ones_like(a0)[None]], 0)
    uni = alpha * beta
    uni_sum = jnp.sum(uni, -1, keepdims=True)
    pw = alpha[:-1, ..., :, None] * m * beta[1:, ..., None, :]
    pw_sum = jnp.sum(pw, (-2, -1), keepdims=True)
    # finite messages and positive normalizers <=> finite marginals (checked on the
    # [T, ..., K] messages, not the [T-1, ..., K, K] pairs)
    ok = (jnp.all(jnp.isfinite(log_z)) & jnp.all(jnp.isfinite(beta))
          & jnp.all(uni_sum > 0) & jnp.all(pw_sum > 0) & jnp.all(jnp.isfinite(pw_sum)))
    return ({"unary": jnp.moveaxis(uni / uni_sum, 0, -2),
             "pair": jnp.moveaxis(pw / pw_sum, 0, -3)}, log_z), ok


def forward_backward(natural: Mapping[str, Array]) -> tuple[Natural, Array]:
    """Unary ``[..., T, K]`` and pairwise ``[..., T-1, K, K]`` marginals and ``A``:
    ``p(z_t = k) = alpha_t[k] beta_t[k] / Z``, ``p(z_t = k, z_{t+1} = l) = alpha_t[k]
    exp(pair_t[k, l] + unary_{t+1}[l]) beta_{t+1}[l] / Z``.

    Chains of ``T >= SCALED_MIN_STEPS`` run in linear space with scaling
    (:func:`_scaled_forward_backward`); where that under- or overflows (potentials whose
    range exceeds the dtype's exponent range), the log-space scans
    (:func:`_sequential_forward_backward`, used for shorter chains) give the answer
    instead (a ``lax.cond``)."""
    unary, pair = natural["unary"], natural["pair"]
    if unary.shape[-2] < SCALED_MIN_STEPS:
        return _sequential_forward_backward(unary, pair)
    (mu, log_z), ok = _scaled_forward_backward(unary, pair)
    return jax.lax.cond(ok, lambda: (mu, log_z),
                        lambda: _sequential_forward_backward(unary, pair))


@family
class MarkovChain(ExponentialFamily):
    """First-order Markov chain over ``T`` states in ``{0, ..., K-1}`` (the last axis of
    a sample); samples are integer paths ``[..., T]``.

    Statistics ``T(z) = {"unary": one_hot(z_t) [..., T, K],
    "pair": one_hot(z_t) one_hot(z_{t+1})^T [..., T-1, K, K]}``; natural parameters
    ``eta = {"unary": log-potentials, "pair": log-potentials}`` (over-parameterized);
    ``log h(z) = 0``; log-normalizer the forward algorithm in log space,

    .. math:: A(\\eta) = \\log \\sum_{z} \\exp\\Big(\\sum_t \\eta^u_t[z_t]
              + \\sum_{t<T-1} \\eta^p_t[z_t, z_{t+1}]\\Big).

    Mean parameters are the unary and pairwise marginals (forward-backward, written out
    in log space and equal to ``grad A``); entropy ``A(eta) - <eta, mu>``; samples by
    forward filtering, backward sampling; :meth:`mode` is Viterbi.

    Example:
        >>> import jax.numpy as jnp
        >>> q = MarkovChain({"unary": jnp.zeros((3, 2)), "pair": jnp.zeros((2, 2, 2))})
        >>> jnp.round(q.probs, 12).tolist()
        [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]
    """

    stat_names = ("unary", "pair")
    stat_event_ndims = {"unary": 2, "pair": 3}
    event_ndim = 1
    support = "categorical"
    walk_stats = {("onehot", 1.0): "unary"}
    natural_domain_is_real = True
    #: for the compiler: the statistic holding ``one_hot(z_t) one_hot(z_{t+1})^T``
    chain_pair_stat = "pair"

    # ------------------------------------------------------------ statistics
    @classmethod
    def stats(cls, x: Array, num_classes: int | None = None) -> Natural:
        """``{"unary": one_hot(x), "pair": one_hot(x[:-1]) (x) one_hot(x[1:])}`` over
        the last axis; ``num_classes`` is required."""
        if num_classes is None:
            raise ValueError("MarkovChain.stats needs num_classes (the number of states K)")
        oh = jax.nn.one_hot(jnp.asarray(x).astype(jnp.int32), num_classes)
        return {"unary": oh, "pair": oh[..., :-1, :, None] * oh[..., 1:, None, :]}

    @classmethod
    def point_stats(cls, x: Array, support) -> Natural:
        """Statistics over the support's ``num_categories`` states (float default dtype)."""
        oh = jax.nn.one_hot(x, support.num_categories, dtype=jnp.zeros(()).dtype)
        return {"unary": oh, "pair": oh[..., :-1, :, None] * oh[..., 1:, None, :]}

    @classmethod
    def latent_stat_shape(cls, support, stat: str) -> tuple:
        """Shape of statistic ``stat`` for a latent of ``support`` (time on its last
        axis): ``S + (K,)`` and ``S[:-1] + (T-1, K, K)``."""
        S, K = tuple(support.shape), support.num_categories
        if stat == "unary":
            return S + (K,)
        return S[:-1] + (S[-1] - 1, K, K)

    @classmethod
    def log_base_measure(cls, x: Array) -> Array:
        return jnp.zeros(jnp.shape(x)[:-1], jnp.result_type(float))

    # ------------------------------------------------------------ log-normalizer
    @classmethod
    def log_normalizer(cls, natural: Mapping[str, Array]) -> Array:
        """The forward algorithm (a ``lax.scan`` of log-sum-exps)."""
        return _forward(natural["unary"], natural["pair"])[1]

    @classmethod
    def mean_params(cls, natural: Mapping[str, Array]) -> Natural:
        return forward_backward(natural)[0]

    @classmethod
    def mean_and_log_normalizer(cls, natural: Mapping[str, Array]) -> tuple[Natural, Array]:
        return forward_backward(natural)

    @classmethod
    def natural_from_mean(cls, mean: Mapping[str, Array]) -> Natural:
        """The representative with ``A = 0``: ``eta^u_t = log p_t``, ``eta^p_t =
        log p_{t,t+1} - log p_t - log p_{t+1}`` (a chain factorizes over its cliques)."""
        tiny = jnp.finfo(jnp.result_type(mean["unary"])).tiny
        lu = jnp.log(jnp.maximum(mean["unary"], tiny))
        lp = jnp.log(jnp.maximum(mean["pair"], tiny))
        return {"unary": lu, "pair": lp - lu[..., :-1, :, None] - lu[..., 1:, None, :]}

    @classmethod
    def is_valid_natural(cls, natural: Mapping[str, Array]) -> Array:
        return (jnp.all(jnp.isfinite(natural["unary"]), (-2, -1))
                & jnp.all(jnp.isfinite(natural["pair"]), (-3, -2, -1)))

    @classmethod
    def is_valid_mean(cls, mean: Mapping[str, Array]) -> Array:
        u, p = mean["unary"], mean["pair"]
        tol = 10.0 * u.shape[-1] ** 2 * jnp.finfo(u.dtype).eps
        ok = jnp.all(u >= 0, (-2, -1)) & jnp.all(p >= 0, (-3, -2, -1))
        ok &= jnp.all(jnp.abs(jnp.sum(u, -1) - 1.0) <= tol, -1)
        ok &= jnp.all(jnp.abs(jnp.sum(p, -1) - u[..., :-1, :]) <= tol, (-2, -1))
        ok &= jnp.all(jnp.abs(jnp.sum(p, -2) - u[..., 1:, :]) <= tol, (-2, -1))
        return ok

    # ------------------------------------------------------------ usual quantities
    @property
    def num_classes(self) -> int:
        return self.natural["unary"].shape[-1]

    @property
    def num_steps(self) -> int:
        return self.natural["unary"].shape[-2]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.natural["unary"])[:-2])

    @property
    def probs(self) -> Array:
        """Unary marginals ``p(z_t = k)``, ``[..., T, K]``."""
        return self.mean_parameters()["unary"]

    @property
    def pair_probs(self) -> Array:
        """Pairwise marginals ``p(z_t = k, z_{t+1} = l)``, ``[..., T-1, K, K]``."""
        return self.mean_parameters()["pair"]

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
        st = self.stats(x, self.num_classes)
        return self.inner(self.natural, st) - self.log_normalizer(self.natural)

    # ------------------------------------------------------------ sampling and mode
    def sample(self, key: Array, sample_shape: tuple[int, ...] = ()) -> Array:
        """Integer paths ``sample_shape + batch + (T,)`` by forward filtering, backward
        sampling: ``z_{T-1} ~ alpha_{T-1}``, ``z_t ~ alpha_t + pair_t[:, z_{t+1}]``."""
        shape = tuple(sample_shape) + self.batch_shape
        alpha, _ = _forward(self.natural["unary"], self.natural["pair"])  # [T, ..., K]
        pair = _to_time_major(self.natural["pair"], 2)
        K = self.num_classes
        lead = (1,) * len(tuple(sample_shape))
        alpha = jnp.broadcast_to(alpha.reshape(alpha.shape[:1] + lead + alpha.shape[1:]),
                                 alpha.shape[:1] + shape + (K,))
        pair = jnp.broadcast_to(pair.reshape(pair.shape[:1] + lead + pair.shape[1:]),
                                pair.shape[:1] + shape + (K, K))
        keys = jax.random.split(key, self.num_steps)
        last = jax.random.categorical(keys[-1], alpha[-1], -1)

        def step(nxt, xs):
            a_t, p_t, k_t = xs
            col = jnp.take_along_axis(p_t, nxt[..., None, None], -1)[..., 0]
            cur = jax.random.categorical(k_t, a_t + col, -1)
            return cur, cur

        _, rest = jax.lax.scan(step, last, (alpha[:-1], pair, keys[:-1]), reverse=True)
        path = jnp.concatenate([rest, last[None]], 0)
        return jnp.moveaxis(path, 0, -1)

    @classmethod
    def mode(cls, natural: Mapping[str, Array]) -> tuple[Array, Array]:
        """The most probable path (Viterbi, max-product in log space)."""
        u = _to_time_major(natural["unary"], 1)
        p = _to_time_major(natural["pair"], 2)

        def fwd(delta, xs):
            p_t, u_t = xs
            scores = delta[..., :, None] + p_t
            return jnp.max(scores, -2) + u_t, jnp.argmax(scores, -2)

        last, back = jax.lax.scan(fwd, u[0], (p, u[1:]))
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
        Categorical: symmetry breaking) and flat transitions."""
        sup = info.support
        K, S = sup.num_categories, tuple(sup.shape)
        e = start_random.exponential(key, S + (K,), dtype)
        unary = jnp.log(e / jnp.sum(e, -1, keepdims=True))
        return cls({"unary": unary, "pair": jnp.zeros(S[:-1] + (S[-1] - 1, K, K), dtype)})

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
        mu, log_z = _sequential_forward_backward(q.natural["unary"], q.natural["pair"])
        return mu, jnp.sum(log_z - cls.inner(q.natural, mu)), q.sample
