"""The full variational HMM against hmmlearn's ``VariationalGaussianHMM`` and
``VariationalCategoricalHMM`` (hmmlearn 0.3.3, a test extra), from the same start.

**The same start.** hmmlearn's iteration is an E-step (forward-backward with
``exp E[log A]``, ``exp E[log pi0]`` and the expected emission log-densities) followed by
an M-step (closed-form posteriors of the parameters); vijax's default sweep updates the
parameters first, then ``q(z)``. Both start from the same responsibilities ``r0`` (q(z)
with independent steps, ``MarkovChain.from_marginals``): hmmlearn's initial posterior is
its own M-step from ``r0``'s statistics (``_do_mstep``), vijax's first parameter update
reads the same statistics. Then hmmlearn's iteration ``j`` is vijax's sweep ``j + 1``, and
the lower bound hmmlearn reports at iteration ``j`` (computed after the E-step, before
its M-step) is vijax's ELBO after sweep ``j + 1``.

**Priors.** hmmlearn's 1-D ``diag`` (= ``spherical``) Gaussian prior is
``mu_k | lam_k ~ N(means_prior, 1/(beta_prior lam_k))``, ``lam_k ~ Wishart_1(dof_prior,
1/scale_prior)`` = ``Gamma(dof_prior/2, rate scale_prior/2)``: the zoo's prior with
``dof_prior = 2 a0``, ``scale_prior = 2 b0``; Dirichlet rows with ``transmat_prior``,
``startprob_prior`` (and ``emissionprob_prior``) as concentrations.

**Where the models differ.** hmmlearn's emission factor is joint: its expected
log-density ``0.5 E[log lam] - 0.5 (E[lam] (x - m)^2 + 1/beta)`` is
``E_{q(mu, lam)}[log N(x | mu, 1/lam)]`` under ``q(mu | lam) = N(m, 1/(beta lam))``, and its
lower bound's emission KL is that of the joint Normal-Gamma. So it equals vijax with
``blocks=[["mu", "tau"]]`` (:func:`vijax.models.hmm.hmm_joint`); vijax's mean-field
``q(mu) q(tau)`` (the zoo's ``hmm``) is a different (smaller) family with another fixed
point (its ``q(tau)`` shape is ``a0 + 1/2 + N_k/2``, hmmlearn's ``dof/2 = a0 + N_k/2``).

**The constant offset.** hmmlearn drops ``-0.5 log(2 pi)`` per observation and feature
from the Gaussian expected log-density (``term2 = 0`` in
``_compute_subnorm_log_likelihood``) and nothing else (its Dirichlet, Normal and
Wishart KLs are exact), so ``bound_hmmlearn = ELBO + (T D / 2) log(2 pi)`` (D = 1). For
categorical emissions ``E[log B[k, x_t]]`` is exact: offset 0.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vijax as vj
from vijax.families import MarkovChain, NormalGamma
from vijax.inference.cavi import cavi
from vijax.models.hmm import (categorical_hmm, hmm, hmm_joint, hmmlearn_gaussian,
                              make_hmm_log_joint)

hmmlearn_vhmm = pytest.importorskip("hmmlearn.vhmm")

T, K, M = 200, 3, 4
#: non-default priors (each one enters the comparison)
G_PRIOR = {"alpha_A": 0.5, "alpha_0": 2.0, "m0": 0.3, "beta0": 0.2, "a0": 1.5, "b0": 0.8}
C_PRIOR = {"alpha_A": 0.5, "alpha_0": 2.0, "alpha_B": 0.7}
G_ITERS, C_ITERS = 60, 130  # both reach |change| < 1e-9 (asserted)


def _independent_stats(r0):
    """hmmlearn's E-step statistics of q(z) = prod_t Cat(r0[t]) (start, transitions)."""
    return {"start": r0[0], "trans": np.einsum("tk,tl->kl", r0[:-1], r0[1:])}


def _hmmlearn_gaussian(x, r0, n_iter):
    """hmmlearn's VariationalGaussianHMM (1-D, diag) with the test's priors, its posterior
    set by its own M-step from ``r0``, then ``n_iter`` iterations (no early stop)."""
    h, X = hmmlearn_gaussian(x, r0, G_PRIOR, n_iter)
    if n_iter:
        h.fit(X)
    return h, X


