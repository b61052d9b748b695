"""EM and variational EM (vj.em) against scikit-learn, and their guarantees."""

import jax

jax.config.update("jax_enable_x64", True)

import warnings  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from jax.scipy import stats  # noqa: E402

import vijax as vj  # noqa: E402
from vijax.errors import ModelSpecError, NonConjugateError  # noqa: E402
from vijax.inference.em import em, maximize  # noqa: E402

N, D, K = 240, 2, 3


def gmm_log_joint(p, z, x):
    """Diagonal GMM, parameters (weights, means, precisions) in the constrained space."""
    c = z["z"]
    lp = jnp.sum(jnp.log(p["weights"])[c])
    return lp + jnp.sum(stats.norm.logpdf(x, p["means"][c], 1.0 / jnp.sqrt(p["precisions"][c])))


def gmm_log_joint_unconstrained(p, z, x):
    """The same model, parameterized by logits and log-precisions (no param_supports):
    exp() of a parameter is not a conjugate statistic, so EM takes the direct path."""
    c = z["z"]
    logw = jax.nn.log_softmax(p["logits"])
    prec = jnp.exp(p["log_prec"])
    return jnp.sum(logw[c]) + jnp.sum(stats.norm.logpdf(x, p["means"][c],
                                                         1.0 / jnp.sqrt(prec[c])))


GMM_SUPPORTS = {"weights": vj.simplex(K), "means": vj.real(), "precisions": vj.positive()}


@pytest.fixture(scope="module")
def gmm_problem():
    rng = np.random.default_rng(7)
    centers = np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]])
    scales = np.array([[1.0, 0.6], [0.7, 1.2], [1.1, 0.9]])
    labels = rng.integers(0, K, N)
    x = centers[labels] + scales[labels] * rng.normal(size=(N, D))
    init = {"weights": np.array([0.2, 0.3, 0.5]),
            "means": x[rng.choice(N, K, replace=False)],
            "precisions": np.ones((K, D))}
    return x, init


@pytest.fixture(scope="module")
def gmm_fit(gmm_problem):
    x, init = gmm_problem
    params = {k: jnp.asarray(v) for k, v in init.items()}
    return em(gmm_log_joint, params, {"z": vj.categorical(K, shape=(N,))}, jnp.asarray(x),
              param_supports=GMM_SUPPORTS, max_iters=1000, tol=1e-14)


def sklearn_gmm(x, init, max_iter, tol):
    from sklearn.mixture import GaussianMixture
    gm = GaussianMixture(K, covariance_type="diag", weights_init=init["weights"],
                         means_init=init["means"], precisions_init=init["precisions"],
                         tol=tol, max_iter=max_iter)  # reg_covar=1e-6 on both sides
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning for fixed-iteration runs
        return gm.fit(x)


def test_gmm_matches_sklearn_fixed_point(gmm_problem, gmm_fit):
    x, init = gmm_problem
    gm = sklearn_gmm(x, init, max_iter=5000, tol=1e-13)
    fit = gmm_fit
    assert fit.diagnostics["path"] == "factored"
    assert bool(fit.exact) and bool(fit.converged)
    order = np.argsort(gm.means_[:, 0])  # same start, so the same labelling; sort anyway
    mine = np.argsort(np.asarray(fit.params["means"])[:, 0])
    np.testing.assert_allclose(np.asarray(fit.params["weights"])[mine], gm.weights_[order],
                               atol=1e-4)
    np.testing.assert_allclose(np.asarray(fit.params["means"])[mine], gm.means_[order],
                               atol=1e-4)
    np.testing.assert_allclose(np.asarray(fit.params["precisions"])[mine],
                               gm.precisions_[order], rtol=1e-4)
    ll_sklearn = gm.score(x) * N
    assert abs(float(fit.log_likelihood) - ll_sklearn) < 1e-6 * abs(ll_sklearn)


def test_gmm_iterates_match_sklearn_step_by_step(gmm_problem, gmm_fit):
    """Same start, exact E- and M-steps: the log-likelihood after each iteration is
    scikit-learn's (its lower_bound_ after max_iter=t is the log-likelihood of the
    iterate entering its last E-step, t - 1 M-steps in)."""
    x, init = gmm_problem
    tr = np.asarray(gmm_fit.trace)
    for t in range(1, 8):
        gm = sklearn_gmm(x, init, max_iter=t, tol=0.0)
        np.testing.assert_allclose(tr[t - 1], gm.lower_bound_ * N, rtol=1e-11)


