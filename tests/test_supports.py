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


# ------------------------------------------------------------ the support classes
ALL = CONTINUOUS + [vj.binary((2,)), vj.categorical(3, (2,)), vj.count((2,))]


@pytest.mark.parametrize("sup", ALL, ids=lambda s: s.kind)
def test_support_kind_builds_its_class_and_round_trips(sup):
    import copy
    import dataclasses
    import pickle
    from vijax.supports import SUPPORTS
    assert type(sup) is SUPPORTS[sup.kind] and sup.kind == type(sup).name
    again = vj.Support(sup.kind, sup.shape, sup.num_categories)
    assert again == sup and hash(again) == hash(sup) and type(again) is type(sup)
    assert pickle.loads(pickle.dumps(sup)) == sup and copy.deepcopy(sup) == sup
    assert type(dataclasses.replace(sup, shape=(5,))) is type(sup)
    pts = sup.probe_points()
    assert pts.shape == (4,) + sup.value_shape and pts.dtype == sup.dtype()
    assert bool(jnp.all(sup.contains(pts)))


def test_base_stats_per_kind():
    stats = {s.kind: s.base_stats(s.canonical_point()) for s in ALL}
    assert set(stats["real"]) == {"x"} and set(stats["binary"]) == {"x"}
    assert set(stats["positive"]) == {"x", "log"} and set(stats["simplex"]) == {"x", "log"}
    assert set(stats["unit_interval"]) == {"x", "log", "log1m"}
    np.testing.assert_allclose(stats["unit_interval"]["log1m"], np.log(1 - 0.4142))
    assert stats["count"]["x"].dtype == np.float64
    np.testing.assert_array_equal(stats["categorical"]["onehot"], [[1, 0, 0], [1, 0, 0]])


def _atom(stat, power):
    from vijax.conjugacy import terms as T
    return T.Atom("z", stat, (), None, power)


INF = float("inf")
# (support, statistic, power) -> (lo, hi, lo included, hi included), None: unknown
RANGES = [
    (vj.real(), "x", 1.0, (-INF, INF, False, False)),
    (vj.real(), "x", 2.0, (0.0, INF, True, False)),
    (vj.real(), "x", -1.0, None),
    (vj.real(), "log", 1.0, None),
    (vj.positive(), "x", -1.0, (0.0, INF, False, False)),
    (vj.positive(), "x", 0.5, (0.0, INF, False, False)),
    (vj.positive(), "log", 1.0, (-INF, INF, False, False)),
    (vj.positive(), "log1m", 1.0, None),
    (vj.unit_interval(), "x", 2.0, (0.0, 1.0, False, False)),
    (vj.unit_interval(), "x", -1.0, (1.0, INF, False, False)),
    (vj.unit_interval(), "log1m", 1.0, (-INF, 0.0, False, False)),
    (vj.simplex(3), "log", 1.0, (-INF, 0.0, False, False)),
    (vj.binary(), "x", 1.0, (0.0, 1.0, True, True)),
    (vj.binary(), "x", -1.0, None),
    (vj.count(), "x", 1.0, (0.0, INF, True, False)),
    (vj.count(), "log", 1.0, None),
    (vj.categorical(3), "onehot", 1.0, (0.0, 1.0, True, True)),
    (vj.categorical(3), "x", 1.0, None),
]


@pytest.mark.parametrize("sup,stat,power,expected", RANGES)
def test_atom_range_follows_the_declared_interval(sup, stat, power, expected):
    from vijax.conjugacy.intervals import UNKNOWN, Range, atom_range
    got = atom_range(sup, _atom(stat, power))
    assert got == (UNKNOWN if expected is None else Range(*expected))