def _hmmlearn_categorical(x, r0, n_iter):
    X = np.asarray(x)[:, None]
    h = hmmlearn_vhmm.VariationalCategoricalHMM(K, n_features=M, n_iter=n_iter, tol=-np.inf,
                                                init_params="", random_state=0)
    h.startprob_prior_ = np.full(K, C_PRIOR["alpha_0"])
    h.transmat_prior_ = np.full((K, K), C_PRIOR["alpha_A"])
    h.emissionprob_prior_ = np.full((K, M), C_PRIOR["alpha_B"])
    h._do_mstep({**_independent_stats(r0), "obs": r0.T @ np.eye(M)[X[:, 0]]})
    h.fit(X)
    return h, X


def _hmmlearn_q_z(h, X):
    """hmmlearn's q(z) at its current posterior (its E-step's unary marginals)."""
    h._estep_begin()
    return h._fit_log(X)[2]


def _fit(model, x, r0, sweeps):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: every sweep runs (no stopping rule met)
        return cavi(model, x, init={"z": MarkovChain.from_marginals(r0)}, max_iters=sweeps,
                    tol=0.0)


def _assert_never_decreases(trace):
    assert np.all(np.diff(trace) >= -1e-10 * np.abs(trace[1:])), np.diff(trace).min()


# ------------------------------------------------------------------ Gaussian emissions

@pytest.fixture(scope="module")
def gauss():
    zm = hmm_joint(T, K, G_PRIOR)
    x = zm.make_data(jax.random.key(1))
    r0 = np.random.default_rng(0).dirichlet(np.ones(K), size=T)
    h, X = _hmmlearn_gaussian(x, r0, G_ITERS)
    fit = _fit(zm.model, x, r0, G_ITERS + 1)  # hmmlearn ran G_ITERS M-steps after its start
    return dict(zm=zm, x=x, r0=r0, h=h, X=X, fit=fit)


def test_gaussian_lower_bound_is_hmmlearns_sweep_by_sweep(gauss):
    """Every one of the G_ITERS bounds: vijax ELBO + (T/2) log(2 pi) = hmmlearn's."""
    trace = np.asarray(gauss["fit"].elbo_trace)
    hist = np.asarray(gauss["h"].monitor_.history)
    assert hist.shape == (G_ITERS,) and int(gauss["fit"].num_iters) == G_ITERS + 1
    offset = 0.5 * T * math.log(2.0 * math.pi)
    np.testing.assert_allclose(trace[:G_ITERS] + offset, hist, rtol=1e-11, atol=0)
    _assert_never_decreases(trace)
    assert abs(trace[-1] - trace[-2]) < 1e-9  # a fixed point, not a transient


