"""EM on degenerate mixtures (empty components, K close to or above N), parameter
declarations (support, shape), vmap over datasets and restarts, and float32.

The reference is scikit-learn's GaussianMixture with its default ``reg_covar=1e-6`` from
the same start: vijax's default ``reg_covar`` is the same variance floor and its weights
get the same ``10 eps`` count floor, so the fixed points agree.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import vijax as vj
from vijax.errors import ConvergenceWarning, FitDivergedError, ModelSpecError


def gmm(p, z, x):
    c = z["z"]
    lp = jnp.sum(jnp.log(p["weights"])[c])
    return lp + jnp.sum(stats.norm.logpdf(x, p["means"][c],
                                          1.0 / jnp.sqrt(p["precisions"][c])))


def sups(k):
    return {"weights": vj.simplex(k), "means": vj.real(), "precisions": vj.positive()}


def fit(x, init, **kw):
    n, k = len(x), len(init["weights"])
    params = {name: jnp.asarray(v) for name, v in init.items()}
    return vj.em(gmm, params, {"z": vj.categorical(k, shape=(n,))}, jnp.asarray(x),
                 param_supports=sups(k), **kw)


def sklearn_fit(x, init):
    from sklearn.mixture import GaussianMixture
    gm = GaussianMixture(len(init["weights"]), covariance_type="diag",
                         weights_init=init["weights"], means_init=init["means"],
                         precisions_init=init["precisions"], tol=1e-13, max_iter=5000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gm.fit(x)


@pytest.fixture(scope="module")
def two_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (150, 2)), rng.normal(3, 1, (150, 2))])
    # the third component starts far from every point: nobody belongs to it
    init = {"weights": np.array([0.3, 0.3, 0.4]),
            "means": np.array([[-3.0, 0.0], [3.0, 0.0], [100.0, 100.0]]),
            "precisions": np.ones((3, 2))}
    return x, init


def test_empty_component_does_not_freeze_the_weights(two_clusters):
    """On main the weights stayed at their start (0.3, 0.3, 0.4): the Dirichlet mode is
    invalid with a zero count, and the whole weight vector was kept. The count floor
    gives the empty component ~10 eps / N and the others their counts / N."""
    x, init = two_clusters
    with pytest.warns(ConvergenceWarning, match=r"component\(s\) 2 of params\['weights'\] "
                                                r"are empty"):
        f = fit(x, init, max_iters=300, tol=1e-13)
    gm = sklearn_fit(x, init)
    ll = gm.score(x) * len(x)
    assert bool(f.converged)
    assert abs(float(f.log_likelihood) - ll) < 1e-10 * abs(ll)
    np.testing.assert_allclose(np.asarray(f.params["weights"]), gm.weights_, rtol=1e-8,
                               atol=1e-15)
    assert float(f.params["weights"][2]) < 1e-15
    np.testing.assert_allclose(np.asarray(f.params["means"])[:2], gm.means_[:2], atol=1e-8)
    np.testing.assert_array_equal(np.asarray(f.diagnostics["empty"]["weights"]),
                                  [False, False, True])
    assert bool(f.diagnostics["degenerate"])


@pytest.mark.parametrize("n,k", [(5, 5), (12, 11)])
def test_k_close_to_n_matches_sklearn(n, k):
    """Components on single points: the variance floor caps their precisions at
    1/reg_covar as in scikit-learn, the log-likelihood is scikit-learn's, and the
    collapse is reported naming the parameter (never a silent 'converged')."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 2))
    init = {"weights": np.full(k, 1.0 / k), "means": rng.normal(size=(k, 2)),
            "precisions": np.ones((k, 2))}
    with pytest.warns(ConvergenceWarning, match=r"of params\['precisions'\] collapsed"):
        f = fit(x, init, max_iters=2000, tol=1e-12)
    gm = sklearn_fit(x, init)
    ll = gm.score(x) * n
    assert abs(float(f.log_likelihood) - ll) < 1e-8 * abs(ll)
    assert float(jnp.max(f.params["precisions"])) <= 1e6 * (1 + 1e-9)
    assert bool(jnp.any(f.diagnostics["collapsed"]["precisions"]))
    if n == 5:
        # the optimizer path maximizes the same regularized Q (it may stop at another of
        # its fixed points: here every component on one point, all capped)
        with pytest.warns(ConvergenceWarning, match="collapsed"):
            g = fit(x, init, max_iters=2000, tol=1e-12, m_step="lbfgs")
        # within L-BFGS's tolerance of the cap; where it stops depends on the compiled
        # program's rounding (seen: 1.00022e6 with XLA's classic CPU emitters)
        assert float(jnp.max(g.params["precisions"])) <= 1e6 * (1 + 1e-3)
        # n points, each at most the capped density of one component (weight <= 1)
        assert float(g.log_likelihood) <= n * 2 * 0.5 * np.log(1e6 / (2 * np.pi))
        # L-BFGS creeps along the vanishing weight (30.3806 after 100 inner steps, 30.3809
        # after 400, against 30.38110): the closed-form path above matches to 1e-8
        assert float(g.log_likelihood) >= ll - 1e-4 * abs(ll)
        # without the floor the collapse has no repair: an error naming the parameter
        with pytest.raises(FitDivergedError, match=r"params\['precisions'\] collapsed"):
            fit(x, init, max_iters=200, reg_covar=0.0)


