"""Predicates on continuous latents: support guards resolve, branches are refused.

A comparison, ``is_finite``, or a rounding of a value that depends on a continuous latent
is resolved by the compiler only when it is the same at every point of the declared
support (``vijax.conjugacy.intervals``). Two tables:

- REFUSED: branches and roundings on a latent (``where(mu > 0)``, ``cond``, ``round``,
  comparisons with data, a while loop whose trip count depends on a latent). ``vj.analyze``
  names the latent, the primitive and this file's line (marked ``# <- tag``), and
  ``vj.cavi`` raises ``NonConjugateError`` saying the same;
- ACCEPTED: the guards ``jax.scipy.stats`` densities emit, and guards written by hand
  that hold on the whole support; ``F(T(z)) == log p(z)`` exactly (float64) at random
  points of the support.

Last, the gradient path fits a model with a branch on the true log joint.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy import stats
from jax.scipy.special import xlog1py, xlogy
from scipy import integrate

import vijax as vj
from vijax.conjugacy.compile import compile_model
from vijax.errors import NonConjugateError

from .helpers import assert_exact, families_of

THIS_FILE = os.path.basename(__file__)

Y = jnp.array([0.4, -1.2, 2.1, 0.7])
K = jnp.array([0, 3, 1, 2])            # counts
B = jnp.array([0, 1, 1, 0])            # binary outcomes
EXPOSURE = jnp.array([0.5, 2.0, 1.0, 1.5])
DATA = {"y": Y, "k": K, "b": B, "e": EXPOSURE}


def marked_line(tag: str) -> int:
    with open(__file__) as fh:
        hits = [i for i, line in enumerate(fh, 1) if line.rstrip().endswith(f"# <- {tag}")]
    assert len(hits) == 1, f"tag {tag!r} found {len(hits)} times"
    return hits[0]


def _normal_mean(mu, d):
    return stats.norm.logpdf(mu, 0.0, 2.0) + jnp.sum(stats.norm.logpdf(d["y"], mu, 1.0))


# ----------------------------------------------------------------- refused

def where_mu_positive(z, d):
    mu = z["mu"]
    lp = stats.norm.logpdf(mu, 0.0, 2.0)
    return lp + jnp.sum(jnp.where(mu > 0, -0.5 * (d["y"] - mu) ** 2, -(d["y"] - mu) ** 2))  # <- where_mu


def where_tau_above_one(z, d):
    tau = z["tau"]
    lp = stats.gamma.logpdf(tau, 2.0, scale=1.0)
    return lp + jnp.where(tau > 1.0, -tau, -2.0 * tau)  # <- where_tau


def where_p_below_half(z, d):
    p = z["p"]
    lp = stats.beta.logpdf(p, 2.0, 2.0)
    return lp + jnp.where(p < 0.5, jnp.log(p), jnp.log1p(-p))  # <- where_p


def select_mu(z, d):
    mu = z["mu"]
    return _normal_mean(mu, d) + jax.lax.select(mu >= 1.0, mu, 2.0 * mu)  # <- select_mu


def cond_mu(z, d):
    mu = z["mu"]
    return _normal_mean(mu, d) + jax.lax.cond(mu > 0, lambda m: -m, lambda m: m, mu)  # <- cond_mu


def round_mu(z, d):
    mu = z["mu"]
    return _normal_mean(mu, d) + jnp.round(mu)  # <- round


def floor_mu(z, d):
    mu = z["mu"]
    return _normal_mean(mu, d) + 0.3 * jnp.floor(mu)  # <- floor


def ceil_mu(z, d):
    mu = z["mu"]
    return _normal_mean(mu, d) - jnp.ceil(mu)  # <- ceil


def sign_mu(z, d):
    mu = z["mu"]
    return _normal_mean(mu, d) + jnp.sign(mu) * mu  # <- sign


def truncate_tau(z, d):
    tau = z["tau"]
    lp = stats.gamma.logpdf(tau, 2.0, scale=1.0)
    return lp + (3.0 * tau).astype(jnp.int32).astype(tau.dtype)  # <- astype_int


def compare_with_data(z, d):
    mu = z["mu"]
    lp = stats.norm.logpdf(mu, 0.0, 2.0)
    return lp + jnp.sum(jnp.where(d["y"] < mu, d["y"] - mu, 0.0))  # <- vs_data


def positive_vs_positive_data(z, d):
    tau = z["tau"]
    lp = stats.gamma.logpdf(tau, 2.0, scale=1.0)
    return lp + jnp.sum(jnp.where(tau > d["e"], -tau, 0.0))  # <- tau_vs_data


_clip_at_half = jax.jit(lambda m: jnp.where(m > 0.5, m, 0.5))  # <- nested_jit


def nested_jit(z, d):
    mu = z["mu"]
    return _normal_mean(mu, d) - _clip_at_half(mu) ** 2


def while_on_latent(z, d):
    tau = z["tau"]
    lp = stats.gamma.logpdf(tau, 2.0, scale=1.0)
    steps, _ = jax.lax.while_loop(lambda c: c[0] < c[1],  # <- while
                                  lambda c: (c[0] + 1.0, c[1]), (0.0, tau))
    return lp - steps * tau


def isnan_of_product_with_real(z, d):
    mu, tau = z["mu"], z["tau"]
    lp = stats.norm.logpdf(mu, 0.0, 2.0) + stats.gamma.logpdf(tau, 2.0, scale=1.0)
    return lp + jnp.where(jnp.isfinite(mu), 0.0, -1.0) + jnp.where(tau * mu < 0, tau, 0.0)  # <- product


def astype_of_partly_nonconjugate(z, d):
    mu = z["mu"]
    return _normal_mean(mu, d) + (mu ** 2 + jnp.exp(mu)).astype(jnp.int32)  # <- astype_poison


# (tag, log joint, supports, refused latents, primitives naming the culprit)
REFUSED = [
    ("where_mu", where_mu_positive, {"mu": vj.real()}, {"mu"}, {"gt"}),
    ("where_tau", where_tau_above_one, {"tau": vj.positive()}, {"tau"}, {"gt"}),
    ("where_p", where_p_below_half, {"p": vj.unit_interval()}, {"p"}, {"lt"}),
    ("select_mu", select_mu, {"mu": vj.real()}, {"mu"}, {"ge"}),
    ("cond_mu", cond_mu, {"mu": vj.real()}, {"mu"}, {"gt"}),
    ("round", round_mu, {"mu": vj.real()}, {"mu"}, {"round"}),
    ("floor", floor_mu, {"mu": vj.real()}, {"mu"}, {"floor"}),
    ("ceil", ceil_mu, {"mu": vj.real()}, {"mu"}, {"ceil"}),
    ("sign", sign_mu, {"mu": vj.real()}, {"mu"}, {"sign"}),
    ("astype_int", truncate_tau, {"tau": vj.positive()}, {"tau"}, {"convert_element_type"}),
    ("vs_data", compare_with_data, {"mu": vj.real()}, {"mu"}, {"lt"}),
    ("tau_vs_data", positive_vs_positive_data, {"tau": vj.positive()}, {"tau"}, {"gt"}),
    ("nested_jit", nested_jit, {"mu": vj.real()}, {"mu"}, {"gt"}),
    ("while", while_on_latent, {"tau": vj.positive()}, {"tau"}, {"lt", "while"}),
    ("astype_poison", astype_of_partly_nonconjugate, {"mu": vj.real()}, {"mu"},
     {"exp", "convert_element_type"}),
    # isfinite(mu) holds on the real line; the branch is tau * mu < 0, on both latents
    ("product", isnan_of_product_with_real, {"mu": vj.real(), "tau": vj.positive()},
     {"mu", "tau"}, {"lt"}),
]


@pytest.fixture(scope="module")
def refused_analyses():
    return {tag: vj.analyze(vj.Model(f, s), DATA) for tag, f, s, _, _ in REFUSED}


@pytest.mark.parametrize("tag,fn,supports,latents,prims", REFUSED, ids=[r[0] for r in REFUSED])
def test_branch_on_latent_is_reported_with_primitive_and_line(refused_analyses, tag, fn,
                                                              supports, latents, prims):
    a = refused_analyses[tag]
    where = f"{THIS_FILE}:{marked_line(tag)}"
    for latent in latents:
        assert a.families[latent] is None, f"{tag}: '{latent}' must not be conjugate"
        info = a.compiled.infos[latent]
        assert info.primitive in prims, (info.primitive, a.reasons[latent])
        assert info.source is not None and info.source.endswith(where), (info.source, where)
        reason = a.reasons[latent]
        assert where in reason and f"'{info.primitive}'" in reason and latent in reason, reason
    assert "NOT CONJUGATE" in str(a)


@pytest.mark.parametrize("tag,fn,supports,latents,prims", REFUSED, ids=[r[0] for r in REFUSED])
def test_cavi_refuses_branch_on_latent(tag, fn, supports, latents, prims):
    with pytest.raises(NonConjugateError) as ei:
        vj.cavi(vj.Model(fn, supports), DATA, max_iters=2)
    err = ei.value
    msg = str(err)
    assert err.latent in latents and f"'{err.latent}'" in msg
    assert err.primitive in prims and f"'{err.primitive}'" in msg
    assert f"{THIS_FILE}:{marked_line(tag)}" in msg, msg


# ----------------------------------------------------------------- accepted

def norm_guards(z, d):
    return _normal_mean(z["mu"], d)


def gamma_guards(z, d):
    tau = z["tau"]
    return stats.gamma.logpdf(tau, 3.0, scale=0.5) + jnp.sum(
        stats.norm.logpdf(d["y"], 0.0, 1.0 / jnp.sqrt(tau)))


def beta_bernoulli_guards(z, d):
    p = z["p"]
    return stats.beta.logpdf(p, 2.0, 3.0) + jnp.sum(stats.bernoulli.logpmf(d["b"], p))


def dirichlet_multinomial_guards(z, d):
    pi = z["pi"]
    lp = jnp.sum(stats.dirichlet.logpdf(pi, jnp.array([2.0, 1.5, 3.0])))
    return lp + stats.multinomial.logpmf(d["k"][:3], jnp.sum(d["k"][:3]), pi)


def gamma_poisson_exposure_guards(z, d):
    lam = z["lam"]
    return stats.gamma.logpdf(lam, 2.0, scale=1.0) + jnp.sum(
        stats.poisson.logpmf(d["k"], lam * d["e"]))


def mvn_guards(z, d):
    m = z["m"]
    cov = jnp.array([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 1.5]])
    lp = stats.multivariate_normal.logpdf(m, jnp.zeros(3), 4.0 * jnp.eye(3))
    return lp + stats.multivariate_normal.logpdf(d["y"][:3], m, cov)


def xlogy_xlog1py_guards(z, d):
    p = z["p"]
    return xlogy(2.0, p) + xlog1py(3.0, -p) + jnp.sum(xlogy(d["b"], p))


def hand_written_guards(z, d):
    tau, p, pi, mu = z["tau"], z["p"], z["pi"], z["mu"]
    lp = jnp.where(tau >= 0, -tau + jnp.log(tau), -jnp.inf)
    lp += jnp.where(tau < 0, -jnp.inf, 0.0) + jnp.where(tau > -1.0, 0.0, tau)
    lp += jnp.where((p > 1) | (p < 0), -jnp.inf, jnp.log(p) + 2.0 * jnp.log1p(-p))
    lp += jnp.where(jnp.abs(jnp.sum(pi) - 1.0) < 1e-6, jnp.sum(jnp.log(pi)), -jnp.inf)
    lp += jnp.where(jnp.all(pi >= 0), 0.0, -jnp.inf) + jnp.where(jnp.any(pi > 1), -1.0, 0.0)
    lp += jnp.where(jnp.isnan(mu), 0.0, -0.5 * mu ** 2) + jnp.where(mu != mu, mu, 0.0)
    lp += jnp.where(jnp.isfinite(2.5 * mu - 1.0), mu * d["y"], 0.0).sum()
    lp += jnp.where(jnp.isnan(tau * d["e"]), 0.0, -tau * d["e"]).sum()
    lp += jnp.where(jnp.isfinite(1.0 / tau), 0.0, -jnp.inf)
    lp += jnp.floor(p) + jnp.ceil(p) * mu + jnp.sign(tau) * mu + jnp.round(0.4 * p)
    return lp + (0.5 * p + 0.2).astype(jnp.int32) + jnp.sign(-pi[0]) * tau


def fixed_trip_loop(z, d):
    mu = z["mu"]
    _, acc = jax.lax.while_loop(lambda c: c[0] < 3,
                                lambda c: (c[0] + 1, c[1] + (d["y"][c[0]] - mu) ** 2), (0, 0.0))
    return stats.norm.logpdf(mu, 0.0, 2.0) - 0.5 * acc


def discrete_branch_stays_exact(z, d):
    b, mu = z["s"], z["mu"]
    lp = stats.norm.logpdf(mu, 0.0, 2.0) + jnp.sum(jnp.where(b == 1, -0.3, -1.2))
    return lp + jnp.sum(jnp.where(b > 0, stats.norm.logpdf(d["y"], mu, 1.0),
                                  stats.norm.logpdf(d["y"], 0.0, 3.0)))


# (tag, log joint, supports, expected families)
ACCEPTED = [
    ("norm", norm_guards, {"mu": vj.real()}, {"mu": "Normal"}),
    ("gamma", gamma_guards, {"tau": vj.positive()}, {"tau": "Gamma"}),
    ("beta_bernoulli", beta_bernoulli_guards, {"p": vj.unit_interval()}, {"p": "Beta"}),
    ("dirichlet_multinomial", dirichlet_multinomial_guards, {"pi": vj.simplex(3)},
     {"pi": "Dirichlet"}),
    ("poisson_exposure", gamma_poisson_exposure_guards, {"lam": vj.positive()},
     {"lam": "Gamma"}),
    ("multivariate_normal", mvn_guards, {"m": vj.real((3,))}, {"m": "MultivariateNormal"}),
    ("xlogy_xlog1py", xlogy_xlog1py_guards, {"p": vj.unit_interval()}, {"p": "Beta"}),
    ("hand_written", hand_written_guards,
     {"tau": vj.positive(), "p": vj.unit_interval(), "pi": vj.simplex(4), "mu": vj.real()},
     {"tau": "Gamma", "p": "Beta", "pi": "Dirichlet", "mu": "Normal"}),
    ("fixed_trip_loop", fixed_trip_loop, {"mu": vj.real()}, {"mu": "Normal"}),
    ("discrete_branch", discrete_branch_stays_exact, {"s": vj.binary((4,)), "mu": vj.real()},
     {"s": "Bernoulli", "mu": "Normal"}),
]


@pytest.mark.parametrize("tag,fn,supports,families", ACCEPTED, ids=[r[0] for r in ACCEPTED])
def test_guard_true_on_whole_support_is_resolved_exactly(tag, fn, supports, families, rng):
    model = vj.Model(fn, supports)
    c = compile_model(model, DATA)
    assert families_of(c) == families, {n: i.reason for n, i in c.infos.items()}
    assert_exact(model, DATA, rng, n_points=4, compiled=c)


# ----------------------------------------------------------------- gradient path

PRIOR_SD = 3.0
Y_FAR = jnp.array([2.6, 3.4, 2.9, 3.3, 2.8, 3.1, 3.2, 2.7, 3.0, 3.05])


def shifted_below_one(z, d):
    """Normal likelihood for mu > 1; below 1 the observations are read shifted by one.

    The canonical point of a real latent lies below 1, so resolving ``mu > 1`` there
    fits ``N(y, mu + 1)``: a posterior mean one unit too low."""
    mu = z["mu"]
    lp = stats.norm.logpdf(mu, 0.0, PRIOR_SD)
    return lp + jnp.where(mu > 1.0, jnp.sum(stats.norm.logpdf(d, mu, 1.0)),
                          jnp.sum(stats.norm.logpdf(d, mu + 1.0, 1.0)))


def _quadrature_posterior(log_joint, data):
    """Posterior mean and sd of a scalar latent by numerical integration."""
    f = jax.jit(lambda m: log_joint({"mu": m}, data))
    grid_peak = max(np.linspace(-10, 10, 2001), key=lambda m: float(f(m)))
    lmax = float(f(grid_peak))
    dens = lambda m: math.exp(float(f(m)) - lmax)  # noqa: E731
    lims = (grid_peak - 12.0, grid_peak + 12.0)
    pts = [1.0]
    z0 = integrate.quad(dens, *lims, points=pts, limit=200)[0]
    m1 = integrate.quad(lambda m: m * dens(m), *lims, points=pts, limit=200)[0] / z0
    m2 = integrate.quad(lambda m: m * m * dens(m), *lims, points=pts, limit=200)[0] / z0
    return m1, math.sqrt(m2 - m1 * m1)


@pytest.fixture(scope="module")
def branch_posterior():
    return _quadrature_posterior(shifted_below_one, Y_FAR)


@pytest.mark.parametrize("estimator", ["auto", "reparam"])
def test_gradient_fit_uses_the_true_log_joint(branch_posterior, estimator):
    mean, sd = branch_posterior
    model = vj.Model(shifted_below_one, {"mu": vj.real()})
    num_samples = 16
    res = vj.fit_gradient(model, Y_FAR, jax.random.key(3), optimizer=_OPTIMIZER,
                          estimator=estimator, num_samples=num_samples, num_steps=1500)
    got = float(res.posterior["mu"].mean())
    # the fitted Gaussian's mean wanders around the optimum with the Monte Carlo noise of a
    # num_samples-draw estimate of the posterior mean; 5 standard errors of that
    se = sd / math.sqrt(num_samples)
    assert abs(got - mean) < 5 * se, (estimator, got, mean, se)
    # the branch resolved at the canonical point would give a mean about one unit lower
    assert 5 * se < 0.5


_OPTIMIZER = optax.adam(optax.exponential_decay(5e-2, 500, 0.2))


# ----------------------------------------------------------------- range arithmetic

from vijax.conjugacy import intervals as iv  # noqa: E402

POS = iv.Range(0.0, math.inf, False, False)          # tau
REAL = iv.Range(-math.inf, math.inf, False, False)   # mu
UNIT = iv.Range(0.0, 1.0, False, False)              # p

# (what, computed range, expected range)
RANGES = [
    ("tau * tau", iv.mul(POS, POS), POS),
    ("-1 * tau", iv.mul(iv.point_range(-1.0), POS), iv.Range(-math.inf, 0.0, False, False)),
    ("p - 1", iv.add(UNIT, iv.point_range(-1.0)), iv.Range(-1.0, 0.0, False, False)),
    ("[0, 2] * tau reaches 0", iv.mul(iv.Range(0.0, 2.0), POS),
     iv.Range(0.0, math.inf, True, False)),
    ("tau * data: infinite data stay infinite, no NaN", iv.mul(POS, iv.DATA),
     iv.Range(-math.inf, math.inf, True, True, False)),
    ("mu + data", iv.add(REAL, iv.DATA), iv.Range(-math.inf, math.inf, True, True, False)),
    ("0 * inf both reached is NaN", iv.mul(iv.Range(0.0, 1.0), iv.Range(1.0, math.inf)),
     iv.Range(0.0, math.inf, True, True, True)),
    ("sum of 3 p", iv.repeat_sum(UNIT, 3), iv.Range(0.0, 3.0, False, False)),
]


@pytest.mark.parametrize("what,got,expected", RANGES, ids=[r[0] for r in RANGES])
def test_range_arithmetic(what, got, expected):
    assert got == expected, (what, got)


# (what, comparison, a, b, provably constant)
COMPARISONS = [
    ("tau >= 0", "ge", POS, iv.point_range(0.0), True),
    ("tau > 0", "gt", POS, iv.point_range(0.0), True),
    ("tau < 0", "lt", POS, iv.point_range(0.0), True),
    ("tau > 1", "gt", POS, iv.point_range(1.0), False),
    ("p <= 1", "le", UNIT, iv.point_range(1.0), True),
    ("p == 1", "eq", UNIT, iv.point_range(1.0), True),
    ("p < 0.5", "lt", UNIT, iv.point_range(0.5), False),
    ("mu > 0", "gt", REAL, iv.point_range(0.0), False),
    ("tau > data", "gt", POS, iv.DATA, False),
    ("[0, inf) > 0", "gt", iv.Range(0.0, math.inf, True, False), iv.point_range(0.0), False),
    ("maybe-NaN < 1 (NaN is False too)", "lt", iv.Range(2.0, 3.0, nan=True),
     iv.point_range(1.0), True),
    ("maybe-NaN > 1", "gt", iv.Range(2.0, 3.0, nan=True), iv.point_range(1.0), False),
]


@pytest.mark.parametrize("what,name,a,b,constant", COMPARISONS, ids=[r[0] for r in COMPARISONS])
def test_comparison_is_constant_only_when_proven(what, name, a, b, constant):
    assert iv._compare(name, a, b, same=False) is constant, what


def test_nan_check_and_roundings():
    assert iv._compare("ne", REAL, REAL, same=True)          # mu != mu: always False
    assert not iv._compare("ne", iv.UNKNOWN, iv.UNKNOWN, same=True)
    assert iv._floor_constant(UNIT) and iv._ceil_constant(UNIT)
    assert not iv._floor_constant(iv.Range(0.0, 1.0, False, True))   # (0, 1]
    assert not iv._round_constant(UNIT)                              # 0.5 is inside
    assert iv._round_constant(iv.Range(0.0, 0.5, False, False))
    assert iv._sign_constant(POS) and not iv._sign_constant(REAL)
    assert iv.Range(-math.inf, math.inf, False, False).finite()
    assert not iv.DATA.finite() and not iv.UNKNOWN.finite()
