"""The compiled F as a JAX program: no N x D x D intermediates; works under jit, grad and
vmap, with data that is itself traced; a pytree."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vijax as vj
from vijax.conjugacy.compile import compile_model
from vijax.models.gaussian import _linreg_lj

from .helpers import RandomFactor

N, D = 200, 5


linreg_lj = _linreg_lj  # the zoo's Bayesian linear regression, at N=200, D=5 here


LINREG = vj.Model(linreg_lj, {"w": vj.real((D,)), "alpha": vj.positive(), "beta": vj.positive()})


def regression_data(key, n=N, d=D):
    k1, k2 = jax.random.split(key)
    X = jax.random.normal(k1, (n, d))
    y = X @ jnp.linspace(-1.0, 1.0, d) + 0.3 * jax.random.normal(k2, (n,))
    return {"X": X, "y": y}


def random_mean_params(compiled, rng):
    return {n: {s: jnp.asarray(v) for s, v in RandomFactor(i, rng).mean_params().items()}
            for n, i in compiled.infos.items()}


def _all_eqns(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in its parameters."""
    for eqn in jaxpr.eqns:
        yield eqn
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (list, tuple)) else [p]):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _all_eqns(inner)


@pytest.fixture(scope="module")
def linreg():
    data = regression_data(jax.random.key(0))
    return data, compile_model(LINREG, data)


def test_linreg_F_has_no_n_by_d_by_d_intermediate(linreg, rng):
    data, c = linreg
    assert c.infos["w"].family == "MultivariateNormal" and c.infos["w"].event_size == D
    mu = random_mean_params(c, rng)
    closed = jax.make_jaxpr(c.F)(mu)
    sizes = [(str(e.primitive), tuple(v.aval.shape)) for e in _all_eqns(closed.jaxpr)
             for v in e.outvars if hasattr(v.aval, "shape")]
    assert sizes, "F has no equations?"
    big = [(p, s) for p, s in sizes if math.prod(s) >= N * D * D]
    assert not big, f"F materializes arrays of N*D*D={N * D * D} elements or more: {big}"
    # Also, the gradient (the CAVI update) stays small.
    closed_g = jax.make_jaxpr(jax.grad(c.F))(mu)
    big = [(str(e.primitive), tuple(v.aval.shape)) for e in _all_eqns(closed_g.jaxpr)
           for v in e.outvars if hasattr(v.aval, "shape") and math.prod(v.aval.shape) >= N * D * D]
    assert not big, big


def test_linreg_F_is_exact_and_its_gradient_finite(linreg, rng):
    data, c = linreg
    z = {"w": jnp.asarray(rng.normal(size=D)), "alpha": jnp.asarray(1.3),
         "beta": jnp.asarray(0.7)}
    np.testing.assert_allclose(c.F(c.stats_at(z)), linreg_lj(z, data), rtol=1e-9)
    g = jax.grad(c.F)(random_mean_params(c, rng))
    for leaf in jax.tree_util.tree_leaves(g):
        assert np.all(np.isfinite(leaf))
    # dF/dE[xxT] of w is -beta/2 X^T X - alpha/2 I at E[beta]=E[alpha]=...: symmetric, NSD
    eta = np.asarray(g["w"]["xxT"])
    eta = 0.5 * (eta + eta.T)
    assert np.all(np.linalg.eigvalsh(eta) < 0)


def test_F_under_jit_matches_eager(linreg, rng):
    _, c = linreg
    mu = random_mean_params(c, rng)
    np.testing.assert_allclose(jax.jit(c.F)(mu), c.F(mu), rtol=1e-12)
    # Compiled is a pytree: it can be an argument of a jitted function.
    np.testing.assert_allclose(jax.jit(lambda cc, m: cc.F(m))(c, mu), c.F(mu), rtol=1e-12)
    leaves, treedef = jax.tree_util.tree_flatten(c)
    c2 = jax.tree_util.tree_unflatten(treedef, leaves)
    np.testing.assert_allclose(c2.F(mu), c.F(mu), rtol=1e-15)


def test_compile_under_vmap_over_datasets_matches_loop(rng):
    datasets = jax.vmap(lambda k: regression_data(k, 30, 3))(
        jax.random.split(jax.random.key(1), 4))
    model = vj.Model(linreg_lj, {"w": vj.real((3,)), "alpha": vj.positive(),
                                 "beta": vj.positive()})
    first = jax.tree_util.tree_map(lambda a: a[0], datasets)
    mu = random_mean_params(compile_model(model, first), rng)
    batched = jax.vmap(lambda d: compile_model(model, d).F(mu))(datasets)
    loop = [compile_model(model, jax.tree_util.tree_map(lambda a: a[i], datasets)).F(mu)
            for i in range(4)]
    np.testing.assert_allclose(batched, np.array(loop), rtol=1e-10)
    jitted = jax.jit(lambda d: compile_model(model, d).F(mu))(first)
    np.testing.assert_allclose(jitted, loop[0], rtol=1e-10)


def test_compile_under_vmap_on_zoo_model(zoo, rng):
    case = zoo["normal_gamma"]
    xs = 1.5 + 0.8 * jax.random.normal(jax.random.key(2), (5,) + case.data.shape)
    mu = random_mean_params(case.compiled, rng)
    batched = jax.vmap(lambda x: compile_model(case.model, x).F(mu))(xs)
    loop = np.array([compile_model(case.model, x).F(mu) for x in xs])
    np.testing.assert_allclose(batched, loop, rtol=1e-10)


def test_grad_of_F_through_the_data(linreg, rng):
    data, c = linreg
    mu = random_mean_params(c, rng)

    def f(y):
        return compile_model(LINREG, {"X": data["X"], "y": y}).F(mu)
    g = jax.grad(f)(data["y"])
    # dE[log p]/dy = E[beta] (X E[w] - y)
    want = mu["beta"]["x"] * (data["X"] @ mu["w"]["x"] - data["y"])
    np.testing.assert_allclose(g, want, rtol=1e-9, atol=1e-12)


def test_grad_of_F_finite_on_mixture(zoo, rng):
    c = zoo["gaussian_mixture"].compiled
    g = jax.jit(jax.grad(c.F))(random_mean_params(c, rng))
    for leaf in jax.tree_util.tree_leaves(g):
        assert np.all(np.isfinite(leaf))
