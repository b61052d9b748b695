"""The stacked matrix products (vijax.conjugacy.fused) against plain autodiff of F and
plain einsum contractions, on every conjugate zoo model and every block."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vijax.conjugacy import fused
from vijax.conjugacy import terms as T
from vijax.inference import cavi
from vijax.models import CONJUGATE

from .helpers import RandomFactor


def _mean_params(compiled, rng):
    return {n: {s: jnp.asarray(v) for s, v in RandomFactor(i, rng).mean_params().items()}
            for n, i in compiled.infos.items()}


@pytest.mark.parametrize("name", CONJUGATE)
def test_block_gradient_equals_autodiff_of_F(zoo, name, rng):
    compiled = zoo[name].compiled
    mu = _mean_params(compiled, rng)
    for block in compiled.infos:
        rest, grad = cavi.rest_and_grad_block(compiled, mu, block)
        ref = jax.grad(lambda m: compiled.F({**mu, block: m}))(mu[block])
        for s in ref:
            np.testing.assert_allclose(np.asarray(grad[s]), np.asarray(ref[s]), rtol=1e-9,
                                       atol=1e-9, err_msg=f"{name}:{block}:{s}")
        value = rest + sum(jnp.sum(grad[s] * mu[block][s]) for s in grad)
        np.testing.assert_allclose(float(value), float(compiled.F(mu)), rtol=1e-10)


def test_mixture_terms_are_stacked_into_one_product(zoo, rng):
    """The mixture's x and x^2 terms share the layout: one group, no leftovers."""
    compiled = zoo["gaussian_mixture"].compiled
    mu = _mean_params(compiled, rng)
    holding = [t for t in compiled.terms if any(a.latent == "z" for a in t.atoms)]
    grads, rest = fused.block_gradients(holding, mu, "z", compiled.sizes)
    data_terms = [t for t in holding if t.consts and jnp.ndim(t.consts[0][0]) == 2]
    assert len(data_terms) >= 2 and not any(t is r for t in data_terms for r in rest)
    assert set(grads) == {"onehot"}


def test_contract_with_block_equals_einsum(rng):
    sizes = {0: 7, 1: 3, 2: 4, 3: 5}
    m = jnp.asarray(rng.normal(size=(7, 3)))                 # labels (n, k)
    c1 = jnp.asarray(rng.normal(size=(7, 4)))                # labels (n, d)
    c2 = jnp.asarray(rng.normal(size=(5, 7)))                # labels (e, n)
    c3 = jnp.asarray(rng.normal(size=(7, 4)))                # diagonal in n: not fused
    items = [(c1, (0, 2), m, (0, 1), (1, 2)),
             (c2, (3, 0), m, (0, 1), (3, 1)),
             (c3, (0, 2), m, (0, 1), (0, 1, 2))]
    out = fused.contract_with_block(items, sizes)
    np.testing.assert_allclose(np.asarray(out[0]), np.einsum("nd,nk->kd", c1, m), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(out[1]), np.einsum("en,nk->ek", c2, m), rtol=1e-12)
    assert out[2] is None
    ref = T._einsum([(c3, (0, 2)), (m, (0, 1))], (0, 1, 2), sizes)
    assert ref.shape == (7, 3, 4)
