"""NormalGamma and NormalWishart (float64, the families' conftest): log densities
against scipy (Gamma x Normal, Wishart x MultivariateNormal), A'(eta) = E[T] by autodiff
vs the closed form vs Monte Carlo, entropy and KL vs Monte Carlo (tolerances from the
standard error), mean <-> natural and unconstrained round trips, the mode, and the
Student-t marginals against scipy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as ss

from vijax.families import NormalGamma, NormalWishart

S = 40_000  # Monte Carlo draws
Z = 5.0  # standard errors allowed


def _mc_close(draws, expected, z=Z):
    draws = np.asarray(draws)
    se = draws.std(0) / np.sqrt(draws.shape[0])
    np.testing.assert_array_less(np.abs(draws.mean(0) - expected), z * se + 1e-12)


# ---------------------------------------------------------------- Normal-Gamma

NG_P = dict(loc=np.array([1.0, -2.0, 0.3]), kappa=np.array([2.0, 0.5, 7.0]),
            a=np.array([3.0, 1.7, 12.0]), b=np.array([4.0, 0.6, 2.5]))
NG_Q = dict(loc=np.array([0.5, -1.5, 0.0]), kappa=np.array([1.0, 1.5, 5.0]),
            a=np.array([2.0, 2.2, 9.0]), b=np.array([3.0, 1.0, 2.0]))


@pytest.fixture(scope="module")
def ng():
    rng = np.random.default_rng(0)  # an independent sampler (scipy / numpy)
    tau = rng.gamma(NG_P["a"], 1 / NG_P["b"], (S, 3))
    x = {"mean": NG_P["loc"] + rng.normal(size=(S, 3)) / np.sqrt(NG_P["kappa"] * tau),
         "precision": tau}

    @jax.jit
    def run(p, q, x):
        fp = NormalGamma.from_params(p["loc"], p["kappa"], p["a"], p["b"])
        fq = NormalGamma.from_params(q["loc"], q["kappa"], q["a"], q["b"])
        mode, ok = NormalGamma.mode(fp.natural)
        grad_at_mode = jax.grad(lambda v: jnp.sum(fp.log_prob(v)))(mode)
        return dict(mu=fp.mean_parameters(), ad=NormalGamma.mean_params_autodiff(fp.natural),
                    stats=NormalGamma.stats(x), lp_p=fp.log_prob(x), lp_q=fq.log_prob(x),
                    entropy=fp.entropy(), kl=fp.kl(fq), x=x, nat=fp.natural,
                    back=NormalGamma.natural_from_mean(fp.mean_parameters()),
                    rt=NormalGamma.from_unconstrained(fp.to_unconstrained()).natural,
                    grad_mode=grad_at_mode, mode_ok=ok,
                    t_lp=fp.marginal_mean().log_prob(x["mean"]),
                    t_var=fp.marginal_mean().variance(), g_mean=fp.marginal_precision().mean())
    return run(NG_P, NG_Q, x)


def test_normal_gamma_log_prob_against_scipy(ng):
    x = {k: np.asarray(v[:5]) for k, v in ng["x"].items()}
    p = NG_P
    ref = (ss.gamma.logpdf(x["precision"], p["a"], scale=1 / p["b"])
           + ss.norm.logpdf(x["mean"], p["loc"], 1 / np.sqrt(p["kappa"] * x["precision"])))
    np.testing.assert_allclose(np.asarray(ng["lp_p"][:5]), ref, rtol=1e-10)


def test_normal_gamma_mean_parameters(ng):
    for s in NormalGamma.stat_names:
        np.testing.assert_allclose(ng["mu"][s], ng["ad"][s], rtol=1e-10)
        _mc_close(ng["stats"][s], np.asarray(ng["mu"][s]))
        np.testing.assert_allclose(ng["back"][s], ng["nat"][s], rtol=1e-8)
        np.testing.assert_allclose(ng["rt"][s], ng["nat"][s], rtol=1e-10)


def test_normal_gamma_entropy_kl_monte_carlo(ng):
    _mc_close(-np.asarray(ng["lp_p"]), np.asarray(ng["entropy"]))
    _mc_close(np.asarray(ng["lp_p"] - ng["lp_q"]), np.asarray(ng["kl"]))
    assert np.all(np.asarray(ng["kl"]) > 0)


def test_normal_gamma_mode_and_marginals(ng):
    assert bool(np.all(ng["mode_ok"]))
    for v in ng["grad_mode"].values():
        np.testing.assert_allclose(v, 0.0, atol=1e-9)
    p = NG_P
    ref = ss.t.logpdf(np.asarray(ng["x"]["mean"][:5]), 2 * p["a"], p["loc"],
                      np.sqrt(p["b"] / (p["a"] * p["kappa"])))
    np.testing.assert_allclose(np.asarray(ng["t_lp"][:5]), ref, rtol=1e-10)
    _mc_close(np.asarray(ng["x"]["precision"]), np.asarray(ng["g_mean"]))
    var = np.asarray(ng["x"]["mean"]).var(0)
    np.testing.assert_allclose(var, np.asarray(ng["t_var"]), rtol=0.1)


def test_normal_gamma_float32():
    with jax.enable_x64(False):
        q = NormalGamma.from_params(1.0, 2.0, 3.0, 4.0)
        mu = q.mean_parameters()
        assert mu["tau"].dtype == jnp.float32
        h = float(q.entropy())
    with jax.enable_x64(True):
        h64 = float(NormalGamma.from_params(1.0, 2.0, 3.0, 4.0).entropy())
    assert abs(h - h64) <= 50 * np.finfo(np.float32).eps * max(1.0, abs(h64))


# ---------------------------------------------------------------- Normal-Wishart

D = 2
NW_P = dict(loc=np.array([[1.0, -1.0], [0.0, 2.0]]), kappa=np.array([2.0, 0.7]),
            nu=np.array([5.0, 3.5]),
            v=np.array([[[0.3, 0.1], [0.1, 0.2]], [[1.0, -0.4], [-0.4, 0.8]]]))
NW_Q = dict(loc=np.array([[0.5, -0.5], [0.2, 1.5]]), kappa=np.array([1.0, 1.2]),
            nu=np.array([6.0, 4.0]),
            v=np.array([[[0.2, 0.0], [0.0, 0.3]], [[0.7, -0.2], [-0.2, 0.9]]]))


@pytest.fixture(scope="module")
def nw():
    rng = np.random.default_rng(1)  # an independent sampler (scipy)
    prec = np.stack([ss.wishart(NW_P["nu"][b], NW_P["v"][b]).rvs(S, random_state=rng)
                     for b in range(2)], 1)
    chol = np.linalg.cholesky(prec * NW_P["kappa"][:, None, None])
    eps = rng.normal(size=(S, 2, D))
    x = {"mean": NW_P["loc"] + np.linalg.solve(np.swapaxes(chol, -1, -2), eps[..., None])[..., 0],
         "precision": prec}

    @jax.jit
    def run(p, q, x):
        fp = NormalWishart.from_params(p["loc"], p["kappa"], p["nu"], p["v"])
        fq = NormalWishart.from_params(q["loc"], q["kappa"], q["nu"], q["v"])
        mode, ok = NormalWishart.mode(fp.natural)
        grad_at_mode = jax.grad(lambda v: jnp.sum(fp.log_prob(v)))(mode)
        return dict(mu=fp.mean_parameters(), ad=NormalWishart.mean_params_autodiff(fp.natural),
                    stats=NormalWishart.stats(x), lp_p=fp.log_prob(x), lp_q=fq.log_prob(x),
                    entropy=fp.entropy(), kl=fp.kl(fq), x=x, nat=fp.natural,
                    back=NormalWishart.natural_from_mean(fp.mean_parameters()),
                    rt=NormalWishart.from_unconstrained(fp.to_unconstrained()).natural,
                    grad_mode=grad_at_mode, mode_ok=ok,
                    t_lp=fp.marginal_mean().log_prob(x["mean"]),
                    t_cov=fp.marginal_mean().covariance())
    return run(NW_P, NW_Q, x)


def test_normal_wishart_log_prob_against_scipy(nw):
    p = NW_P
    for i in range(3):
        for b in range(2):
            mu, prec = (np.asarray(nw["x"][k][i, b]) for k in ("mean", "precision"))
            ref = (ss.wishart.logpdf(prec, p["nu"][b], p["v"][b])
                   + ss.multivariate_normal.logpdf(mu, p["loc"][b],
                                                   np.linalg.inv(p["kappa"][b] * prec)))
            np.testing.assert_allclose(float(nw["lp_p"][i, b]), ref, rtol=1e-10)


def test_normal_wishart_mean_parameters(nw):
    for s in NormalWishart.stat_names:
        np.testing.assert_allclose(nw["mu"][s], nw["ad"][s], rtol=1e-10, atol=1e-12)
        _mc_close(nw["stats"][s], np.asarray(nw["mu"][s]))
        np.testing.assert_allclose(nw["back"][s], nw["nat"][s], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(nw["rt"][s], nw["nat"][s], rtol=1e-9, atol=1e-10)


def test_normal_wishart_entropy_kl_monte_carlo(nw):
    _mc_close(-np.asarray(nw["lp_p"]), np.asarray(nw["entropy"]))
    _mc_close(np.asarray(nw["lp_p"] - nw["lp_q"]), np.asarray(nw["kl"]))
    assert np.all(np.asarray(nw["kl"]) > 0)


def test_normal_wishart_mode_and_marginal(nw):
    assert bool(np.all(nw["mode_ok"]))
    for v in nw["grad_mode"].values():
        np.testing.assert_allclose(v, 0.0, atol=1e-8)
    p = NW_P
    for b in range(2):
        dof = p["nu"][b] - D + 1
        shape = np.linalg.inv(p["v"][b]) / (p["kappa"][b] * dof)
        ref = ss.multivariate_t.logpdf(np.asarray(nw["x"]["mean"][:4, b]), p["loc"][b],
                                       shape, dof)
        np.testing.assert_allclose(np.asarray(nw["t_lp"][:4, b]), ref, rtol=1e-10)
    emp = np.cov(np.asarray(nw["x"]["mean"][:, 0]).T)
    np.testing.assert_allclose(emp, np.asarray(nw["t_cov"][0]), rtol=0.1, atol=0.02)


def test_samplers_moments():
    """The families' own samplers (one compiled call for both): draws match the
    closed-form mean parameters."""
    @jax.jit
    def run(key):
        k1, k2 = jax.random.split(key)
        ng = NormalGamma.from_params(NG_P["loc"], NG_P["kappa"], NG_P["a"], NG_P["b"])
        nw = NormalWishart.from_params(NW_P["loc"], NW_P["kappa"], NW_P["nu"], NW_P["v"])
        return (NormalGamma.stats(ng.sample(k1, (S,))), ng.mean_parameters(),
                NormalWishart.stats(nw.sample(k2, (S,))), nw.mean_parameters())
    t_ng, mu_ng, t_nw, mu_nw = run(jax.random.key(2))
    for t, mu in ((t_ng, mu_ng), (t_nw, mu_nw)):
        for s in mu:
            _mc_close(t[s], np.asarray(mu[s]))
