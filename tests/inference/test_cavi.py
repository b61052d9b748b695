"""CAVI against closed-form oracles (DESIGN section 4).

- single-block conjugate pairs: one sweep is the exact posterior and the ELBO is the log
  evidence;
- bivariate Gaussian: means and the mean-field variances 1/Lambda_ii;
- normal-gamma: the textbook factorized fixed point (Bishop section 10.1.3);
- Bayesian Gaussian mixture: the same clustering as scikit-learn from the same start;
- vmap over data sets; errors; no recompilation on new data of the same shape.
"""

from __future__ import annotations

import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats
from scipy.special import betaln, digamma, gammaln
from scipy.stats import multivariate_normal

import vijax as vj
from vijax.errors import DataError, FitDivergedError, ModelSpecError
from vijax.families import Beta, Categorical, Gamma, GaussMarkov, MultivariateNormal, Normal
from vijax.models.conjugate_pairs import BETA_PRIOR, DIRICHLET_PRIOR, GAMMA_PRIOR
from vijax.models.gaussian import LINREG_KNOWN, NORMAL_GAMMA_PRIOR
from vijax.models.mixture import GMM_PRIOR, make_mixture_log_joint

TOL = 1e-6


def close(got, want, tol=TOL):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol, atol=tol)


def assert_elbo_never_decreases(fit):
    n = int(fit.num_iters)
    trace = np.asarray(fit.elbo_trace)[:n]
    assert n >= 2
    drops = -np.diff(trace)
    assert np.all(drops <= 1e-9 * max(1.0, abs(float(fit.elbo)))), (
        f"ELBO decreased by {drops.max():.3g}: {trace}")
    assert float(fit.diagnostics["max_decrease"]) <= 1e-9 * max(1.0, abs(float(fit.elbo)))


# --------------------------------------------------------------------------- one block
def test_beta_bernoulli_one_sweep_is_exact(zoo):
    case = zoo["beta_bernoulli"]
    x = np.asarray(case.data)
    a, b = BETA_PRIOR
    s, n = x.sum(), x.size
    fit = vj.cavi(case.model, case.data, max_iters=1)
    q = fit.posterior["p"]
    assert isinstance(q, Beta)
    close(q.concentration1, a + s)
    close(q.concentration0, b + n - s)
    close(fit.elbo, betaln(a + s, b + n - s) - betaln(a, b))


def test_gamma_poisson_one_sweep_is_exact(zoo):
    case = zoo["gamma_poisson"]
    x = np.asarray(case.data)
    a, b = GAMMA_PRIOR
    s, n = x.sum(), x.size
    fit = vj.cavi(case.model, case.data, max_iters=1)
    q = fit.posterior["lam"]
    assert isinstance(q, Gamma)
    close(q.concentration, a + s)
    close(q.rate, b + n)
    log_evidence = (a * math.log(b) - gammaln(a) + gammaln(a + s) - (a + s) * math.log(b + n)
                    - gammaln(x + 1.0).sum())
    close(fit.elbo, log_evidence)


def test_dirichlet_categorical_one_sweep_is_exact(zoo):
    case = zoo["dirichlet_categorical"]
    x = np.asarray(case.data)
    alpha = np.asarray(DIRICHLET_PRIOR)
    counts = np.bincount(x, minlength=alpha.size)
    fit = vj.cavi(case.model, case.data, max_iters=1)
    q = fit.posterior["pi"]
    close(q.concentration, alpha + counts)

    def log_beta(v):
        return gammaln(v).sum() - gammaln(v.sum())
    close(fit.elbo, log_beta(alpha + counts) - log_beta(alpha))


def test_normal_known_variance_one_sweep_is_exact(zoo):
    case = zoo["normal_known_variance"]
    x = np.asarray(case.data)
    prior_sd, noise_sd = 2.0, 0.5  # vijax.models.gaussian.normal_known_variance
    n = x.size
    prec = 1.0 / prior_sd ** 2 + n / noise_sd ** 2
    mean = (x.sum() / noise_sd ** 2) / prec
    fit = vj.cavi(case.model, case.data, max_iters=1)
    q = fit.posterior["mu"]
    assert isinstance(q, Normal)
    close(q.mean(), mean)
    close(q.variance(), 1.0 / prec)
    cov = noise_sd ** 2 * np.eye(n) + prior_sd ** 2 * np.ones((n, n))
    close(fit.elbo, multivariate_normal(np.zeros(n), cov).logpdf(x))


