"""vj.marginalize / log_evidence: a conjugate latent integrated out in closed form.

Oracles: closed-form marginal likelihoods (Beta-binomial, negative binomial, Gaussian
with summed covariance, Dirichlet-multinomial, normal-gamma evidence), the Kalman
likelihood of a Gaussian chain, numerical quadrature over the integrated latent, and the
exact Gamma posterior of the normal-gamma precision.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.scipy import stats
from scipy import integrate, special

import vijax as vj
from vijax.errors import ModelSpecError, NonConjugateError
from vijax.marginalize import CollapseError, log_evidence, marginalize
from vijax.models import ZOO
from vijax.models.conjugate_pairs import BETA_PRIOR, DIRICHLET_PRIOR, GAMMA_PRIOR
from vijax.models.gaussian import NORMAL_GAMMA_PRIOR


def _normal_gamma_exact(x):
    """Posterior Gamma(a_n, rate b_n) of tau and the log evidence (closed form)."""
    p = NORMAL_GAMMA_PRIOR
    x = np.asarray(x, np.float64)
    n, xb = x.size, x.mean()
    ln = p["lambda0"] + n
    an = p["a0"] + n / 2
    bn = p["b0"] + 0.5 * np.sum((x - xb) ** 2) + p["lambda0"] * n * (xb - p["mu0"]) ** 2 / (2 * ln)
    logz = (special.gammaln(an) - special.gammaln(p["a0"]) + p["a0"] * np.log(p["b0"])
            - an * np.log(bn) + 0.5 * np.log(p["lambda0"] / ln) - 0.5 * n * np.log(2 * np.pi))
    return an, bn, logz


@pytest.fixture(scope="module")
def normal_gamma():
    zm = ZOO["normal_gamma"]()
    x = zm.make_data(jax.random.key(3))
    return zm.model, x, marginalize(zm.model, "mu", x)


def test_normal_gamma_collapsed_cavi_is_exact_posterior(normal_gamma):
    model, x, collapsed = normal_gamma
    assert sorted(collapsed.supports) == ["tau"]
    assert vj.analyze(collapsed, x).families["tau"].__name__ == "Gamma"
    an, bn, logz = _normal_gamma_exact(x)
    fit = vj.cavi(collapsed, x)
    q = fit.posterior["tau"]
    a, b = q.usual_params()["concentration"], q.usual_params()["rate"]
    np.testing.assert_allclose([float(a), float(b)], [an, bn], rtol=1e-10)
    # q is the exact posterior, so the ELBO is the log evidence
    assert abs(float(fit.elbo) - logz) < 1e-10
    # the Laplace path takes it too: the mode of u = log tau under Gamma(a_n, b_n) is a_n/b_n
    lap = vj.laplace(collapsed, x)
    assert abs(float(lap.map["tau"]) - an / bn) < 1e-8


def _gauss_legendre(f, lo, hi, n=200):
    """``log int_lo^hi exp(f(t)) dt`` by Gauss-Legendre (f vectorized, smooth)."""
    u, w = np.polynomial.legendre.leggauss(n)
    t = 0.5 * (hi - lo) * u + 0.5 * (hi + lo)
    vals = np.asarray(f(jnp.asarray(t)), np.float64)
    return float(special.logsumexp(vals, b=0.5 * (hi - lo) * w))


def test_normal_gamma_collapsed_joint_integrates_to_evidence(normal_gamma):
    model, x, collapsed = normal_gamma
    _, _, logz = _normal_gamma_exact(x)
    lj = jax.jit(jax.vmap(lambda t: collapsed.log_joint({"tau": t}, x)))
    # the collapsed joint is p(x, tau): its integral over tau (tau = e^u) is p(x)
    got = _gauss_legendre(lambda u: lj(jnp.exp(u)) + u, -9.0, 4.0, 300)
    assert abs(got - logz) < 1e-10
    # and, at a few tau, it is the integral of the full joint over mu
    p = NORMAL_GAMMA_PRIOR
    full = jax.jit(jax.vmap(lambda m, t: model.log_joint({"mu": m, "tau": t}, x), (0, None)))
    ln = p["lambda0"] + x.size
    center = float((p["lambda0"] * p["mu0"] + jnp.sum(x)) / ln)
    for tau in (0.4, 1.3):
        sd = 1.0 / math.sqrt(tau * ln)
        want = _gauss_legendre(lambda m: full(m, tau), center - 14 * sd, center + 14 * sd)
        assert abs(float(collapsed.log_joint({"tau": jnp.asarray(tau)}, x)) - want) < 1e-10
    assert abs(float(log_evidence(model, x)) - logz) < 1e-10
    # integrating tau out first leaves a Student-t in mu: not conjugate, refused by name
    with pytest.raises(NonConjugateError) as e:
        log_evidence(model, x, order=["tau", "mu"])
    assert e.value.latent == "mu" and "after integrating out ['tau']" in str(e.value)


def _beta_bernoulli(x):
    a, b = BETA_PRIOR
    k, n = float(np.sum(x)), x.size
    return special.betaln(a + k, b + n - k) - special.betaln(a, b)


def _gamma_poisson(x):
    a, b = GAMMA_PRIOR
    s, n = float(np.sum(x)), x.size
    return (a * np.log(b) - special.gammaln(a) + special.gammaln(a + s)
            - (a + s) * np.log(b + n) - np.sum(special.gammaln(np.asarray(x) + 1.0)))


def _normal_known_variance(x):
    n = x.size
    cov = 4.0 * np.ones((n, n)) + 0.25 * np.eye(n)
    return float(stats.multivariate_normal.logpdf(np.asarray(x), np.zeros(n), cov))


def _dirichlet_categorical(x):
    alpha = np.asarray(DIRICHLET_PRIOR)
    counts = np.bincount(np.asarray(x), minlength=alpha.size)
    return (special.gammaln(alpha.sum()) - special.gammaln(alpha.sum() + counts.sum())
            + np.sum(special.gammaln(alpha + counts) - special.gammaln(alpha)))


def _linreg_known_noise(d):
    """y ~ N(0, X X^T / alpha + I / beta) with alpha = 1, beta = 4 (w dense, integrated)."""
    X, y = np.asarray(d["X"]), np.asarray(d["y"])
    cov = X @ X.T + 0.25 * np.eye(y.size)
    return float(stats.multivariate_normal.logpdf(y, np.zeros(y.size), cov))


@pytest.mark.parametrize("name, exact", [
    ("linear_regression_known_noise", _linreg_known_noise),
    ("beta_bernoulli", _beta_bernoulli), ("gamma_poisson", _gamma_poisson),
    ("normal_known_variance", _normal_known_variance),
    ("dirichlet_categorical", _dirichlet_categorical)])
def test_log_evidence_closed_forms(zoo, name, exact):
    case = zoo[name]
    np.testing.assert_allclose(float(log_evidence(case.model, case.data)), exact(case.data),
                               rtol=0, atol=1e-10)


@settings(max_examples=8, deadline=None)
@given(a=st.floats(0.2, 20.0), b=st.floats(0.2, 20.0), k=st.integers(0, 12))
def test_beta_binomial_property(a, b, k):
    """Hyper-parameters enter as data: one analysis serves every example."""
    x = np.zeros(12)
    x[:k] = 1.0
    data = {"a": jnp.asarray(a), "b": jnp.asarray(b), "x": jnp.asarray(x)}
    got = float(log_evidence(_BB_MODEL, data))
    want = special.betaln(a + k, b + 12 - k) - special.betaln(a, b)
    assert abs(got - want) < 1e-10 * max(1.0, abs(want))


def _bb_lj(z, d):
    # the Beta prior written out: jax.scipy.special.betaln (so stats.beta.logpdf) is off by
    # ~1e-6 at small concentrations in jax 0.10 (betaln(1, 8)), which is not under test here
    p, a, b = z["p"], d["a"], d["b"]
    prior = (a - 1) * jnp.log(p) + (b - 1) * jnp.log1p(-p) - (
        jax.scipy.special.gammaln(a) + jax.scipy.special.gammaln(b)
        - jax.scipy.special.gammaln(a + b))
    return prior + jnp.sum(stats.bernoulli.logpmf(d["x"], p))


_BB_MODEL = vj.Model(_bb_lj, {"p": vj.unit_interval()})


def _two_gaussians(z, x):
    return stats.norm.logpdf(z["x1"], 0.0, 1.0) + stats.norm.logpdf(z["x2"], z["x1"], 1.0)


def test_two_gaussians_and_jit_vmap():
    m = marginalize(vj.Model(_two_gaussians, {"x1": vj.real(), "x2": vj.real()}), "x1")
    pts = jnp.linspace(-3.0, 2.5, 7)
    got = jax.jit(jax.vmap(lambda v: m.log_joint({"x2": v}, None)))(pts)
    np.testing.assert_allclose(np.asarray(got), stats.norm.logpdf(pts, 0.0, math.sqrt(2.0)),
                               rtol=0, atol=1e-12)
    assert vj.analyze(m, None).families["x2"].__name__ == "Normal"


def _chain(z, y):
    lp = stats.norm.logpdf(z["z0"], 0.0, 1.0)
    lp += stats.norm.logpdf(z["z1"], 0.9 * z["z0"], 0.8)
    lp += stats.norm.logpdf(z["z2"], 0.9 * z["z1"], 0.8)
    lp += jnp.sum(stats.norm.logpdf(y, jnp.stack([z["z0"], z["z1"], z["z2"]]), 0.5))
    return lp


def _kalman_loglik(y, a=0.9, q=0.64, r=0.25, m=0.0, p=1.0):
    """Filtering recursion: sum of one-step predictive log densities."""
    total = 0.0
    for t, yt in enumerate(np.asarray(y)):
        if t:
            m, p = a * m, a * a * p + q
        s = p + r
        total += -0.5 * (np.log(2 * np.pi * s) + (yt - m) ** 2 / s)
        k = p / s
        m, p = m + k * (yt - m), (1 - k) * p
    return total


def test_gaussian_chain_collapsed_step_by_step_is_kalman():
    model = vj.Model(_chain, {"z0": vj.real(), "z1": vj.real(), "z2": vj.real()})
    y = jnp.array([0.3, -0.2, 1.1])
    m1 = marginalize(model, "z0", y)
    assert vj.analyze(m1, y).conjugate  # still Gaussian in z1, z2
    m2 = marginalize(m1, "z1", y)
    assert abs(float(log_evidence(m2, y)) - _kalman_loglik(y)) < 1e-10
    assert abs(float(log_evidence(model, y)) - _kalman_loglik(y)) < 1e-10


def _logistic_lj(z, d):
    lp = stats.gamma.logpdf(z["alpha"], 2.0, scale=1.0)
    lp += jnp.sum(stats.norm.logpdf(z["w"], 0.0, 1.0 / jnp.sqrt(z["alpha"])))
    logits = d["X"] @ z["w"]
    return lp + jnp.sum(d["y"] * jax.nn.log_sigmoid(logits)
                        + (1 - d["y"]) * jax.nn.log_sigmoid(-logits))


@pytest.fixture(scope="module")
def logistic():
    X = jax.random.normal(jax.random.key(1), (15, 2))
    d = {"X": X, "y": (X[:, 0] > 0.2).astype(X.dtype)}
    return vj.Model(_logistic_lj, {"w": vj.real((2,)), "alpha": vj.positive()}), d


def test_nonconjugate_neighbour_collapses_by_point(logistic):
    """w is not conjugate: alpha is integrated with w held as data (a Student-t prior)."""
    model, d = logistic
    m = marginalize(model, "alpha", d)
    w = jnp.array([0.3, -0.7])
    # alpha ~ Gamma(2, 1), w | alpha ~ N(0, I / alpha): w ~ multivariate t, nu = 4, scale I / 2
    nu, p, s2 = 4.0, 2, 0.5
    q = float(w @ w) / s2
    log_t = (special.gammaln((nu + p) / 2) - special.gammaln(nu / 2) - p / 2 * np.log(nu * np.pi)
             - p / 2 * np.log(s2) - (nu + p) / 2 * np.log1p(q / nu))
    lik = float(_logistic_lj({"w": w, "alpha": 1.0}, d)
                - stats.gamma.logpdf(1.0, 2.0) - jnp.sum(stats.norm.logpdf(w)))
    assert abs(float(m.log_joint({"w": w}, d)) - (log_t + lik)) < 1e-10


def test_refusals(logistic):
    model, d = logistic
    with pytest.raises(NonConjugateError) as e:
        marginalize(model, "w", d)
    assert e.value.latent == "w" and "'w'" in str(e.value)
    lazy = marginalize(model, "w")  # no data: refused at the first use, by name
    with pytest.raises(NonConjugateError) as e:
        vj.laplace(lazy, d)
    assert e.value.latent == "w"
    assert isinstance(e.value, CollapseError)
    with pytest.raises(ModelSpecError, match="'beta'"):
        marginalize(model, "beta")
    with pytest.raises(ModelSpecError, match="log_evidence"):
        marginalize(model, ["w", "alpha"])
    with pytest.raises(ModelSpecError, match="log_evidence"):
        marginalize(_BB_MODEL, "p")


def test_mixture_assignments_collapse_to_mixture_likelihood():
    k, n = 2, 5
    x = jnp.array([-2.0, -1.5, 0.1, 1.9, 2.4])

    def lj(z, x):
        lp = stats.dirichlet.logpdf(z["pi"], jnp.ones(k)) + jnp.sum(stats.norm.logpdf(z["mu"], 0, 3.0))
        lp += jnp.sum(jnp.log(z["pi"])[z["c"]])
        return lp + jnp.sum(stats.norm.logpdf(x, z["mu"][z["c"]], 1.0))

    model = vj.Model(lj, {"pi": vj.simplex(k), "mu": vj.real((k,)), "c": vj.categorical(k, (n,))})
    m = marginalize(model, "c", x)
    pi, mu = jnp.array([0.3, 0.7]), jnp.array([-1.0, 2.0])
    want = (stats.dirichlet.logpdf(pi, jnp.ones(k)) + jnp.sum(stats.norm.logpdf(mu, 0, 3.0))
            + jnp.sum(jax.nn.logsumexp(jnp.log(pi) + stats.norm.logpdf(x[:, None], mu, 1.0), -1)))
    assert abs(float(m.log_joint({"pi": pi, "mu": mu}, x)) - float(want)) < 1e-10


def _three(z, d):
    lp = stats.norm.logpdf(z["m"], 0.0, 1.0)
    lp += stats.norm.logpdf(z["a"], z["m"], 1.0) + stats.norm.logpdf(z["b"], z["m"], 1.0)
    return lp + stats.norm.logpdf(d[0], z["a"], 0.5) + stats.norm.logpdf(d[1], z["b"], 0.5)


def test_collapsed_gibbs_matches_exact_gaussian():
    from vijax.inference.gibbs import gibbs
    d = jnp.array([1.0, -0.5])
    m = marginalize(vj.Model(_three, {"m": vj.real(), "a": vj.real(), "b": vj.real()}), "m", d)
    # exact posterior of (a, b): precision = prior precision of N(0, [[2,1],[1,2]]) + 4 I
    prec = np.linalg.inv([[2.0, 1.0], [1.0, 2.0]]) + 4.0 * np.eye(2)
    cov = np.linalg.inv(prec)
    mean = cov @ (4.0 * np.asarray(d))
    res = gibbs(m, d, jax.random.key(0), num_samples=2000, num_warmup=100, num_chains=2)
    got, var, ess = res.mean(), res.variance(), res.ess()
    for i, nm in enumerate(["a", "b"]):
        z = (float(got[nm]) - mean[i]) / math.sqrt(cov[i, i] / float(ess[nm]))
        assert abs(z) < 4, (nm, z)
        assert abs(float(var[nm]) / cov[i, i] - 1) < 0.15


def test_float32_dtype_aware(normal_gamma):
    model, x64, _ = normal_gamma
    an, bn, logz = _normal_gamma_exact(x64)
    with jax.enable_x64(False):
        x = jnp.asarray(np.asarray(x64), jnp.float32)
        m = marginalize(model, "mu", x)
        v = m.log_joint({"tau": jnp.asarray(1.3, jnp.float32)}, x)
        ev = log_evidence(model, x)
        fit = vj.cavi(m, x)
        assert v.dtype == jnp.float32 and ev.dtype == jnp.float32
        a = fit.posterior["tau"].usual_params()["concentration"]
    eps = float(np.finfo(np.float32).eps)
    # magnitudes ~ 30 summed from ~n terms: a few hundred ulps of the result
    assert abs(float(ev) - logz) < 200 * eps * abs(logz)
    assert abs(float(a) - an) < 50 * eps * an
