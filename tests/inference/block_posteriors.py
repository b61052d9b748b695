"""Closed forms for the single-block conjugate models the block tests fit (CAVI in
test_joint_blocks, the gradient path in test_gradient_blocks), written in numpy
independently of vijax's families.

- Normal-Gamma: tau ~ Gamma(a0, rate b0), mu | tau ~ N(m0, 1/(k0 tau)),
  x_n ~ N(mu, 1/tau); posterior NG(m_N, k_N, a_N, b_N) and log p(x) (the Student-t
  marginal likelihood Gamma(a_N)/Gamma(a0) b0^a0 / b_N^a_N (k0/k_N)^(1/2) (2 pi)^(-N/2)).
- Normal-Wishart (D = 2): L ~ W(V0, nu0), mu | L ~ N(m0, (beta0 L)^-1), x_n ~ N(mu, L^-1);
  posterior NW(m_N, beta_N, nu_N, V_N) and log p(x) = -ND/2 log(2 pi) + log Z_N - log Z_0,
  log Z = D/2 log(2 pi/beta) + nu D/2 log 2 + nu/2 log|V| + log Gamma_D(nu/2).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from scipy.special import gammaln, multigammaln


def normal_gamma_posterior(x, m0, k0, a0, b0):
    """``(m_N, k_N, a_N, b_N, log p(x))``."""
    n, xb = len(x), float(np.mean(x))
    kn = k0 + n
    mn = (k0 * m0 + n * xb) / kn
    an = a0 + n / 2
    bn = b0 + 0.5 * np.sum((x - xb) ** 2) + k0 * n * (xb - m0) ** 2 / (2 * kn)
    log_z = (gammaln(an) - gammaln(a0) + a0 * np.log(b0) - an * np.log(bn)
             + 0.5 * np.log(k0 / kn) - 0.5 * n * np.log(2 * np.pi))
    return mn, kn, an, bn, log_z


# the Normal-Wishart model both files fit
NW_DIM, NW_BETA0, NW_NU0 = 2, 0.6, 4.5
NW_M0 = np.array([0.5, -0.5])
NW_V0 = np.array([[0.5, 0.1], [0.1, 0.3]])  # Wishart scale
NW_X = (np.random.default_rng(11).normal(size=(25, NW_DIM)) @ np.array([[1.0, 0.0], [0.5, 0.6]])
        + np.array([1.0, -1.0]))


def nw_log_joint(z, x):
    """The Normal-Wishart log joint, written in plain JAX (slogdet, quadratic forms)."""
    mu, prec = z["mu"], z["L"]
    n, d = x.shape
    logdet = jnp.linalg.slogdet(prec)[1]
    lp = (0.5 * (NW_NU0 - d - 1) * logdet - 0.5 * jnp.sum(np.linalg.inv(NW_V0) * prec)
          - 0.5 * NW_NU0 * d * math.log(2) - 0.5 * NW_NU0 * np.linalg.slogdet(NW_V0)[1]
          - float(multigammaln(NW_NU0 / 2, d)))
    dm = mu - NW_M0
    lp += (0.5 * d * math.log(NW_BETA0 / (2 * math.pi)) + 0.5 * logdet
           - 0.5 * NW_BETA0 * dm @ prec @ dm)
    dx = x - mu
    return (lp - 0.5 * n * d * math.log(2 * math.pi) + 0.5 * n * logdet
            - 0.5 * jnp.einsum("ni,ij,nj->", dx, prec, dx))


def _nw_log_norm(beta, nu, v):
    d = v.shape[0]
    return (0.5 * d * math.log(2 * math.pi / beta) + 0.5 * nu * d * math.log(2)
            + 0.5 * nu * np.linalg.slogdet(v)[1] + multigammaln(nu / 2, d))


def normal_wishart_posterior(x):
    """``(m_N, beta_N, nu_N, V_N, log p(x))`` of :func:`nw_log_joint`."""
    n, d = x.shape
    xb = x.mean(0)
    s = (x - xb).T @ (x - xb)
    bn, nun = NW_BETA0 + n, NW_NU0 + n
    mn = (NW_BETA0 * NW_M0 + n * xb) / bn
    vn = np.linalg.inv(np.linalg.inv(NW_V0) + s
                       + NW_BETA0 * n / bn * np.outer(xb - NW_M0, xb - NW_M0))
    log_z = (-0.5 * n * d * math.log(2 * math.pi) + _nw_log_norm(bn, nun, vn)
             - _nw_log_norm(NW_BETA0, NW_NU0, NW_V0))
    return mn, bn, nun, vn, log_z
