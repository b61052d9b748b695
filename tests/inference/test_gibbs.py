"""Blocked Gibbs from the compiler's complete conditionals (vijax.inference.gibbs).

Oracles: single-block conjugate models, whose every draw is an exact posterior draw
(moments against the closed form, z-scores with the draws' ESS); the bivariate Gaussian,
whose Gibbs marginals are N(mu_i, Sigma_ii) while CAVI's factors have variance
1/Lambda_ii, and whose Gibbs chain for z1 is AR(1) with coefficient rho^2 (a closed-form
ESS); CAVI on the normal-gamma model and a well-separated mixture (means within a fraction
of a posterior sd).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import vijax as vj
from vijax.compare_draws import compare_draws
from vijax.errors import (ArgumentTypeError, FitDivergedError, ModelSpecError,
                          NonConjugateError)
from vijax.inference.gibbs import gibbs
from vijax.inference.gibbs_diagnostics import ess, rhat
from vijax.models.conjugate_pairs import GAMMA_PRIOR

KEY = jax.random.key(7)


def _z(draws, f, expected):
    """z-score of the draws' mean of ``f`` against its exact expectation, with the
    Monte Carlo error ``sd(f) / sqrt(ESS(f))``."""
    fx = f(np.asarray(draws, np.float64))
    se = fx.std() / np.sqrt(float(ess(fx)))
    return abs(fx.mean() - expected) / se


# --------------------------------------------------------------- single-block models
@pytest.fixture(scope="module")
def gamma_poisson(zoo):
    case = zoo["gamma_poisson"]
    res = gibbs(case.model, case.data, KEY, num_samples=3000, num_warmup=0, num_chains=2)
    return case, res


def test_gamma_poisson_draws_match_exact_posterior(gamma_poisson):
    case, res = gamma_poisson
    x = np.asarray(case.data)
    a, b = GAMMA_PRIOR[0] + x.sum(), GAMMA_PRIOR[1] + x.size  # Gamma(shape, rate)
    mean, var = a / b, a / b ** 2
    lam = res.draws["lam"]
    assert lam.shape == (2, 3000) and res.log_joint.shape == (2, 3000)
    assert np.all(np.asarray(lam) > 0)
    assert _z(lam, lambda v: v, mean) < 4
    assert _z(lam, lambda v: (v - mean) ** 2, var) < 4
    assert _z(lam, lambda v: np.log(v), float(jax.scipy.special.digamma(a) - np.log(b))) < 4
    # independent draws: ESS near the number of draws, R-hat near 1
    assert float(res.ess()["lam"]) > 0.8 * 6000
    assert abs(float(res.rhat()["lam"]) - 1) < 0.01
    # the log joint per draw is the model's
    lj = jax.jit(jax.vmap(lambda v: case.model.log_joint({"lam": v}, case.data)))(lam[0])
    np.testing.assert_allclose(res.log_joint[0], lj, rtol=1e-12)


def _normal_mean():
    """mu ~ N(0, 1), x_i ~ N(mu, 1) (known variance): mu | x ~ N(sum x / (n + 1), 1 / (n + 1))."""
    m = vj.Model(lambda z, x: stats.norm.logpdf(z["mu"]) + stats.norm.logpdf(x, z["mu"]).sum(),
                 {"mu": vj.real()})
    return m, jnp.linspace(-0.5, 2.0, 10)


def test_normal_known_variance_draws_match_exact_posterior():
    m, x = _normal_mean()
    prec = 1.0 + x.size
    mean = float(x.sum()) / prec
    # chains started apart (init per chain), a legacy uint32 key
    res = gibbs(m, x, jax.random.PRNGKey(0), num_samples=2000, num_warmup=0, num_chains=2,
                init={"mu": jnp.array([-1.0, 1.0])})
    mu = res.draws["mu"]
    assert mu.shape == (2, 2000)
    assert "GibbsResult" in str(res) and "mu" in res.summary()
    assert _z(mu, lambda v: v, mean) < 4
    assert _z(mu, lambda v: (v - mean) ** 2, 1 / prec) < 4
    # a wrong posterior is caught: the prior mean instead of the posterior mean
    assert _z(mu, lambda v: v, 0.0) > 10


def test_dense_gaussian_block_is_drawn_jointly(zoo):
    """Bayesian linear regression with known noise: one MultivariateNormal block, every
    draw exact: element means, variances and a covariance against the closed form."""
    from vijax.models.gaussian import LINREG_KNOWN
    case = zoo["linear_regression_known_noise"]
    X, y = np.asarray(case.data["X"]), np.asarray(case.data["y"])
    prec = LINREG_KNOWN["alpha"] * np.eye(X.shape[1]) + LINREG_KNOWN["beta"] * X.T @ X
    cov = np.linalg.inv(prec)
    mean = cov @ (LINREG_KNOWN["beta"] * X.T @ y)
    res = gibbs(case.model, case.data, KEY, num_samples=3000, num_warmup=0)
    w = np.asarray(res.draws["w"])
    assert w.shape == (1, 3000, X.shape[1]) and res.families["w"] == "MultivariateNormal"
    for i in range(X.shape[1]):
        assert _z(w[..., i], lambda v: v, mean[i]) < 4
        assert _z(w[..., i], lambda v: (v - mean[i]) ** 2, cov[i, i]) < 4
    cross = (w[..., 0] - mean[0]) * (w[..., 1] - mean[1])
    assert _z(cross, lambda v: v, cov[0, 1]) < 4


# ---------------------------------------------------------------- bivariate Gaussian
@pytest.fixture(scope="module")
def bivariate(zoo):
    case = zoo["bivariate_gaussian"]
    res = gibbs(case.model, case.data, KEY, num_samples=4000, num_warmup=50, num_chains=2)
    fit = vj.cavi(case.model, case.data, tol=1e-14, max_iters=500)  # as test_cavi (cached)
    return case, res, fit


def test_bivariate_gibbs_recovers_sigma_cavi_gives_inverse_lambda(bivariate):
    case, res, fit = bivariate
    mean, cov = np.asarray(case.data["mean"]), np.asarray(case.data["cov"])
    lam = np.linalg.inv(cov)
    for i, n in enumerate(("z1", "z2")):
        d = res.draws[n]
        assert _z(d, lambda v: v, mean[i]) < 4
        assert _z(d, lambda v: (v - mean[i]) ** 2, cov[i, i]) < 4
        # and not CAVI's variance (1/Lambda_ii = 0.19 at rho = 0.9)
        assert _z(d, lambda v: (v - mean[i]) ** 2, 1 / lam[i, i]) > 10
        np.testing.assert_allclose(float(fit.posterior[n].variance()), 1 / lam[i, i],
                                   rtol=1e-8)
    rep = compare_draws(fit, res, names=("cavi", "gibbs"))
    rho = cov[0, 1]
    for n in ("z1", "z2"):  # sd ratio sqrt((1/Lambda_ii) / Sigma_ii) = sqrt(1 - rho^2)
        assert abs(rep.latents[n]["sd_ratio_min"] - np.sqrt(1 - rho ** 2)) < 0.05
    assert rep.agree  # means agree
    assert not compare_draws(fit, res, sd_rtol=0.2).agree  # the variances do not
    text = str(rep)
    assert "z1" in text and "sd ratio" in text and "AGREE" in text


def test_ess_matches_ar1_closed_form(bivariate):
    """z1's Gibbs chain is AR(1) with coefficient phi = rho^2: ESS = n (1 - phi)/(1 + phi)."""
    case, res, _ = bivariate
    phi = float(case.data["cov"][0, 1]) ** 2
    n = res.num_chains * res.num_samples
    expected = n * (1 - phi) / (1 + phi)
    got = float(res.ess()["z1"])
    assert abs(got / expected - 1) < 0.25, (got, expected)
    assert abs(float(res.rhat()["z1"]) - 1) < 0.05


