"""Linear-Gaussian state-space models get a Gauss-Markov chain factor: one CAVI sweep is
the Kalman/RTS smoother (an independent numpy filter and smoother here) and the ELBO is the
Kalman filter's log-likelihood; the chain and today's dense factor reach the same posterior
and ELBO (also with an unknown noise precision and a 2-d state); other couplings stay
dense with the reason; a dense factor too large for memory is refused before allocating;
T = 20000 fits (linear time) and float32 runs."""

from __future__ import annotations

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import vijax as vj
from vijax.families import GaussMarkov, MultivariateNormal, registry
from vijax.families import mvn
from vijax.models.state_space import SSM_PARAMS, state_space


def rts(y, a=SSM_PARAMS["a"], q=SSM_PARAMS["q"], r=SSM_PARAMS["r"]):
    """Kalman filter + Rauch-Tung-Striebel smoother of the zoo model (numpy): smoothed
    means, variances, lag-one covariances and ``log p(y)``."""
    T = len(y)
    mf, pf, mp, pp = (np.zeros(T) for _ in range(4))
    loglik, m_pred, p_pred = 0.0, 0.0, 1.0
    for t in range(T):
        mp[t], pp[t] = m_pred, p_pred
        s = p_pred + r ** 2
        loglik += -0.5 * (np.log(2 * np.pi * s) + (y[t] - m_pred) ** 2 / s)
        k = p_pred / s
        mf[t], pf[t] = m_pred + k * (y[t] - m_pred), (1 - k) * p_pred
        m_pred, p_pred = a * mf[t], a * a * pf[t] + q ** 2
    ms, ps, cross = mf.copy(), pf.copy(), np.zeros(T - 1)
    for t in range(T - 2, -1, -1):
        g = pf[t] * a / pp[t + 1]
        ms[t] = mf[t] + g * (ms[t + 1] - mp[t + 1])
        ps[t] = pf[t] + g * g * (ps[t + 1] - pp[t + 1])
        cross[t] = g * ps[t + 1]
    return ms, ps, cross, loglik


def test_zoo_state_space_is_a_chain_and_the_analysis_says_why(zoo):
    case = zoo["state_space"]
    inf = case.compiled.infos["x"]
    assert inf.family == "GaussMarkov" and inf.structure == "chain"
    assert inf.stat_shape("pair") == (24, 1, 1)
    text = str(case.analysis)
    assert re.search(r"x .*GaussMarkov\(T=25, D=1\) +chain", text), text
    assert "couple x[t-1] and x[t] only" in text


@pytest.fixture(scope="module")
def chain_fit(zoo):
    case = zoo["state_space"]
    return vj.cavi(case.model, case.data, max_iters=2)


def test_one_sweep_is_the_rts_smoother_and_the_elbo_the_kalman_likelihood(zoo, chain_fit):
    case = zoo["state_space"]
    y = np.asarray(case.data)
    ms, ps, cross, loglik = rts(y)
    fit = chain_fit
    q = fit.posterior["x"]
    assert isinstance(q, GaussMarkov)
    np.testing.assert_allclose(q.mean(), ms, atol=1e-10)
    np.testing.assert_allclose(q.variance(), ps, atol=1e-10)
    np.testing.assert_allclose(q.cross_cov[:, 0, 0], cross, atol=1e-10)
    np.testing.assert_allclose(fit.elbo_trace[0], loglik, rtol=1e-10)
    np.testing.assert_allclose(fit.elbo, loglik, rtol=1e-10)


def test_chain_equals_the_dense_factor_on_the_zoo_model(zoo, chain_fit):
    case = zoo["state_space"]
    chain = chain_fit
    with registry.without("GaussMarkov"):
        dense = vj.cavi(case.model, case.data, max_iters=2)
    qd = dense.posterior["x"]
    assert isinstance(qd, MultivariateNormal) and qd.dim == 25
    qc = chain.posterior["x"]
    np.testing.assert_allclose(qc.mean(), qd.mean(), atol=1e-8)
    cov = np.asarray(qd.cov)
    np.testing.assert_allclose(qc.variance(), np.diag(cov), atol=1e-8)
    np.testing.assert_allclose(qc.cross_cov[:, 0, 0], np.diag(cov, 1), atol=1e-8)
    np.testing.assert_allclose(chain.elbo, dense.elbo, rtol=1e-8)


# ---------------------------------------------------------------- 2-d state, unknown noise
A2 = np.array([[0.9, 0.2], [-0.1, 0.8]])


def _ssm2(z, y):
    """x_0 ~ N(0, I), x_t ~ N(A x_{t-1}, 0.5^2 I), y_t ~ N(x_t[0], 1/tau), tau ~ Gamma(2, 1)."""
    x, tau = z["x"], z["tau"]
    n = y.shape[0]
    resid = y - x[:, 0]
    return (stats.gamma.logpdf(tau, 2.0) + stats.norm.logpdf(x[0]).sum()
            + stats.norm.logpdf(x[1:], x[:-1] @ A2.T, 0.5).sum()
            + 0.5 * n * jnp.log(tau) - 0.5 * tau * jnp.sum(resid * resid)
            - 0.5 * n * np.log(2 * np.pi))