def test_linear_regression_known_noise_one_sweep_is_exact(zoo):
    case = zoo["linear_regression_known_noise"]
    X, y = np.asarray(case.data["X"]), np.asarray(case.data["y"])
    alpha, beta = LINREG_KNOWN["alpha"], LINREG_KNOWN["beta"]
    n, d = X.shape
    prec = alpha * np.eye(d) + beta * X.T @ X
    cov = np.linalg.inv(prec)
    mean = beta * cov @ X.T @ y
    fit = vj.cavi(case.model, case.data, max_iters=1)
    q = fit.posterior["w"]
    assert isinstance(q, MultivariateNormal)
    close(q.mean(), mean)
    close(q.cov, cov)
    marginal = multivariate_normal(np.zeros(n), X @ X.T / alpha + np.eye(n) / beta)
    close(fit.elbo, marginal.logpdf(y))


@pytest.mark.parametrize("name", ["beta_bernoulli", "gamma_poisson", "dirichlet_categorical",
                                  "normal_known_variance", "linear_regression_known_noise"])
def test_single_block_converges_after_one_more_sweep(zoo, name):
    case = zoo[name]
    one = vj.cavi(case.model, case.data, max_iters=1)
    more = vj.cavi(case.model, case.data, max_iters=5)
    close(more.elbo, one.elbo, 1e-10)
    assert bool(more.converged) and int(more.num_iters) <= 2
    assert more.elbo_trace.shape == (5,)


def test_state_space_one_sweep_is_the_exact_smoother(zoo):
    from vijax.models.state_space import SSM_PARAMS
    case = zoo["state_space"]
    y = np.asarray(case.data)
    T = y.size
    a, q, r = SSM_PARAMS["a"], SSM_PARAMS["q"], SSM_PARAMS["r"]
    # innovations e = B x: e_0 = x_0 ~ N(0, 1), e_t = x_t - a x_{t-1} ~ N(0, q^2)
    B = np.eye(T) - a * np.eye(T, k=-1)
    prior_prec = B.T @ np.diag(1.0 / np.r_[1.0, np.full(T - 1, q ** 2)]) @ B
    post_cov = np.linalg.inv(prior_prec + np.eye(T) / r ** 2)
    post_mean = post_cov @ y / r ** 2
    fit = vj.cavi(case.model, case.data, max_iters=1)
    assert isinstance(fit.posterior["x"], GaussMarkov)  # a chain: the Kalman smoother
    q_x = fit.posterior["x"].to_dense()  # the same Gaussian, assembled (T = 25)
    close(q_x.mean(), post_mean)
    close(q_x.cov, post_cov)
    marginal = multivariate_normal(np.zeros(T), np.linalg.inv(prior_prec) + r ** 2 * np.eye(T))
    close(fit.elbo, marginal.logpdf(y))


@pytest.mark.parametrize("name", ["linear_regression", "ppca"])
def test_elbo_never_decreases_on_multi_block_zoo_models(zoo, name):
    case = zoo[name]
    fit = vj.cavi(case.model, case.data, key=jax.random.key(3), max_iters=40)
    assert np.all(np.isfinite(np.asarray(fit.elbo_trace)))
    assert_elbo_never_decreases(fit)
    assert int(fit.diagnostics["invalid_latent"]) == -1
    assert set(fit.posterior) == set(case.model.supports)
    for n, q in fit.posterior.items():
        assert type(q).__name__ == case.zoo_model.families[n]


# --------------------------------------------------------------------------- bivariate
def test_bivariate_gaussian_mean_field_variances(zoo):
    case = zoo["bivariate_gaussian"]
    mean = np.asarray(case.data["mean"])
    lam = np.linalg.inv(np.asarray(case.data["cov"]))
    fit = vj.cavi(case.model, case.data, tol=1e-14, max_iters=500)
    assert bool(fit.converged)
    for i, name in enumerate(["z1", "z2"]):
        close(fit.posterior[name].mean(), mean[i])
        close(fit.posterior[name].variance(), 1.0 / lam[i, i])
    assert_elbo_never_decreases(fit)
    # ELBO = log Z - KL(q || p) with log Z = 0 for a normalized target.
    var = 1.0 / np.diag(lam)
    kl = 0.5 * (np.sum(np.diag(lam) * var) - 2 - np.sum(np.log(var)) - np.log(np.linalg.det(lam)))
    close(fit.elbo, -kl)


