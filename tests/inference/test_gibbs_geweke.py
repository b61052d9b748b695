"""Geweke's joint-distribution test of the Gibbs sampler ("Getting it right", JASA 2004).

Two simulators of the same joint ``p(z, x)``:

- marginal-conditional: ``z ~ p(z)``, ``x ~ p(x | z)``, independent draws (NumPy's
  samplers, independent of JAX's and vijax's);
- successive-conditional: one Gibbs sweep ``z ~ p(z | x)`` (vijax's complete conditionals,
  :mod:`vijax.inference.gibbs_sweep`) then a fresh ``x ~ p(x | z)``, repeated. If every
  conditional is right, ``p(z, x)`` is its stationary distribution.

The means of test functions ``g(z, x)`` (first and second moments, cross moments) must
agree: ``(mean_mc - mean_sc) / sqrt(se_mc^2 + se_sc^2)``, the successive chain's standard
error from batch means (it is autocorrelated). Priors and data samplers ``p(x | z)`` are
written by hand here. The test can fail: a sweep on a model whose prior differs from the
simulator's is caught. The successive-conditional chain is one jitted ``lax.scan``; the
compiled form F is materialized from each step's data inside it (``Program.materialize``
on traced data). The models take their prior constants as data, so the right and the
wrong sweep share one executable.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import vijax as vj
from vijax.inference import gibbs_sweep as gs
from vijax.inference.cavi import default_order

M = 20000  # marginal-conditional draws
L = 20000  # successive-conditional steps
BATCHES = 40


class Case:
    """One model for the test.

    ``model``: log joint of ``(z, {"x": data, "p": prior constants})``; ``prior(rng, p, m)``:
    m NumPy draws of z (leading axis); ``noise``: the shape of the standard-normal noise
    ``eps`` of one data set; ``data(z, eps)``: x from p(x | z) as a function of z and eps
    (jnp, also used on NumPy draws); ``g(z, x)``: test functions [k]; ``wrong``: prior
    constants that change the sweep's conditionals."""

    def __init__(self, model, p, wrong, prior, noise, data, g):
        self.model, self.p, self.wrong, self.prior = model, p, wrong, prior
        self.noise, self.data, self.g = noise, data, g


def _gamma(rng, a, b, size):
    """Gamma(shape a, rate b)."""
    return rng.gamma(a, 1.0 / b, size)


@functools.lru_cache(maxsize=None)
def chain_runner(name, length, dtype_name):
    """The jitted successive-conditional simulator of case ``name``:
    ``(key, p, z0) -> (g [length, k], failed [length])``."""
    case = CASES[name]
    dtype = jnp.dtype(dtype_name)
    like = {"x": case.data(None, jnp.zeros(case.noise, dtype)),
            "p": {k: jnp.asarray(v, dtype) for k, v in case.p.items()}}
    prog = vj.compile(case.model, like)
    order = default_order(prog.infos)

    @jax.jit
    def run(key, p, z0):
        def step(carry, k):
            state, x = carry
            ks, kx = jax.random.split(k)
            alg = gs.algorithm(prog.materialize({"x": x, "p": p}), order)
            state = alg.step(state, ks)
            x = case.data(state.z, jax.random.normal(kx, case.noise, dtype))
            return (state, x), (case.g(state.z, x), state.failed)

        x0 = case.data(z0, jax.random.normal(key, case.noise, dtype))
        _, out = jax.lax.scan(step, (gs.init(prog, z0), x0),
                              jax.random.split(jax.random.fold_in(key, 1), length))
        return out

    def cast(z):
        return {n: gs.value_dtype(prog.infos[n], v, dtype) for n, v in z.items()}

    return run, cast


def geweke(name, seed, wrong=False, m=M, length=L, dtype="float64"):
    """``(g_mc [m, k], g_sc [length, k])``: the test functions under both simulators
    (the chain's sweep uses the case's ``wrong`` prior constants when asked)."""
    case = CASES[name]
    rng = np.random.default_rng(seed)
    z = case.prior(rng, case.p, m)
    eps = rng.standard_normal((m,) + case.noise)
    g_mc = jax.jit(jax.vmap(lambda z, e: case.g(z, case.data(z, e))))(z, eps)
    run, cast = chain_runner(name, length, dtype)
    p = dict(case.p, **case.wrong) if wrong else case.p
    p = {k: jnp.asarray(v, dtype) for k, v in p.items()}
    z0 = cast({n: v[0] for n, v in case.prior(rng, case.p, 1).items()})
    g_sc, failed = run(jax.random.key(seed), p, z0)
    assert np.all(np.asarray(failed) < 0), "a conditional left its family's domain"
    return np.asarray(g_mc, np.float64), np.asarray(g_sc, np.float64)


