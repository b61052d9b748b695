"""Hand-written JAX reference for the diagonal Bayesian Gaussian mixture.

The model is the zoo's (``vijax.models.mixture``):

    pi ~ Dir(alpha0 1_K),   tau_kd ~ Gamma(a0, rate b0),
    mu_kd | tau_kd ~ N(0, 1 / (beta0 tau_kd)),   z_n ~ Cat(pi),
    x_nd | z_n = k ~ N(mu_kd, 1 / tau_kd).

Mean-field family (the one vijax's compiler picks): q(pi) Dirichlet, q(mu_kd) Normal,
q(tau_kd) Gamma, q(z_n) Categorical. Everything here is written by hand from the
sufficient statistics ``N_k = sum_n r_nk``, ``S1 = r^T x``, ``S2 = r^T x^2`` so that the
per-iteration work is two (N, D) x (D, K) products and one (N, K) x (N, D) product:
this is the code a careful person would write without vijax, and the baseline the
benchmarks compare against.

Mean parameters use vijax's layout, ``{latent: {stat: array}}``:
``pi: {"log": E log pi}``, ``z: {"onehot": r}``, ``mu: {"x": E mu, "x2": E mu^2}``,
``tau: {"x": E tau, "log": E log tau}``, so :func:`expected_log_joint` takes exactly the
argument of vijax's ``Compiled.F``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

LOG_2PI = math.log(2.0 * math.pi)


def expected_log_joint(mean, x, prior):
    """``E_q[log p(x, pi, z, mu, tau)]`` under mean-field q, from its mean parameters.

    .. math::
        \\log \\Gamma(K\\alpha_0) - K \\log\\Gamma(\\alpha_0) + (\\alpha_0 - 1)\\sum_k E\\log\\pi_k
        + \\sum_{kd} [a_0 \\log b_0 - \\log\\Gamma(a_0) + (a_0 - 1) E\\log\\tau - b_0 E\\tau]
        + \\sum_{kd} \\tfrac12[\\log(\\beta_0/2\\pi) + E\\log\\tau - \\beta_0 E\\tau E\\mu^2]
        + \\sum_k N_k E\\log\\pi_k
        + \\sum_{kd} [N_k \\tfrac12(E\\log\\tau - \\log 2\\pi - E\\tau E\\mu^2)
                      - \\tfrac12 E\\tau S2_{kd} + E\\tau E\\mu S1_{kd}]
    """
    a0, b0, beta0, alpha0 = prior["a0"], prior["b0"], prior["beta0"], prior["alpha0"]
    elog_pi = mean["pi"]["log"]
    r = mean["z"]["onehot"]
    emu, emu2 = mean["mu"]["x"], mean["mu"]["x2"]
    etau, elog_tau = mean["tau"]["x"], mean["tau"]["log"]
    K = elog_pi.shape[-1]
    nk = jnp.sum(r, axis=0)
    s1 = r.T @ x
    s2 = r.T @ (x * x)
    lp = gammaln(K * alpha0) - K * gammaln(alpha0) + (alpha0 - 1.0) * jnp.sum(elog_pi)
    lp += jnp.sum(a0 * jnp.log(b0) - gammaln(a0) + (a0 - 1.0) * elog_tau - b0 * etau)
    lp += 0.5 * jnp.sum(jnp.log(beta0) - LOG_2PI + elog_tau - beta0 * etau * emu2)
    lp += jnp.sum(nk * elog_pi)
    lp += jnp.sum(nk[:, None] * 0.5 * (elog_tau - LOG_2PI - etau * emu2)
                  - 0.5 * etau * s2 + etau * emu * s1)
    return lp


class GmmState(NamedTuple):
    """Variational parameters: Dirichlet ``alpha``; Normal mean ``m`` and precision
    ``lam``; Gamma shape ``a`` and rate ``b``; responsibilities ``r`` (N, K)."""

    alpha: jax.Array
    m: jax.Array
    lam: jax.Array
    a: jax.Array
    b: jax.Array
    r: jax.Array


def _update_globals(x, x2, r, etau, prior):
    """Closed-form updates of q(pi), q(mu), q(tau), in that order (vijax's default)."""
    a0, b0, beta0, alpha0 = prior["a0"], prior["b0"], prior["beta0"], prior["alpha0"]
    nk = jnp.sum(r, axis=0)
    s1 = r.T @ x
    s2 = r.T @ x2
    alpha = alpha0 + nk
    # q(mu_kd): precision E[tau] (beta0 + N_k), mean S1 / (beta0 + N_k)
    prec0 = beta0 + nk[:, None]
    m = s1 / prec0
    lam = etau * prec0
    emu2 = m * m + 1.0 / lam
    # q(tau_kd): shape a0 + (1 + N_k)/2, rate b0 + (beta0 E mu^2 + S2 - 2 m S1 + N_k E mu^2)/2
    a = jnp.broadcast_to(a0 + 0.5 * (1.0 + nk[:, None]), m.shape)
    b = b0 + 0.5 * (beta0 * emu2 + s2 - 2.0 * m * s1 + nk[:, None] * emu2)
    return alpha, m, lam, a, b


def _responsibilities(x, x2, alpha, m, lam, a, b):
    """q(z_n) from E log pi, E tau, E log tau, E mu, E mu^2."""
    elog_pi = digamma(alpha) - digamma(jnp.sum(alpha))
    etau = a / b
    elog_tau = digamma(a) - jnp.log(b)
    emu2 = m * m + 1.0 / lam
    const = elog_pi + 0.5 * jnp.sum(elog_tau - LOG_2PI - etau * emu2, axis=1)
    logits = const - 0.5 * x2 @ etau.T + x @ (etau * m).T
    return jax.nn.softmax(logits, axis=-1)


def mean_params(state: GmmState):
    """The state's mean parameters in vijax's layout."""
    alpha, m, lam, a, b, r = state
    return {"pi": {"log": digamma(alpha) - digamma(jnp.sum(alpha))},
            "z": {"onehot": r},
            "mu": {"x": m, "x2": m * m + 1.0 / lam},
            "tau": {"x": a / b, "log": digamma(a) - jnp.log(b)}}


def entropy(state: GmmState):
    """Sum of the factors' entropies."""
    alpha, m, lam, a, b, r = state
    a_sum = jnp.sum(alpha)
    K = alpha.shape[-1]
    h_pi = (jnp.sum(gammaln(alpha)) - gammaln(a_sum) + (a_sum - K) * digamma(a_sum)
            - jnp.sum((alpha - 1.0) * digamma(alpha)))
    h_mu = 0.5 * jnp.sum(1.0 + LOG_2PI - jnp.log(lam))
    h_tau = jnp.sum(a - jnp.log(b) + gammaln(a) + (1.0 - a) * digamma(a))
    h_z = -jnp.sum(r * jnp.log(jnp.maximum(r, jnp.finfo(r.dtype).tiny)))
    return h_pi + h_mu + h_tau + h_z


def elbo(state: GmmState, x, prior):
    return expected_log_joint(mean_params(state), x, prior) + entropy(state)


def sweep(state: GmmState, x, x2, etau, prior):
    """One CAVI sweep: pi, mu, tau, then z (returns the new state)."""
    alpha, m, lam, a, b = _update_globals(x, x2, state.r, etau, prior)
    r = _responsibilities(x, x2, alpha, m, lam, a, b)
    return GmmState(alpha, m, lam, a, b, r)


def cavi_loop(r0, etau0, x, prior, num_iters):
    """``num_iters`` sweeps from responsibilities ``r0`` and ``E[tau] = etau0``, with the
    ELBO computed after every sweep (as any convergence test needs). Returns the final
    state and the ELBO trace."""
    x2 = x * x

    def body(carry, _):
        state = carry
        etau = state.a / state.b
        new = sweep(state, x, x2, etau, prior)
        return new, elbo(new, x, prior)

    K, D = r0.shape[-1], x.shape[-1]
    one = jnp.ones((K, D), x.dtype)
    # a / b = etau0 reproduces the starting E[tau]; the other fields are overwritten.
    init = GmmState(jnp.ones((K,), x.dtype), 0.0 * one, one, etau0, one, r0)
    return jax.lax.scan(body, init, None, length=num_iters)


def make_cavi(prior, num_iters):
    """``jit(cavi_loop)`` with the prior and the number of sweeps fixed."""
    return jax.jit(lambda r0, etau0, x: cavi_loop(r0, etau0, x, prior, num_iters))


def make_expected_log_joint(prior):
    """``jit(expected_log_joint)`` with the prior fixed: ``f(mean, x)``."""
    return jax.jit(lambda mean, x: expected_log_joint(mean, x, prior))
