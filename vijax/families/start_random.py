"""Cheap random numbers for starting points (the families' ``default_start``).

A fit's default start only has to break symmetry (mixture responsibilities, small random
means), but a ``jax.random`` draw compiles the threefry hash: 0.3-0.5 s of XLA compile per
draw in every fresh process on a CPU, more than the analysis of a model. These draws come
from a counter-based hash instead (the murmur3 32-bit finalizer of the element's index
mixed with the key's data): a few integer operations, elementwise, so the same key gives
the same numbers under ``jit`` and ``vmap``. Not for anything statistical: samplers and
Monte Carlo estimates use ``jax.random``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_GOLDEN = 0x9E3779B9


def _fmix32(h):
    """murmur3's 32-bit finalizer: an invertible mix in which every input bit affects
    every output bit."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _words(key):
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) \
        else jnp.asarray(key)
    return [data[..., j].astype(jnp.uint32) for j in range(data.shape[-1])]


def _hash(key, counter):
    h = counter * jnp.uint32(_GOLDEN)
    for w in _words(key):
        h = _fmix32(h ^ w) + jnp.uint32(_GOLDEN)
    return _fmix32(h)


def fold(key, i: int):
    """A new key of the same kind, from ``key`` and the integer ``i`` (a cheap
    ``jax.random.fold_in`` for start keys)."""
    words = _words(key)
    new = jnp.stack([_hash(key, jnp.uint32(2 * i + j + 1)) ^ w for j, w in enumerate(words)],
                    axis=-1)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(new, impl=jax.random.key_impl(key))
    return new.astype(jnp.asarray(key).dtype)


def uniform(key, shape, dtype, minval=0.0, maxval=1.0):
    """Uniform draws on the open interval (minval, maxval): 24 random bits in float32,
    53 in float64."""
    shape = tuple(shape)
    n = math.prod(shape)
    dtype = jnp.dtype(dtype)
    idx = jnp.arange(n, dtype=jnp.uint32)
    if dtype.itemsize >= 8:
        hi = (_hash(key, 2 * idx) >> 5).astype(dtype)
        lo = (_hash(key, 2 * idx + 1) >> 6).astype(dtype)
        u = (hi * 2.0 ** 26 + lo + 0.5) * 2.0 ** -53
    else:
        u = ((_hash(key, idx) >> 8).astype(dtype) + 0.5) * 2.0 ** -24
    u = u.reshape(shape)
    return minval + (maxval - minval) * u


def normal(key, shape, dtype):
    """Standard normal draws (Box-Muller on two uniforms)."""
    u = uniform(key, (2,) + tuple(shape), dtype)
    return jnp.sqrt(-2.0 * jnp.log(u[0])) * jnp.cos(2.0 * jnp.pi * u[1])


def exponential(key, shape, dtype):
    """Exp(1) draws, ``-log U``."""
    return -jnp.log(uniform(key, shape, dtype))
