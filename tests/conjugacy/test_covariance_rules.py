"""Covariance latents read through their Cholesky factor (rules_covariance): a
single-block Inverse-Wishart model gives the exact conjugate posterior and log evidence.

Model: ``S ~ IW(Psi0, nu0)`` (written by hand: ``cho_solve`` for ``tr(Psi0 S^{-1})``),
``x_n ~ N(m, S)`` with known ``m`` (``jax.scipy.stats.multivariate_normal.logpdf``).
Posterior ``IW(Psi0 + sum_n d_n d_n^T, nu0 + N)`` (``d_n = x_n - m``); evidence

    log p(X) = -N D/2 log(pi) + log Gamma_D(nu_N/2) - log Gamma_D(nu0/2)
               + nu0/2 log|Psi0| - nu_N/2 log|Psi_N|.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats
from jax.scipy.linalg import cho_solve, solve_triangular
from jax.scipy.special import multigammaln as jmultigammaln
from scipy.special import multigammaln

import vijax as vj
from vijax.errors import NonConjugateError
from vijax.inference.cavi import cavi

D, N = 3, 40
_rng = np.random.default_rng(0)
_a = _rng.normal(size=(D, D))
PSI0 = _a @ _a.T + D * np.eye(D)
NU0 = D + 2.5
M = np.array([0.5, -1.0, 2.0])
X = _rng.multivariate_normal(M, np.diag([1.0, 2.0, 0.5]) + 0.3, size=N)


def iw_logpdf(s, psi, nu):
    """Inverse-Wishart log density in plain JAX (cho_solve for tr(Psi S^{-1})); the
    constant log|Psi| in numpy (a constant matrix through jnp.linalg.slogdet, analysed in
    float64 and then in float32 in one process, trips the walker's constant folding:
    see the report)."""
    d = psi.shape[-1]
    c = jnp.linalg.cholesky(s)
    return (0.5 * nu * np.linalg.slogdet(psi)[1] - 0.5 * nu * d * jnp.log(2.0)
            - jmultigammaln(0.5 * nu, d) - (nu + d + 1) * jnp.sum(jnp.log(jnp.diagonal(c)))
            - 0.5 * jnp.trace(cho_solve((c, True), psi)))


def lj_mvn(z, x):
    s = z["S"]
    return iw_logpdf(s, PSI0, NU0) + jnp.sum(stats.multivariate_normal.logpdf(x, M, s))


def lj_cho(z, x):
    """The likelihood by hand: -1/2 log|S| - 1/2 d^T S^{-1} d (cho_solve), and 2S
    factored in the prior (a positive multiple of the latent)."""
    s = z["S"]
    d = x - M
    c2 = jnp.linalg.cholesky(2.0 * s)  # log|2S| = log|S| + D log 2; (2S)^{-1} = S^{-1}/2
    prior = (0.5 * NU0 * np.linalg.slogdet(PSI0)[1] - 0.5 * NU0 * D * jnp.log(2.0)
             - jmultigammaln(0.5 * NU0, D)
             - (NU0 + D + 1) * (jnp.sum(jnp.log(jnp.diagonal(c2))) - 0.5 * D * jnp.log(2.0))
             - jnp.trace(cho_solve((c2, True), PSI0)))
    quad = jnp.sum(d.T * cho_solve((jnp.linalg.cholesky(s), True), d.T))
    n = x.shape[0]
    return (prior - 0.5 * n * jnp.linalg.slogdet(s)[1] - 0.5 * quad
            - 0.5 * n * D * jnp.log(2 * jnp.pi))


def _exact():
    d = X - M
    psi_n, nu_n = PSI0 + d.T @ d, NU0 + N
    ev = (-0.5 * N * D * np.log(np.pi) + multigammaln(nu_n / 2, D) - multigammaln(NU0 / 2, D)
          + 0.5 * NU0 * np.linalg.slogdet(PSI0)[1] - 0.5 * nu_n * np.linalg.slogdet(psi_n)[1])
    return psi_n, nu_n, ev


@pytest.fixture(scope="module", params=[lj_mvn, lj_cho], ids=["mvn_logpdf", "cho_solve"])
def fitted(request):
    model = vj.Model(request.param, {"S": vj.positive_definite(D)})
    return model, vj.analyze(model, X), cavi(model, X, max_iters=3, tol=0.0)


def test_exact_posterior_and_log_evidence(fitted):
    _, analysis, fit = fitted
    assert analysis.families["S"].__name__ == "InverseWishart"
    q = fit.posterior["S"]
    psi_n, nu_n, ev = _exact()
    np.testing.assert_allclose(q.df, nu_n, rtol=1e-12)
    np.testing.assert_allclose(q.scale, psi_n, rtol=1e-10)
    np.testing.assert_allclose(float(fit.elbo), ev, rtol=0, atol=1e-8)


def test_float32():
    model = vj.Model(lj_mvn, {"S": vj.positive_definite(D)})
    with jax.enable_x64(False):
        fit = cavi(model, X.astype(np.float32), max_iters=2, tol=0.0)
        assert fit.posterior["S"].natural["inv"].dtype == jnp.float32
    psi_n, nu_n, ev = _exact()
    np.testing.assert_allclose(fit.posterior["S"].scale, psi_n, rtol=1e-5)
    np.testing.assert_allclose(float(fit.elbo), ev, rtol=1e-5)


def _refused(lj, match):
    model = vj.Model(lj, {"S": vj.positive_definite(D)})
    with pytest.raises(NonConjugateError, match=match):
        cavi(model, X, max_iters=1)


def test_half_solve_alone_and_lu_solve_are_refused():
    # C^{-1} d summed linearly: not a statistic of S (an unpaired factor inverse)
    _refused(lambda z, x: jnp.sum(solve_triangular(jnp.linalg.cholesky(z["S"]), (x - M).T,
                                                   lower=True))
             + iw_logpdf(z["S"], PSI0, NU0), r"appears as half\(S\)")
    # jnp.linalg.solve: an LU factorization whose pivots depend on S's value
    _refused(lambda z, x: -0.5 * jnp.linalg.slogdet(z["S"])[1]
             - 0.5 * (x[0] - M) @ jnp.linalg.solve(z["S"], x[0] - M)
             + iw_logpdf(z["S"], PSI0, NU0), "LU factor of 'S'")
    # S and S^{-1} together: no positive-definite family has both statistics
    _refused(lambda z, x: iw_logpdf(z["S"], PSI0, NU0) - jnp.trace(z["S"]),
             r"both as S and as inv\(S\)")
