"""Results researchers can use (vijax.results): summary quantiles against scipy, joint
draws against the families' moments, posterior predictive, the one-screen repr, save/load
round trips, and the ArviZ export (skipped without arviz)."""

import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.scipy import stats as jstats  # noqa: E402
from scipy import stats  # noqa: E402

import vijax as vj  # noqa: E402
from vijax.results import SummaryTable  # noqa: E402
from vijax.results.summary import element_names  # noqa: E402

LEVELS = (0.025, 0.1, 0.5, 0.9, 0.975)


@pytest.fixture(scope="module")
def fits(zoo):
    """CAVI fits of a few zoo models, computed once."""
    cache = {}

    def get(name):
        if name not in cache:
            case = zoo[name]
            cache[name] = vj.cavi(case.model, case.data)
        return cache[name]
    return get


@pytest.fixture(scope="module")
def grad_fit(zoo):
    case = zoo["normal_gamma"]
    return vj.fit_gradient(case.model, case.data, jax.random.key(0))


@pytest.fixture(scope="module")
def lap_fit(zoo):
    case = zoo["normal_gamma"]
    return vj.laplace(case.model, case.data)


def _scipy(fam):
    """The scipy distribution equal to a Normal, Gamma or Beta family."""
    name = type(fam).__name__
    if name == "Normal":
        return stats.norm(np.asarray(fam.loc), np.asarray(fam.scale))
    if name == "Gamma":
        return stats.gamma(np.asarray(fam.concentration), scale=1 / np.asarray(fam.rate))
    if name == "Beta":
        return stats.beta(np.asarray(fam.concentration1), np.asarray(fam.concentration0))
    raise AssertionError(name)


# ---------------------------------------------------------------- summary
@pytest.mark.parametrize("model,latent,family", [
    ("normal_gamma", "mu", "Normal"), ("normal_gamma", "tau", "Gamma"),
    ("beta_bernoulli", "p", "Beta"), ("gamma_poisson", "lam", "Gamma"),
    ("gaussian_mixture", "mu", "Normal"), ("gaussian_mixture", "tau", "Gamma")])
@pytest.mark.parametrize("use_pandas", [False, True])
def test_summary_matches_scipy(fits, model, latent, family, use_pandas):
    if use_pandas:
        pytest.importorskip("pandas")
    fit = fits(model)
    fam = fit.posterior[latent]
    assert type(fam).__name__ == family
    table = fit.summary(LEVELS, pandas=use_pandas)
    ref = _scipy(fam)
    names = element_names(latent, np.shape(fam.mean()))
    rows = [table.index.tolist().index(n) if use_pandas else table.index.index(n) for n in names]
    values = np.asarray(table.values)[rows]
    assert list(table.columns) == ["mean", "sd", "2.5%", "10%", "50%", "90%", "97.5%"]
    method = table.attrs["method"] if use_pandas else table.method
    assert method[latent] == "closed form"
    np.testing.assert_allclose(values[:, 0], np.ravel(ref.mean()), rtol=1e-10)
    np.testing.assert_allclose(values[:, 1], np.ravel(ref.std()), rtol=1e-10)
    for j, q in enumerate(LEVELS):
        np.testing.assert_allclose(values[:, 2 + j], np.ravel(ref.ppf(q)), rtol=1e-8)


def test_summary_rows_and_categorical_indicators(fits):
    fit = fits("gaussian_mixture")
    table = fit.summary(pandas=False)
    z = fit.posterior["z"]
    n, k = z.probs.shape
    assert table.index[:6] == ["mu[0,0]", "mu[0,1]", "mu[1,0]", "mu[1,1]", "mu[2,0]", "mu[2,1]"]
    assert len(table) == 6 + 3 + 6 + n * k
    p = np.asarray(z.probs)
    i = table.index.index("z[7]==2")
    row = table.row("z[7]==2")
    assert table.index[i - 2:i + 1] == ["z[7]==0", "z[7]==1", "z[7]==2"]
    np.testing.assert_allclose(row["mean"], p[7, 2])
    np.testing.assert_allclose(row["sd"], np.sqrt(p[7, 2] * (1 - p[7, 2])))
    # quantiles of the 0/1 indicator
    assert row["50%"] == float(p[7, 2] > 0.5)
    assert set(table.method.values()) == {"closed form"}
    # Dirichlet marginals are Beta(alpha_k, alpha_0 - alpha_k)
    alpha = np.asarray(fit.posterior["pi"].concentration)
    ref = stats.beta(alpha, alpha.sum() - alpha)
    got = np.stack([table.row(f"pi[{j}]")["97.5%"] for j in range(3)])
    if table.method["pi"] == "closed form":
        np.testing.assert_allclose(got, ref.ppf(0.975), rtol=1e-8)
    else:  # Monte Carlo fallback: 4000 draws
        np.testing.assert_allclose(got, ref.ppf(0.975), atol=0.03)


