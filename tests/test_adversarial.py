"""Bad and edge inputs, as a new user would try them: each row names the input and the
expected named exception with a fragment of its message, or checks the correct answer.

Models are tiny and shared between rows so that each compiles once.
"""

import jax

jax.config.update("jax_enable_x64", True)

import functools  # noqa: E402
import math  # noqa: E402
import warnings  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from jax.scipy import stats  # noqa: E402
import scipy.stats as sps  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

import vijax as vj  # noqa: E402
from vijax.errors import (ArgumentTypeError, DataError, FitDivergedError,  # noqa: E402
                          InvalidParameterError, ModelSpecError, NonConjugateError)

KEY = jax.random.key(0)


# ----------------------------------------------------------------------- models
def _normal_gamma(z, x):
    return (stats.norm.logpdf(z["mu"]) + stats.gamma.logpdf(z["tau"], 2.0)
            + jnp.sum(stats.norm.logpdf(x, z["mu"], 1 / jnp.sqrt(z["tau"]))))


NG = vj.Model(_normal_gamma, {"mu": vj.real(), "tau": vj.positive()})
X = jnp.array([0.1, 0.5, -0.3, 0.8])

# Normal with known variance: the exact posterior and evidence are closed-form
M0, S0, SIG = 0.5, 2.0, 1.5
XG = jnp.array([1.2, -0.3, 2.2, 0.9, 1.7])
GAUSS = vj.Model(lambda z, x: stats.norm.logpdf(z["mu"], M0, S0)
                 + jnp.sum(stats.norm.logpdf(x, z["mu"], SIG)), {"mu": vj.real()})


def _dict_model(z, d):
    return stats.norm.logpdf(z["mu"]) + jnp.sum(stats.norm.logpdf(d["y"], z["mu"]))


DICT = vj.Model(_dict_model, {"mu": vj.real()})


def _nested_model(z, d):
    return stats.norm.logpdf(z["mu"]) + jnp.sum(stats.norm.logpdf(d["obs"]["y"], z["mu"]))


NESTED = vj.Model(_nested_model, {"mu": vj.real()})

BETA_BERN = vj.Model(lambda z, x: stats.beta.logpdf(z["p"], 1.0, 1.0)
                     + jnp.sum(stats.bernoulli.logpmf(x, z["p"])), {"p": vj.unit_interval()})
GAMMA_POIS = vj.Model(lambda z, x: stats.gamma.logpdf(z["l"], 2.0)
                      + jnp.sum(stats.poisson.logpmf(x, z["l"])), {"l": vj.positive()})
GAMMA_EXP = vj.Model(lambda z, x: stats.gamma.logpdf(z["l"], 2.0)
                     + jnp.sum(stats.gamma.logpdf(x, 1.0, scale=1 / z["l"])), {"l": vj.positive()})
# data in a dict: the culprit leaf is named by its path
BERN_DICT = vj.Model(lambda z, d: stats.beta.logpdf(z["p"], 1.0, 1.0)
                     + jnp.sum(stats.norm.logpdf(d["w"], z["p"]))
                     + jnp.sum(stats.bernoulli.logpmf(d["b"], z["p"])), {"p": vj.unit_interval()})

# hyper-parameter mistakes in a prior
GAMMA_SHAPE0 = vj.Model(lambda z, x: stats.gamma.logpdf(z["l"], 0.0)
                        + jnp.sum(stats.poisson.logpmf(x, z["l"])), {"l": vj.positive()})
GAMMA_NEG_SCALE = vj.Model(lambda z, x: stats.gamma.logpdf(z["l"], 2.0, scale=-1.0)
                           + jnp.sum(stats.poisson.logpmf(x, z["l"])), {"l": vj.positive()})
BETA_ZERO = vj.Model(lambda z, x: stats.beta.logpdf(z["p"], 0.0, 1.0)
                     + jnp.sum(stats.bernoulli.logpmf(x, z["p"])), {"p": vj.unit_interval()})

# a count latent: Poisson(3) prior, Gaussian observations of it
XC = jnp.array([2.3, 1.7, 3.1])
COUNT = vj.Model(lambda z, x: stats.poisson.logpmf(z["n"], 3.0)
                 + jnp.sum(stats.norm.logpdf(x, z["n"], 1.0)), {"n": vj.count()})

# Laplace pathologies
NAN_AT_START = vj.Model(lambda z, x: -0.5 * (z["mu"] - 0.3183) ** 2
                        + jnp.where(z["mu"] == 0.3183, jnp.nan, 0.0), {"mu": vj.real()})
