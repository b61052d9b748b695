"""The variational HMM (MacKay 1997, Beal 2003) from its plain-JAX log joint.

The compiler finds the chain (``log A[z[t-1], z[t]]`` couples neighbours of one
categorical latent) and CAVI then runs forward-backward for q(z). Checked against an
independent hand-written VB-HMM in numpy (scaled forward-backward of Rabiner, closed-form
Dirichlet / Normal / Gamma updates, the ELBO term by term), sweep by sweep from the same
start; with known parameters the chain factor is the exact posterior and the ELBO is
log p(x); the gradient path reaches CAVI's optimum; float32 matches float64.
"""

from __future__ import annotations

import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats
from scipy.special import digamma, gammaln

import vijax as vj
from vijax.conjugacy.compile import compile_model
from vijax.errors import NonConjugateError
from vijax.families import Dirichlet, Gamma, MarkovChain, Normal
from vijax.models.hmm import HMM_PRIOR, hmm

T, K = 40, 3
P = HMM_PRIOR


# ------------------------------------------------------------------ the reference

def _forward_backward(u, log_a):
    """Scaled forward-backward (Rabiner 1989) with potentials ``exp(u)``, ``exp(log_a)``:
    unary and pairwise marginals and log Z."""
    shift = u.max(1, keepdims=True)
    b = np.exp(u - shift)
    tr = np.exp(log_a)
    n = len(u)
    alpha, c = np.zeros_like(b), np.zeros(n)
    alpha[0] = b[0]
    for t in range(n):
        if t:
            alpha[t] = (alpha[t - 1] @ tr) * b[t]
        c[t] = alpha[t].sum()
        alpha[t] /= c[t]
    beta = np.ones_like(b)
    for t in range(n - 2, -1, -1):
        beta[t] = tr @ (b[t + 1] * beta[t + 1]) / c[t + 1]
    gam = alpha * beta
    xi = alpha[:-1, :, None] * tr[None] * (b[1:] * beta[1:])[:, None, :] / c[1:, None, None]
    return gam, xi, np.log(c).sum() + shift.sum()


def _dir_entropy(a):
    a0 = a.sum(-1)
    return (gammaln(a).sum(-1) - gammaln(a0) + (a0 - a.shape[-1]) * digamma(a0)
            - ((a - 1) * digamma(a)).sum(-1)).sum()


def reference_vbhmm(x, gam, xi, e_tau, sweeps):
    """Mean-field VB-HMM in numpy, updates in vijax's default order (A, pi0, mu, tau,
    z). Returns the ELBO after each sweep and the final factors."""
    x = np.asarray(x, np.float64)
    aA, a0, m0, beta0, sa, sb = (P[k] for k in ("alpha_A", "alpha_0", "m0", "beta0", "a0",
                                                "b0"))
    elbos = []
    for _ in range(sweeps):
        conc_a = aA + xi.sum(0)
        conc_0 = a0 + gam[0]
        nk, sx, sxx = gam.sum(0), gam.T @ x, gam.T @ x ** 2
        prec = e_tau * (beta0 + nk)
        m = (beta0 * m0 + sx) / (beta0 + nk)
        e_mu, e_mu2 = m, m ** 2 + 1.0 / prec
        shape = sa + 0.5 + 0.5 * nk
        rate = (sb + 0.5 * beta0 * (e_mu2 - 2 * m0 * e_mu + m0 ** 2)
                + 0.5 * (sxx - 2 * sx * e_mu + nk * e_mu2))
        e_tau, e_logtau = shape / rate, digamma(shape) - np.log(rate)
        e_loga = digamma(conc_a) - digamma(conc_a.sum(1, keepdims=True))
        e_logpi = digamma(conc_0) - digamma(conc_0.sum())
        u = (0.5 * e_logtau - 0.5 * np.log(2 * np.pi)
             - 0.5 * e_tau * (x[:, None] ** 2 - 2 * x[:, None] * e_mu + e_mu2))
        u[0] += e_logpi
        gam, xi, log_z = _forward_backward(u, e_loga)
        elbo = log_z  # E[log p(z, x | .)] + H[q(z)]
        elbo += K * (gammaln(K * aA) - K * gammaln(aA)) + (aA - 1) * e_loga.sum()
        elbo += gammaln(K * a0) - K * gammaln(a0) + (a0 - 1) * e_logpi.sum()
        elbo += np.sum(sa * np.log(sb) - gammaln(sa) + (sa - 1) * e_logtau - sb * e_tau)
        elbo += np.sum(-0.5 * np.log(2 * np.pi) + 0.5 * np.log(beta0) + 0.5 * e_logtau
                       - 0.5 * beta0 * e_tau * (e_mu2 - 2 * m0 * e_mu + m0 ** 2))
        elbo += _dir_entropy(conc_a) + _dir_entropy(conc_0)
        elbo += np.sum(0.5 * np.log(2 * np.pi * np.e / prec))
        elbo += np.sum(shape - np.log(rate) + gammaln(shape) + (1 - shape) * digamma(shape))
        elbos.append(elbo)
    return np.array(elbos), dict(conc_a=conc_a, conc_0=conc_0, m=m, prec=prec, shape=shape,
                                 rate=rate, gam=gam, xi=xi)


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def setup():
    zm = hmm(T, K)
    x = zm.make_data(jax.random.key(4))
    r = np.random.default_rng(0)
    gam0 = r.dirichlet(np.ones(K), size=T)
    tau0 = r.gamma(3.0, 1.0, size=K)
    init = {"A": Dirichlet.from_concentration(jnp.ones((K, K))),
            "pi0": Dirichlet.from_concentration(jnp.ones(K)),
            "mu": Normal.from_loc_scale(jnp.zeros(K), jnp.ones(K)),
            "tau": Gamma.from_shape_rate(jnp.asarray(tau0), jnp.ones(K)),
            "z": MarkovChain.from_marginals(jnp.asarray(gam0))}
    fit = vj.cavi(zm.model, x, init=init, tol=1e-14, max_iters=400)
    return dict(zm=zm, x=x, gam0=gam0, tau0=tau0, init=init, fit=fit)