def test_summary_table_without_pandas(fits, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    fit = fits("normal_gamma")
    table = fit.summary()
    assert isinstance(table, SummaryTable)
    text = repr(table)
    assert text.splitlines()[0].split() == ["mean", "sd", "2.5%", "50%", "97.5%"]
    assert text.splitlines()[1].startswith("mu ")
    assert table.to_dict()["mean"]["tau"] == pytest.approx(float(fit.posterior["tau"].mean()))
    np.testing.assert_allclose(table["sd"], [float(fit.posterior["mu"].std()),
                                             float(fit.posterior["tau"].std())])
    with pytest.raises(ImportError, match="pip install pandas"):
        fit.summary(pandas=True)


def test_summary_rejects_bad_levels(fits):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        fits("normal_gamma").summary((0.5, 1.0), pandas=False)


# ---------------------------------------------------------------- draws
def _check_moments(x, mean, var):
    """Sample mean and variance within 5 Monte Carlo standard errors."""
    x = np.asarray(x, float)
    n = x.shape[0]
    m, v = x.mean(0), x.var(0, ddof=1)
    se_m = np.sqrt(np.asarray(var) / n)
    se_v = np.sqrt(((x - m) ** 2).var(0) / n)
    assert np.all(np.abs(m - mean) <= 5 * se_m + 1e-12), (m, mean, se_m)
    assert np.all(np.abs(v - var) <= 5 * se_v + 1e-12), (v, var, se_v)


@pytest.mark.parametrize("model", ["normal_gamma", "beta_bernoulli", "gaussian_mixture",
                                   "linear_regression"])
def test_sample_moments_match_families(fits, model):
    fit = fits(model)
    n = 20_000
    draws = fit.sample(jax.random.key(3), n)
    assert sorted(draws) == sorted(fit.posterior)
    for name, fam in fit.posterior.items():
        x = draws[name]
        expect = jax.eval_shape(lambda k: fam.sample(k), jax.random.key(0)).shape
        assert x.shape == (n,) + expect
        if type(fam).__name__ == "Categorical":  # labels: check the class frequencies
            freq = np.stack([(np.asarray(x) == c).mean(0) for c in range(fam.num_classes)], -1)
            p = np.asarray(fam.probs)
            assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12)
        else:
            _check_moments(x, np.asarray(fam.mean()), np.asarray(fam.variance()))
    # the same key gives the same draws; the factors use independent keys
    again = fit.sample(jax.random.key(3), n)
    for name in draws:
        np.testing.assert_array_equal(draws[name], again[name])


def test_joint_draws_are_independent_across_factors(fits):
    fit = fits("normal_gamma")
    n = 20_000
    d = fit.sample(jax.random.key(5), n)
    corr = np.corrcoef(np.asarray(d["mu"]), np.asarray(d["tau"]))[0, 1]
    assert abs(corr) < 5 / np.sqrt(n)


def test_block_draws_keep_the_joint_dependence(zoo):
    """A declared Normal-Gamma block is drawn jointly: under q(mu, tau),
    kappa tau (mu - m)^2 is chi-square(1), mean 1; drawing the two marginals apart gives
    a / (a - 1) instead (here about 1.3)."""
    case = zoo["normal_gamma"]
    model = vj.Model(case.model.log_joint, case.model.supports, blocks=[["mu", "tau"]])
    x = case.data[:4]
    fit = vj.cavi(model, x)
    m, kappa, a, _ = vj.families.NormalGamma(fit.natural["mu+tau"]).params()
    assert float(a / (a - 1)) > 1.2
    n = 40_000
    d = fit.sample(jax.random.key(5), n)
    assert sorted(d) == ["mu", "tau"] and d["mu"].shape == (n,) + np.shape(m)
    chi2 = np.asarray(kappa * d["tau"] * (d["mu"] - m) ** 2)
    assert abs(chi2.mean() - 1.0) < 5 * np.sqrt(2.0 / n)
    # each member's draws still follow its exact marginal
    _check_moments(np.asarray(d["tau"]), np.asarray(fit.posterior["tau"].mean()),
                   np.asarray(fit.posterior["tau"].variance()))
    _check_moments(np.asarray(d["mu"]), np.asarray(fit.posterior["mu"].mean()),
                   np.asarray(fit.posterior["mu"].variance()))


def test_sample_under_jit_and_from_fit_gradient(grad_fit):
    fit = grad_fit
    draws = jax.jit(lambda r, k: r.sample(k, 50))(fit, jax.random.key(1))
    for name, fam in fit.posterior.items():
        assert draws[name].shape == (50,) + fam.mean().shape
    with pytest.raises(ValueError, match="positive integer"):
        fit.sample(jax.random.key(1), 0)


