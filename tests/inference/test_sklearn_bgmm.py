"""Bayesian GMMs with joint mean-precision blocks against scikit-learn's
``BayesianGaussianMixture`` (float64), from the same initial responsibilities.

scikit-learn alternates an M-step (the parameters' posterior given responsibilities r)
and an E-step; CAVI with the order (pi, block, z) and ``init={"z": r0}`` makes the same
moves, so both reach the same fixed point: means, precisions and weights to 1e-6.

Lower bound. With q(theta) optimal given r, the ELBO integrates theta exactly:

    ELBO = -sum r log r - N D/2 log(2 pi) + [lnC_Dir(alpha0) - lnC_Dir(alpha)]
           + sum_k [log Z_NW(post_k) - log Z_NW(prior)],
    log Z_NW(beta, W, nu) = D/2 log(2 pi / beta) + nu D/2 log 2 + nu/2 log|W| + log Gamma_D(nu/2).

scikit-learn's ``_compute_lower_bound`` keeps ``-sum r log r - sum_k
_log_wishart_norm(nu_k, 1/2 log|W_k|) - lnC_Dir(alpha) - D/2 sum_k log beta_k``
(``_log_wishart_norm = -(log Z_W - D(D-1)/4 log pi)``), so (full covariance)

    ELBO = lower_bound_ + C,  C = -N D/2 log(2 pi) + lnC_Dir(alpha0 1_K) + K D/2 log beta0
                                 + K _log_wishart_norm(nu0, -1/2 log|covariance_prior|).

Diagonal: scikit-learn treats each component's diagonal precision with the D-dimensional
Wishart's ``sum_{j<D} digamma((nu - j)/2)`` (in ``_estimate_log_prob``) and
``sum_{j<D} lgamma((nu - j)/2)`` (in ``_log_wishart_norm``), where D independent
``Gamma(nu/2, nu c_d/2)`` precisions (its own M-step) have ``D digamma(nu/2)`` and
``D lgamma(nu/2)``. The test subclass replaces that one digamma sum in the E-step (so
both fit the same model), and the bound is compared after the matching correction
``sum_k [D lgamma(nu_k/2) - sum_j lgamma((nu_k - j)/2)]`` plus the constant
``C = -N D/2 log(2 pi) + lnC_Dir(alpha0 1_K) + K D/2 log beta0
- K sum_d [lgamma(nu0/2) - nu0/2 log(c0_d/2)]``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.special import digamma, gammaln
from sklearn.mixture import BayesianGaussianMixture
from sklearn.mixture._bayesian_mixture import _log_dirichlet_norm, _log_wishart_norm

from vijax.inference.cavi import cavi
from vijax.models.bayesian_gmm import BGMMPrior, bayesian_gmm

N, K, D = 60, 3, 2
SWEEPS = 400


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    cent = np.array([[0.0, 0.0], [4.0, 1.0], [-2.0, 4.0]])
    x = cent[rng.integers(0, K, N)] + rng.normal(size=(N, D)) @ np.array([[1.0, 0.0],
                                                                         [0.4, 0.7]])
    return x, rng.dirichlet(np.ones(K), N)


def _sklearn(x, r0, prior, covariance_type):
    class FromResponsibilities(BayesianGaussianMixture):
        def _initialize_parameters(self, X, random_state, xp=None):
            self._initialize(X, r0)

        def _estimate_log_prob(self, X, xp=None):
            out = super()._estimate_log_prob(X)
            if self.covariance_type != "diag":
                return out
            nu = self.degrees_of_freedom_
            wishart = np.sum(digamma(0.5 * (nu - np.arange(D)[:, None])), 0)
            return out + 0.5 * (D * digamma(0.5 * nu) - wishart)

    sk = FromResponsibilities(
        n_components=K, covariance_type=covariance_type,
        weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=prior.alpha0, mean_precision_prior=prior.beta0,
        mean_prior=prior.mean, degrees_of_freedom_prior=prior.dof,
        covariance_prior=prior.covariance, tol=0.0, max_iter=SWEEPS, reg_covar=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: "did not converge" after max_iter
        sk.fit(x)
    return sk


def _fit(x, r0, prior, covariance_type):
    zm = bayesian_gmm(N, K, D, prior, covariance_type)
    return cavi(zm.model, x, init={"z": r0}, tol=0.0, max_iters=SWEEPS)


def test_full_covariance_matches_sklearn(data):
    x, r0 = data
    prior = BGMMPrior(alpha0=0.5, beta0=0.7, mean=x.mean(0), dof=D + 1.5,
                      covariance=0.8 * np.cov(x.T))
    sk = _sklearn(x, r0, prior, "full")
    fit = _fit(x, r0, prior, "full")
    q = fit.posterior
    assert type(q["L"]).__name__ == "Wishart" and type(q["mu"]).__name__ == "MultivariateT"
    np.testing.assert_allclose(q["mu"].loc, sk.means_, atol=1e-6)
    np.testing.assert_allclose(q["L"].mean(), sk.precisions_, atol=1e-6)
    np.testing.assert_allclose(q["pi"].mean(), sk.weights_, atol=1e-6)
    np.testing.assert_allclose(q["L"].df, sk.degrees_of_freedom_, atol=1e-6)
    logdet_cov0 = np.linalg.slogdet(prior.covariance)[1]
    c = (-0.5 * N * D * math.log(2 * math.pi) + _log_dirichlet_norm(np.full(K, prior.alpha0))
         + 0.5 * K * D * math.log(prior.beta0)
         + K * float(_log_wishart_norm(np.array([prior.dof]), np.array([-0.5 * logdet_cov0]),
                                       D)[0]))
    np.testing.assert_allclose(float(fit.elbo), sk.lower_bound_ + c, rtol=0, atol=1e-6)


def test_diagonal_matches_sklearn(data):
    x, r0 = data
    prior = BGMMPrior(alpha0=0.5, beta0=0.7, mean=x.mean(0), dof=D + 1.5,
                      covariance=0.8 * np.var(x, 0))
    sk = _sklearn(x, r0, prior, "diag")
    fit = _fit(x, r0, prior, "diag")
    q = fit.posterior
    assert type(q["tau"]).__name__ == "Gamma" and type(q["mu"]).__name__ == "StudentT"
    np.testing.assert_allclose(q["mu"].loc, sk.means_, atol=1e-6)
    np.testing.assert_allclose(q["tau"].mean(), sk.precisions_, atol=1e-6)
    np.testing.assert_allclose(q["pi"].mean(), sk.weights_, atol=1e-6)
    nu = sk.degrees_of_freedom_
    corr = np.sum(D * gammaln(0.5 * nu) - np.sum(gammaln(0.5 * (nu - np.arange(D)[:, None])), 0))
    nu0, c0 = prior.dof, prior.covariance
    c = (-0.5 * N * D * math.log(2 * math.pi) + _log_dirichlet_norm(np.full(K, prior.alpha0))
         + 0.5 * K * D * math.log(prior.beta0)
         - K * np.sum(gammaln(0.5 * nu0) - 0.5 * nu0 * np.log(0.5 * c0)))
    np.testing.assert_allclose(float(fit.elbo), sk.lower_bound_ + corr + c, rtol=0, atol=1e-6)


def test_unmodified_sklearn_diag_differs(data):
    """The E-step override above matters: without it (D = 2) scikit-learn's diagonal
    fixed point is a different one (so the comparison can fail)."""
    x, r0 = data
    prior = BGMMPrior(alpha0=0.5, beta0=0.7, mean=x.mean(0), dof=D + 1.5,
                      covariance=0.8 * np.var(x, 0))
    sk = BayesianGaussianMixture(
        n_components=K, covariance_type="diag",
        weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=prior.alpha0, mean_precision_prior=prior.beta0,
        mean_prior=prior.mean, degrees_of_freedom_prior=prior.dof,
        covariance_prior=prior.covariance, tol=0.0, max_iter=SWEEPS, reg_covar=0.0)
    sk._initialize_parameters = lambda X, random_state, xp=None: sk._initialize(X, r0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(x)
    fixed = _sklearn(x, r0, prior, "diag")
    assert np.max(np.abs(sk.weights_ - fixed.weights_)) > 1e-6

