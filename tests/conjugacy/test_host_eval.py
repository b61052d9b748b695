"""Constant folding on the host (vijax/conjugacy/host_eval.py): the same values as XLA,
and an analysis that compiles no XLA executable per constant operation."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sp
from jax.scipy import stats

import vijax as vj
from vijax.conjugacy import host_eval

from .helpers import compiles_during


def _eqn(fn, *args):
    closed = jax.make_jaxpr(fn)(*args)
    (eqn,) = [e for e in closed.jaxpr.eqns if e.primitive.name not in ("pjit", "jit")]
    return eqn


@pytest.mark.parametrize("x", [np.array([0.1, 0.5, 1.0, 2.5, 7.9, 8.0, 30.0, 1e6]),
                               np.array([-0.5, -2.3, -7.7, 1e-8])])
def test_special_functions_match_scipy(x):
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(host_eval.digamma(x), sp.digamma(x), rtol=2e-14, atol=2e-15)
        np.testing.assert_allclose(host_eval._lgamma(x), sp.gammaln(x), rtol=2e-15, atol=2e-15)


def test_poles_match_lax():
    x = np.array([0.0, -1.0, -3.0])
    got = host_eval.evaluate(_eqn(jax.lax.digamma, x), [x])
    ref = np.asarray(jax.lax.digamma(jnp.asarray(x)))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    got = host_eval.evaluate(_eqn(jax.lax.lgamma, x), [x])
    np.testing.assert_array_equal(got, np.asarray(jax.lax.lgamma(jnp.asarray(x))))


@pytest.mark.parametrize("fn", [
    lambda a: jnp.sum(a, axis=1), lambda a: jnp.max(a, axis=0), lambda a: jnp.min(a),
    lambda a: jnp.all(a > 0.2, axis=1), lambda a: jnp.any(a > 0.9, axis=0),
    lambda a: jnp.transpose(a), lambda a: a.reshape(-1),
    lambda a: jax.lax.broadcast_in_dim(a, (2, 3, 4), (1, 2)),
    lambda a: jax.lax.select(a > 0.5, a, -a), lambda a: a ** 3, lambda a: jnp.log1p(a) / 2.0])
def test_host_values_equal_xla(fn):
    a = np.random.default_rng(0).uniform(size=(3, 4))
    closed = jax.make_jaxpr(fn)(a)
    env = {v: a for v in closed.jaxpr.invars}
    for eqn in closed.jaxpr.eqns:  # every equation of these is one host_eval handles
        vals = [env[v] if not hasattr(v, "val") else v.val for v in eqn.invars]
        out = host_eval.evaluate(eqn, vals)
        assert out is not None, eqn.primitive.name
        env[eqn.outvars[0]] = out
    got = env[closed.jaxpr.outvars[0]]
    np.testing.assert_allclose(got, np.asarray(fn(jnp.asarray(a))), rtol=1e-15)


def test_unknown_primitive_is_left_to_xla():
    a = np.ones((2, 2))
    assert host_eval.evaluate(_eqn(lambda x: jax.lax.cumsum(x, axis=0), a), [a]) is None


def test_analysis_compiles_no_constant_operation(caplog):
    """Hyper-parameter arithmetic in the log joint (lgamma, sums, logs, broadcasts) is
    folded on the host: the analysis compiles at most the gathers of the index maps."""
    k, d = 7, 3  # unusual shapes: no executable cached by other tests
    alpha = np.linspace(1.0, 2.0, k)

    def log_joint(z, x):
        lp = stats.dirichlet.logpdf(z["pi"], alpha)
        lp += jnp.sum(stats.gamma.logpdf(z["tau"], 2.0 + jnp.zeros((k, d)), scale=0.5))
        lp += jnp.sum(stats.norm.logpdf(z["mu"], 0.0, 1.0 / jnp.sqrt(0.01 * z["tau"])))
        ll = (jnp.log(z["pi"])[z["z"]]
              + jnp.sum(stats.norm.logpdf(x, z["mu"][z["z"]], 1 / jnp.sqrt(z["tau"][z["z"]])), -1))
        return lp + jnp.sum(ll)

    model = vj.Model(log_joint, {"pi": vj.simplex(k), "tau": vj.positive((k, d)),
                                 "mu": vj.real((k, d)), "z": vj.categorical(k, shape=(11,))})
    spec = jax.ShapeDtypeStruct((11, d), jnp.zeros(()).dtype)
    prog, compiled = compiles_during(caplog, lambda: vj.compile(model, spec))
    assert prog.conjugate
    assert all(c.startswith(("jit(gather", "jit(stage", "jit(convert_element_type"))
               for c in compiled), compiled