# --------------------------------------------------------------------------- normal-gamma
def normal_gamma_textbook(x, mu0, lambda0, a0, b0, iters=300):
    """Bishop section 10.1.3, vectorized over leading axes of ``x`` (numpy).

    Returns (mu_N, lambda_N, a_N, b_N, elbo)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    sx, sxx = x.sum(-1), (x * x).sum(-1)
    mu_n = (lambda0 * mu0 + sx) / (lambda0 + n)
    a_n = a0 + 0.5 * (n + 1)
    e_tau = np.full(sx.shape, a0 / b0)
    for _ in range(iters):
        lambda_n = (lambda0 + n) * e_tau
        e_mu2 = mu_n ** 2 + 1.0 / lambda_n
        b_n = b0 + 0.5 * (sxx - 2.0 * mu_n * sx + n * e_mu2
                          + lambda0 * (e_mu2 - 2.0 * mu0 * mu_n + mu0 ** 2))
        e_tau = a_n / b_n
    lambda_n = (lambda0 + n) * e_tau
    e_log_tau = digamma(a_n) - np.log(b_n)
    sq_data = sxx - 2.0 * mu_n * sx + n * (mu_n ** 2 + 1.0 / lambda_n)
    sq_prior = (mu_n - mu0) ** 2 + 1.0 / lambda_n
    log2pi = math.log(2.0 * math.pi)
    e_log_p = (a0 * math.log(b0) - gammaln(a0) + (a0 - 1.0) * e_log_tau - b0 * e_tau
               + 0.5 * (math.log(lambda0) - log2pi + e_log_tau) - 0.5 * lambda0 * e_tau * sq_prior
               + 0.5 * n * (e_log_tau - log2pi) - 0.5 * e_tau * sq_data)
    entropy = (0.5 * (log2pi + 1.0 - np.log(lambda_n))
               + gammaln(a_n) - (a_n - 1.0) * digamma(a_n) - np.log(b_n) + a_n)
    return mu_n, lambda_n, a_n, b_n, e_log_p + entropy


NG = NORMAL_GAMMA_PRIOR


def test_normal_gamma_matches_textbook_fixed_point(zoo):
    case = zoo["normal_gamma"]
    mu_n, lambda_n, a_n, b_n, elbo = normal_gamma_textbook(
        case.data, NG["mu0"], NG["lambda0"], NG["a0"], NG["b0"])
    fit = vj.cavi(case.model, case.data, tol=1e-14, max_iters=200)
    close(fit.posterior["mu"].mean(), mu_n)
    close(fit.posterior["mu"].variance(), 1.0 / lambda_n)
    close(fit.posterior["tau"].concentration, a_n)
    close(fit.posterior["tau"].rate, b_n)
    close(fit.elbo, elbo)
    assert_elbo_never_decreases(fit)


def test_normal_gamma_trace_never_decreases_from_a_far_start(zoo):
    case = zoo["normal_gamma"]
    init = {"mu": Normal.from_loc_scale(-10.0, 0.01), "tau": Gamma.from_shape_rate(50.0, 1.0)}
    fit = vj.cavi(case.model, case.data, init=init, tol=1e-14, max_iters=60)
    assert_elbo_never_decreases(fit)
    assert float(fit.elbo_trace[0]) < float(fit.elbo)
    # the same fixed point regardless of the start
    close(fit.elbo, normal_gamma_textbook(case.data, NG["mu0"], NG["lambda0"], NG["a0"],
                                          NG["b0"])[-1])


def test_damping_and_order_reach_the_same_fixed_point(zoo):
    case = zoo["normal_gamma"]
    want = normal_gamma_textbook(case.data, NG["mu0"], NG["lambda0"], NG["a0"], NG["b0"])[-1]
    damped = vj.cavi(case.model, case.data, tol=1e-14, max_iters=300, damping=0.5)
    assert_elbo_never_decreases(damped)
    close(damped.elbo, want)
    reordered = vj.cavi(case.model, case.data, tol=1e-14, max_iters=200, order=("tau", "mu"))
    close(reordered.elbo, want)
    # the trace is max_iters long and repeats the final value past num_iters
    n = int(reordered.num_iters)
    assert reordered.elbo_trace.shape == (200,) and n < 200
    np.testing.assert_array_equal(np.asarray(reordered.elbo_trace)[n:], float(reordered.elbo))


@pytest.mark.parametrize("kwargs", [{"order": ("mu",)}, {"order": ("mu", "tau", "nu")},
                                    {"damping": 0.0}, {"damping": 1.5}],
                         ids=["order_missing", "order_extra", "damping_zero", "damping_big"])
def test_bad_order_or_damping_raises_model_spec_error(zoo, kwargs):
    case = zoo["normal_gamma"]
    with pytest.raises(ModelSpecError):
        vj.cavi(case.model, case.data, max_iters=2, **kwargs)


def test_vmap_over_normal_gamma_datasets():
    from vijax.models import ZOO
    model = ZOO["normal_gamma"]().model
    n_sets, n = 1000, 20
    keys = jax.random.split(jax.random.key(7), 2)
    locs = jax.random.normal(keys[0], (n_sets, 1))
    xs = locs + jax.random.gamma(keys[1], 3.0, (n_sets, n)) - 3.0

    fits = jax.vmap(lambda x: vj.cavi(model, x, tol=1e-13, max_iters=100))(xs)
    elbo = np.asarray(fits.elbo)
    assert elbo.shape == (n_sets,) and bool(np.all(fits.converged))
    m = np.asarray(fits.posterior["mu"].mean())
    v = np.asarray(fits.posterior["mu"].variance())
    a = np.asarray(fits.posterior["tau"].concentration)
    b = np.asarray(fits.posterior["tau"].rate)
    mu_n, lambda_n, a_n, b_n, elbo_tb = normal_gamma_textbook(
        np.asarray(xs), NG["mu0"], NG["lambda0"], NG["a0"], NG["b0"])
    close(m, mu_n)
    close(v, 1.0 / lambda_n)
    close(a, a_n)
    close(b, b_n)
    close(elbo, elbo_tb)
    subset = np.random.default_rng(0).choice(n_sets, 20, replace=False)
    single = [float(vj.cavi(model, xs[i], tol=1e-13, max_iters=100).elbo) for i in subset]
    close(elbo[subset], single, 1e-10)


# --------------------------------------------------------------------------- mixture
N_GMM, K_GMM, D_GMM = 300, 3, 2


@pytest.fixture(scope="module")
def gmm_problem():
    from sklearn.cluster import KMeans
    rng = np.random.default_rng(5)
    centers = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 6.0]])
    labels = rng.permutation(np.repeat(np.arange(K_GMM), N_GMM // K_GMM))
    x = centers[labels] + rng.normal(size=(N_GMM, D_GMM)) * np.array([1.0, 0.6])
    km = KMeans(n_clusters=K_GMM, n_init=10, random_state=0).fit(x)
    resp0 = np.eye(K_GMM)[km.labels_]
    return x, resp0, labels


def sklearn_bgmm(x, resp0):
    from sklearn.mixture import BayesianGaussianMixture

    class FromResponsibilities(BayesianGaussianMixture):
        def _initialize_parameters(self, X, random_state, xp=None):
            self._initialize(X, self.resp0)

    est = FromResponsibilities(
        n_components=K_GMM, covariance_type="diag",
        weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=GMM_PRIOR["alpha0"],
        mean_precision_prior=GMM_PRIOR["beta0"], mean_prior=np.zeros(D_GMM),
        # Gamma(a0, rate b0) per precision <-> dof = 2 a0, covariance prior = 2 b0
        degrees_of_freedom_prior=2.0 * GMM_PRIOR["a0"],
        covariance_prior=np.full(D_GMM, 2.0 * GMM_PRIOR["b0"]),
        max_iter=500, tol=1e-8, n_init=1, random_state=0)
    est.resp0 = resp0
    return est.fit(x)


def test_gaussian_mixture_matches_sklearn_from_same_start(gmm_problem):
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score
    x, resp0, truth = gmm_problem
    supports = {"pi": vj.simplex(K_GMM), "z": vj.categorical(K_GMM, shape=(N_GMM,)),
                "mu": vj.real((K_GMM, D_GMM)), "tau": vj.positive((K_GMM, D_GMM))}
    model = vj.Model(make_mixture_log_joint(), supports)
    fit = vj.cavi(model, jnp.asarray(x), init={"z": resp0}, tol=1e-10, max_iters=300)
    assert_elbo_never_decreases(fit)
    assert bool(fit.converged)
    q_z = fit.posterior["z"]
    assert isinstance(q_z, Categorical)
    ours = np.asarray(q_z.probs).argmax(-1)

    est = sklearn_bgmm(x, resp0)
    theirs = est.predict(x)
    assert adjusted_rand_score(ours, theirs) >= 0.99
    assert adjusted_rand_score(ours, truth) >= 0.99

    means = np.asarray(fit.posterior["mu"].mean())
    cost = ((means[:, None, :] - est.means_[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    np.testing.assert_allclose(means[rows], est.means_[cols], atol=0.05)
    weights = np.asarray(fit.posterior["pi"].mean())
    np.testing.assert_allclose(weights[rows], est.weights_[cols], atol=0.02)
    # E[tau] against sklearn's precisions, loosely (its q(mu, Lambda) is not factorized)
    prec = np.asarray(fit.posterior["tau"].mean())
    np.testing.assert_allclose(prec[rows], est.precisions_[cols], rtol=0.1)


# --------------------------------------------------------------------------- errors
def test_nan_data_raises_before_any_iteration(zoo, monkeypatch):
    import vijax.inference.cavi as cavi_mod
    case = zoo["normal_gamma"]
    bad = np.asarray(case.data).copy()
    bad[3] = np.nan

    def no_loop(*args, **kwargs):
        raise AssertionError("the CAVI loop ran on NaN data")
    monkeypatch.setattr(cavi_mod, "_fit_jit", no_loop)
    with pytest.raises(DataError, match="NaN"):
        vj.cavi(case.model, jnp.asarray(bad))
    with pytest.raises(DataError):
        vj.cavi(case.model, jnp.asarray(bad).at[0].set(jnp.inf))


def test_nan_in_nested_data_is_named(zoo):
    case = zoo["linear_regression_known_noise"]
    data = {"X": case.data["X"], "y": case.data["y"].at[0].set(jnp.nan)}
    with pytest.raises(DataError, match="y"):
        vj.cavi(case.model, data)


def test_nan_count_where_the_data_live(zoo, monkeypatch):
    """Data on an accelerator are counted by a jitted reduction in place (no host copy);
    forced here on the CPU: the same named error, the same count, and a clean leaf
    passes."""
    import vijax.model as model_mod
    case = zoo["linear_regression_known_noise"]
    monkeypatch.setattr(model_mod, "_checked_in_place", lambda x: isinstance(x, jax.Array))
    y = case.data["y"].at[0].set(jnp.nan).at[2].set(jnp.inf)
    with pytest.raises(DataError, match=r"\['y'\] has 2 NaN/Inf"):
        model_mod.check_data({"X": case.data["X"], "y": y})
    model_mod.check_data(case.data)


def test_zero_precision_update_raises_fit_diverged_naming_latent():
    # mu has no prior and enters only linearly: its update has zero precision.
    def lj(z, x):
        lp = stats.gamma.logpdf(z["tau"], 2.0, scale=1.0)
        lp += jnp.sum(stats.norm.logpdf(x, 0.0, 1.0 / jnp.sqrt(z["tau"])))
        return lp + z["mu"] * jnp.sum(x)
    model = vj.Model(lj, {"tau": vj.positive(), "mu": vj.real()})
    with pytest.raises(FitDivergedError) as ei:
        vj.cavi(model, jnp.array([0.5, -0.2, 1.1]))
    assert ei.value.latent == "mu"
    assert "mu" in str(ei.value)
    assert ei.value.step == 1


def test_negative_rate_prior_raises_fit_diverged_naming_latent():
    # A hand-written "Gamma(3, rate -2)" prior: the posterior rate -2 + n is negative.
    def lj(z, x):
        lam = z["lam"]
        lp = 2.0 * jnp.log(lam) + 2.0 * lam
        return lp + jnp.sum(stats.poisson.logpmf(x, lam))
    model = vj.Model(lj, {"lam": vj.positive()})
    with pytest.raises(FitDivergedError) as ei:
        vj.cavi(model, jnp.array([1]))
    assert ei.value.latent == "lam"
    assert "lam" in str(ei.value)


def test_improper_update_inside_jit_is_reported_in_diagnostics():
    def lj(z, x):
        lam = z["lam"]
        return 2.0 * jnp.log(lam) + 2.0 * lam + jnp.sum(stats.poisson.logpmf(x, lam))
    model = vj.Model(lj, {"lam": vj.positive()})
    r = jax.jit(lambda x: vj.cavi(model, x))(jnp.array([1]))
    assert int(r.diagnostics["invalid_latent"]) == 0
    assert int(r.diagnostics["invalid_iter"]) == 1


@pytest.mark.parametrize("bad_init", [
    {"mu": Gamma.from_shape_rate(2.0, 1.0)},                                    # wrong family
    {"mu": Normal.from_loc_scale(jnp.zeros(3), jnp.ones(3))},                   # wrong shape
    {"tau": Normal.from_loc_scale(1.0, 1.0)},                                   # wrong family
    {"sigma": Normal.from_loc_scale(0.0, 1.0)},                                 # no such latent
    {"mu": jnp.array([0.5, 0.5])},                                              # not a family
], ids=["family", "shape", "family_tau", "unknown", "array"])
def test_bad_init_raises_model_spec_error(zoo, bad_init):
    case = zoo["normal_gamma"]
    with pytest.raises(ModelSpecError):
        vj.cavi(case.model, case.data, init=bad_init, max_iters=2)


def test_bad_discrete_init_shape_raises_model_spec_error():
    def lj(z, x):
        lp = stats.dirichlet.logpdf(z["pi"], jnp.ones(3)) + jnp.sum(jnp.log(z["pi"])[z["c"]])
        return lp + jnp.sum(stats.norm.logpdf(x, jnp.array([-1.0, 0.0, 1.0])[z["c"]], 1.0))
    model = vj.Model(lj, {"pi": vj.simplex(3), "c": vj.categorical(3, shape=(4,))})
    x = jnp.array([0.1, -1.2, 0.8, 2.0])
    fit = vj.cavi(model, x, init={"c": np.full((4, 3), 1 / 3)}, max_iters=3)
    assert fit.posterior["c"].probs.shape == (4, 3)
    with pytest.raises(ModelSpecError):
        vj.cavi(model, x, init={"c": np.full((4, 4), 0.25)}, max_iters=2)
    with pytest.raises(ModelSpecError):
        vj.cavi(model, x, init={"c": np.full((5, 3), 1 / 3)}, max_iters=2)


def test_good_init_is_used(zoo):
    case = zoo["normal_gamma"]
    init = {"mu": Normal.from_loc_scale(3.0, 0.5), "tau": Gamma.from_shape_rate(4.0, 2.0)}
    fit = vj.cavi(case.model, case.data, init=init, max_iters=1)
    # the first update of mu uses E[tau] = 4 / 2 from the given q(tau)
    x = np.asarray(case.data)
    n = x.size
    e_tau = 2.0
    lam0, mu0 = NG["lambda0"], NG["mu0"]
    mu_n = (lam0 * mu0 + x.sum()) / (lam0 + n)
    close(fit.posterior["mu"].mean(), mu_n)
    close(fit.posterior["mu"].variance(), 1.0 / ((lam0 + n) * e_tau))


# --------------------------------------------------------------------------- compilation
class _Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_second_fit_with_new_data_of_same_shape_does_not_recompile(zoo):
    import vijax.inference.cavi as cavi_mod
    case = zoo["normal_gamma"]
    x1 = case.data
    x2 = x1 * 1.3 + 0.2
    first = vj.cavi(case.model, x1)
    size = cavi_mod._fit_jit._cache_size()

    handler = _Records()
    logger = logging.getLogger("jax")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles(True):
            second = vj.cavi(case.model, x2)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    compiles = [m for m in handler.messages if "compil" in m.lower()]
    assert not compiles, compiles
    assert cavi_mod._fit_jit._cache_size() == size
    assert float(first.elbo) != float(second.elbo)
