"""The Laplace approximation (vj.laplace): exact on Gaussians, Newton's method on
logistic regression, delta-method moments for constrained latents, errors."""

import jax

jax.config.update("jax_enable_x64", True)

import math  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.scipy import stats  # noqa: E402

import vijax as vj  # noqa: E402
from vijax.errors import FitDivergedError, ModelSpecError  # noqa: E402
from vijax.inference.laplace import laplace  # noqa: E402


def test_exact_on_normal_with_known_variance():
    m0, s0, sigma = 0.5, 2.0, 1.5
    x = jnp.array([1.2, -0.3, 2.2, 0.9, 1.7])

    def lj(z, x):
        return (stats.norm.logpdf(z["mu"], m0, s0)
                + jnp.sum(stats.norm.logpdf(x, z["mu"], sigma)))

    lap = laplace(vj.Model(lj, {"mu": vj.real()}), x)
    prec = 1 / s0 ** 2 + x.size / sigma ** 2
    mean = (m0 / s0 ** 2 + float(jnp.sum(x)) / sigma ** 2) / prec
    np.testing.assert_allclose(float(lap.mean["mu"]), mean, rtol=1e-10)
    np.testing.assert_allclose(float(lap.variance["mu"]), 1 / prec, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(lap.posterior.covariance()), [[1 / prec]], rtol=1e-10)
    # for a Gaussian the Laplace evidence is exact: x ~ N(m0 1, sigma^2 I + s0^2 1 1^T)
    n = x.size
    cov = sigma ** 2 * np.eye(n) + s0 ** 2 * np.ones((n, n))
    log_ev = stats.multivariate_normal.logpdf(x, jnp.full(n, m0), cov)
    np.testing.assert_allclose(float(lap.log_evidence), float(log_ev), rtol=1e-10)


def test_exact_on_correlated_gaussian_vector():
    """A 3-D Gaussian target over a vector latent and a scalar one: the MAP is the mean
    and the Laplace covariance is the covariance, in the flattened (sorted-name) order."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(3, 3))
    cov = A @ A.T + 0.5 * np.eye(3)
    mean = np.array([0.3, -1.0, 2.0])

    def lj(z, d):
        v = jnp.concatenate([z["a"], z["b"][None]])
        return stats.multivariate_normal.logpdf(v, d["m"], d["c"])

    lap = laplace(vj.Model(lj, {"b": vj.real(), "a": vj.real((2,))}),
                  {"m": jnp.asarray(mean), "c": jnp.asarray(cov)})
    np.testing.assert_allclose(np.asarray(lap.posterior.mean()), mean, atol=1e-8)
    np.testing.assert_allclose(np.asarray(lap.posterior.covariance()), cov, rtol=1e-8)
    np.testing.assert_allclose(np.asarray(lap.variance["a"]), np.diag(cov)[:2], rtol=1e-8)
    assert float(lap.grad_norm) < 1e-6


def test_logistic_regression_matches_newton():
    rng = np.random.default_rng(1)
    n, d, alpha = 120, 3, 0.7
    X = rng.normal(size=(n, d))
    w_true = np.array([1.0, -2.0, 0.5])
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ w_true))).astype(float)

    def lj(z, data):
        X, y = data
        logits = X @ z["w"]
        return (jnp.sum(stats.norm.logpdf(z["w"], 0.0, 1 / math.sqrt(alpha)))
                + jnp.sum(y * jax.nn.log_sigmoid(logits) + (1 - y) * jax.nn.log_sigmoid(-logits)))

    lap = laplace(vj.Model(lj, {"w": vj.real((d,))}), (jnp.asarray(X), jnp.asarray(y)))

    # reference: Newton's method on the log posterior, written here in numpy
    w = np.zeros(d)
    for _ in range(50):
        p = 1 / (1 + np.exp(-X @ w))
        g = X.T @ (y - p) - alpha * w
        H = -(X.T * (p * (1 - p))) @ X - alpha * np.eye(d)
        w = w - np.linalg.solve(H, g)
    p = 1 / (1 + np.exp(-X @ w))
    H = -(X.T * (p * (1 - p))) @ X - alpha * np.eye(d)
    cov = np.linalg.inv(-H)
    np.testing.assert_allclose(np.asarray(lap.map["w"]), w, atol=1e-7)
    np.testing.assert_allclose(np.asarray(lap.posterior.covariance()), cov, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(lap.variance["w"]), np.diag(cov), rtol=1e-6)


def test_positive_latent_delta_method():
    """Gamma-Poisson: in u = log(lambda) the density is exp(a u - b e^u) (Jacobian
    included), mode u* = log(a/b), -g'' = a; delta method: mean a/b, variance a/b^2."""
    a0, b0 = 2.0, 1.0
    x = jnp.array([3.0, 1.0, 4.0, 2.0])

    def lj(z, x):
        return (stats.gamma.logpdf(z["lam"], a0, scale=1 / b0)
                + jnp.sum(stats.poisson.logpmf(x, z["lam"])))

    lap = laplace(vj.Model(lj, {"lam": vj.positive()}), x)
    a, b = a0 + float(jnp.sum(x)), b0 + x.size
    np.testing.assert_allclose(float(lap.map_unconstrained["lam"]), math.log(a / b), atol=1e-8)
    np.testing.assert_allclose(float(lap.mean["lam"]), a / b, rtol=1e-8)
    np.testing.assert_allclose(float(lap.variance["lam"]), a / b ** 2, rtol=1e-7)
    np.testing.assert_allclose(np.asarray(lap.posterior.covariance()), [[1 / a]], rtol=1e-7)


def test_simplex_latent():
    """Dirichlet posterior in additive log-ratio coordinates: the mode of the density of
    u is the Dirichlet mean alpha/sum(alpha) (the Jacobian adds one to each count)."""
    counts = jnp.array([3.0, 5.0, 2.0])
    alpha0 = jnp.ones(3)

    def lj(z, c):
        return stats.dirichlet.logpdf(z["p"], alpha0) + jnp.sum(c * jnp.log(z["p"]))

    lap = laplace(vj.Model(lj, {"p": vj.simplex(3)}), counts)
    alpha = alpha0 + counts
    np.testing.assert_allclose(np.asarray(lap.mean["p"]), np.asarray(alpha / alpha.sum()),
                               atol=1e-8)
    assert lap.variance["p"].shape == (3,) and bool(jnp.all(lap.variance["p"] > 0))
    assert lap.posterior.natural["x"].shape == (2,)


def test_flat_direction_raises_fit_diverged():
    def lj(z, _):
        return -0.5 * (z["a"] - z["b"]) ** 2  # only a - b is identified

    with pytest.raises(FitDivergedError, match="not negative definite"):
        laplace(vj.Model(lj, {"a": vj.real(), "b": vj.real()}), jnp.zeros(1))


def test_discrete_latent_and_bad_init_rejected():
    def lj(z, x):
        return jnp.sum(stats.norm.logpdf(x, z["mu"], 1.0)) + jnp.log(0.5) * z["s"]

    model = vj.Model(lj, {"mu": vj.real(), "s": vj.binary()})
    with pytest.raises(ModelSpecError, match="discrete"):
        laplace(model, jnp.ones(3))
    model = vj.Model(lambda z, x: stats.gamma.logpdf(z["t"], 2.0), {"t": vj.positive()})
    with pytest.raises(ModelSpecError, match="outside"):
        laplace(model, jnp.ones(1), init={"t": -1.0})
    with pytest.raises(ModelSpecError, match="does not declare"):
        laplace(model, jnp.ones(1), init={"u": 1.0})