def test_posterior_predictive(fits):
    fit = fits("beta_bernoulli")
    p = fit.posterior["p"]

    def simulator(key, z):
        return {"y": jax.random.bernoulli(key, z["p"], (30,)).astype(jnp.float64),
                "p": z["p"]}

    n = 20_000
    pred = vj.posterior_predictive(fit, simulator, jax.random.key(0), n)
    assert pred["y"].shape == (n, 30) and pred["p"].shape == (n,)
    # E[y] = E[p]; Var[mean_i y_i] = E[p(1-p)]/30 + Var[p]
    ybar = np.asarray(pred["y"]).mean(1)
    mp, vp = float(p.mean()), float(p.variance())
    _check_moments(ybar, mp, (mp * (1 - mp) - vp) / 30 + vp)
    # reusing draws: the simulator sees exactly those latents
    z = fit.sample(jax.random.key(1), 10)
    out = fit.posterior_predictive(lambda k, d: d["p"] * 2, jax.random.key(2), 10)
    assert out.shape == (10,)
    out = vj.posterior_predictive(fit, lambda k, d: d["p"] * 2, jax.random.key(2), 10, draws=z)
    np.testing.assert_allclose(out, 2 * np.asarray(z["p"]))


# ---------------------------------------------------------------- repr
@pytest.mark.parametrize("model", ["normal_gamma", "gaussian_mixture", "linear_regression"])
def test_repr_is_one_screen(fits, model):
    fit = fits(model)
    text = repr(fit)
    lines = text.splitlines()
    assert len(lines) == 1 + len(fit.posterior)
    assert all(len(line) <= 100 for line in lines)
    assert lines[0].startswith("FitResult  ELBO ")
    assert f"iterations {int(fit.num_iters)}" in lines[0] and "converged True" in lines[0]
    for name, fam in fit.posterior.items():
        assert any(line.split()[0] == name and type(fam).__name__ in line for line in lines[1:])
    assert "natural" not in text and "elbo_trace" not in text
    assert str(fit) == text


def test_repr_of_batched_traced_and_gradient_results(zoo, fits, grad_fit):
    case = zoo["normal_gamma"]
    data = jnp.stack([case.data, case.data + 0.5, case.data - 0.5])
    batched = jax.vmap(lambda d: vj.cavi(case.model, d))(data)
    text = repr(batched)
    assert "batch (3,)" in text.splitlines()[0] and "converged 3/3" in text
    assert "Normal(batch_shape=(3,))" in text
    seen = []
    jax.jit(lambda r: (seen.append(repr(r)), r.elbo)[1])(fits("normal_gamma"))
    assert seen and "<traced>" in seen[0]
    fit = grad_fit
    head = repr(fit).splitlines()[0]
    assert head.startswith("FitResult  ELBO")
    estimator = fit.diagnostics.get("estimator")
    assert (estimator is None) or f"estimator {estimator}" in head


