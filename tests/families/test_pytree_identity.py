"""Families as pytrees keep their class in the tree structure.

jaxlib 0.10's ``register_dataclass`` nodes of two classes with the same fields compare
equal (with different hashes); a jitted function's cache could then run a Poisson
through the executable traced for a Bernoulli (both ``{"x": eta}``), which the suite
saw twice as a Poisson ``log_prob`` of ``log 1/2``. vijax registers its families so that
the structures differ."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from vijax.families import (Bernoulli, Beta, Categorical, Dirichlet, Gamma, InverseGamma,
                            MultivariateT, Normal, NormalGamma, Poisson, StudentT)
from vijax.families import registry


def _examples():
    one = jnp.ones(())
    out = [Poisson({"x": 0.0 * one}), Bernoulli({"x": 0.0 * one}),
           StudentT(3.0 * one, 0.0 * one, one), MultivariateT(3.0 * one, jnp.zeros(2),
                                                              jnp.eye(2))]
    out += [Gamma.from_shape_rate(2.0, 1.0), InverseGamma.from_shape_scale(2.0, 1.0),
            Normal.from_loc_scale(0.0, 1.0), Beta.from_concentrations(2.0, 2.0),
            Dirichlet.from_concentration(jnp.ones(3)), Categorical.from_probs(jnp.ones(3) / 3),
            NormalGamma.from_params(0.0, 1.0, 2.0, 1.0)]
    return out


def test_structures_of_different_families_differ():
    fams = _examples()
    for a, b in itertools.combinations(fams, 2):
        sa, sb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
        assert sa != sb, (type(a).__name__, type(b).__name__)
    # and equal for two objects of one family (one compile per class and shapes)
    p = Poisson.from_rate(2.0)
    assert jax.tree_util.tree_structure(p) == jax.tree_util.tree_structure(_examples()[0])


def test_round_trip_and_key_paths():
    for fam in _examples():
        leaves, tree = jax.tree_util.tree_flatten(fam)
        back = jax.tree_util.tree_unflatten(tree, leaves)
        assert type(back) is type(fam)
        for x, y in zip(leaves, jax.tree_util.tree_leaves(back)):
            np.testing.assert_array_equal(x, y)
        paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(fam)]
        assert all(p.startswith(".") for p in paths), paths


def test_one_jitted_function_serves_poisson_and_bernoulli():
    f = jax.jit(lambda fam, x: fam.log_prob(x))
    x = jnp.arange(4.0) % 2
    b, p = Bernoulli({"x": jnp.zeros(())}), Poisson({"x": jnp.zeros(())})
    np.testing.assert_allclose(f(b, x), np.log(0.5), rtol=1e-12)
    # Poisson(1): -1 - log x!
    np.testing.assert_allclose(f(p, x), -1.0 - jax.scipy.special.gammaln(x + 1.0), rtol=1e-12)
    assert f._cache_size() == 2
    assert registry.get("Poisson") is Poisson
