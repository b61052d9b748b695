"""Compile once: the analysis reads shapes, not data values, and no call pays it twice."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy import stats

import vijax as vj
from tests.conjugacy.helpers import assert_exact
from vijax.conjugacy import program as P
from vijax.conjugacy import walker
from vijax.models import CONJUGATE, ZOO


def _spec(data):
    return jax.tree_util.tree_map(lambda l: jax.ShapeDtypeStruct(jnp.shape(l), jnp.result_type(l)),
                                  data)


def _skeleton(prog):
    """Families, statistics and the term structure (labels, shapes) of a program."""
    return ({n: (i.family, tuple(i.stats), i.event_ndim) for n, i in prog.infos.items()},
            prog._treedef)


@pytest.mark.parametrize("name", CONJUGATE)
def test_shapes_only_analysis_equals_concrete_and_serves_new_data(name, zoo, rng):
    """Built from ShapeDtypeStructs (no values exist) the program has the same families,
    statistics and terms as built from the data; materialized on a *different* data set
    of the same shapes, F(T(z)) is that data set's log joint exactly (float64)."""
    case = zoo[name]
    from_shapes = P.build(case.model, _spec(case.data))
    from_data = P.build(case.model, case.data)
    assert _skeleton(from_shapes) == _skeleton(from_data)
    other = case.zoo_model.make_data(jax.random.key(7))
    assert_exact(case.model, other, rng, n_points=2, compiled=from_shapes.materialize(other))


def test_a_second_fit_on_new_data_neither_walks_nor_compiles(monkeypatch, caplog):
    zm = ZOO["normal_gamma"]()
    x1, x2 = zm.make_data(jax.random.key(1)), zm.make_data(jax.random.key(2))
    P.clear_cache()
    walks = []
    orig = walker.Walker.run
    monkeypatch.setattr(walker.Walker, "run", lambda self, *a: walks.append(1) or orig(self, *a))
    vj.cavi(zm.model, x1, key=jax.random.key(0))
    vj.fit_gradient(zm.model, x1, jax.random.key(0), optimizer=optax.adam(1e-2), num_steps=100)
    assert len(walks) == 1
    caplog.set_level(logging.DEBUG)
    with jax.log_compiles():
        a = vj.cavi(zm.model, x2, key=jax.random.key(0))
        # a freshly built optimizer of the same kind and hyper-parameters
        b = vj.fit_gradient(zm.model, x2, jax.random.key(0), optimizer=optax.adam(1e-2),
                            num_steps=100)
    compiles = [r.getMessage() for r in caplog.records if "ompil" in r.getMessage()]
    assert len(walks) == 1, "the second calls walked the jaxpr again"
    assert not compiles, compiles
    # and the answers are those of the new data
    P.clear_cache()
    np.testing.assert_allclose(a.elbo, vj.cavi(zm.model, x2, key=jax.random.key(0)).elbo)
    assert np.isfinite(b.elbo)


def test_a_different_optimizer_is_a_different_compile():
    from vijax.inference.fingerprint import Static
    assert Static(optax.adam(1e-2)) == Static(optax.adam(1e-2))
    assert Static(optax.adam(1e-2)) != Static(optax.adam(2e-2))
    assert Static(optax.adam(1e-2)) != Static(optax.sgd(1e-2))
    sched = optax.exponential_decay(1e-2, 100, 0.5)
    assert Static(optax.adam(sched)) == Static(optax.adam(optax.exponential_decay(1e-2, 100, 0.5)))
    assert Static(optax.adam(sched)) != Static(optax.adam(optax.exponential_decay(1e-2, 100, 0.6)))


def _hierarchical():
    """theta_g ~ N(0, 1/tau0), y_i ~ N(theta[group_i], 1/tau): group is data."""
    tau0, tau = 0.5, 4.0

    def lj(z, d):
        lp = jnp.sum(stats.norm.logpdf(z["theta"], 0.0, 1 / jnp.sqrt(tau0)))
        return lp + jnp.sum(stats.norm.logpdf(d["y"], z["theta"][d["group"]], 1 / jnp.sqrt(tau)))

    def exact(y, group, G):
        n = np.bincount(group, minlength=G)
        s = np.bincount(group, weights=y, minlength=G)
        prec = tau0 + n * tau
        return tau * s / prec, 1 / prec
    return lj, exact


