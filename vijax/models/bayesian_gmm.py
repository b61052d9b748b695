"""Bayesian Gaussian mixtures with a joint mean-precision block per component, in
scikit-learn's ``BayesianGaussianMixture`` parameterization
(``weight_concentration_prior_type="dirichlet_distribution"``):

    pi ~ Dir(alpha0 1_K),  z_n ~ Cat(pi),  x_n | z_n = k ~ N(mu_k, Lambda_k^{-1}),

- ``covariance_type="full"``: ``Lambda_k ~ W(covariance_prior^{-1}, nu0)``,
  ``mu_k | Lambda_k ~ N(m0, (beta0 Lambda_k)^{-1})``; the block ``[["mu", "L"]]`` is one
  Normal-Wishart factor per component;
- ``covariance_type="diag"``: ``tau_kd ~ Gamma(nu0/2, covariance_prior_d/2)`` (a 1-D
  Wishart per dimension), ``mu_kd | tau_kd ~ N(m0_d, 1/(beta0 tau_kd))``; the block
  ``[["mu", "tau"]]`` is one Normal-Gamma factor per component and dimension.

These are constructors (not in :data:`vijax.models.ZOO`): the sizes and priors are
arguments, and the tests compare them with scikit-learn.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
from jax.scipy import stats
from jax.scipy.special import gammaln

from vijax.model import Model
from vijax.models.base import ZooModel
from vijax.supports import categorical, positive, positive_definite, real, simplex


@dataclasses.dataclass(frozen=True)
class BGMMPrior:
    """scikit-learn's priors: ``weight_concentration_prior`` (alpha0),
    ``mean_precision_prior`` (beta0), ``mean_prior`` (m0, [D]),
    ``degrees_of_freedom_prior`` (nu0) and ``covariance_prior`` ([D, D] for "full",
    [D] for "diag")."""

    alpha0: float
    beta0: float
    mean: np.ndarray
    dof: float
    covariance: np.ndarray


def _log_wishart_norm(nu, cov_prior):
    """``log`` of the Wishart ``W(cov_prior^{-1}, nu)`` normalizer's inverse:
    ``-(nu D/2 log 2 - nu/2 log|cov_prior| + log Gamma_D(nu/2))``."""
    d = cov_prior.shape[-1]
    logdet = np.linalg.slogdet(cov_prior)[1]
    lmg = d * (d - 1) / 4 * math.log(math.pi) + sum(
        float(gammaln(0.5 * (nu - j))) for j in range(d))
    return -(0.5 * nu * d * math.log(2.0) - 0.5 * nu * logdet + lmg)


def full_log_joint(prior: BGMMPrior):
    """Log joint of the full-covariance mixture (latents pi, z, mu [K, D], L [K, D, D])."""
    m0 = np.asarray(prior.mean, float)
    cov0 = np.asarray(prior.covariance, float)
    w0inv = cov0  # the Wishart scale is covariance_prior^{-1}
    d = m0.shape[0]
    wnorm = _log_wishart_norm(prior.dof, cov0)
    half_log_2pi = 0.5 * d * math.log(2.0 * math.pi)

    def log_joint(z, x):
        pi, c, mu, prec = z["pi"], z["z"], z["mu"], z["L"]
        k = pi.shape[-1]
        logdet = jnp.linalg.slogdet(prec)[1]  # [K]
        lp = stats.dirichlet.logpdf(pi, jnp.full((k,), prior.alpha0))
        # L_k ~ W(cov0^{-1}, nu0)
        lp += jnp.sum(0.5 * (prior.dof - d - 1.0) * logdet
                      - 0.5 * jnp.einsum("ij,kji->k", w0inv, prec) + wnorm)
        # mu_k | L_k ~ N(m0, (beta0 L_k)^{-1})
        dm = mu - m0
        lp += jnp.sum(0.5 * (d * math.log(prior.beta0) + logdet) - half_log_2pi
                      - 0.5 * prior.beta0 * jnp.einsum("ki,kij,kj->k", dm, prec, dm))
        # x_n | z_n ~ N(mu_z, L_z^{-1})
        lp += jnp.sum(jnp.log(pi)[c])
        dx = x - mu[c]
        lp += jnp.sum(0.5 * logdet[c] - half_log_2pi
                      - 0.5 * jnp.einsum("ni,nij,nj->n", dx, prec[c], dx))
        return lp
    return log_joint


def diag_log_joint(prior: BGMMPrior):
    """Log joint of the diagonal mixture (latents pi, z, mu [K, D], tau [K, D])."""
    m0 = np.asarray(prior.mean, float)
    c0 = np.asarray(prior.covariance, float)

    def log_joint(z, x):
        pi, c, mu, tau = z["pi"], z["z"], z["mu"], z["tau"]
        k = pi.shape[-1]
        lp = stats.dirichlet.logpdf(pi, jnp.full((k,), prior.alpha0))
        lp += jnp.sum(stats.gamma.logpdf(tau, 0.5 * prior.dof, scale=2.0 / c0))
        lp += jnp.sum(stats.norm.logpdf(mu, m0, 1.0 / jnp.sqrt(prior.beta0 * tau)))
        lp += jnp.sum(jnp.log(pi)[c])
        lp += jnp.sum(stats.norm.logpdf(x, mu[c], 1.0 / jnp.sqrt(tau[c])))
        return lp
    return log_joint


def bayesian_gmm(n: int, k: int, d: int, prior: BGMMPrior, covariance_type: str = "full",
                 block: bool = True) -> ZooModel:
    """The mixture for ``n`` points, ``k`` components, ``d`` dimensions. ``block``: the
    mean and precision of each component form one joint factor (Normal-Wishart or
    Normal-Gamma); False: mean-field ``q(mu) q(L)``."""
    if covariance_type == "full":
        sup = {"pi": simplex(k), "z": categorical(k, shape=(n,)), "mu": real((k, d)),
               "L": positive_definite(d, shape=(k,))}
        lj, pair, fams = full_log_joint(prior), ["mu", "L"], ("NormalWishart", "Wishart")
    elif covariance_type == "diag":
        sup = {"pi": simplex(k), "z": categorical(k, shape=(n,)), "mu": real((k, d)),
               "tau": positive((k, d))}
        lj, pair, fams = diag_log_joint(prior), ["mu", "tau"], ("NormalGamma", "Gamma")
    else:
        raise ValueError(f"covariance_type must be 'full' or 'diag', got {covariance_type!r}")
    model = Model(lj, sup, blocks=[pair] if block else None)
    families = {"pi": "Dirichlet", "z": "Categorical"}
    families.update({"+".join(pair): fams[0]} if block else {pair[1]: fams[1]})
    return ZooModel(f"bayesian_gmm_{covariance_type}", model, None, True, families)


__all__ = ["BGMMPrior", "bayesian_gmm", "full_log_joint", "diag_log_joint"]
