"""Extreme-but-valid parameters stay finite; invalid ones raise InvalidParameterError
(never a silent NaN); inside jit the traced check ``is_valid`` reports them instead."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from family_cases import CASES, as_jnp, jit_log_prob, jit_natural_from_mean, jit_sample

from vijax.errors import InvalidParameterError
from vijax.families import (Categorical, Gamma, InverseGamma, MultivariateNormal, Normal,
                            Poisson)

EXTREME = [(case, i) for case in CASES for i in range(len(case.extreme))]
INVALID = [(case, i) for case in CASES for i in range(len(case.invalid))]


def _point(fam):
    """A point in the support at which to evaluate log_prob."""
    if fam.support in ("binary", "count", "categorical"):
        return jnp.zeros(fam.batch_shape, jnp.int32)
    if fam.support == "unit_interval":
        return jnp.full(fam.batch_shape, 0.5, fam.dtype)
    if fam.support == "simplex":
        return jnp.full_like(fam.mean(), 1.0 / fam.mean().shape[-1])
    return fam.mean()


@jax.jit
def _everything(fam, moderate):
    return {
        "mean": fam.mean(), "variance": fam.variance(), "entropy": fam.entropy(),
        "log_prob": fam.log_prob(_point(fam)), "kl_self": fam.kl(fam),
        "kl_to": fam.kl(moderate), "kl_from": moderate.kl(fam),
        "mean_params": fam.mean_parameters(), "unconstrained": fam.to_unconstrained(),
        "log_normalizer": fam.log_normalizer_value(),
    }


@pytest.mark.parametrize("case,i", EXTREME, ids=lambda v: str(v))
def test_extreme_parameters_are_finite(case, i):
    fam = case.build(as_jnp(case.extreme[i]))
    assert bool(fam.is_valid())
    out = _everything(fam, case.build(as_jnp(case.examples[0])))
    for path, value in jax.tree_util.tree_leaves_with_path(out):
        assert np.all(np.isfinite(value)), (jax.tree_util.keystr(path), value)
    assert out["kl_to"] >= 0 and out["kl_from"] >= 0
    np.testing.assert_allclose(out["kl_self"], 0.0, atol=1e-6)
    # The solvers recover the mean parameters they are given (mean-space residual).
    _, mean_back, _ = jit_natural_from_mean(case.cls, out["mean_params"])
    for k, mu in out["mean_params"].items():
        np.testing.assert_allclose(mean_back[k], mu, rtol=1e-6,
                                   atol=1e-9 * (1 + np.max(np.abs(mu))), err_msg=k)


@pytest.mark.parametrize("case", [c for c in CASES if c.cls is not MultivariateNormal],
                         ids=str)
def test_extreme_parameters_are_finite_in_float32(case):
    """float32 (x64 off, JAX's default): the same extremes (except covariance
    eigenvalues of 1e-8, below float32 resolution relative to 1); nothing is upcast."""
    with jax.enable_x64(False):
        moderate = case.build(case.examples[0])
        assert moderate.dtype == jnp.float32
        if case.cls not in (InverseGamma, Poisson):   # (same sampler code / slow compile)
            x = jit_sample(moderate, jax.random.PRNGKey(0))
            assert x.dtype == (jnp.int32 if case.cls is Categorical else jnp.float32)
            assert np.all(np.isfinite(jit_log_prob(moderate, x)))
        for params in case.extreme:
            fam = case.build(params)
            out = _everything(fam, moderate)
            for path, value in jax.tree_util.tree_leaves_with_path(out):
                assert value.dtype == jnp.float32
                assert np.all(np.isfinite(value)), (params, jax.tree_util.keystr(path), value)


def test_near_singular_covariance_in_float32():
    with jax.enable_x64(False):
        rot = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
        fam = MultivariateNormal.from_loc_cov(np.ones(3), rot @ np.diag([1e-4, 1e-2, 1.0]) @ rot.T)
        out = _everything(fam, MultivariateNormal.from_loc_cov(np.zeros(3), np.eye(3)))
        assert all(np.all(np.isfinite(v)) and v.dtype == jnp.float32
                   for v in jax.tree_util.tree_leaves(out))
        x = jit_sample(fam, jax.random.PRNGKey(0))
        assert x.dtype == jnp.float32 and np.all(np.isfinite(jit_log_prob(fam, x)))


@pytest.mark.parametrize("case,i", INVALID, ids=lambda v: str(v))
def test_invalid_parameters_raise(case, i):
    make, name = case.invalid[i]
    with pytest.raises(InvalidParameterError, match=name):
        make()


def test_error_message_names_the_bad_value():
    with pytest.raises(InvalidParameterError, match=r"scale\[1\]=.*-2\.0"):
        Normal.from_loc_scale(np.zeros(3), np.array([1.0, -2.0, 3.0]))
    with pytest.raises(InvalidParameterError, match="positive definite"):
        MultivariateNormal.from_loc_cov(np.zeros(2), np.array([[1.0, 0.0], [0.0, -1e-3]]))


def test_traced_invalid_parameters_are_flagged_not_raised():
    @jax.jit
    def validity(scale, concentration, logits):
        return (Normal.from_loc_scale(0.0, scale).is_valid(),
                Gamma.from_shape_rate(concentration, 1.0).is_valid(),
                Categorical.from_logits(logits).is_valid())

    assert [bool(v) for v in validity(0.0, 0.0, jnp.array([0.0, jnp.nan]))] == [False] * 3
    assert [bool(v) for v in validity(1.0, 2.0, jnp.array([0.0, 1.0]))] == [True] * 3


def test_wrong_keys_or_shapes_raise():
    with pytest.raises(InvalidParameterError, match="expected keys"):
        Normal.from_natural({"x": 1.0})
    with pytest.raises(ValueError, match="shape"):
        MultivariateNormal.from_loc_cov(np.zeros(3), np.eye(2))


def test_zero_probabilities_stay_finite():
    """Probabilities 0 are stored as the finite logit log(tiny): no NaN anywhere."""
    cat = Categorical.from_probs(jnp.array([1.0, 0.0, 0.0]))
    other = Categorical.from_probs(jnp.array([0.2, 0.3, 0.5]))
    assert np.all(np.isfinite(cat.logits))
    np.testing.assert_allclose(cat.entropy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(cat.probs, [1.0, 0.0, 0.0], atol=1e-300)
    np.testing.assert_allclose(cat.log_prob(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(cat.kl(other), -np.log(0.2), rtol=1e-12)
    assert np.isfinite(other.kl(cat)) and other.kl(cat) > 100
