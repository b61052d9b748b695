"""Quantiles, standard deviations and printed forms of the families, against scipy.stats
(float64, from the conftest fixture)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as ss

from vijax.families import (Bernoulli, Beta, Categorical, Dirichlet, Gamma, InverseGamma,
                            MultivariateNormal, Normal, Poisson)

Q = np.array([1e-9, 1e-4, 0.025, 0.3, 0.5, 0.7, 0.975, 1 - 1e-4, 1 - 1e-9])

CONTINUOUS = [
    ("normal", lambda: Normal.from_loc_scale(jnp.array([-2.0, 0.5, 30.0]),
                                             jnp.array([0.1, 1.0, 7.0])),
     lambda: ss.norm(np.array([-2.0, 0.5, 30.0]), np.array([0.1, 1.0, 7.0]))),
    ("gamma", lambda: Gamma.from_shape_rate(jnp.array([0.05, 0.7, 3.0, 250.0]),
                                            jnp.array([2.0, 0.3, 1.0, 9.0])),
     lambda: ss.gamma(np.array([0.05, 0.7, 3.0, 250.0]), scale=1 / np.array([2.0, 0.3, 1.0, 9.0]))),
    ("inverse_gamma", lambda: InverseGamma.from_shape_scale(jnp.array([0.3, 2.0, 40.0]),
                                                            jnp.array([1.0, 5.0, 0.2])),
     lambda: ss.invgamma(np.array([0.3, 2.0, 40.0]), scale=np.array([1.0, 5.0, 0.2]))),
    ("beta", lambda: Beta.from_concentrations(jnp.array([0.1, 2.0, 0.8, 500.0]),
                                              jnp.array([0.4, 3.0, 60.0, 20.0])),
     lambda: ss.beta(np.array([0.1, 2.0, 0.8, 500.0]), np.array([0.4, 3.0, 60.0, 20.0]))),
]


@pytest.mark.parametrize("name,build,ref", CONTINUOUS, ids=[c[0] for c in CONTINUOUS])
def test_continuous_quantiles_match_scipy(name, build, ref):
    q = build().quantile(jnp.asarray(Q))
    assert q.shape == (len(Q),) + build().batch_shape
    expected = ref().ppf(Q[:, None])
    # Relative accuracy; quantiles that underflow in scipy (~1e-300) compare absolutely.
    np.testing.assert_allclose(np.asarray(q), expected, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("rate", [0.01, 0.8, 7.5, 120.0, 5e4])
def test_poisson_quantile_is_smallest_count_with_cdf_at_least_q(rate):
    q = np.array([0.001, 0.1, 0.5, 0.9, 0.999, 1 - 1e-8])
    got = Poisson.from_rate(rate).quantile(jnp.asarray(q))
    np.testing.assert_array_equal(np.asarray(got), ss.poisson(rate).ppf(q))


def test_dirichlet_quantiles_are_beta_marginals():
    alpha = np.array([[0.2, 1.0, 5.0], [30.0, 2.0, 0.7]])
    got = Dirichlet.from_concentration(jnp.asarray(alpha)).quantile(jnp.asarray(Q))
    assert got.shape == (len(Q), 2, 3)
    rest = alpha.sum(-1, keepdims=True) - alpha
    np.testing.assert_allclose(np.asarray(got), ss.beta(alpha, rest).ppf(Q[:, None, None]),
                               rtol=1e-9, atol=1e-300)


def test_mvn_quantiles_are_normal_marginals():
    cov = np.array([[2.0, 0.3], [0.3, 0.5]])
    q = MultivariateNormal.from_loc_cov(jnp.array([1.0, -1.0]), jnp.asarray(cov))
    got = q.quantile(jnp.asarray(Q))
    assert got.shape == (len(Q), 2)
    ref = ss.norm([1.0, -1.0], np.sqrt(np.diag(cov))).ppf(Q[:, None])
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-9)


def test_discrete_quantiles():
    b = Bernoulli.from_probs(jnp.array([0.3, 0.9]))
    q = jnp.array([0.05, 0.5, 0.75, 0.95])
    np.testing.assert_array_equal(np.asarray(b.quantile(q)),
                                  ss.bernoulli([0.3, 0.9]).ppf(np.asarray(q)[:, None]))
    c = Categorical.from_probs(jnp.array([0.2, 0.5, 0.3]))
    np.testing.assert_array_equal(np.asarray(c.quantile(jnp.array([0.1, 0.2, 0.21, 0.69, 0.71, 1.0]))),
                                  [0, 0, 1, 1, 2, 2])


def test_quantile_scalar_q_shape_edges_and_jit():
    g = Gamma.from_shape_rate(jnp.array([1.0, 2.0]), 1.0)
    assert g.quantile(0.5).shape == (2,)
    edges = jax.jit(lambda d, q: d.quantile(q))(g, jnp.array([0.0, 1.0, -0.5, jnp.nan]))
    np.testing.assert_array_equal(np.asarray(edges[:2]), [[0, 0], [np.inf, np.inf]])
    assert np.isnan(np.asarray(edges[2:])).all()
    assert Normal.from_loc_scale(0.0, 1.0).quantile(jnp.array([[0.5, 0.5]])).shape == (1, 2)


def test_std_is_sqrt_variance():
    for d in (Normal.from_loc_scale(0.0, 3.0), Gamma.from_shape_rate(4.0, 2.0),
              Poisson.from_rate(9.0), Beta.from_concentrations(2.0, 2.0)):
        np.testing.assert_allclose(d.std(), jnp.sqrt(d.variance()))
    assert float(Normal.from_loc_scale(0.0, 3.0).std()) == pytest.approx(3.0)


def test_repr_shows_usual_parameters_on_one_line():
    assert repr(Normal.from_loc_scale(1.0, 2.0)) == "Normal(loc=1.0, scale=2.0)"
    assert repr(Gamma.from_shape_rate(2.0, 0.5)) == "Gamma(concentration=2.0, rate=0.5)"
    assert repr(Categorical.from_probs(jnp.array([0.25, 0.75]))) == \
        "Categorical(probs=[0.25, 0.75])"
    big = repr(Normal.from_loc_scale(jnp.arange(100.0), 1.0))
    assert "\n" not in big and "..." in big and "(shape (100,))" in big
    mvn = repr(MultivariateNormal.from_loc_cov(jnp.zeros(2), jnp.eye(2)))
    assert mvn == "MultivariateNormal(loc=[0.0, 0.0], cov=[[1.0, 0.0], [0.0, 1.0]])"
    for d in (InverseGamma.from_shape_scale(3.0, 1.0), Beta.from_concentrations(1.0, 2.0),
              Dirichlet.from_concentration(jnp.ones(3)), Bernoulli.from_probs(0.5),
              Poisson.from_rate(2.0)):
        assert repr(d).startswith(type(d).__name__ + "(") and "\n" not in repr(d)