# log density of logit(p) is 5 log p: increases towards p = 1 without a maximum
BOUNDARY = vj.Model(lambda z, x: 4 * jnp.log(z["p"]) - jnp.log1p(-z["p"]),
                    {"p": vj.unit_interval()})
FLAT = vj.Model(lambda z, x: -0.5 * (z["a"] - z["b"]) ** 2, {"a": vj.real(), "b": vj.real()})


def _mix(p, z, x):
    return jnp.sum(jnp.log(0.5) + stats.norm.logpdf(x, p["m"][z["c"]], 1.0))


XM = jnp.concatenate([jnp.full(5, -5.0), jnp.full(5, 5.0)])
MIX_SUP = {"c": vj.categorical(2, shape=(10,))}
MIX_P0 = {"m": jnp.array([-1.0, 1.0])}


# ----------------------------------------------------------------- answer checks
def _exact_gauss():
    prec = 1 / S0 ** 2 + XG.size / SIG ** 2
    mean = (M0 / S0 ** 2 + float(jnp.sum(XG)) / SIG ** 2) / prec
    n = XG.size
    cov = SIG ** 2 * np.eye(n) + S0 ** 2 * np.ones((n, n))
    log_ev = float(stats.multivariate_normal.logpdf(XG, jnp.full(n, M0), cov))
    return mean, 1 / prec, log_ev


def _check_legacy_key(fit):
    ref = vj.cavi(NG, X, key=jax.random.key(3))
    np.testing.assert_allclose(float(fit.posterior["mu"].mean()),
                               float(ref.posterior["mu"].mean()), rtol=1e-7)


def _check_em_zero_iters(fit):
    np.testing.assert_allclose(np.asarray(fit.params["m"]), [-1.0, 1.0])
    assert int(fit.num_iters) == 0


def _check_analysis_count(a):
    assert a.families["n"] is None
    assert "count" in a.reasons["n"] and "vj.fit_gradient" in a.reasons["n"]


def _check_count_gradient(fit):
    """The best Poisson q by a grid over rates (ELBO by an exact truncated sum)."""
    ns = np.arange(60)
    lp = sps.poisson.logpmf(ns, 3.0) + np.sum(sps.norm.logpdf(np.asarray(XC)[None], ns[:, None]),
                                               axis=1)
    rates = np.linspace(1.0, 4.0, 301)
    elbos = [float(np.sum(sps.poisson.pmf(ns, r) * (lp - sps.poisson.logpmf(ns, r))))
             for r in rates]
    best = rates[int(np.argmax(elbos))]
    rate = float(fit.posterior["n"].mean())
    assert abs(rate - best) < 0.35, (rate, best)
    assert float(fit.elbo) < logsumexp(lp) + 0.1  # a lower bound, up to MC error


def _check_cavi_vs_laplace(c):
    mean, var, log_ev = _exact_gauss()
    assert c.agree, str(c)
    r = c.latents["mu"]
    assert r["kl_ab"] < 1e-10 and r["kl_ba"] < 1e-10 and r["max_rel_var_diff"] < 1e-8
    np.testing.assert_allclose([c.elbo_a, c.elbo_b], [log_ev, log_ev], rtol=1e-8)


def _check_gamma_moments(c):
    r = c.latents["tau"]
    assert math.isnan(r["kl_ab"]) and r["family"] == "Gamma vs Laplace"
    assert r["max_mean_diff_sd"] < 0.2 and c.agree, str(c)


def _check_vmap_cavi_nan_lane(fit):
    m = np.asarray(fit.posterior["mu"].mean())
    assert np.isnan(m[1]) and np.isnan(np.asarray(fit.natural["tau"]["x"])[1])
    assert bool(fit.diagnostics["nonfinite"][1]) and not bool(fit.diagnostics["nonfinite"][0])
    ref = vj.cavi(NG, X)
    np.testing.assert_allclose(m[0], float(ref.posterior["mu"].mean()), rtol=1e-7)


def _check_vmap_laplace_nan_lane(lap):
    assert np.asarray(lap.ok).tolist() == [True, False]
    assert np.isnan(np.asarray(lap.mean["mu"])[1]) and np.isnan(np.asarray(lap.log_evidence)[1])
    assert np.isnan(np.asarray(lap.variance["tau"])[1])
    ref = vj.laplace(NG, X)
    np.testing.assert_allclose(np.asarray(lap.mean["mu"])[0], float(ref.mean["mu"]), rtol=1e-7)


