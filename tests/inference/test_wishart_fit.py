"""Fits with a Wishart factor: the single-block conjugate pair (exact posterior and log
evidence in one sweep, float64 and float32) and a Normal-Wishart with mean-field
q(mu) q(L) (CAVI against the gradient path)."""

from __future__ import annotations

import jax
import numpy as np
import jax.numpy as jnp
import pytest
from scipy.special import multigammaln

import vijax as vj
from vijax.model import Model
from vijax.models.wishart_models import normal_wishart
from vijax.stats import wishart_logpdf
from vijax.supports import positive_definite

D, N = 3, 25
M = np.array([0.1, -0.2, 0.3])
V0 = 0.5 * np.eye(D) + 0.1
NU0 = D + 2.0
X = np.random.default_rng(0).normal(size=(N, D)) @ np.array(
    [[1.0, 0, 0], [0.5, 1.0, 0], [0.2, -0.3, 0.7]]) + M


def _known_mean_lj(z, x):
    """L ~ W(V0, nu0), x_n ~ N(m, L^{-1}) with m known."""
    prec = z["L"]
    d = x - M
    n, dim = x.shape
    return (wishart_logpdf(prec, V0, NU0) - 0.5 * jnp.einsum("ni,ij,nj->", d, prec, d)
            + 0.5 * n * jnp.linalg.slogdet(prec)[1] - 0.5 * n * dim * jnp.log(2 * jnp.pi))


MODEL = Model(_known_mean_lj, {"L": positive_definite(D)})


def _exact(x):
    """Posterior W(V_N, nu0 + N), V_N = (V0^{-1} + S)^{-1}, and log p(x) =
    -ND/2 log(2 pi) + log G_D(nu_N/2) - log G_D(nu0/2) + nu_N/2 log|2 V_N| - nu0/2 log|2 V0|."""
    s = (x - M).T @ (x - M)
    vn = np.linalg.inv(np.linalg.inv(V0) + s)
    nun = NU0 + len(x)
    logz = (-len(x) * D / 2 * np.log(2 * np.pi) + multigammaln(nun / 2, D)
            - multigammaln(NU0 / 2, D) + nun / 2 * np.linalg.slogdet(2 * vn)[1]
            - NU0 / 2 * np.linalg.slogdet(2 * V0)[1])
    return vn, nun, logz


def test_known_mean_one_sweep_gives_exact_posterior_and_evidence():
    vn, nun, logz = _exact(X)
    fit = vj.cavi(MODEL, X, key=jax.random.key(0), tol=1e-12)
    q = fit.posterior["L"]
    assert fit.converged and fit.num_iters <= 2  # exact after the first sweep
    np.testing.assert_allclose(q.df, nun, rtol=1e-13)
    np.testing.assert_allclose(q.scale, vn, rtol=1e-10)
    np.testing.assert_allclose(fit.elbo, logz, rtol=0, atol=1e-10)


def test_known_mean_float32():
    vn, nun, logz = _exact(X)
    with jax.enable_x64(False):
        fit = vj.cavi(MODEL, X.astype(np.float32), key=jax.random.key(0), tol=1e-5)
        q = fit.posterior["L"]
        assert q.dtype == jnp.float32
        scale, df, elbo = np.asarray(q.scale), float(q.df), float(fit.elbo)
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(df, nun, rtol=10 * eps)
    np.testing.assert_allclose(scale, vn, rtol=1e3 * eps, atol=1e3 * eps * np.abs(vn).max())
    np.testing.assert_allclose(elbo, logz, rtol=1e3 * eps)


@pytest.fixture(scope="module")
def normal_wishart_fits():
    zoo = normal_wishart()
    x = np.asarray(zoo.make_data(jax.random.key(3)))
    fit = vj.cavi(zoo.model, x, key=jax.random.key(0), tol=1e-12, max_iters=500)
    gfit = vj.fit_gradient(zoo.model, x, key=jax.random.key(1))
    return zoo, x, fit, gfit


def test_normal_wishart_meanfield_fixed_point_and_gradient_agree(normal_wishart_fits):
    zoo, x, fit, gfit = normal_wishart_fits
    assert {n: type(q).__name__ for n, q in fit.posterior.items()} == zoo.families
    assert fit.converged
    trace = np.asarray(fit.elbo_trace)
    assert np.all(np.diff(trace[np.isfinite(trace)]) > -1e-9)  # ELBO never decreases
    # the textbook mean-field fixed point (to the stopping tolerance): q(L) = W(V_N, nu0 + N) with
    # V_N^{-1} = V0^{-1} + sum_n E[(x_n - mu)(x_n - mu)^T]; q(mu) = N(m, (S0^{-1} + N E[L])^{-1})
    from vijax.models import wishart_models as wm
    qmu, ql = fit.posterior["mu"], fit.posterior["L"]
    m, cov = np.asarray(qmu.loc), np.asarray(qmu.cov)
    scatter = (x - m).T @ (x - m) + len(x) * cov
    np.testing.assert_allclose(ql.scale, np.linalg.inv(np.linalg.inv(wm.PRIOR_SCALE) + scatter),
                               rtol=1e-5)
    np.testing.assert_allclose(ql.df, wm.PRIOR_DF + len(x), rtol=1e-12)
    el = np.asarray(ql.mean())
    prec_mu = np.linalg.inv(wm.MEAN_PRIOR_COV) + len(x) * el
    np.testing.assert_allclose(cov, np.linalg.inv(prec_mu), rtol=1e-5)
    np.testing.assert_allclose(m, np.linalg.solve(prec_mu, el @ x.sum(0)), rtol=1e-5)
    report = vj.compare(fit, gfit)
    assert report.agree, str(report)
    assert abs(float(fit.elbo) - float(gfit.elbo)) < 1e-6 * abs(float(fit.elbo))
