"""Differentiable fits: jax.grad of a converged CAVI fit's ELBO with respect to data and
hyper-parameters (envelope theorem), against the closed-form log evidence's gradient on
single-block models (where the ELBO is the log evidence) and against central finite
differences of the converged ELBO; forward mode, jit and vmap; integer leaves; the
posterior is a constant under differentiation. float64."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from jax.scipy import stats  # noqa: E402
from jax.scipy.special import gammaln  # noqa: E402

import vijax as vj  # noqa: E402

TOL = 1e-14


def _betaln(a, b):  # jax.scipy.special.betaln is accurate to ~1e-7 only in float64
    return gammaln(a) + gammaln(b) - gammaln(a + b)


def _beta_bernoulli():
    def lj(z, d):
        return (stats.beta.logpdf(z["p"], d["a"], d["b"])
                + jnp.sum(stats.bernoulli.logpmf(d["x"], z["p"])))
    return vj.Model(lj, {"p": vj.unit_interval()})


def _bb_evidence(d):
    k = jnp.sum(d["x"])
    return _betaln(d["a"] + k, d["b"] + d["x"].size - k) - _betaln(d["a"], d["b"])


BB = {"x": jnp.array([1.0, 0, 1, 1, 0, 1, 1, 1]), "a": jnp.asarray(2.5),
      "b": jnp.asarray(1.5)}


def _elbo(model):
    return lambda d: vj.cavi(model, d, tol=TOL, max_iters=200).elbo


def test_beta_bernoulli_hyperparameter_gradient_is_the_evidence_gradient():
    f = _elbo(_beta_bernoulli())
    np.testing.assert_allclose(f(BB), _bb_evidence(BB), rtol=1e-12)
    g, ref = jax.grad(f)(BB), jax.grad(_bb_evidence)(BB)
    np.testing.assert_allclose(g["a"], ref["a"], rtol=1e-10)
    np.testing.assert_allclose(g["b"], ref["b"], rtol=1e-10)


def _normal_known_variance():
    sigma = 0.7

    def lj(z, d):
        return (stats.norm.logpdf(z["mu"], d["m0"], 1 / jnp.sqrt(d["l0"]))
                + jnp.sum(stats.norm.logpdf(d["x"], z["mu"], sigma)))

    def evidence(d):
        n = d["x"].size
        cov = sigma ** 2 * jnp.eye(n) + jnp.ones((n, n)) / d["l0"]
        return stats.multivariate_normal.logpdf(d["x"], jnp.full(n, d["m0"]), cov)
    return vj.Model(lj, {"mu": vj.real()}), evidence


NK = {"x": jnp.array([1.2, -0.3, 2.2, 0.9, 1.7]), "m0": jnp.asarray(0.4),
      "l0": jnp.asarray(0.8)}


def test_normal_prior_mean_precision_and_data_gradients_are_the_evidence_gradient():
    model, evidence = _normal_known_variance()
    f = _elbo(model)
    np.testing.assert_allclose(f(NK), evidence(NK), rtol=1e-12)
    g, ref = jax.grad(f)(NK), jax.grad(evidence)(NK)
    for k in NK:
        np.testing.assert_allclose(g[k], ref[k], rtol=1e-9, atol=1e-12)
    # forward mode, jit and vmap agree with reverse mode
    v = jax.tree_util.tree_map(lambda a: jnp.full_like(a, 0.3), NK)
    _, dv = jax.jvp(f, (NK,), (v,))
    np.testing.assert_allclose(dv, sum(jnp.sum(g[k] * v[k]) for k in NK), rtol=1e-10)
    gj = jax.jit(jax.grad(f))(NK)
    np.testing.assert_allclose(gj["m0"], g["m0"], rtol=1e-12)
    batch = {"x": jnp.stack([NK["x"], NK["x"] + 1]), "m0": jnp.array([0.4, -0.2]),
             "l0": jnp.array([0.8, 2.0])}
    gv = jax.vmap(jax.grad(f))(batch)
    for i in range(2):
        one = jax.grad(evidence)(jax.tree_util.tree_map(lambda a: a[i], batch))
        np.testing.assert_allclose(gv["l0"][i], one["l0"], rtol=1e-9)


def test_multi_block_gradient_matches_finite_differences(zoo):
    case = zoo["normal_gamma"]  # two blocks: the ELBO is a bound, its optimum a fixed point
    f = _elbo(case.model)
    x = case.data
    g = jax.grad(f)(x)
    h = 1e-5
    for i in (0, 3, 7):
        e = jnp.zeros_like(x).at[i].set(h)
        fd = (f(x + e) - f(x - e)) / (2 * h)
        np.testing.assert_allclose(g[i], fd, rtol=1e-6, atol=1e-8)


def test_integer_leaves_get_float0_and_the_posterior_is_a_constant():
    def lj(z, d):
        return (stats.gamma.logpdf(z["lam"], d["a"], scale=1 / d["b"])
                + jnp.sum(stats.poisson.logpmf(d["k"], z["lam"])))
    model = vj.Model(lj, {"lam": vj.positive()})
    d = {"k": jnp.array([2, 0, 3, 1], jnp.int32), "a": jnp.asarray(2.0), "b": jnp.asarray(0.5)}
    g = jax.grad(_elbo(model), allow_int=True)(d)
    assert g["k"].dtype == jax.dtypes.float0
    k, n = jnp.sum(d["k"]), d["k"].size
    ref = jax.grad(lambda ab: (ab[0] * jnp.log(ab[1]) - gammaln(ab[0]) + gammaln(ab[0] + k)
                               - (ab[0] + k) * jnp.log(ab[1] + n)))(jnp.stack([d["a"], d["b"]]))
    np.testing.assert_allclose([g["a"], g["b"]], ref, rtol=1e-9)
    dmean = jax.grad(lambda b: vj.cavi(model, {**d, "b": b}, tol=TOL).posterior["lam"].mean())
    assert float(dmean(d["b"])) == 0.0  # stop_gradient: documented in vj.cavi


def test_empirical_bayes_prior_mean_by_optax():
    # type-II maximum likelihood of the prior mean: the evidence peaks at m0 = mean(x)
    model, _ = _normal_known_variance()
    f = _elbo(model)
    opt = optax.adam(0.1)
    m0 = jnp.asarray(0.0)
    state = opt.init(m0)
    for _ in range(300):
        g = jax.grad(lambda m: -f({**NK, "m0": m}))(m0)
        upd, state = opt.update(g, state)
        m0 = optax.apply_updates(m0, upd)
    np.testing.assert_allclose(m0, jnp.mean(NK["x"]), atol=1e-3)


def test_hyperparameter_gradient_at_a_concentration_of_one():
    # jax.scipy's xlogy(a - 1, p) guards a - 1 == 0 with a select; the compiler reads the
    # guard as the product it protects (rules._zero_guarded_product), so the derivative at
    # a == 1 is the two-sided one, not the select's 0
    f = _elbo(_beta_bernoulli())
    d = {**BB, "a": jnp.asarray(1.0)}
    np.testing.assert_allclose(jax.grad(f)(d)["a"], jax.grad(_bb_evidence)(d)["a"], rtol=1e-8)
