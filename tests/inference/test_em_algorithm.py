"""EM through its public init/step (vj.algorithms.em) and the vj.Model form of vj.em:
the same trace as the wrapper, under jit, vmap and a user's lax.scan; the form of Q
recorded with its reason; refusals that still fit by the direct form."""

import jax

jax.config.update("jax_enable_x64", True)

import warnings  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.scipy import stats  # noqa: E402

import vijax as vj  # noqa: E402
from vijax.errors import ModelSpecError  # noqa: E402

N, D, K = 120, 2, 3
PARAMS = ("weights", "means", "precisions")


def gmm(v, x):
    """Diagonal GMM: parameters and the latent z in one dict."""
    c = v["z"]
    lp = jnp.sum(jnp.log(v["weights"])[c])
    return lp + jnp.sum(stats.norm.logpdf(x, v["means"][c], 1.0 / jnp.sqrt(v["precisions"][c])))


def gmm3(p, z, x):
    """The same model in the three-argument form."""
    return gmm({**p, **z}, x)


def model(n=N):
    return vj.Model(gmm, {"weights": vj.simplex(K), "means": vj.real((K, D)),
                          "precisions": vj.positive((K, D)),
                          "z": vj.categorical(K, shape=(n,))})


def data(seed, n=N):
    rng = np.random.default_rng(seed)
    centers = np.array([[-3.0, 0.0], [3.0, 1.0], [0.0, 4.0]])
    lab = rng.integers(0, K, n)
    return jnp.asarray(centers[lab] + rng.normal(size=(n, D)) * 0.8)


INIT = {"weights": jnp.array([0.2, 0.3, 0.5]),
        "means": jnp.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]),
        "precisions": jnp.ones((K, D))}


@pytest.fixture(scope="module")
def x():
    return data(0)


@pytest.fixture(scope="module")
def wrapper_fit(x):
    return vj.em(model(), x, params=PARAMS, init=INIT, max_iters=40, tol=0.0)