def test_gmm_log_likelihood_never_decreases(gmm_fit):
    tr = np.asarray(gmm_fit.log_likelihood_trace)
    n = int(gmm_fit.num_iters)
    assert n > 10
    assert np.all(np.diff(tr[:n + 1]) >= -1e-10 * np.abs(tr[1:n + 1]))
    assert tr[n] - tr[0] > 10.0  # it did climb
    assert float(gmm_fit.diagnostics["max_decrease"]) <= 1e-10 * abs(float(tr[n]))
    post = gmm_fit.posterior["z"]
    assert isinstance(post, vj.families.Categorical)
    np.testing.assert_allclose(np.asarray(post.probs).sum(-1), 1.0, atol=1e-12)


def test_second_call_does_not_recompile(gmm_problem, gmm_fit):
    """New data of the same shapes, other tol and max_iters in the same power-of-two
    bucket: the jitted EM loop is reused."""
    from vijax.inference import em_steps
    x, init = gmm_problem
    before = em_steps.fit_jit._cache_size()
    shifted = {k: jnp.asarray(v) for k, v in init.items()}
    shifted["means"] = shifted["means"] + 0.25  # same problem, translated
    fit = em(gmm_log_joint, shifted, {"z": vj.categorical(K, shape=(N,))},
             jnp.asarray(x) + 0.25, param_supports=GMM_SUPPORTS, max_iters=700, tol=1e-13)
    assert em_steps.fit_jit._cache_size() == before
    assert fit.trace.shape == (701,)
    np.testing.assert_allclose(np.asarray(fit.params["means"]),
                               np.asarray(gmm_fit.params["means"]) + 0.25, atol=1e-6)


def test_direct_path_reaches_the_same_fixed_point(gmm_problem, gmm_fit):
    """Unconstrained parameters written with exp/log_softmax force the direct path
    (recompile with theta as data); the maximum likelihood is the same."""
    x, init = gmm_problem
    params = {"logits": jnp.log(jnp.asarray(init["weights"])),
              "means": jnp.asarray(init["means"]),
              "log_prec": jnp.log(jnp.asarray(init["precisions"]))}
    fit = em(gmm_log_joint_unconstrained, params, {"z": vj.categorical(K, shape=(N,))},
             jnp.asarray(x), max_iters=1000, tol=1e-14)
    assert fit.diagnostics["path"] == "direct"
    np.testing.assert_allclose(np.asarray(fit.params["means"]),
                               np.asarray(gmm_fit.params["means"]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(fit.params["logits"])),
                               np.asarray(gmm_fit.params["weights"]), atol=1e-6)
    assert abs(float(fit.elbo) - float(gmm_fit.elbo)) < 1e-7 * abs(float(gmm_fit.elbo))
    tr = np.asarray(fit.trace)[:int(fit.num_iters) + 1]
    assert np.all(np.diff(tr) >= -1e-10 * np.abs(tr[1:]))


def test_branch_on_a_parameter_falls_back_to_the_direct_path():
    """The factored form resolves a parameter's branch at its support's canonical point;
    the start-point oracle F(T(theta0), T(y)) == log p(x, y | theta0) catches the mismatch
    and EM reruns on the direct path, which evaluates the branch at theta."""
    x = jnp.linspace(-1.0, 3.0, 8)

    def lj(p, z, x):
        sd = jnp.where(p["s"] > 2.0, 1.0, 3.0)  # canonical positive point is 0.7071
        return (stats.norm.logpdf(z["mu"], 0.0, 10.0)
                + jnp.sum(stats.norm.logpdf(x, z["mu"] + p["m"] + 0.0 * p["s"], sd)))

    fit = em(lj, {"s": jnp.asarray(3.0), "m": jnp.asarray(0.5)}, {"mu": vj.real()}, x,
             param_supports={"s": vj.positive(), "m": vj.real()}, max_iters=5)
    assert fit.diagnostics["path"] == "direct"
    # exact E-step: the ELBO at the final parameters is log N(x; m 1, I + 100 1 1^T)
    m = float(fit.params["m"])
    cov = np.eye(x.size) + 100.0 * np.ones((x.size, x.size))
    ll = stats.multivariate_normal.logpdf(x, jnp.full(x.size, m), cov)
    np.testing.assert_allclose(float(fit.log_likelihood), float(ll), rtol=1e-10)


