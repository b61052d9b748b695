"""Supports: membership, canonical points, bijections and their log-Jacobians."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import vijax as vj

CONTINUOUS = [vj.real((3,)), vj.positive((3,)), vj.unit_interval((3,)), vj.simplex(4, (2,))]


@pytest.mark.parametrize("sup", CONTINUOUS + [vj.binary((2,)), vj.categorical(3, (2,)), vj.count()])
def test_canonical_point_is_inside(sup):
    x = sup.canonical_point()
    assert x.shape == sup.value_shape
    assert bool(jnp.all(sup.contains(x)))


@pytest.mark.parametrize("sup", CONTINUOUS)
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_bijection_round_trip_and_jacobian(sup, seed):
    u = jax.random.normal(jax.random.key(seed), sup.unconstrained_shape)
    x = sup.from_unconstrained(u)
    assert bool(jnp.all(sup.contains(x)))
    np.testing.assert_allclose(sup.to_unconstrained(x), u, rtol=1e-6, atol=1e-8)
    # log|det J| against autodiff, one element's event at a time
    flat_u = u.reshape(-1, u.shape[-1]) if sup.kind == "simplex" else u.reshape(-1, 1)
    for i, ui in enumerate(flat_u):
        if sup.kind == "simplex":
            J = jax.jacfwd(lambda v: sup.from_unconstrained(v)[:-1])(ui)
        else:
            J = jax.jacfwd(lambda v: sup.from_unconstrained(v))(ui)
        ld = jnp.linalg.slogdet(jnp.atleast_2d(J))[1]
        np.testing.assert_allclose(np.asarray(sup.log_det_jacobian(ui)).reshape(-1)[0]
                                   if sup.kind != "simplex" else sup.log_det_jacobian(ui), ld,
                                   rtol=1e-6, atol=1e-8)


def test_membership_rejects_outside():
    assert not bool(vj.positive().contains(-1.0))
    assert not bool(vj.unit_interval().contains(1.0))
    assert not bool(vj.simplex(3).contains(jnp.array([0.5, 0.6, 0.1])))
    assert not bool(vj.categorical(3).contains(3))
    assert not bool(vj.binary().contains(2))


def test_bad_declarations_raise():
    with pytest.raises(vj.ModelSpecError):
        vj.simplex(1)
    with pytest.raises(vj.ModelSpecError):
        vj.categorical(2.5)
    with pytest.raises(vj.ModelSpecError):
        vj.real(shape=(-1,))
    with pytest.raises(vj.ModelSpecError):
        vj.Support("complex")
    with pytest.raises(vj.ModelSpecError):
        vj.binary().from_unconstrained(jnp.zeros(()))