def test_k_above_n_is_bounded_and_reported():
    """K > N: on main the precisions reached 1e16 and the 'log-likelihood' was positive,
    reported converged. Now every precision is capped and the collapse is named; with
    strict=True it raises."""
    x = np.array([[0.0, 1.0], [2.0, -1.0]])
    init = {"weights": np.full(3, 1 / 3), "means": np.array([[-1.0, 0], [1, 0], [0, 0]]),
            "precisions": np.ones((3, 2))}
    with pytest.warns(ConvergenceWarning, match="collapsed"):
        f = fit(x, init, max_iters=300)
    assert float(jnp.max(f.params["precisions"])) <= 1e6 * (1 + 1e-9)
    # two points, each at most the capped density: log N(0; 0, 1e-6)^2 per point
    bound = 2 * 2 * 0.5 * np.log(1e6 / (2 * np.pi))
    assert float(f.log_likelihood) <= bound
    with pytest.raises(FitDivergedError, match="strict"):
        fit(x, init, max_iters=300, strict=True)


def test_undeclared_weights_are_refused(two_clusters):
    """Without param_supports every parameter is real; log(w) then needs w > 0 and the
    likelihood grows without bound in w (weights reached 6e5 on main)."""
    x, init = two_clusters
    params = {name: jnp.asarray(v) for name, v in init.items()}
    data = jnp.asarray(x)
    z = {"z": vj.categorical(3, shape=(len(x),))}
    with pytest.raises(ModelSpecError, match=r"params\['weights'\] is declared real.*log"):
        vj.em(gmm, params, z, data)
    # the precisions too (sqrt of a real parameter), once the weights are declared
    with pytest.raises(ModelSpecError, match=r"params\['precisions'\].*sqrt"):
        vj.em(gmm, params, z, data, param_supports={**sups(3), "precisions": vj.real()})
    # weights declared positive: nothing normalizes them, Q has no maximum in them
    with pytest.raises(FitDivergedError, match=r"without bound in params\['weights'\]"):
        vj.em(gmm, params, z, data, param_supports={**sups(3), "weights": vj.positive()},
              max_iters=3)


def test_shape_mismatch_names_the_parameter(two_clusters):
    x, init = two_clusters
    params = {name: jnp.asarray(v) for name, v in init.items()}
    z = {"z": vj.categorical(3, shape=(len(x),))}
    bad = {**params, "weights": params["weights"][:2] / params["weights"][:2].sum()}
    with pytest.raises(ModelSpecError, match=r"params\['weights'\] has shape \(2,\).*\(3,\)"):
        vj.em(gmm, bad, z, jnp.asarray(x), param_supports=sups(3))
    with pytest.raises(ModelSpecError, match=r"params\['means'\] has shape \(3, 2\).*"
                                             r"\(2, 2\)"):
        vj.em(gmm, params, z, jnp.asarray(x),
              param_supports={**sups(3), "means": vj.real((2, 2))})


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(3)
    n, k = 60, 2
    lab = rng.integers(0, 2, (3, n, 1))
    xs = rng.normal(size=(3, n, 2)) + np.array([3.0, 0.0]) * lab
    init = {"weights": jnp.array([0.5, 0.5]), "means": jnp.array([[-1.0, 0.0], [1.0, 0.0]]),
            "precisions": jnp.ones((k, 2))}
    return jnp.asarray(xs), init, {"z": vj.categorical(k, shape=(n,))}