def test_data_index_is_a_runtime_gather_with_the_closed_form_posterior(rng):
    lj, exact = _hierarchical()
    G, N = 4, 23
    model = vj.Model(lj, {"theta": vj.real((G,))})
    prog = vj.compile(model, {"y": jax.ShapeDtypeStruct((N,), jnp.float64),
                              "group": jax.ShapeDtypeStruct((N,), jnp.int32)})
    for trial in range(2):  # two group layouts (unequal sizes), one program
        group = np.sort(rng.choice(G, N, p=[0.5, 0.3, 0.15, 0.05])).astype(np.int32)
        y = rng.normal(size=N) + group
        fit = vj.cavi(prog, {"y": jnp.asarray(y), "group": jnp.asarray(group)}, tol=1e-12)
        m, v = exact(y, group, G)
        np.testing.assert_allclose(fit.posterior["theta"].mean(), m, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(fit.posterior["theta"].variance(), v, rtol=1e-8)


def test_program_refuses_data_of_other_shapes():
    lj, _ = _hierarchical()
    model = vj.Model(lj, {"theta": vj.real((3,))})
    prog = vj.compile(model, {"y": jnp.zeros(5), "group": jnp.zeros(5, jnp.int32)})
    with pytest.raises(vj.DataError, match="shape"):
        vj.cavi(prog, {"y": jnp.zeros(6), "group": jnp.zeros(6, jnp.int32)})


@pytest.mark.parametrize("name", ["gaussian_mixture", "linear_regression", "state_space"])
def test_jit_and_vmap_give_the_concrete_elbos(name, zoo):
    case = zoo[name]
    datas = [case.data, case.zoo_model.make_data(jax.random.key(3))]
    key = jax.random.key(0)
    concrete = [float(vj.cavi(case.model, d, key=key, max_iters=50).elbo) for d in datas]
    fn = lambda d: vj.cavi(case.model, d, key=key, max_iters=50).elbo  # noqa: E731
    np.testing.assert_allclose(float(jax.jit(fn)(datas[1])), concrete[1], rtol=1e-9)
    stacked = jax.tree_util.tree_map(lambda *l: jnp.stack(l), *datas)
    np.testing.assert_allclose(np.asarray(jax.vmap(fn)(stacked)), concrete, rtol=1e-9)


def test_mixture_data_terms_are_not_broadcast_over_components(zoo):
    """No constant of F is K times the data (the tabulated copies share one array)."""
    case = zoo["gaussian_mixture"]
    n_data = int(np.prod(jnp.shape(case.data)))
    comp = P.program_for(case.model, case.data).materialize(case.data)
    sizes = [int(np.prod(jnp.shape(c))) for t in comp.terms for c, _ in t.consts]
    assert max(sizes) <= n_data, sizes


def _em_gmm(p, z, x):
    c = z["z"]
    lp = jnp.sum(jnp.log(p["weights"])[c])
    return lp + jnp.sum(stats.norm.logpdf(x, p["means"][c], 1.0 / jnp.sqrt(p["precisions"][c])))


def test_a_second_em_and_laplace_call_neither_walks_nor_compiles(monkeypatch, caplog, rng):
    N, D, K = 30, 2, 2
    sups = {"weights": vj.simplex(K), "means": vj.real(), "precisions": vj.positive()}
    datas = [jnp.asarray(rng.normal(size=(N, D)) + np.repeat([[-2.0, 0], [2.0, 0]], N // 2, 0))
             for _ in range(2)]
    params = {"weights": jnp.array([0.4, 0.6]), "means": jnp.array([[-1.0, 0], [1.0, 0]]),
              "precisions": jnp.ones((K, D))}
    zsup = {"z": vj.categorical(K, shape=(N,))}
    lap_model = vj.Model(lambda z, x: jnp.sum(stats.norm.logpdf(z["mu"], 0.0, 3.0))
                         + jnp.sum(stats.norm.logpdf(x, z["mu"], 1.0)), {"mu": vj.real((D,))})
    walks = []
    orig = walker.Walker.run
    monkeypatch.setattr(walker.Walker, "run", lambda self, *a: walks.append(1) or orig(self, *a))
    vj.em(_em_gmm, params, zsup, datas[0], param_supports=sups, max_iters=20)
    vj.laplace(lap_model, datas[0], optimizer=optax.lbfgs())
    n_walks = len(walks)
    caplog.set_level(logging.DEBUG)
    with jax.log_compiles():
        fit = vj.em(_em_gmm, params, zsup, datas[1], param_supports=sups, max_iters=20)
        lap = vj.laplace(lap_model, datas[1], optimizer=optax.lbfgs())
    compiles = [r.getMessage() for r in caplog.records if "ompil" in r.getMessage()]
    assert len(walks) == n_walks, "the second EM call walked the jaxpr again"
    assert not compiles, compiles
    assert np.isfinite(fit.log_likelihood)
    # Laplace on the second data set: the posterior mean of a normal mean (prior sd 3)
    np.testing.assert_allclose(lap.mean["mu"], np.asarray(datas[1]).sum(0) / (N + 1 / 9),
                               rtol=1e-6)


def test_a_program_first_built_under_jit_serves_eager_calls():
    """The program outlives the user's trace: built inside ``jax.jit``, none of its
    constants may be a tracer of it (an eager call afterwards would fail)."""
    zm = ZOO["linear_regression"]()
    x = zm.make_data(jax.random.key(7), n=20)
    P.clear_cache()
    traced = jax.jit(lambda d: vj.cavi(zm.model, d).elbo)(x)
    prog = P.program_for(zm.model, x)
    assert not any(isinstance(c, jax.core.Tracer) for c in prog._consts)
    np.testing.assert_allclose(vj.cavi(zm.model, x).elbo, traced, rtol=1e-10)


@pytest.mark.parametrize("name", ["normal_gamma", "gaussian_mixture", "linear_regression"])
def test_data_dependence_is_read_from_structure_and_holds_for_any_data(name, zoo):
    """``Program.data_dependent`` marks the leaves of F that read the data: a leaf marked
    independent is the same for two unrelated data sets and unbatched under vmap, and
    a leaf that changes between them is marked dependent."""
    case = zoo[name]
    prog = P.program_for(case.model, case.data)
    dep = prog.data_dependent
    assert any(dep) and not all(dep), dep  # priors are constants, data sums are not
    other = jax.tree_util.tree_map(lambda x: x * 1.7 + 0.3 if jnp.issubdtype(
        jnp.result_type(x), jnp.inexact) else x, case.zoo_model.make_data(jax.random.key(5)))
    a = jax.tree_util.tree_leaves(prog.materialize(case.data))
    b = jax.tree_util.tree_leaves(prog.materialize(other))
    assert len(a) == len(dep)
    for d, x, y in zip(dep, a, b):
        if not d:
            np.testing.assert_array_equal(x, y)
    assert any(d and not np.array_equal(x, y) for d, x, y in zip(dep, a, b))
    # the axes serve vmap: independent leaves come out unbatched (jax refuses otherwise)
    stacked = jax.tree_util.tree_map(lambda *l: jnp.stack(l), case.data, other)
    out = jax.vmap(lambda d: jax.tree_util.tree_leaves(prog.materialize(d)),
                   out_axes=list(prog.batch_axes()))(stacked)
    for d, x, y in zip(dep, out, a):
        assert jnp.shape(x) == ((2,) + jnp.shape(y) if d else jnp.shape(y))
    lane = prog.from_leaves([x[1] if d else x for d, x in zip(dep, out)])
    for x, y in zip(jax.tree_util.tree_leaves(lane), b):
        np.testing.assert_array_equal(x, y)