def fa_log_joint(p, z, x):
    Z = z["Z"]
    lp = jnp.sum(stats.norm.logpdf(Z))
    return lp + jnp.sum(stats.norm.logpdf(x, Z @ p["W"].T + p["m"], 1.0 / jnp.sqrt(p["psi"])))


def test_factor_analysis_matches_sklearn():
    from sklearn.decomposition import FactorAnalysis
    rng = np.random.default_rng(5)
    n, d, k = 300, 5, 2
    W = 2.0 * rng.normal(size=(d, k))
    x = (rng.normal(size=(n, k)) @ W.T + rng.normal(size=(n, d)) * np.sqrt(
        rng.uniform(0.3, 1.0, d)) + rng.normal(size=d))
    params = {"W": jnp.asarray(0.5 * rng.normal(size=(d, k))), "m": jnp.asarray(x.mean(0)),
              "psi": jnp.asarray(1.0 / x.var(0))}
    fit = em(fa_log_joint, params, {"Z": vj.real((n, k))}, jnp.asarray(x),
             param_supports={"W": vj.real(), "m": vj.real(), "psi": vj.positive()},
             max_iters=1000, tol=1e-13)
    assert bool(fit.exact)  # each row z_n is one dense-Gaussian block: exact E-step
    assert isinstance(fit.posterior["Z"], vj.families.MultivariateNormal)
    fa = FactorAnalysis(k, tol=1e-12, max_iter=100000, svd_method="lapack").fit(x)
    ll = fa.score(x) * n
    assert abs(float(fit.log_likelihood) - ll) < 1e-8 * abs(ll)
    # the fitted model has the same covariance W W^T + Psi
    cov = np.asarray(fit.params["W"] @ fit.params["W"].T + jnp.diag(1.0 / fit.params["psi"]))
    np.testing.assert_allclose(cov, fa.get_covariance(), atol=1e-3)
    tr = np.asarray(fit.trace)
    assert np.all(np.diff(tr) >= -1e-10 * np.abs(tr[1:]))


