"""CAVI and Laplace through their public init/step (vj.algorithms.*) equal the wrappers
(vj.cavi, vj.laplace), and run under jit, vmap over datasets and a user's lax.scan;
progress reports appear when asked and are off under vmap."""

import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.scipy import stats  # noqa: E402

import vijax as vj  # noqa: E402

TOL, ITERS = 1e-10, 60


@pytest.fixture(scope="module")
def ng(zoo):
    case = zoo["normal_gamma"]
    xs = jnp.stack([case.data, case.data * 1.3 + 0.2, case.data[::-1] - 0.5])
    return case.model, case.data, xs


def _cavi_run(model, x, jit=False):
    alg = vj.algorithms.cavi(vj.compile(model, x).materialize(x))
    state = alg.init(key=jax.random.key(0))  # vj.cavi's default start

    def go(state):
        return vj.run(alg.step, state, max_iters=ITERS, tol=TOL, elbo0=state.elbo)
    return alg, state, (jax.jit(go) if jit else go)(state)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_cavi_public_step_equals_wrapper(ng, jit):
    model, x, _ = ng
    fit = vj.cavi(model, x, tol=TOL, max_iters=ITERS)
    _, _, out = _cavi_run(model, x, jit)
    assert int(out.num_iters) == int(fit.num_iters) and bool(out.converged)
    np.testing.assert_allclose(out.trace, fit.elbo_trace, rtol=1e-12)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12),
                           out.state.natural, fit.natural)
    assert int(out.failed_at) == -1 and int(out.info.extra) == -1


def test_cavi_in_a_users_scan(ng):
    model, x, _ = ng
    fit = vj.cavi(model, x, tol=TOL, max_iters=ITERS)
    alg, state, _ = _cavi_run(model, x)
    n = int(fit.num_iters)
    last, infos = jax.jit(lambda s: jax.lax.scan(lambda c, _: alg.step(c), s, None,
                                                 length=n))(state)
    np.testing.assert_allclose(infos.elbo, fit.elbo_trace[:n], rtol=1e-12)
    assert bool(jnp.all(infos.ok))
    np.testing.assert_allclose(last.elbo, fit.elbo, rtol=1e-12)


def test_cavi_vmap_over_datasets(ng):
    model, _, xs = ng
    prog = vj.compile(model, xs[0])

    def one(x):
        alg = vj.algorithms.cavi(prog.materialize(x))
        s = alg.init(key=jax.random.key(0))
        return vj.run(alg.step, s, max_iters=ITERS, tol=TOL, elbo0=s.elbo)
    out = jax.jit(jax.vmap(one))(xs)
    for i in range(xs.shape[0]):
        fit = vj.cavi(model, xs[i], tol=TOL, max_iters=ITERS)
        assert int(out.num_iters[i]) == int(fit.num_iters)
        np.testing.assert_allclose(out.trace[i], fit.elbo_trace, rtol=1e-10)


def test_cavi_refused_update_is_reported_through_info():
    def lj(z, x):
        lam = z["lam"]
        return 2.0 * jnp.log(lam) + 2.0 * lam + jnp.sum(stats.poisson.logpmf(x, lam))
    model = vj.Model(lj, {"lam": vj.positive()})
    x = jnp.array([1])
    alg = vj.algorithms.cavi(vj.compile(model, x).materialize(x))
    out = vj.run(alg.step, alg.init(), max_iters=10, tol=TOL)
    assert int(out.failed_at) == 0 and int(out.info.extra) == 0 and not bool(out.converged)


# --------------------------------------------------------------------------- progress
def test_progress_lines_on_stderr_without_tqdm(ng, monkeypatch, capsys):
    model, x, _ = ng
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm fails: stderr lines
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    fit = vj.cavi(model, x, tol=TOL, max_iters=ITERS, progress=True)
    err = capsys.readouterr().err
    assert "[cavi] step" in err and f"{int(fit.num_iters):6d}" in err