def test_analysis_finds_the_chain(setup):
    a = vj.analyze(setup["zm"].model, setup["x"])
    assert a.families["z"] is MarkovChain and a.conjugate
    infos = a.program.infos
    assert infos["z"].structure == "chain" and "z[t-1] and z[t]" in infos["z"].structure_note
    assert infos["mu"].structure == "factorized"
    # one transition matrix: the pair statistic is summed over time (no [T-1, K, K])
    assert infos["z"].time_homogeneous and infos["z"].stat_shape("pair") == (K, K)


def test_cavi_equals_the_handwritten_vbhmm_sweep_by_sweep(setup):
    fit = setup["fit"]
    n = int(fit.num_iters)
    assert bool(fit.converged) and 5 < n < 400
    gam0 = setup["gam0"]
    xi0 = gam0[:-1, :, None] * gam0[1:, None, :]  # independent steps at the start
    elbos, ref = reference_vbhmm(setup["x"], gam0, xi0, setup["tau0"], n)
    trace = np.asarray(fit.elbo_trace)[:n]
    np.testing.assert_allclose(trace, elbos, rtol=1e-10, atol=1e-8)
    assert np.all(np.diff(trace) >= -1e-9 * np.abs(trace[1:]))  # never decreases
    post = fit.posterior
    np.testing.assert_allclose(post["A"].concentration, ref["conc_a"], rtol=1e-8)
    np.testing.assert_allclose(post["pi0"].concentration, ref["conc_0"], rtol=1e-8)
    np.testing.assert_allclose(post["mu"].loc, ref["m"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(post["mu"].scale, ref["prec"] ** -0.5, rtol=1e-8)
    np.testing.assert_allclose(post["tau"].rate, ref["rate"], rtol=1e-8)
    np.testing.assert_allclose(post["z"].probs, ref["gam"], atol=1e-8)
    np.testing.assert_allclose(post["z"].pair_probs, ref["xi"], atol=1e-8)


def test_known_parameters_chain_is_the_exact_posterior():
    """Only z latent, the transition written two ways: ``log(A)[z[:-1], z[1:]]`` (a gather
    by two elements, tabulated over the K^2 pairs) and ``one_hot(z[:-1]) @ log(A) *
    one_hot(z[1:])``. Both compile to F with F(T(z)) = log p(x, z); q(z) after one
    update is p(z | x) and the ELBO is log p(x) (the forward algorithm in the test)."""
    r = np.random.default_rng(3)
    A = r.dirichlet(np.ones(K) * 2, size=K)
    pi0 = r.dirichlet(np.ones(K))
    means = np.array([-2.0, 0.0, 2.0])
    n = 12
    x = jnp.asarray(r.normal(size=n) * 2)

    def emissions(z, x):
        return jnp.log(pi0)[z[0]] + jnp.sum(stats.norm.logpdf(x, jnp.asarray(means)[z], 0.7))

    def by_gather(v, x):
        return emissions(v["z"], x) + jnp.sum(jnp.log(A)[v["z"][:-1], v["z"][1:]])

    def by_one_hot(v, x):
        oh = jax.nn.one_hot(v["z"], K)
        return emissions(v["z"], x) + jnp.sum(oh[:-1] @ jnp.log(A) * oh[1:])

    sup = {"z": vj.categorical(K, shape=(n,))}
    zs = jnp.asarray(r.integers(0, K, (3, n)))
    for lj in (by_gather, by_one_hot):
        c = compile_model(vj.Model(lj, sup), x)
        assert c.infos["z"].family == "MarkovChain"
        got = jax.jit(jax.vmap(lambda z: c.F(c.stats_at({"z": z}))))(zs)
        want = jax.vmap(lambda z: lj({"z": z}, x))(zs)
        np.testing.assert_allclose(got, want, rtol=1e-12)
    fit = vj.cavi(vj.Model(by_gather, sup), x, key=jax.random.key(0), max_iters=3)
    u = np.array(stats.norm.logpdf(np.asarray(x)[:, None], means, 0.7))
    u[0] += np.log(pi0)
    gam, xi, log_px = _forward_backward(u, np.log(A))
    np.testing.assert_allclose(fit.elbo, log_px, rtol=1e-12)
    np.testing.assert_allclose(fit.posterior["z"].probs, gam, atol=1e-12)
    np.testing.assert_allclose(fit.posterior["z"].pair_probs, xi, atol=1e-12)


def test_homogeneity_is_read_from_the_terms():
    """One transition matrix for every step (here with a batch of 2 sequences): the pair
    statistic is summed over time, ``[2, K, K]``. A transition weighted per step (a
    closed-over array) keeps the per-step statistic ``[2, T-1, K, K]``; its exact
    posterior is the forward-backward with per-step potentials. Both F(T(z)) = log p."""
    r = np.random.default_rng(5)
    A = r.dirichlet(np.ones(K) * 2, size=K)
    n = 9
    x = jnp.asarray(r.normal(size=(2, n)) * 2)
    wts = np.linspace(0.5, 1.5, n - 1)

    def emissions(z, x):
        return jnp.sum(stats.norm.logpdf(x, jnp.asarray([-2.0, 0.0, 2.0])[z], 0.7))

    def same(v, x):
        z = v["z"]
        return emissions(z, x) + jnp.sum(jnp.log(A)[z[:, :-1], z[:, 1:]])

    def weighted(v, x):
        z = v["z"]
        return emissions(z, x) + jnp.sum(wts * jnp.log(A)[z[:, :-1], z[:, 1:]])

    sup = {"z": vj.categorical(K, shape=(2, n))}
    zs = jnp.asarray(r.integers(0, K, (2, 2, n)))
    for lj, shape in ((same, (2, K, K)), (weighted, (2, n - 1, K, K))):
        c = compile_model(vj.Model(lj, sup), x)
        assert c.infos["z"].family == "MarkovChain"
        assert c.infos["z"].time_homogeneous == (lj is same)
        assert c.infos["z"].stat_shape("pair") == shape
        got = jax.jit(jax.vmap(lambda z: c.F(c.stats_at({"z": z}))))(zs)
        np.testing.assert_allclose(got, jax.vmap(lambda z: lj({"z": z}, x))(zs), rtol=1e-12)
    fit = vj.cavi(vj.Model(weighted, sup), x, key=jax.random.key(0), max_iters=3)
    u = np.array(stats.norm.logpdf(np.asarray(x)[..., None], np.array([-2.0, 0.0, 2.0]), 0.7))
    for i in range(2):  # the per-step potentials w_t log A
        gam, lz = _forward_backward_steps(u[i], wts[:, None, None] * np.log(A))
        np.testing.assert_allclose(fit.posterior["z"].probs[i], gam, atol=1e-12)


def _forward_backward_steps(u, log_a):
    """Unary marginals and log Z of a chain with per-step log-potentials ``log_a[t]``
    (by enumeration-free recursion in log space, numpy)."""
    from scipy.special import logsumexp
    n = len(u)
    la, lb = np.zeros_like(u), np.zeros_like(u)
    la[0] = u[0]
    for t in range(1, n):
        la[t] = logsumexp(la[t - 1][:, None] + log_a[t - 1], 0) + u[t]
    for t in range(n - 2, -1, -1):
        lb[t] = logsumexp(log_a[t] + (u[t + 1] + lb[t + 1])[None, :], 1)
    lz = logsumexp(la[-1])
    return np.exp(la + lb - lz), lz


def test_gradient_path_has_the_cavi_optimum(setup):
    """The exact ELBO of the gradient path (marginals and entropy ``A - <eta, mu>`` from
    the chain's log-normalizer, differentiated through forward-backward) is stationary at
    CAVI's fixed point, and a fit from a perturbed start climbs back to it."""
    from vijax.inference import meanfield as mf
    from vijax.inference.gradient_estimators import natural_parts
    fit = setup["fit"]
    compiled = compile_model(setup["zm"].model, setup["x"])
    fams = mf.families_of(compiled)
    natural = {n: q.natural for n, q in fit.posterior.items()}
    elbo, _, euclid = jax.jit(lambda nat: natural_parts(compiled, fams, nat))(natural)
    assert abs(float(elbo) - float(fit.elbo)) <= 1e-10 * abs(float(fit.elbo))
    for n in natural:
        for s_ in natural[n]:
            assert float(jnp.max(jnp.abs(euclid[n][s_]))) < 1e-6, (n, s_)
    start = {n: type(q).from_unconstrained(jax.tree_util.tree_map(
        lambda a: a + 0.05, q.to_unconstrained())) for n, q in fit.posterior.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short run: the stopping rule is not met
        g = vj.fit_gradient(setup["zm"].model, setup["x"], jax.random.key(2),
                            estimator="exact", init=start, num_steps=40, tol=0.0)
    trace = np.asarray(g.elbo_trace)
    # monotone ascent (line search) from the perturbed start towards CAVI's optimum,
    # never above it; the VB-HMM's ascent is slow (CAVI itself needs ~190 sweeps)
    assert np.all(np.diff(trace) >= -1e-9 * np.abs(trace[1:]))
    assert trace[0] < float(g.elbo) <= float(fit.elbo) + 1e-9 * abs(float(fit.elbo))
    assert float(fit.elbo) - float(g.elbo) <= 0.5 * (float(fit.elbo) - trace[0])


def test_float32_follows_the_float64_sweeps(setup):
    """The same 25 sweeps from the same start in float32 and (the reference) float64."""
    n = 25
    gam0 = setup["gam0"]
    elbos, ref = reference_vbhmm(setup["x"], gam0, gam0[:-1, :, None] * gam0[1:, None, :],
                                 setup["tau0"], n)
    x32 = np.asarray(setup["x"], np.float32)
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0 runs every sweep (no stopping rule met)
        init = {k: type(q)(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32),
                                                  q.natural))
                for k, q in setup["init"].items()}
        fit = vj.cavi(setup["zm"].model, jnp.asarray(x32), init=init, max_iters=n, tol=0.0)
        assert fit.posterior["z"].natural["pair"].dtype == jnp.float32
        elbo, probs = float(fit.elbo), np.asarray(fit.posterior["z"].probs, np.float64)
        loc = np.asarray(fit.posterior["mu"].loc, np.float64)
    eps = float(np.finfo(np.float32).eps)
    assert int(fit.num_iters) == n
    assert abs(elbo - elbos[-1]) <= 64 * eps * abs(elbos[-1])
    np.testing.assert_allclose(probs, ref["gam"], atol=1e3 * eps)
    np.testing.assert_allclose(loc, ref["m"], rtol=1e3 * eps, atol=1e3 * eps)


def test_non_neighbour_coupling_is_refused_with_latent_and_line():
    def lj(v, x):
        z = v["z"]
        lp = jnp.sum(jnp.log(v["A"])[z[:-2], z[2:]])  # z[t-2] -> z[t]: second order
        return lp + jnp.sum(stats.norm.logpdf(x, jnp.arange(K)[z] * 1.0, 1.0))

    line = inspect.getsourcelines(lj)[1] + 2
    model = vj.Model(lj, {"A": vj.simplex(K, shape=(K,)), "z": vj.categorical(K, shape=(8,))})
    x = jnp.linspace(0.0, 2.0, 8)
    a = vj.analyze(model, x)
    assert a.families["z"] is None
    assert "2 steps apart" in a.reasons["z"] and f"test_hmm.py:{line}" in a.reasons["z"]
    assert a.program.infos["z"].structure == "factorized"
    with pytest.raises(NonConjugateError) as e:
        vj.cavi(model, x, key=jax.random.key(0))
    assert e.value.latent == "z" and e.value.source.endswith(f"test_hmm.py:{line}")
