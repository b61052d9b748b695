"""The default starts' cheap generator (vijax/families/start_random.py): uniform on the
open unit interval, key-dependent, and the same numbers under jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vijax.families import start_random as sr


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_uniform_is_uniform_on_the_open_interval(dtype):
    u = np.asarray(sr.uniform(jax.random.key(3), (20000,), dtype))
    assert u.dtype == np.dtype(dtype) and (u > 0).all() and (u < 1).all()
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    # neighbouring counters are not correlated
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 4 / np.sqrt(u.size)


def test_normal_and_exponential_moments():
    z = np.asarray(sr.normal(jax.random.key(1), (40000,), jnp.float64))
    assert stats.kstest(z, "norm").pvalue > 1e-3
    e = np.asarray(sr.exponential(jax.random.key(2), (40000,), jnp.float64))
    assert stats.kstest(e, "expon").pvalue > 1e-3


def test_keys_and_folds_give_different_streams():
    k = jax.random.key(0)
    a = sr.uniform(k, (64,), jnp.float32)
    b = sr.uniform(jax.random.key(1), (64,), jnp.float32)
    c = sr.uniform(sr.fold(k, 0), (64,), jnp.float32)
    d = sr.uniform(sr.fold(k, 1), (64,), jnp.float32)
    for x, y in [(a, b), (a, c), (c, d)]:
        assert not np.allclose(x, y)
    np.testing.assert_array_equal(a, sr.uniform(k, (64,), jnp.float32))  # deterministic
    assert jax.random.key_impl(sr.fold(k, 3)) == jax.random.key_impl(k)


def test_same_numbers_under_jit_and_vmap():
    keys = jax.random.split(jax.random.key(5), 3)

    def draw(key):
        k = sr.fold(key, 2)
        return sr.normal(k, (4, 3), jnp.float32), sr.exponential(key, (5,), jnp.float32)

    batched = jax.jit(jax.vmap(draw))(keys)
    for i, key in enumerate(keys):
        single = draw(key)
        for b, s in zip(batched, single):
            np.testing.assert_allclose(b[i], s, rtol=1e-6)