def test_model_form_equals_three_argument_form_and_sklearn(x, wrapper_fit):
    from sklearn.mixture import GaussianMixture
    old = vj.em(gmm3, INIT, {"z": vj.categorical(K, shape=(N,))}, x, max_iters=40, tol=0.0,
                param_supports={"weights": vj.simplex(K), "means": vj.real(),
                                "precisions": vj.positive()})
    np.testing.assert_array_equal(np.asarray(old.trace), np.asarray(wrapper_fit.trace))
    for name in PARAMS:
        np.testing.assert_array_equal(np.asarray(old.params[name]),
                                      np.asarray(wrapper_fit.params[name]))
    gm = GaussianMixture(K, covariance_type="diag", weights_init=np.asarray(INIT["weights"]),
                         means_init=np.asarray(INIT["means"]),
                         precisions_init=np.asarray(INIT["precisions"]), tol=0.0,
                         max_iter=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's ConvergenceWarning at tol=0
        gm.fit(np.asarray(x))
    # sklearn's lower_bound_ is the log-likelihood entering its last E-step
    np.testing.assert_allclose(float(wrapper_fit.trace[39]), gm.lower_bound_ * N, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(wrapper_fit.params["means"]), gm.means_, atol=1e-6)


def test_init_step_equals_the_wrapper_and_runs_under_jit(x, wrapper_fit):
    alg = vj.algorithms.em(model(), x, PARAMS)
    state = alg.init(INIT)
    np.testing.assert_allclose(float(state.elbo), float(wrapper_fit.trace[0]), rtol=1e-13)
    run = vj.run(alg.step, state, max_iters=40, tol=0.0, elbo0=state.elbo)
    np.testing.assert_allclose(np.asarray(run.trace), np.asarray(wrapper_fit.trace[1:]),
                               rtol=1e-12)
    jitted = jax.jit(lambda s: vj.run(alg.step, s, max_iters=40, tol=0.0, elbo0=s.elbo))(state)
    np.testing.assert_allclose(np.asarray(jitted.trace), np.asarray(run.trace), rtol=1e-12)
    # one step by hand: Info carries the M-step diagnostics
    s1, info = jax.jit(alg.step)(state)
    assert isinstance(s1, vj.inference.em.EMState) and bool(info.ok)
    assert bool(info.extra.accepted) and int(info.extra.invalid_latent) == -1
    np.testing.assert_allclose(float(info.elbo), float(wrapper_fit.trace[1]), rtol=1e-12)


def test_user_written_scan(x, wrapper_fit):
    alg = vj.algorithms.em(model(), x, PARAMS)

    def body(s, _):
        s, info = alg.step(s)
        return s, info.elbo

    final, elbos = jax.jit(lambda s: jax.lax.scan(body, s, None, length=10))(alg.init(INIT))
    np.testing.assert_allclose(np.asarray(elbos), np.asarray(wrapper_fit.trace[1:11]),
                               rtol=1e-12)
    fitted = vj.prepare_em(model(), x, params=PARAMS).params(final)
    assert set(fitted) == set(PARAMS)
    np.testing.assert_allclose(fitted["weights"].sum(), 1.0, rtol=1e-14)


def test_vmap_over_restarts_and_datasets(x):
    alg = vj.algorithms.em(model(), x, PARAMS)
    starts = {"weights": jnp.array([[0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]]),
              "means": jnp.stack([INIT["means"], INIT["means"][::-1] + 0.5]),
              "precisions": jnp.stack([INIT["precisions"], 2 * INIT["precisions"]])}

    def fit_from(p):
        s = alg.init(p)
        return vj.run(alg.step, s, max_iters=25, tol=0.0, elbo0=s.elbo).trace

    traces = jax.vmap(fit_from)(starts)
    for i in range(2):
        one = vj.em(model(), x, params=PARAMS, init={k: v[i] for k, v in starts.items()},
                    max_iters=25, tol=0.0)
        np.testing.assert_allclose(np.asarray(traces[i]), np.asarray(one.trace[1:]),
                                   rtol=1e-11)
    xs = jnp.stack([data(1), data(2)])

    def fit_data(xi):
        a = vj.algorithms.em(model(), xi, PARAMS)
        s = a.init(INIT)
        return vj.run(a.step, s, max_iters=20, tol=0.0, elbo0=s.elbo).info.elbo

    lls = jax.vmap(fit_data)(xs)
    for i in range(2):
        one = vj.em(model(), xs[i], params=PARAMS, init=INIT, max_iters=20, tol=0.0)
        np.testing.assert_allclose(float(lls[i]), float(one.log_likelihood), rtol=1e-11)


def test_form_and_reason_recorded(x, wrapper_fit):
    d = wrapper_fit.diagnostics
    assert d["path"] == "factored"
    assert d["form_reason"].startswith("factored:") and "weights: log" in d["form_reason"]
    prep = vj.prepare_em(model(), x, params=PARAMS)
    assert prep.path == "factored" and prep.form_reason == d["form_reason"]
    text = repr(wrapper_fit)
    assert "log likelihood" in text and "factored" in text and "means" in text


def unconstrained(v, x):
    c = v["z"]
    logw = jax.nn.log_softmax(v["logits"])
    prec = jnp.exp(v["log_prec"])
    return jnp.sum(logw[c]) + jnp.sum(stats.norm.logpdf(x, v["means"][c],
                                                         1.0 / jnp.sqrt(prec[c])))


def test_refused_factored_form_records_the_reason_and_fits_directly(x):
    m = vj.Model(unconstrained, {"logits": vj.real((K,)), "means": vj.real((K, D)),
                                 "log_prec": vj.real((K, D)),
                                 "z": vj.categorical(K, shape=(N,))})
    init = {"logits": jnp.log(INIT["weights"]), "means": INIT["means"],
            "log_prec": jnp.zeros((K, D))}
    fit = vj.em(m, x, params=("logits", "means", "log_prec"), init=init, max_iters=300,
                tol=1e-12)
    d = fit.diagnostics
    assert d["path"] == "direct" and d["m_step"] == "optimizer"
    assert d["form_reason"].startswith("direct:")
    assert "log_prec" in d["form_reason"] and "exp" in d["form_reason"]
    ref = vj.em(model(), x, params=PARAMS, init=INIT, max_iters=300, tol=1e-12)
    np.testing.assert_allclose(np.asarray(fit.params["means"]),
                               np.asarray(ref.params["means"]), atol=1e-4)
    np.testing.assert_allclose(float(fit.log_likelihood), float(ref.log_likelihood),
                               rtol=1e-8)


def test_branch_on_a_parameter_is_refused_with_the_compilers_reason():
    xs = jnp.linspace(-1.0, 3.0, 8)

    def lj(v, x):
        sd = jnp.where(v["s"] > 2.0, 1.0, 3.0)
        return (stats.norm.logpdf(v["mu"], 0.0, 10.0)
                + jnp.sum(stats.norm.logpdf(x, v["mu"] + v["m"] + 0.0 * v["s"], sd)))

    m = vj.Model(lj, {"s": vj.positive(), "m": vj.real(), "mu": vj.real()})
    fit = vj.em(m, xs, params=("s", "m"), init={"s": 3.0, "m": 0.5}, max_iters=5)
    assert fit.diagnostics["path"] == "direct"
    reason = fit.diagnostics["form_reason"]
    assert "parameter s:" in reason and "branches on the value" in reason


def test_unexpected_errors_are_not_swallowed(monkeypatch, x):
    """Only the compiler's refusals choose the direct form; any other error propagates."""
    from vijax.inference import em_choice

    def broken(*a, **k):
        raise RuntimeError("a bug in the analysis")

    monkeypatch.setattr(em_choice, "build_program", broken)
    monkeypatch.setattr(em_choice, "_FACTORED", {})
    with pytest.raises(RuntimeError, match="a bug in the analysis"):
        vj.em(model(), x, params=PARAMS, init=INIT, max_iters=2)


def test_progress_reports(monkeypatch, x, wrapper_fit):
    from vijax.inference import driver
    seen = []

    def printer(total, label):
        def report(i, elbo):
            seen.append((int(i), float(elbo)))
        return report

    monkeypatch.setattr(driver, "progress_printer", printer)
    fit = vj.em(model(), x, params=PARAMS, init=INIT, max_iters=40, tol=0.0, progress=True)
    np.testing.assert_array_equal(np.asarray(fit.trace), np.asarray(wrapper_fit.trace))
    assert seen and seen[-1][0] == 40
    np.testing.assert_allclose(seen[-1][1], float(fit.elbo), rtol=1e-12)


def test_model_form_errors(x):
    with pytest.raises(ModelSpecError, match="not declared"):
        vj.em(model(), x, params=("weights", "sigma"), init=INIT)
    with pytest.raises(ModelSpecError, match="starting value for each parameter"):
        vj.em(model(), x, params=PARAMS, init={"weights": INIT["weights"]})
    with pytest.raises(ModelSpecError, match=r"means has shape \(2, 2\)"):
        vj.em(model(), x, params=PARAMS, init={**INIT, "means": INIT["means"][:2]})
    with pytest.raises(ModelSpecError, match="at least one latent"):
        vj.em(model(), x, params=PARAMS + ("z",), init=INIT)
