"""Exact identities of every family: grad A = mean parameters, mean <-> natural round
trips, the unconstrained parameterization, and pytree behaviour under jit/vmap/grad."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from family_cases import CASES, as_jnp, jit_entropy, jit_natural_from_mean, support_points
from hypothesis import given, settings
from hypothesis import strategies as st

from vijax.families import (FAMILIES, Categorical, ExponentialFamily, Gamma,
                            MultivariateNormal, Normal)

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)
parametrize_cases = pytest.mark.parametrize("case", CASES, ids=str)


def assert_dict_close(a, b, rtol=1e-7, atol=1e-9):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=rtol, atol=atol,
                                   err_msg=k)


def _canonical(cls, natural):
    """Categorical logits are defined up to a constant: compare normalized ones."""
    if cls is Categorical:
        return {"onehot": jax.nn.log_softmax(natural["onehot"], -1)}
    return natural


@jax.jit
def _grad_log_normalizer(fam):
    return jax.grad(lambda n: jnp.sum(type(fam).log_normalizer(n)))(fam.natural)


@parametrize_cases
@SETTINGS
@given(data=st.data())
def test_mean_params_equal_grad_of_log_normalizer(case, data):
    fam = case.build(as_jnp(data.draw(case.params)))
    assert_dict_close(fam.mean_parameters(), _grad_log_normalizer(fam), rtol=1e-9)


@parametrize_cases
@SETTINGS
@given(data=st.data())
def test_natural_mean_round_trips(case, data):
    fam = case.build(as_jnp(data.draw(case.params)))
    cls = case.cls
    mean = fam.mean_parameters()
    back, mean_back, product = jit_natural_from_mean(cls, mean)
    if product is not None:   # gradients flow through the Newton solvers
        np.testing.assert_allclose(product, np.eye(len(product)), atol=1e-7)
    assert_dict_close(_canonical(cls, back), _canonical(cls, fam.natural), rtol=1e-7)
    assert_dict_close(mean_back, mean, rtol=1e-8, atol=1e-10)
    assert_dict_close(_canonical(cls, cls.from_mean(mean).natural),
                      _canonical(cls, fam.natural), rtol=1e-7)


@parametrize_cases
@SETTINGS
@given(data=st.data())
def test_unconstrained_round_trip(case, data):
    fam = case.build(as_jnp(data.draw(case.params)))
    u = fam.to_unconstrained()
    assert all(jnp.all(jnp.isfinite(v)) for v in u.values())
    back = case.cls.from_unconstrained(u)
    assert_dict_close(back.natural, fam.natural, rtol=1e-9, atol=1e-9)
    assert_dict_close(back.to_unconstrained(), u, rtol=1e-9, atol=1e-9)


@parametrize_cases
def test_class_protocol(case):
    cls = case.cls
    assert FAMILIES[cls.__name__] is cls
    assert issubclass(cls, ExponentialFamily)
    assert cls.support in {"real", "positive", "unit_interval", "simplex", "binary",
                           "categorical", "count"}
    assert set(cls.stat_event_ndims) == set(cls.stat_names)
    fam = case.build(as_jnp(case.examples[0]))
    assert set(fam.natural) == set(cls.stat_names)
    with pytest.raises(Exception):
        fam.natural = {}   # frozen


def test_declared_statistics_and_supports():
    expected = {
        "Normal": (("x", "x2"), 0, "real"), "MultivariateNormal": (("x", "xxT"), 1, "real"),
        "Gamma": (("x", "log"), 0, "positive"), "InverseGamma": (("inv", "log"), 0, "positive"),
        "Beta": (("log", "log1m"), 0, "unit_interval"), "Dirichlet": (("log",), 1, "simplex"),
        "Categorical": (("onehot",), 0, "categorical"), "Bernoulli": (("x",), 0, "binary"),
        "Poisson": (("x",), 0, "count"), "MarkovChain": (("unary", "pair"), 1, "categorical"),
        "Wishart": (("x", "logdet"), 2, "positive_definite"),
        "InverseWishart": (("inv", "logdet"), 2, "positive_definite"),
        "GaussMarkov": (("x", "xxT", "pair"), 2, "real"),
    }
    assert set(FAMILIES) == set(expected)
    for name, (stats, event_ndim, support) in expected.items():
        cls = FAMILIES[name]
        assert (set(cls.stat_names), cls.event_ndim, cls.support) == (set(stats), event_ndim,
                                                                     support)


@jax.jit
def _transformed(batch, other, x):
    """Entropy, KL and log_prob under vmap and on a batch (``x``: sample shape (4,)
    then the batch); the unconstrained gradient path."""
    cls = type(other)
    flipped = jax.tree_util.tree_map(lambda x: x[::-1], batch)

    def objective(u):
        q = cls.from_unconstrained(u)
        return jnp.sum(q.entropy()) + jnp.sum(q.kl(other))

    u = batch.to_unconstrained()
    return {"vmap_entropy": jax.vmap(lambda f: f.entropy())(batch),
            "batch_entropy": batch.entropy(),
            "vmap_kl": jax.vmap(lambda p, q: p.kl(q))(batch, flipped),
            "batch_log_prob": batch.log_prob(x),
            "vmap_log_prob": jax.vmap(lambda f, x: f.log_prob(x), (0, 1), 1)(batch, x),
            "grads": jax.grad(objective)(u)}


@parametrize_cases
def test_pytree_jit_vmap_grad(case):
    fams = [case.build(as_jnp(r)) for r in case.examples]
    leaves, treedef = jax.tree_util.tree_flatten(fams[0])
    assert len(leaves) == len(case.cls.stat_names)
    assert type(jax.tree_util.tree_unflatten(treedef, leaves)) is case.cls

    batch = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *fams)
    assert batch.batch_shape == (3,)
    x = jnp.stack([support_points(f, 4) for f in fams], 1)
    out = _transformed(batch, fams[1], x)
    assert out["batch_log_prob"].shape == (4, 3)
    np.testing.assert_allclose(out["batch_log_prob"], out["vmap_log_prob"], rtol=1e-10)
    assert np.all(np.isfinite(out["batch_log_prob"]))
    expected = np.array([jit_entropy(f) for f in fams])
    np.testing.assert_allclose(out["vmap_entropy"], expected, rtol=1e-10)
    np.testing.assert_allclose(out["batch_entropy"], expected, rtol=1e-10)
    assert all(v.dtype == jnp.float64 for v in jax.tree_util.tree_leaves(out))
    np.testing.assert_allclose(out["vmap_kl"][1], 0.0, atol=1e-10)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(out["grads"]))


def test_mvn_accepts_nonsymmetric_natural():
    fam = MultivariateNormal.from_loc_cov(jnp.array([1.0, -1.0]),
                                          jnp.array([[2.0, 0.3], [0.3, 1.0]]))
    skew = jnp.array([[0.0, 0.7], [-0.7, 0.0]])
    lopsided = MultivariateNormal({"x": fam.natural["x"], "xxT": fam.natural["xxT"] + skew})
    n = dict(lopsided.natural)
    np.testing.assert_allclose(MultivariateNormal.log_normalizer(n),
                               fam.log_normalizer_value(), rtol=1e-12)
    assert_dict_close(MultivariateNormal.mean_params(n), fam.mean_parameters(), rtol=1e-12)
    assert_dict_close(_grad_log_normalizer(lopsided), fam.mean_parameters(), rtol=1e-10)
    np.testing.assert_allclose(lopsided.cov, fam.cov, rtol=1e-12)


def test_usual_parameter_accessors():
    n = Normal.from_loc_scale(1.5, 2.0)
    np.testing.assert_allclose((n.loc, n.scale, n.variance()), (1.5, 2.0, 4.0))
    g = Gamma.from_shape_rate(3.0, 2.0)
    np.testing.assert_allclose((g.concentration, g.rate, g.mean(), g.variance()),
                               (3.0, 2.0, 1.5, 0.75))
    cov = jnp.array([[2.0, 0.3], [0.3, 1.0]])
    m = MultivariateNormal.from_loc_precision(jnp.array([1.0, 2.0]), jnp.linalg.inv(cov))
    np.testing.assert_allclose(m.covariance(), cov, rtol=1e-12)
    np.testing.assert_allclose(m.variance(), jnp.diag(cov), rtol=1e-12)
    np.testing.assert_allclose(m.loc, [1.0, 2.0], rtol=1e-12)
    c = Categorical.from_probs(jnp.array([0.2, 0.8]))
    np.testing.assert_allclose(c.probs, [0.2, 0.8], rtol=1e-12)
    with pytest.raises(ValueError, match="num_classes"):
        Categorical.stats(jnp.array([0, 1]))
    np.testing.assert_allclose(Categorical.stats(jnp.array(1), num_classes=3)["onehot"],
                               [0.0, 1.0, 0.0])


def test_kl_requires_same_family():
    with pytest.raises(TypeError, match="Normal"):
        Normal.from_loc_scale(0.0, 1.0).kl(Gamma.from_shape_rate(1.0, 1.0))