# ---------------------------------------------------------------- save / load
def _assert_same(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb  # same classes, dict keys, family classes and layouts
    for x, y in zip(la, lb):
        assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("model", ["normal_gamma", "gaussian_mixture", "linear_regression",
                                   "dirichlet_categorical"])
def test_save_load_round_trip_cavi(fits, model, tmp_path):
    fit = fits(model)
    path = fit.save(tmp_path / "fit")
    assert path.suffix == ".npz" and path.exists()
    back = vj.FitResult.load(path)
    assert isinstance(back, vj.FitResult)
    _assert_same(fit, back)
    assert repr(back) == repr(fit)
    # the loaded result is usable
    np.testing.assert_array_equal(back.sample(jax.random.key(0), 3)[sorted(fit.posterior)[0]],
                                  fit.sample(jax.random.key(0), 3)[sorted(fit.posterior)[0]])


@pytest.fixture(scope="module")
def em_fit():
    """A small EM fit (a latent mean, a point-estimated offset and scale), built once."""
    x = jnp.linspace(-1.0, 3.0, 8)

    def lj(v, x):
        return (jstats.norm.logpdf(v["mu"], 0.0, 10.0)
                + jnp.sum(jstats.norm.logpdf(x, v["mu"] + v["m"], v["s"])))

    model = vj.Model(lj, {"mu": vj.real(), "m": vj.real(), "s": vj.positive()})
    return lambda: vj.em(model, x, params=("m", "s"),
                         init={"m": jnp.asarray(0.5), "s": jnp.asarray(1.0)}, max_iters=5)


def test_save_load_round_trip_gradient_laplace_em(grad_fit, lap_fit, em_fit, tmp_path):
    fit, lap = grad_fit, lap_fit
    _assert_same(fit, vj.load_result(vj.save_result(fit, tmp_path / "grad.npz")))
    _assert_same(lap, vj.load_result(vj.save_result(lap, tmp_path / "lap")))
    em = em_fit()
    _assert_same(em, vj.load_result(vj.save_result(em, tmp_path / "em")))
    with pytest.raises(TypeError, match="not a FitResult"):
        vj.FitResult.load(tmp_path / "em.npz")


def test_em_and_laplace_results_have_the_same_methods(zoo, lap_fit, em_fit, tmp_path):
    case = zoo["normal_gamma"]
    key = jax.random.key(3)
    table = lap_fit.summary(supports=case.model, key=key, pandas=False)
    ref = vj.summary(lap_fit, supports=case.model, key=key, pandas=False)
    assert table.to_dict()["mean"] == ref.to_dict()["mean"]
    draws = lap_fit.sample(key, 7, supports=case.model)
    assert draws.keys() == case.model.supports.keys()
    assert all(v.shape[0] == 7 for v in draws.values())
    assert repr(lap_fit).startswith("LaplaceResult")
    em = em_fit()
    row = em.summary(pandas=False).row("mu")
    np.testing.assert_allclose(row["mean"], float(em.posterior["mu"].mean()), rtol=1e-12)
    assert em.sample(key, 4)["mu"].shape == (4,)
    _assert_same(em, vj.load_result(em.save(tmp_path / "em2")))


def test_save_refuses_what_it_cannot_rebuild(fits, tmp_path):
    fit = fits("normal_gamma")
    bad = fit._replace(diagnostics={**fit.diagnostics, "obj": object()})
    with pytest.raises(TypeError, match="cannot save"):
        vj.save_result(bad, tmp_path / "bad")
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a saved vijax result"):
        vj.load_result(tmp_path / "plain.npz")


# ---------------------------------------------------------------- Laplace
def test_laplace_draws_need_supports_and_respect_them(zoo, lap_fit):
    case, lap = zoo["normal_gamma"], lap_fit
    with pytest.raises(ValueError, match="supports=model"):
        vj.results.sample(lap, jax.random.key(0), 10)
    n = 20_000
    d = vj.results.sample(lap, jax.random.key(0), n, supports=case.model)
    assert d["tau"].shape == (n,) and float(d["tau"].min()) > 0
    # mu is real: its draws are exactly N(mean, variance)
    _check_moments(d["mu"], float(lap.mean["mu"]), float(lap.variance["mu"]))
    # tau = exp(u): the log-normal's moments
    m, s2 = float(lap.map_unconstrained["tau"]), float(lap.posterior.covariance()[1, 1])
    _check_moments(d["tau"], np.exp(m + s2 / 2), (np.exp(s2) - 1) * np.exp(2 * m + s2))
    lines = vj.results.result_repr(lap).splitlines()
    assert lines[0].startswith("LaplaceResult  log evidence") and "ok True" in lines[0]
    assert len(lines) == 4 and lines[2].split()[:2] == ["mu", "()"]
    table = vj.summary(lap, supports=case.model, pandas=False)
    assert table.method == {"mu": "monte carlo", "tau": "monte carlo"}
    np.testing.assert_allclose(table.row("tau")["50%"], np.exp(m), rtol=0.02)


# ---------------------------------------------------------------- ArviZ
def test_to_arviz_round_trip(fits):
    az = pytest.importorskip("arviz")
    fit = fits("normal_gamma")

    def simulator(key, z):
        return {"y": z["mu"] + jax.random.normal(key, (5,)) / jnp.sqrt(z["tau"])}

    idata = vj.to_arviz(fit, jax.random.key(0), 2000, chains=4, simulator=simulator,
                        observed_data={"y": np.zeros(5)})
    post = idata.posterior
    assert dict(post["mu"].sizes) == {"chain": 4, "draw": 2000}
    assert dict(idata.posterior_predictive["y"].sizes)["y_dim_0"] == 5
    summ = az.summary(idata, kind="stats", hdi_prob=0.95)
    assert set(summ.index) == {"mu", "tau"}
    for name in ("mu", "tau"):
        fam = fit.posterior[name]
        se = float(fam.std()) / np.sqrt(8000)
        assert abs(summ.loc[name, "mean"] - float(fam.mean())) < 5 * se
        assert summ.loc[name, "sd"] == pytest.approx(float(fam.std()), rel=0.05)
    idata2 = fit.to_arviz(jax.random.key(0), 10)
    assert dict(idata2.posterior["tau"].sizes) == {"chain": 1, "draw": 10}


def test_to_arviz_names_the_extra_when_missing(fits, monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)
    with pytest.raises(ImportError, match=r"vijax\[arviz\]"):
        vj.to_arviz(fits("normal_gamma"), jax.random.key(0), 10)
