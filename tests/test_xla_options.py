"""vijax's programs compile with XLA's classic CPU emitters (vijax._xla): the options on
the CPU and their escape hatch, a fallback where XLA refuses them, the wrapper is the
jitted function (trace once, compile once, ``lower`` passes through), results equal a
default jit's, and nested under the user's jit/vmap/grad it is a plain jit."""

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _xla


def test_options_on_cpu_and_escape_hatch(monkeypatch):
    assert jax.default_backend() == "cpu"
    assert _xla.compiler_options() == {"xla_cpu_use_fusion_emitters": False}
    monkeypatch.setenv("VIJAX_XLA_DEFAULTS", "1")
    assert _xla.compiler_options() is None


def test_an_xla_without_the_option_gets_defaults(monkeypatch):
    """A release whose XLA refuses the option compiles with its defaults."""
    monkeypatch.setattr(_xla, "CPU_OPTIONS", {"xla_no_such_option_anywhere": True})
    monkeypatch.setattr(_xla, "_SUPPORTED", [])
    assert _xla.compiler_options() is None
    g = _xla.jit(lambda x: x * 3.0)
    assert float(g(jnp.ones(()))) == 3.0


def test_jit_wrapper_is_the_jitted_function():
    calls = []

    def f(x, n):
        calls.append(1)
        return jnp.sum(jnp.sin(x) ** n)

    g = _xla.jit(f, static_argnames=("n",))
    x = jnp.linspace(0.0, 1.0, 7)
    np.testing.assert_allclose(g(x, n=2), jnp.sum(jnp.sin(x) ** 2), rtol=1e-14)
    g(x + 1.0, n=2)
    assert len(calls) == 1 and g._cache_size() == 1  # traced once, compiled once
    lowered = g.lower(x, n=3)  # the jitted function's own API passes through
    assert lowered.compile()(x) == g(x, n=3)
    # the option is part of the compile: the executable differs from a default jit's
    # cache entry, while the numbers agree
    plain = jax.jit(f, static_argnames=("n",))
    np.testing.assert_allclose(plain(x, n=3), g(x, n=3), rtol=1e-14)
    assert g.__wrapped__ is f

def test_decorator_forms():
    @_xla.jit
    def h(x):
        return x * 2.0

    import functools

    @functools.partial(_xla.jit, static_argnums=(1,))
    def k(x, m):
        return x * m

    assert float(h(jnp.ones(()))) == 2.0 and float(k(jnp.ones(()), 3)) == 3.0


def test_nested_in_a_user_jit_and_vmap():
    """Inside the user's jit / vmap the program is a plain nested jit (JAX refuses
    compile options there); the values are the same."""
    g = _xla.jit(lambda x: jnp.cumsum(x) * 2.0)
    x = jnp.arange(5.0)
    np.testing.assert_array_equal(jax.jit(g)(x), g(x))
    np.testing.assert_array_equal(jax.vmap(g)(jnp.stack([x, x + 1])),
                                  jnp.stack([g(x), g(x + 1)]))
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(g(v)))(x), 2.0 * jnp.arange(5.0, 0, -1))