def test_diagnostics_match_arviz(bivariate):
    az = pytest.importorskip("arviz")
    _, res, _ = bivariate
    idata = res.to_arviz()
    assert idata.posterior["z1"].shape == (2, 4000)
    np.testing.assert_allclose(np.asarray(idata.sample_stats["lp"]), res.log_joint)
    e = float(az.ess(idata, method="mean")["z1"])
    r = float(az.rhat(idata, method="split")["z1"])
    assert abs(float(res.ess()["z1"]) / e - 1) < 0.02
    assert abs(float(res.rhat()["z1"]) - r) < 1e-6


def test_diagnostics_detect_stuck_chains():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 400))
    x[1] += 5.0  # two chains in different places
    assert float(rhat(x)) > 2
    assert float(ess(np.ones((2, 10)))) != float(ess(np.ones((2, 10))))  # constant: NaN


# ------------------------------------------------------------ agreement with CAVI
def test_normal_gamma_gibbs_means_agree_with_cavi(zoo):
    case = zoo["normal_gamma"]
    fit = vj.cavi(case.model, case.data, tol=1e-14, max_iters=200)  # as test_cavi (cached)
    res = gibbs(case.model, case.data, KEY, num_samples=3000, num_warmup=100, num_chains=2)
    rep = compare_draws(fit, res, mean_tol_sd=0.2)
    assert rep.agree, rep
    # normal-gamma's factorized q keeps most of each marginal's spread
    for n in ("mu", "tau"):
        assert 0.85 < rep.latents[n]["sd_ratio_min"] < 1.05, rep
    assert np.all(np.asarray(res.draws["tau"]) > 0)