def zscores(g_mc, g_sc, batches=BATCHES):
    """Per test function: the difference of means over its standard error (iid for the
    marginal-conditional draws, batch means for the successive-conditional chain)."""
    se_mc2 = g_mc.var(axis=0, ddof=1) / g_mc.shape[0]
    n = g_sc.shape[0] // batches * batches
    bm = g_sc[:n].reshape(batches, -1, g_sc.shape[1]).mean(axis=1)
    se_sc2 = bm.var(axis=0, ddof=1) / batches
    return (g_mc.mean(axis=0) - g_sc[:n].mean(axis=0)) / np.sqrt(se_mc2 + se_sc2)


# ------------------------------------------------------------------ normal-gamma
# tau ~ Gamma(a0, b0), mu | tau ~ N(mu0, 1/(lambda0 tau)), x_i ~ N(mu, 1/tau); mu and tau
# are separate blocks (Normal and Gamma). a0 > 2 so that mu^2 and x^2 have finite variance.
def _ng_lj(z, data):
    p, x = data["p"], data["x"]
    lp = stats.gamma.logpdf(z["tau"], p["a0"], scale=1.0 / p["b0"])
    lp += stats.norm.logpdf(z["mu"], p["mu0"], 1.0 / jnp.sqrt(p["lambda0"] * z["tau"]))
    return lp + jnp.sum(stats.norm.logpdf(x, z["mu"], 1.0 / jnp.sqrt(z["tau"])))


def _ng_prior(rng, p, m):
    tau = _gamma(rng, p["a0"], p["b0"], m)
    return {"tau": tau, "mu": p["mu0"] + rng.standard_normal(m) / np.sqrt(p["lambda0"] * tau)}


def _ng_g(z, x):
    mu, tau = z["mu"], z["tau"]
    return jnp.stack([mu, tau, mu ** 2, tau ** 2, mu * tau, jnp.mean(x), jnp.mean(x ** 2),
                      mu * x[0], tau * (x[0] - mu) ** 2])


NORMAL_GAMMA = Case(
    vj.Model(_ng_lj, {"mu": vj.real(), "tau": vj.positive()}),
    {"mu0": 0.5, "lambda0": 2.0, "a0": 5.0, "b0": 4.0}, {"b0": 6.0}, _ng_prior, (3,),
    lambda z, e: e if z is None else z["mu"] + e / jnp.sqrt(z["tau"]), _ng_g)


# ------------------------------------------------------------- linear regression
# alpha ~ Gamma(aa, ba), beta ~ Gamma(ab, bb), w ~ N(0, I/alpha) (a dense Gaussian block),
# y ~ N(X w, I/beta); X fixed, y the data. Three blocks.
LR_X = np.array([[1.0, 0.3], [-0.5, 1.2], [0.8, -0.7], [0.2, 0.4]])


def _lr_lj(z, data):
    p, y = data["p"], data["x"]
    w, alpha, beta = z["w"], z["alpha"], z["beta"]
    lp = stats.gamma.logpdf(alpha, p["aa"], scale=1.0 / p["ba"])
    lp += stats.gamma.logpdf(beta, p["ab"], scale=1.0 / p["bb"])
    lp += jnp.sum(stats.norm.logpdf(w, 0.0, 1.0 / jnp.sqrt(alpha)))
    return lp + jnp.sum(stats.norm.logpdf(y, LR_X @ w, 1.0 / jnp.sqrt(beta)))


def _lr_prior(rng, p, m):
    alpha, beta = _gamma(rng, p["aa"], p["ba"], m), _gamma(rng, p["ab"], p["bb"], m)
    return {"alpha": alpha, "beta": beta,
            "w": rng.standard_normal((m, 2)) / np.sqrt(alpha)[:, None]}


def _lr_data(z, e):
    return e if z is None else LR_X @ z["w"] + e / jnp.sqrt(z["beta"])


def _lr_g(z, y):
    w, a, b = z["w"], z["alpha"], z["beta"]
    return jnp.stack([w[0], w[1], w[0] ** 2, w[1] ** 2, w[0] * w[1], a, b, a ** 2, b ** 2,
                      a * w[0] ** 2, jnp.mean(y), jnp.mean(y ** 2), y[0] * w[0],
                      b * jnp.sum((y - LR_X @ w) ** 2)])