def _check_laplace_exact(lap):
    mean, var, log_ev = _exact_gauss()
    assert bool(lap.ok) and float(lap.newton_sd) < 1e-6
    np.testing.assert_allclose([float(lap.mean["mu"]), float(lap.variance["mu"]),
                                float(lap.log_evidence)], [mean, var, log_ev], rtol=1e-9)


def _check_order_ok(fit):
    mean, var, log_ev = _exact_gauss()
    np.testing.assert_allclose(float(fit.elbo), log_ev, rtol=1e-9)


@functools.lru_cache(maxsize=None)
def _laplace_lanes():
    """Laplace vmapped over a clean and a NaN data set (compiled once for two rows)."""
    return jax.vmap(lambda d: vj.laplace(NG, d))(jnp.stack([X, X.at[0].set(jnp.nan)]))


def _failed_lane():
    return jax.tree_util.tree_map(lambda v: v[1], _laplace_lanes())


def _count_fit():
    with warnings.catch_warnings():  # a fixed number of steps: no convergence test
        warnings.simplefilter("ignore")
        return vj.fit_gradient(COUNT, XC, jax.random.key(1), optimizer=optax.adam(5e-2),
                               num_samples=32, num_steps=600, chunk=600, tol=0.0)


def _raises(exc, fragment):
    return ("raises", exc, fragment)


def _answer(check):
    return ("answer", check)