def test_gmm_gibbs_means_agree_with_cavi(zoo):
    case = zoo["gaussian_mixture"]
    fit = vj.cavi(case.model, case.data, key=KEY)
    # started at CAVI's fit (same labelling of the components), in float64
    res = gibbs(case.model, case.data, KEY, num_samples=1500, num_warmup=100, num_chains=2,
                init=fit)
    rep = compare_draws(fit, res, mean_tol_sd=0.3)
    assert rep.agree, rep
    z = np.asarray(res.draws["z"])
    assert z.dtype.kind == "i" and z.shape == (2, 1500, 60)
    labels = np.argmax(np.asarray(fit.posterior["z"].probs), -1)
    assert np.mean(z == labels) > 0.99  # well separated: the same clustering
    pi = np.asarray(res.draws["pi"])
    np.testing.assert_allclose(pi.sum(-1), 1.0, rtol=1e-12)


# ------------------------------------------------------------------------ float32
def test_float32_run():
    m, x = _normal_mean()
    prec = 1.0 + x.size
    mean = float(x.sum()) / prec
    with jax.enable_x64(False):
        res = gibbs(m, jnp.asarray(x, jnp.float32), KEY, num_samples=2000, num_warmup=5,
                    thin=2)
        mu = res.draws["mu"]
        assert mu.dtype == jnp.float32 and res.log_joint.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(mu)))
    assert _z(mu, lambda v: v, mean) < 4
    assert _z(mu, lambda v: (v - mean) ** 2, 1 / prec) < 4


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, err, word", [
    (dict(num_samples=0), ModelSpecError, "num_samples"),
    (dict(num_warmup=-1), ModelSpecError, "num_warmup"),
    (dict(thin=0), ModelSpecError, "thin"),
    (dict(num_chains=1.5), ArgumentTypeError, "num_chains"),
    (dict(order=("mu", "nu")), ModelSpecError, "nu"),
    (dict(init={"nu": 0.0}), ModelSpecError, "nu"),
    (dict(init={"mu": jnp.zeros(3)}), ModelSpecError, "shape"),
    (dict(init={"mu": jnp.nan}), ModelSpecError, "outside"),
    (dict(init=[0.0]), ArgumentTypeError, "init"),
    (dict(key=0), ArgumentTypeError, "key"),
])
def test_bad_arguments_are_refused_by_name(kw, err, word):
    m, x = _normal_mean()
    key = kw.pop("key", KEY)
    with pytest.raises(err, match=word):
        gibbs(m, x, key, **kw)


def test_non_conjugate_latent_is_refused_by_name(zoo):
    case = zoo["logistic_regression"]
    with pytest.raises(NonConjugateError) as e:
        gibbs(case.model, case.data, KEY, num_samples=2)
    assert e.value.latent is not None and e.value.latent in str(e.value)


def test_invalid_conditional_raises_naming_the_latent():
    # improper: p(mu | x) ~ exp(mu sum x) is no Gaussian (zero precision)
    m = vj.Model(lambda z, x: z["mu"] * jnp.sum(x), {"mu": vj.real()})
    with pytest.raises(FitDivergedError, match="'mu'") as e:
        gibbs(m, jnp.ones(3), KEY, num_samples=3, num_warmup=0)
    assert e.value.latent == "mu" and e.value.step == 1