def test_variational_em_elbo_never_decreases():
    """Latent cluster means (with a prior) and assignments are two coupled blocks: the
    E-step is mean-field CAVI, the trace is an ELBO, and it never decreases."""
    rng = np.random.default_rng(11)
    n, k = 150, 2
    x = np.concatenate([rng.normal(-3, 1, n // 2), rng.normal(3, 1, n - n // 2)])

    def lj(p, z, x):
        mu, c = z["mu"], z["c"]
        lp = jnp.sum(stats.norm.logpdf(mu, 0.0, 10.0)) + jnp.sum(jnp.log(p["w"])[c])
        return lp + jnp.sum(stats.norm.logpdf(x, mu[c], 1.0 / jnp.sqrt(p["tau"])))

    fit = em(lj, {"w": jnp.array([0.5, 0.5]), "tau": jnp.asarray(0.5)},
             {"mu": vj.real((k,)), "c": vj.categorical(k, shape=(n,))}, jnp.asarray(x),
             param_supports={"w": vj.simplex(k), "tau": vj.positive()},
             key=jax.random.key(1), max_iters=200, tol=1e-12)
    assert not bool(fit.exact)
    with pytest.raises(ValueError, match="variational"):
        fit.log_likelihood
    tr = np.asarray(fit.trace)[:int(fit.num_iters) + 1]
    assert np.all(np.diff(tr) >= -1e-9 * np.abs(tr[1:]))
    assert tr[-1] > tr[0]
    means = np.sort(np.asarray(fit.posterior["mu"].mean()))
    np.testing.assert_allclose(means, [-3, 3], atol=0.4)
    assert 0.5 < float(fit.params["tau"]) < 2.0


def test_generalized_em_with_adam_increases_q_or_rejects(gmm_problem):
    """A few Adam steps per M-step (generalized EM): each accepted step increased Q,
    so the log-likelihood still never decreases."""
    x, init = gmm_problem
    params = {k: jnp.asarray(v) for k, v in init.items()}
    fit = em(gmm_log_joint, params, {"z": vj.categorical(K, shape=(N,))}, jnp.asarray(x),
             param_supports=GMM_SUPPORTS, max_iters=60, tol=0.0,
             m_step=optax.adam(0.05), m_steps=5)
    tr = np.asarray(fit.trace)
    assert np.all(np.diff(tr) >= -1e-10 * np.abs(tr[1:]))
    assert tr[-1] > tr[0] + 10.0


class _QuadraticQ:
    """A stand-in backend whose Q is -|theta - 1|^2 (measured from theta_ref)."""

    def reduce(self, mu):
        return None

    def Q(self, reduced, theta_ref):
        def q(theta):
            return -jnp.sum((theta[0] - 1.0) ** 2) + jnp.sum((theta_ref[0] - 1.0) ** 2)
        return q

    def regularization(self, reduced, theta_ref, reg, floor):
        return (lambda theta: 0.0), [None]


def test_m_step_rejects_a_step_that_decreases_q():
    from vijax.inference.em_params import Spec
    from vijax.inference.em_steps import Knobs, m_step
    spec = Spec(None, (), (vj.real((2,)),), None, ("t",), optax.sgd(-0.1), None)
    knobs = Knobs(0.0, 3, 0.0)
    be = _QuadraticQ()
    u = [jnp.zeros(2)]
    u_new, accept, _ = jax.jit(lambda u: m_step(spec, knobs, be, None, u, False))(u)
    assert not bool(accept)
    np.testing.assert_array_equal(np.asarray(u_new[0]), 0.0)
    spec = Spec(None, (), (vj.real((2,)),), None, ("t",), optax.sgd(0.1), None)
    u_new, accept, _ = jax.jit(lambda u: m_step(spec, knobs, be, None, u, False))(u)
    assert bool(accept) and float(-jnp.sum((u_new[0] - 1) ** 2)) > -2.0


def test_closed_form_m_step_equals_lbfgs(gmm_problem, gmm_fit):
    """The default M-step here is the closed-form one (conditional modes); L-BFGS on the
    same Q reaches the same maximum-likelihood fixed point."""
    x, init = gmm_problem
    assert gmm_fit.diagnostics["m_step"] == "modes"
    # one cycle is exact for the mixture, the second confirms nothing moves
    assert int(gmm_fit.diagnostics["m_iters"]) == 2
    params = {k: jnp.asarray(v) for k, v in init.items()}
    fit = em(gmm_log_joint, params, {"z": vj.categorical(K, shape=(N,))}, jnp.asarray(x),
             param_supports=GMM_SUPPORTS, max_iters=1000, tol=1e-14, m_step="lbfgs")
    assert fit.diagnostics["m_step"] == "optimizer"
    for name in ("weights", "means", "precisions"):
        np.testing.assert_allclose(np.asarray(fit.params[name]),
                                   np.asarray(gmm_fit.params[name]), rtol=1e-6, atol=1e-8)
    assert abs(float(fit.log_likelihood) - float(gmm_fit.log_likelihood)) < 1e-8 * N


def test_modes_m_step_needs_closed_forms(gmm_problem):
    """exp(log_prec) is not a conjugate statistic of the parameter: 'modes' is refused
    with the reason, 'auto' falls back to L-BFGS."""
    x, init = gmm_problem
    params = {"logits": jnp.log(jnp.asarray(init["weights"])),
              "means": jnp.asarray(init["means"]),
              "log_prec": jnp.zeros((K, D))}
    with pytest.raises(ModelSpecError, match="m_step='modes'"):
        em(gmm_log_joint_unconstrained, params, {"z": vj.categorical(K, shape=(N,))},
           jnp.asarray(x), max_iters=2, m_step="modes")
    fit = em(gmm_log_joint_unconstrained, params, {"z": vj.categorical(K, shape=(N,))},
             jnp.asarray(x), max_iters=2)
    assert fit.diagnostics["m_step"] == "optimizer"


def test_prepared_em_restarts_without_reanalysis(gmm_problem, gmm_fit):
    x, init = gmm_problem
    params = {k: jnp.asarray(v) for k, v in init.items()}
    prep = vj.prepare_em(gmm_log_joint, params, {"z": vj.categorical(K, shape=(N,))},
                         jnp.asarray(x), param_supports=GMM_SUPPORTS)
    fit = prep.run(params, max_iters=1000, tol=1e-14)
    np.testing.assert_allclose(np.asarray(fit.params["means"]),
                               np.asarray(gmm_fit.params["means"]), atol=1e-10)
    # a permuted start: the same fit up to the labelling
    perm = np.array([2, 0, 1])
    fit2 = prep.run({k: v[perm] for k, v in params.items()}, max_iters=1000, tol=1e-14)
    # (both stop at a relative log-likelihood change of 1e-14, which pins the means to
    # about 1e-7: EM's linear rate leaves the last digits to the path taken)
    np.testing.assert_allclose(np.asarray(fit2.params["means"]),
                               np.asarray(gmm_fit.params["means"])[perm], atol=1e-6)
    with pytest.raises(ModelSpecError, match="structure"):
        prep.run({"weights": params["weights"]})
    with pytest.raises(ModelSpecError, match="shape"):
        prep.run({**params, "means": params["means"][:2]})


def test_maximize_lbfgs():
    f = lambda v: -jnp.sum((v["a"] - 1.5) ** 2) - (v["b"] + 2.0) ** 2  # noqa: E731
    x, val, steps = maximize(f, {"a": jnp.zeros(3), "b": jnp.asarray(0.0)})
    np.testing.assert_allclose(np.asarray(x["a"]), 1.5, atol=1e-8)
    assert abs(float(x["b"]) + 2.0) < 1e-8 and abs(float(val)) < 1e-12 and int(steps) < 20


def test_errors():
    x = jnp.array([1.0, 2.0, 3.0])

    def lj(p, z, x):
        return jnp.sum(stats.norm.logpdf(x, p["m"] + z["s"], 1.0)) + stats.norm.logpdf(z["s"])

    with pytest.raises(ModelSpecError, match="discrete"):
        em(lj, {"m": jnp.asarray(0.0)}, {"s": vj.real()}, x,
           param_supports={"m": vj.categorical(2)})
    with pytest.raises(ModelSpecError, match="structure"):
        em(lj, {"m": jnp.asarray(0.0)}, {"s": vj.real()}, x,
           param_supports={"m": vj.real(), "other": vj.real()})
    with pytest.raises(ModelSpecError, match="outside"):
        em(lj, {"m": jnp.asarray(-1.0)}, {"s": vj.real()}, x,
           param_supports={"m": vj.positive()})
    with pytest.raises(vj.DataError):
        em(lj, {"m": jnp.asarray(0.0)}, {"s": vj.real()}, x.at[0].set(jnp.nan))

    def nonconj(p, z, x):
        return jnp.sum(stats.norm.logpdf(x, jnp.exp(z["s"]) * p["m"], 1.0))

    with pytest.raises(NonConjugateError):
        em(nonconj, {"m": jnp.asarray(1.0)}, {"s": vj.real()}, x)

    def improper(p, z, x):  # q(s) has precision 3 - a: none for a >= 3
        lp = jnp.sum(stats.norm.logpdf(x, z["s"], 1.0)) + stats.norm.logpdf(z["t"])
        return lp + 0.5 * p["a"] * z["s"] ** 2

    with pytest.raises(vj.FitDivergedError, match="latent 's'") as err:
        em(improper, {"a": jnp.asarray(5.0)}, {"t": vj.real(), "s": vj.real()}, x)
    assert err.value.latent == "s"


def test_benchmark_smoke():
    from benchmarks.bench_em import run, to_markdown
    r = run(n=300, d=2, k=2, iters=3, dtype="float64", repeats=1)
    for key in ("vijax_s_per_iter", "sklearn_s_per_iter", "speedup", "vijax_compile_s"):
        assert isinstance(r[key], float)  # timings of a tiny run may be noise
    assert r["vijax_compile_s"] > 0 and r["versions"]["sklearn"]
    assert r["sizes"] == {"n": 300, "d": 2, "k": 2, "iters": 3}
    assert r["vijax_path"] == "factored"
    assert abs(r["vijax_final_loglik"] - r["sklearn_final_loglik"]) < 1e-8 * abs(
        r["sklearn_final_loglik"])
    assert "vijax" in to_markdown(r) and "scikit-learn" in to_markdown(r)