# --------------------------------------------------------------------- the table
ROWS = [
    # --- fit options: vj.cavi
    ("cavi max_iters=0", lambda: vj.cavi(NG, X, max_iters=0),
     _raises(ModelSpecError, "max_iters must be an integer >= 1, got 0")),
    ("cavi max_iters=-3", lambda: vj.cavi(NG, X, max_iters=-3),
     _raises(ModelSpecError, "max_iters must be an integer >= 1")),
    ("cavi max_iters=2.5", lambda: vj.cavi(NG, X, max_iters=2.5),
     _raises(ArgumentTypeError, "max_iters must be an integer")),
    ("cavi max_iters=True", lambda: vj.cavi(NG, X, max_iters=True),
     _raises(TypeError, "got bool")),
    ("cavi tol=-1", lambda: vj.cavi(NG, X, tol=-1.0),
     _raises(ModelSpecError, "tol must be a finite number >= 0")),
    ("cavi tol=nan", lambda: vj.cavi(NG, X, tol=float("nan")),
     _raises(ValueError, "tol must be a finite number")),
    ("cavi tol=inf", lambda: vj.cavi(NG, X, tol=float("inf")),
     _raises(ModelSpecError, "tol must be a finite number")),
    ("cavi tol='small'", lambda: vj.cavi(NG, X, tol="small"),
     _raises(ArgumentTypeError, "tol must be a finite number >= 0, got str")),
    ("cavi order duplicate", lambda: vj.cavi(NG, X, order=("mu", "tau", "mu")),
     _raises(ModelSpecError, "duplicated ['mu']")),
    ("cavi order unknown", lambda: vj.cavi(NG, X, order=("mu", "sigma")),
     _raises(ModelSpecError, "unknown ['sigma']")),
    ("cavi order missing", lambda: vj.cavi(NG, X, order=("mu",)),
     _raises(ModelSpecError, "missing ['tau']")),
    ("cavi order a string", lambda: vj.cavi(GAUSS, XG, order="mu"),
     _raises(ArgumentTypeError, "order must be a sequence of latent names")),
    ("cavi order single latent ok", lambda: vj.cavi(GAUSS, XG, order=["mu"]),
     _answer(_check_order_ok)),
    ("cavi key a string", lambda: vj.cavi(NG, X, key="a"),
     _raises(ArgumentTypeError, "key must be a PRNG key")),
    ("cavi key an int", lambda: vj.cavi(NG, X, key=0),
     _raises(TypeError, "jax.random.key(seed)")),
    ("cavi key a float array", lambda: vj.cavi(NG, X, key=jnp.zeros(2)),
     _raises(ArgumentTypeError, "dtype float64")),
    ("cavi key batch of keys", lambda: vj.cavi(NG, X, key=jax.random.split(KEY, 3)),
     _raises(ModelSpecError, "single PRNG key")),
    ("cavi legacy PRNGKey accepted", lambda: vj.cavi(NG, X, key=jax.random.PRNGKey(3)),
     _answer(_check_legacy_key)),
    # --- fit options: vj.fit_gradient
    ("gradient num_steps=0", lambda: vj.fit_gradient(NG, X, KEY, num_steps=0),
     _raises(ModelSpecError, "num_steps must be an integer >= 1, got 0")),
    ("gradient num_samples=0",
     lambda: vj.fit_gradient(NG, X, KEY, estimator="reparam", num_samples=0),
     _raises(ModelSpecError, "num_samples must be an integer >= 1")),
    ("gradient chunk=0", lambda: vj.fit_gradient(NG, X, KEY, chunk=0),
     _raises(ModelSpecError, "chunk must be an integer >= 1")),
    ("gradient optimizer a string", lambda: vj.fit_gradient(NG, X, KEY, optimizer="adam"),
     _raises(ArgumentTypeError, "optax.adam(1e-2)")),
    ("gradient optimizer a function", lambda: vj.fit_gradient(NG, X, KEY, optimizer=optax.adam),
     _raises(TypeError, "optimizer must be an optax.GradientTransformation")),
    ("gradient key None", lambda: vj.fit_gradient(NG, X, None),
     _raises(ArgumentTypeError, "key must be a PRNG key")),
    ("gradient tol=-1e-3", lambda: vj.fit_gradient(NG, X, KEY, tol=-1e-3),
     _raises(ModelSpecError, "tol must be a finite number >= 0")),
    # --- fit options: vj.laplace and vj.em
    ("laplace optimizer 'adam'", lambda: vj.laplace(NG, X, optimizer="adam"),
     _raises(ArgumentTypeError, "or 'lbfgs'")),
    ("laplace num_steps=0", lambda: vj.laplace(NG, X, num_steps=0),
     _raises(ModelSpecError, "num_steps must be an integer >= 1")),
    ("laplace tol=nan", lambda: vj.laplace(NG, X, tol=float("nan")),
     _raises(ModelSpecError, "tol must be a finite number")),
    ("em max_iters=-1", lambda: vj.em(_mix, MIX_P0, MIX_SUP, XM, max_iters=-1),
     _raises(ModelSpecError, "max_iters must be an integer >= 0")),
    ("em tol=-1", lambda: vj.em(_mix, MIX_P0, MIX_SUP, XM, tol=-1.0),
     _raises(ModelSpecError, "tol must be a finite number")),
    ("em key a string", lambda: vj.em(_mix, MIX_P0, MIX_SUP, XM, key="k"),
     _raises(ArgumentTypeError, "key must be a PRNG key")),
    ("em order duplicate", lambda: vj.prepare_em(_mix, MIX_P0, MIX_SUP, XM, order=("c", "c")),
     _raises(ModelSpecError, "duplicated ['c']")),
    ("em max_iters=0 returns the start", lambda: vj.em(_mix, MIX_P0, MIX_SUP, XM, max_iters=0),
     _answer(_check_em_zero_iters)),
    # --- data mistakes
    ("data dict missing key", lambda: vj.cavi(DICT, {"x": X}),
     _raises(DataError, "data have no key 'y'")),
    ("data missing key, gradient", lambda: vj.fit_gradient(DICT, {"x": X}, KEY),
     _raises(DataError, "reads data['y']")),
    ("data nested dict missing key", lambda: vj.cavi(NESTED, {"obs": {"z": X}}),
     _raises(DataError, "data['obs']['y']")),
    ("data a Python list", lambda: vj.cavi(NG, [0.1, 0.5, -0.3]),
     _raises(DataError, "Python list of numbers")),
    ("data NaN", lambda: vj.cavi(NG, X.at[1].set(jnp.nan)),
     _raises(DataError, "NaN/Inf")),
    ("Bernoulli data 2", lambda: vj.cavi(BETA_BERN, jnp.array([0, 1, 2])),
     _raises(DataError, "jax.scipy.stats.bernoulli")),
    ("Bernoulli data -1, gradient", lambda: vj.fit_gradient(BETA_BERN, jnp.array([0, -1]), KEY),
     _raises(DataError, "e.g. [-1]")),
    ("Poisson data -2", lambda: vj.cavi(GAMMA_POIS, jnp.array([1, -2, 3])),
     _raises(DataError, "jax.scipy.stats.poisson")),
    ("negative Gamma data", lambda: vj.cavi(GAMMA_EXP, jnp.array([1.0, -0.5])),
     _raises(DataError, "e.g. [-0.5]")),
    ("Bernoulli data in a dict leaf", lambda: vj.cavi(BERN_DICT, {"w": X, "b": jnp.array([1, 3])}),
     _raises(DataError, "data['b'] has values outside")),
    ("Laplace Poisson data -2", lambda: vj.laplace(GAMMA_POIS, jnp.array([1, -2])),
     _raises(DataError, "data has values outside")),
    # --- hyper-parameters
    ("Gamma shape 0", lambda: vj.cavi(GAMMA_SHAPE0, jnp.array([1, 2])),
     _raises(InvalidParameterError, "jax.scipy.stats.gamma at")),
    ("Gamma negative scale", lambda: vj.cavi(GAMMA_NEG_SCALE, jnp.array([1, 2])),
     _raises(InvalidParameterError, "test_adversarial.py")),
    ("Beta concentration 0", lambda: vj.fit_gradient(BETA_ZERO, jnp.array([0, 1]), KEY),
     _raises(InvalidParameterError, "jax.scipy.stats.beta")),
    # --- count latents
    ("count latent analyzed", lambda: vj.analyze(COUNT, XC), _answer(_check_analysis_count)),
    ("count latent CAVI", lambda: vj.cavi(COUNT, XC),
     _raises(NonConjugateError, "latent 'n' has no conjugate update")),
    ("count latent gradient (Poisson q)", _count_fit, _answer(_check_count_gradient)),
    # --- Laplace
    ("Laplace exact on a Gaussian", lambda: vj.laplace(GAUSS, XG), _answer(_check_laplace_exact)),
    ("Laplace one step: not a mode",
     lambda: vj.laplace(NG, X, optimizer=optax.sgd(1e-3), num_steps=1),
     _raises(FitDivergedError, "posterior standard deviations from a stationary point")),
    ("Laplace NaN log density", lambda: vj.laplace(NAN_AT_START, X),
     _raises(FitDivergedError, "the log density is nan")),
    ("Laplace maximum at the boundary", lambda: vj.laplace(BOUNDARY, X),
     _raises(FitDivergedError, "along latent 'p'")),
    ("Laplace flat direction", lambda: vj.laplace(FLAT, X),
     _raises(FitDivergedError, "not negative definite")),
    ("Laplace vmap NaN lane", _laplace_lanes, _answer(_check_vmap_laplace_nan_lane)),
    # --- compare
    ("compare CAVI with Laplace (Gaussian)",
     lambda: vj.compare(vj.cavi(GAUSS, XG), vj.laplace(GAUSS, XG), names=("cavi", "laplace")),
     _answer(_check_cavi_vs_laplace)),
    ("compare Laplace with CAVI (reversed)",
     lambda: vj.compare(vj.laplace(GAUSS, XG), vj.cavi(GAUSS, XG), names=("laplace", "cavi")),
     _answer(_check_cavi_vs_laplace)),
    ("compare Gamma factor by moments",
     lambda: vj.compare(vj.cavi(NG, jnp.linspace(-2, 2, 200)), vj.laplace(NG, jnp.linspace(-2, 2, 200)),
                        elbo_tol=1e-2),
     _answer(_check_gamma_moments)),
    ("compare with a non-fit", lambda: vj.compare(vj.cavi(GAUSS, XG), {"mu": 1.0}),
     _raises(TypeError, "must be a fit result")),
    ("compare a failed Laplace lane", lambda: vj.compare(vj.cavi(NG, X), _failed_lane()),
     _raises(ValueError, "ok=False")),
    # --- vmap / jit
    ("CAVI vmap NaN lane", lambda: jax.vmap(lambda d: vj.cavi(NG, d))(
        jnp.stack([X, X.at[0].set(jnp.nan)])), _answer(_check_vmap_cavi_nan_lane)),
    ("CAVI jit skips the data checks", lambda: jax.jit(lambda d: vj.cavi(BETA_BERN, d).elbo)(
        jnp.array([0, 1, 2])), _answer(lambda e: np.testing.assert_(not np.isfinite(float(e))))),
]


@pytest.mark.parametrize("name,run,expected", ROWS, ids=[r[0] for r in ROWS])
def test_adversarial(name, run, expected):
    if expected[0] == "raises":
        _, exc, fragment = expected
        with pytest.raises(exc) as info:
            run()
        assert fragment in str(info.value), str(info.value)
    else:
        expected[1](run())


def test_enough_rows():
    assert len(ROWS) >= 40