def test_gaussian_fixed_point_matches_hmmlearn(gauss):
    h, fit = gauss["h"], gauss["fit"]
    m, kappa, a, b = (np.asarray(v) for v in NormalGamma(fit.natural["mu+tau"]).params())
    np.testing.assert_allclose(m, h.means_posterior_[:, 0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(kappa, h.beta_posterior_, rtol=1e-6)
    np.testing.assert_allclose(2.0 * a, h.dof_posterior_, rtol=1e-6)
    np.testing.assert_allclose(2.0 * b, h.scale_posterior_[:, 0], rtol=1e-6)
    post = fit.posterior
    np.testing.assert_allclose(post["A"].concentration, h.transmat_posterior_, rtol=1e-6)
    np.testing.assert_allclose(post["pi0"].concentration, h.startprob_posterior_, rtol=1e-6)
    np.testing.assert_allclose(post["z"].probs, _hmmlearn_q_z(h, gauss["X"]), atol=1e-8)
    # the states are separated: not the trivial symmetric fixed point
    assert np.ptp(m) > 3.0


def test_analysis_proposes_hmmlearns_factorization(gauss):
    """Without the block (the zoo's mean-field ``hmm``, with these priors) the analysis
    names the joint factor hmmlearn uses; with it, the block is one NormalGamma factor."""
    mean_field = vj.Model(make_hmm_log_joint(G_PRIOR), hmm(T, K).model.supports)
    text = str(vj.analyze(mean_field, gauss["x"]))
    assert "mu and tau form a NormalGamma block: blocks=[['mu', 'tau']]" in text
    a = vj.analyze(gauss["zm"].model, gauss["x"])
    assert "block ['mu', 'tau']: joint NormalGamma factor" in str(a)
    assert a.program.infos["z"].structure == "chain"


def test_gaussian_float32_reaches_hmmlearns_fixed_point(gauss):
    """The same G_ITERS + 1 sweeps in float32: hmmlearn's float64 fixed point within
    eps-scaled tolerances, the bound within a few eps of it."""
    x32 = np.asarray(gauss["x"], np.float32)
    with jax.enable_x64(False):
        fit = _fit(gauss["zm"].model, jnp.asarray(x32), np.asarray(gauss["r0"], np.float32),
                   G_ITERS + 1)
        assert fit.elbo.dtype == jnp.float32
        elbo = float(fit.elbo_trace[G_ITERS - 1])
        m, kappa, a, b = (np.asarray(v, np.float64)
                          for v in NormalGamma(fit.natural["mu+tau"]).params())
        conc = np.asarray(fit.posterior["A"].concentration, np.float64)
        probs = np.asarray(fit.posterior["z"].probs, np.float64)
    h = gauss["h"]
    eps = float(np.finfo(np.float32).eps)
    bound = h.monitor_.history[-1] - 0.5 * T * math.log(2.0 * math.pi)
    assert abs(elbo - bound) <= 16 * eps * abs(bound)
    np.testing.assert_allclose(m, h.means_posterior_[:, 0], rtol=256 * eps, atol=256 * eps)
    # the rates: the float32 fixed point's q(z) moves by ~1e-5 (a sum over T of
    # marginals, each of a forward-backward in float32), and each rate is a difference
    # scale_prior + sum_t q_tk x_t^2 + beta0 m0^2 - beta m^2 of larger terms
    np.testing.assert_allclose(2.0 * b, h.scale_posterior_[:, 0], rtol=2048 * eps)
    np.testing.assert_allclose(probs, _hmmlearn_q_z(h, gauss["X"]), atol=256 * eps)
    np.testing.assert_allclose(conc, h.transmat_posterior_, rtol=256 * eps)


# ------------------------------------------------------------------ categorical emissions

@pytest.fixture(scope="module")
def categ():
    zm = categorical_hmm(T, K, M, C_PRIOR)
    x = zm.make_data(jax.random.key(2))
    r0 = np.random.default_rng(5).dirichlet(np.ones(K), size=T)
    h, X = _hmmlearn_categorical(x, r0, C_ITERS)
    fit = _fit(zm.model, x, r0, C_ITERS + 1)
    return dict(zm=zm, x=x, r0=r0, h=h, X=X, fit=fit)


def test_categorical_lower_bound_is_hmmlearns_sweep_by_sweep(categ):
    """No offset: hmmlearn's categorical bound is the exact ELBO."""
    a = vj.analyze(categ["zm"].model, categ["x"])
    assert {n: f.__name__ for n, f in a.families.items()} == categ["zm"].families
    trace = np.asarray(categ["fit"].elbo_trace)
    hist = np.asarray(categ["h"].monitor_.history)
    np.testing.assert_allclose(trace[:C_ITERS], hist, rtol=1e-11, atol=0)
    _assert_never_decreases(trace)
    assert abs(trace[-1] - trace[-2]) < 1e-9


def test_categorical_fixed_point_matches_hmmlearn(categ):
    h, post = categ["h"], categ["fit"].posterior
    np.testing.assert_allclose(post["B"].concentration, h.emissionprob_posterior_, rtol=1e-6)
    np.testing.assert_allclose(post["A"].concentration, h.transmat_posterior_, rtol=1e-6)
    np.testing.assert_allclose(post["pi0"].concentration, h.startprob_posterior_, rtol=1e-6)
    np.testing.assert_allclose(post["z"].probs, _hmmlearn_q_z(h, categ["X"]), atol=1e-8)