def test_two_dim_state_with_unknown_noise_matches_the_dense_fixed_point():
    T = 12
    y = jnp.asarray(np.random.default_rng(0).normal(size=T).cumsum() * 0.3)
    model = vj.Model(_ssm2, {"x": vj.real((T, 2)), "tau": vj.positive()})
    inf = vj.analyze(model, y).program.infos["x"]
    assert (inf.family, inf.layout.num_steps, inf.layout.state_dim) == ("GaussMarkov", T, 2)
    key = jax.random.key(0)
    chain = vj.cavi(model, y, key=key, max_iters=200, tol=1e-13)
    with registry.without("GaussMarkov"):
        dense = vj.cavi(model, y, key=key, max_iters=200, tol=1e-13)
    assert isinstance(dense.posterior["x"], MultivariateNormal)
    np.testing.assert_allclose(chain.elbo, dense.elbo, rtol=1e-8)
    np.testing.assert_allclose(chain.posterior["x"].mean(), dense.posterior["x"].mean(),
                               atol=1e-8)
    np.testing.assert_allclose(chain.posterior["x"].variance(),
                               dense.posterior["x"].variance(), atol=1e-8)
    np.testing.assert_allclose(chain.posterior["tau"].mean(), dense.posterior["tau"].mean(),
                               rtol=1e-8)


# ---------------------------------------------------------------- other couplings
def _ar2(z, y):
    x = z["x"]
    return (stats.norm.logpdf(x[:2]).sum()
            + stats.norm.logpdf(x[2:], 0.5 * x[1:-1] + 0.3 * x[:-2], 0.5).sum()
            + stats.norm.logpdf(y, x, 0.4).sum())


def test_a_longer_range_coupling_stays_dense_and_a_huge_one_is_refused(monkeypatch):
    y = jnp.linspace(-1.0, 1.0, 30)
    model = vj.Model(_ar2, {"x": vj.real((30,))})
    a = vj.analyze(model, y)
    inf = a.program.infos["x"]
    assert inf.family == "MultivariateNormal" and inf.structure == "dense"
    assert "no Gauss-Markov chain: terms couple x[t] with x[t+2] along axis 0" in str(a)
    monkeypatch.setattr(mvn, "DENSE_MEMORY_LIMIT", 10_000)  # 8 copies of 30x30 float64
    with pytest.raises(vj.ModelSpecError, match=r"latent 'x'.*event of 30 elements.*"
                       r"\(57600 bytes"):
        vj.cavi(model, y, max_iters=1)


# ---------------------------------------------------------------- long series, float32
def test_twenty_thousand_steps_fit():
    """A dense factor segfaulted here; the chain's analysis, compile and sweep take
    seconds (benchmarks/bench_state_space.py times T = 2000 vs 20000: linear)."""
    zm = state_space(20000, vectorized=True)
    y = zm.make_data(jax.random.key(1))
    t0 = time.perf_counter()
    with pytest.warns(vj.ConvergenceWarning):
        fit = vj.cavi(zm.model, y, max_iters=1)
    jax.block_until_ready(fit.elbo)
    elapsed = time.perf_counter() - t0
    ms, ps, _, loglik = rts(np.asarray(y))
    q = fit.posterior["x"]
    assert isinstance(q, GaussMarkov) and q.num_steps == 20000
    np.testing.assert_allclose(q.mean(), ms, atol=1e-9)
    np.testing.assert_allclose(q.variance(), ps, atol=1e-9)
    np.testing.assert_allclose(fit.elbo, loglik, rtol=1e-10)
    print(f"T=20000: analysis + compile + one sweep {elapsed:.2f} s")


def test_float32_fit_matches_the_float64_smoother():
    zm = state_space(300, vectorized=True)
    y = np.asarray(zm.make_data(jax.random.key(2)))
    ms, ps, _, loglik = rts(y)
    with jax.enable_x64(False):
        fit = vj.cavi(zm.model, jnp.asarray(y, jnp.float32), max_iters=2)
        assert fit.elbo.dtype == jnp.float32
        mean, var = np.asarray(fit.posterior["x"].mean()), np.asarray(
            fit.posterior["x"].variance())
    eps = float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(mean, ms, atol=50 * eps * np.abs(ms).max())
    np.testing.assert_allclose(var, ps, rtol=50 * eps)
    np.testing.assert_allclose(fit.elbo, loglik, rtol=50 * eps)


def test_gradient_path_reaches_the_smoother(zoo):
    case = zoo["state_space"]
    _, _, _, loglik = rts(np.asarray(case.data))
    fit = vj.fit_gradient(case.model, case.data, jax.random.key(0))
    assert isinstance(fit.posterior["x"], GaussMarkov)
    np.testing.assert_allclose(fit.elbo, loglik, rtol=1e-8)