def test_vmap_over_datasets_matches_unbatched(batch):
    xs, init, z = batch
    lls = jax.vmap(lambda x: vj.em(gmm, init, z, x, param_supports=sups(2),
                                   tol=1e-12).log_likelihood)(xs)
    for i in range(xs.shape[0]):
        one = vj.em(gmm, init, z, xs[i], param_supports=sups(2), tol=1e-12)
        np.testing.assert_allclose(float(lls[i]), float(one.log_likelihood), rtol=1e-10)


def test_vmap_over_restarts_matches_unbatched(batch):
    xs, init, z = batch
    prep = vj.prepare_em(gmm, init, z, xs[0], param_supports=sups(2))
    starts = {"weights": jnp.array([[0.5, 0.5], [0.2, 0.8], [0.7, 0.3]]),
              "means": jnp.stack([init["means"], init["means"][::-1], init["means"] + 2.0]),
              "precisions": jnp.stack([init["precisions"]] * 3) * jnp.array([1.0, 2.0, 0.5])[
                  :, None, None]}
    fits = jax.vmap(lambda p: prep.run(p, tol=1e-12))(starts)
    for i in range(3):
        one = prep.run({k: v[i] for k, v in starts.items()}, tol=1e-12)
        np.testing.assert_allclose(float(fits.elbo[i]), float(one.log_likelihood),
                                   rtol=1e-10)
        np.testing.assert_allclose(np.asarray(fits.params["means"][i]),
                                   np.asarray(one.params["means"]), atol=1e-7)
    assert not bool(jnp.any(fits.diagnostics["degenerate"]))


def test_float32_reaches_the_float64_fixed_point():
    """JAX's default dtype: the same fit in float32 converges to the float64 fixed point
    within float32 resolution."""
    rng = np.random.default_rng(7)
    centers = np.array([[-4.0, 0.0], [4.0, 1.0], [0.0, 5.0]])
    lab = rng.integers(0, 3, 300)
    x = centers[lab] + rng.normal(size=(300, 2)) * np.array([1.0, 0.7])
    init = {"weights": np.array([0.2, 0.3, 0.5]), "means": x[[0, 1, 2]][np.argsort(lab[:3])]
            if len(set(lab[:3])) == 3 else centers + 0.5, "precisions": np.ones((3, 2))}
    ref = fit(x, init, max_iters=500, tol=1e-13)
    with jax.enable_x64(False):
        params = {k: jnp.asarray(v, jnp.float32) for k, v in init.items()}
        f = vj.em(gmm, params, {"z": vj.categorical(3, shape=(len(x),))},
                  jnp.asarray(x, jnp.float32), param_supports=sups(3), max_iters=500,
                  tol=1e-6)
        assert f.elbo.dtype == jnp.float32
        assert bool(f.converged)
        ll32, w32 = float(f.log_likelihood), np.asarray(f.params["weights"], np.float64)
        m32 = np.asarray(f.params["means"], np.float64)
    eps32 = float(np.finfo(np.float32).eps)
    # the objective is flat at the optimum: parameters to ~sqrt(eps), the value to ~eps
    assert abs(ll32 - float(ref.log_likelihood)) < 1e3 * eps32 * abs(float(ref.elbo))
    np.testing.assert_allclose(w32, np.asarray(ref.params["weights"]), atol=30 * np.sqrt(eps32))
    np.testing.assert_allclose(m32, np.asarray(ref.params["means"]), atol=30 * np.sqrt(eps32))