def test_progress_callback_and_off_under_vmap(ng):
    model, x, xs = ng
    calls = []
    fit = vj.cavi(model, x, tol=TOL, max_iters=ITERS, progress=lambda i, e: calls.append(i))
    assert calls and int(calls[-1]) == int(fit.num_iters)
    calls.clear()
    jax.block_until_ready(jax.vmap(lambda x: vj.cavi(
        model, x, tol=TOL, max_iters=ITERS, progress=lambda i, e: calls.append(i)).elbo)(xs))
    assert not calls
    from vijax.inference.driver import wants_progress
    assert not wants_progress(None, False, 500)  # a short fit: off by default


# --------------------------------------------------------------------------- Laplace
def _lap_model():
    def lj(z, x):
        return (stats.norm.logpdf(z["mu"], 0.0, 3.0) + stats.gamma.logpdf(z["tau"], 2.0)
                + jnp.sum(stats.norm.logpdf(x, z["mu"], 1 / jnp.sqrt(z["tau"]))))
    return vj.Model(lj, {"mu": vj.real(), "tau": vj.positive()})


@pytest.fixture(scope="module")
def lap():
    x = jax.random.normal(jax.random.key(1), (30,)) * 2 + 1
    return _lap_model(), jnp.stack([x, x * 0.5 - 1, x + 2])


def test_laplace_public_step_equals_wrapper_jit_and_scan(lap):
    model, xs = lap
    x = xs[0]
    ref = vj.laplace(model, x)
    alg = vj.algorithms.laplace(model, x)
    out = jax.jit(lambda s: vj.run(alg.step, s, max_iters=500, tol=0.0))(alg.init())
    assert int(out.num_iters) == int(ref.num_steps) and bool(out.converged)
    u = jnp.concatenate([ref.map_unconstrained["mu"][None], ref.map_unconstrained["tau"][None]])
    np.testing.assert_allclose(out.state.u, u, rtol=1e-12)
    # Info.elbo is the log density after the step (lbfgs: its linesearch's cached value)
    np.testing.assert_allclose(out.info.elbo, ref.log_density, rtol=1e-12)
    n = int(ref.num_steps)
    last, infos = jax.jit(lambda s: jax.lax.scan(lambda c, _: alg.step(c), s, None,
                                                 length=n))(alg.init())
    np.testing.assert_allclose(last.u, u, rtol=1e-12)
    np.testing.assert_allclose(infos.elbo, out.trace[:n], rtol=1e-12)


def test_laplace_vmap_over_datasets(lap):
    model, xs = lap

    def one(x):
        alg = vj.algorithms.laplace(model, x)
        return vj.run(alg.step, alg.init(), max_iters=500, tol=0.0).state.u
    us = jax.jit(jax.vmap(one))(xs)
    for i in range(xs.shape[0]):
        ref = vj.laplace(model, xs[i])
        np.testing.assert_allclose(us[i, 0], ref.map_unconstrained["mu"], rtol=1e-8)
        np.testing.assert_allclose(us[i, 1], ref.map_unconstrained["tau"], rtol=1e-8)


def test_bad_input_to_the_public_pairs_is_refused_by_name():
    x = jnp.array([0.5, 1.2, -0.3])

    def lj(z, x):  # sin(mu): no conjugate update for mu
        return stats.norm.logpdf(z["mu"]) + jnp.sum(stats.norm.logpdf(x, jnp.sin(z["mu"])))

    bad = vj.Model(lj, {"mu": vj.real()})
    with pytest.raises(vj.NonConjugateError, match="'mu'.*sin"):
        vj.algorithms.cavi(vj.compile(bad, x).materialize(x))
    good = vj.Model(lambda z, x: stats.norm.logpdf(z["mu"])
                    + jnp.sum(stats.norm.logpdf(x, z["mu"])), {"mu": vj.real()})
    compiled = vj.compile(good, x).materialize(x)
    with pytest.raises(vj.ModelSpecError, match="order must list every latent once"):
        vj.algorithms.cavi(compiled, order=("mu", "mu"))
    with pytest.raises(vj.ModelSpecError, match="damping"):
        vj.algorithms.cavi(compiled, damping=1.5)
    with pytest.raises(vj.ModelSpecError, match="progress must be"):
        vj.cavi(good, x, progress="yes")