LINEAR_REGRESSION = Case(
    vj.Model(_lr_lj, {"w": vj.real((2,)), "alpha": vj.positive(), "beta": vj.positive()}),
    {"aa": 10.0, "ba": 8.0, "ab": 6.0, "bb": 3.0}, {"bb": 5.0}, _lr_prior, (4,), _lr_data,
    _lr_g)


# --------------------------------------------------------------- mixture (small)
# pi ~ Dir(alpha0 1_K), tau_k ~ Gamma(a0, b0), mu_k | tau ~ N(0, 1/(beta0 tau_k)),
# c_n ~ Cat(pi), x_n ~ N(mu_{c_n}, 1/tau_{c_n}); four blocks (Dirichlet, Categorical,
# Normal, Gamma), K = 2, N = 3.
def _gm_lj(z, data):
    p, x = data["p"], data["x"]
    pi, c, mu, tau = z["pi"], z["z"], z["mu"], z["tau"]
    lp = stats.dirichlet.logpdf(pi, jnp.full((2,), p["alpha0"]))
    lp += jnp.sum(stats.gamma.logpdf(tau, p["a0"], scale=1.0 / p["b0"]))
    lp += jnp.sum(stats.norm.logpdf(mu, 0.0, 1.0 / jnp.sqrt(p["beta0"] * tau)))
    lp += jnp.sum(jnp.log(pi)[c])
    return lp + jnp.sum(stats.norm.logpdf(x, mu[c], 1.0 / jnp.sqrt(tau[c])))


def _gm_prior(rng, p, m):
    pi = rng.dirichlet(np.full(2, p["alpha0"]), m)
    tau = _gamma(rng, p["a0"], p["b0"], (m, 2))
    mu = rng.standard_normal((m, 2)) / np.sqrt(p["beta0"] * tau)
    c = (rng.random((m, 3)) > pi[:, :1]).astype(np.int32)  # P(c = 0) = pi_0
    return {"pi": pi, "tau": tau, "mu": mu, "z": c}


def _gm_data(z, e):
    return e if z is None else z["mu"][z["z"]] + e / jnp.sqrt(z["tau"][z["z"]])


def _gm_g(z, x):
    pi, c, mu, tau = z["pi"], z["z"], z["mu"], z["tau"]
    return jnp.stack([pi[0], pi[0] ** 2, jnp.mean(c == 0), jnp.mean(c[:1] == c[1:2]),
                      mu[0], mu[0] ** 2, tau[0], tau[0] ** 2, jnp.mean(x), jnp.mean(x ** 2),
                      x[0] * mu[c[0]], tau[c[0]] * (x[0] - mu[c[0]]) ** 2])


MIXTURE = Case(
    vj.Model(_gm_lj, {"pi": vj.simplex(2), "z": vj.categorical(2, (3,)), "mu": vj.real((2,)),
                      "tau": vj.positive((2,))}),
    {"alpha0": 1.5, "beta0": 1.0, "a0": 5.0, "b0": 4.0}, {"alpha0": 4.0, "b0": 6.0},
    _gm_prior, (3,), _gm_data, _gm_g)

CASES = {"normal_gamma": NORMAL_GAMMA, "linear_regression": LINEAR_REGRESSION,
         "mixture": MIXTURE}


@pytest.mark.parametrize("name", sorted(CASES))
def test_gibbs_sweep_passes_geweke(name):
    z = zscores(*geweke(name, 11))
    assert np.all(np.isfinite(z)) and np.max(np.abs(z)) < 4, (name, np.round(z, 2))


@pytest.mark.parametrize("name", sorted(CASES))
def test_wrong_conditional_is_detected(name):
    """The sweep of a model whose prior differs from the simulator's: the chain's
    stationary law is not p(z, x), and some test function's z-score is large."""
    z = zscores(*geweke(name, 12, wrong=True))
    assert np.max(np.abs(z)) > 8, (name, np.round(z, 2))


def test_float32_normal_gamma():
    """float32 throughout the chain (sweep, data draws, test functions): the same bound."""
    with jax.enable_x64(False):
        g_mc, g_sc = geweke("normal_gamma", 3, length=L // 2, dtype="float32")
    z = zscores(g_mc, g_sc)
    assert np.all(np.isfinite(z)) and np.max(np.abs(z)) < 4, np.round(z, 2)
