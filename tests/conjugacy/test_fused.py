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


# --------------------------------------------------------------------------- orientations
def _grad_ref(t, stats, name, sizes):
    return jax.grad(lambda m: jnp.sum(T.eval_term(t, {**stats, name: m}, sizes)))(stats[name])


@pytest.mark.parametrize("layout", [(0, 1, 2), (1, 2, 0), (1, 0, 2)])  # rs, sr, interleaved
def test_block_gradients_read_a_constant_in_any_layout(rng, layout, monkeypatch):
    """``sum C[n,i,j] r[n,k] L[k,i,j]`` for either atom, the constant stored with its
    plate axis first, last or in the middle; two terms sharing the constant (their W add)
    and a second constant, stacked or (over the stacking limit) multiplied apart."""
    sizes = {0: 6, 1: 3, 2: 4, 3: 5}                    # n, i, j, k
    full = rng.normal(size=(6, 3, 4))
    c = jnp.asarray(np.transpose(full, layout))
    cl = tuple((0, 1, 2)[a] for a in layout)
    c2 = jnp.asarray(rng.normal(size=(6, 3, 4)))
    stats = {"r": {"x": jnp.asarray(rng.normal(size=(6, 5)))},
             "L": {"x": jnp.asarray(rng.normal(size=(5, 3, 4))),
                   "y": jnp.asarray(rng.normal(size=(5, 3, 4)))}}
    terms = [T.Term(((c, cl),), (T.Atom("r", "x", (0, 3)), T.Atom("L", "x", (3, 1, 2))), ()),
             T.Term(((c, cl),), (T.Atom("r", "x", (0, 3)), T.Atom("L", "y", (3, 1, 2))), ()),
             T.Term(((c2, (0, 1, 2)),), (T.Atom("r", "x", (0, 3)), T.Atom("L", "y", (3, 1, 2))),
                    ())]
    for stack_max in (fused.STACK_WIDTH, 0):
        monkeypatch.setattr(fused, "STACK_WIDTH", stack_max)
        for name in ("r", "L"):
            grads, rest = fused.block_gradients(terms, stats, name, sizes)
            assert not rest
            for s in stats[name]:
                ref = sum(_grad_ref(t, stats, name, sizes)[s] for t in terms)
                np.testing.assert_allclose(np.asarray(grads[s]), np.asarray(ref), rtol=1e-12,
                                           atol=1e-12, err_msg=f"{name}:{s}:{stack_max}")


# --------------------------------------------------------------------------- merging
def test_contraction_cost_finds_the_cheapest_order():
    sizes = {"n": 100, "i": 3, "j": 3, "k": 5}
    # x_ni x_nj -> nij (N D^2 = 900), then L_kij -> nk (N K D^2 = 4500); x_ni L_kij
    # first would cost 4500 + 1500
    assert fused.contraction_cost([("n", "i"), ("n", "j"), ("k", "i", "j")], ("n", "k"),
                                  sizes) == (5400, 900)
    # x_ni x_nj summed over n first: X^T X (N D^2 = 900), then with L (K D^2 = 45)
    assert fused.contraction_cost([("n", "i"), ("n", "j"), ("k", "i", "j")], ("k",),
                                  sizes) == (945, 9)


def _plate_term(rng, with_k):
    """``-1/2 sum_n x_n^T L x_n`` times one-hot ``r[n, k]`` (mixture, K = 4) or times a
    per-point scale ``w[n]`` (Student-t scale mixture)."""
    n, d, k = 30, 3, 4
    sizes = {0: n, 1: d, 2: d, 3: k}
    x = jnp.asarray(rng.normal(size=(n, d)))
    consts = ((np.asarray(-0.5), ()), (x, (0, 1)), (x, (0, 2)))
    if with_k:
        atoms = (T.Atom("z", "onehot", (0, 3)), T.Atom("L", "L", (3, 1, 2)))
        stats = {"z": {"onehot": jnp.asarray(rng.dirichlet(np.ones(k), n))},
                 "L": {"L": jnp.asarray(rng.normal(size=(k, d, d)))}}
    else:
        atoms = (T.Atom("w", "x", (0,)), T.Atom("L", "L", (1, 2)))
        stats = {"w": {"x": jnp.asarray(rng.lognormal(size=n))},
                 "L": {"L": jnp.asarray(rng.normal(size=(d, d)))}}
    return T.Term(consts, atoms, ()), stats, sizes


def test_mixture_quadratic_form_merges_x_outer_x_once(rng):
    """The mixture's term gets one constant ``-x_n x_n^T / 2`` (reused K times per use);
    the scale mixture's keeps ``x`` twice (each merged entry would serve one product)."""
    t, stats, sizes = _plate_term(rng, True)
    m = fused.merge_constants(t, sizes)
    assert len(m.consts) == 1 and jnp.shape(m.consts[0][0]) == (30, 3, 3)
    sizes_p = dict(sizes)
    p = fused.merge_constants(t, sizes_p, lambda n: sizes_p.setdefault(99, n) and 99)
    assert [jnp.shape(c) for c, _ in p.consts] == [(30, 6), (6, 3, 3)]  # i <= j pairs
    for merged, sz in ((m, sizes), (p, sizes_p)):
        np.testing.assert_allclose(float(T.eval_term(merged, stats, sz)),
                                   float(T.eval_term(t, stats, sizes)), rtol=1e-13)
        for name in stats:  # any L (not only symmetric ones): the packing is exact
            grads, rest = fused.block_gradients([merged], stats, name, sz)
            assert not rest
            ref = _grad_ref(t, stats, name, sizes)
            for s in ref:
                np.testing.assert_allclose(np.asarray(grads[s]), np.asarray(ref[s]),
                                           rtol=1e-12)
    t, stats, sizes = _plate_term(rng, False)
    assert fused.merge_constants(t, sizes) is t


def _full_gmm(dtype):
    from vijax.models.bayesian_gmm import BGMMPrior, bayesian_gmm
    n, d, k = 40, 3, 4
    x = np.random.default_rng(5).normal(size=(n, d)) * np.array([1.0, 2.0, 0.5])
    prior = BGMMPrior(alpha0=0.5, beta0=1.0, mean=x.mean(0), dof=float(d) + 1.0,
                      covariance=np.cov(x.T))
    return bayesian_gmm(n, k, d, prior, "full", block=False).model, jnp.asarray(x, dtype)


def _compiled(model, x, merge):
    from vijax.conjugacy import program
    with pytest.MonkeyPatch.context() as m:
        if not merge:
            m.setattr(fused, "merge_data_constants", lambda c: c)
        program.clear_cache()
        try:
            return program.program_for(model, x).materialize(x)
        finally:
            program.clear_cache()


def _gmm_point(rng, dtype):
    return {"pi": jnp.asarray(rng.dirichlet(np.ones(4)), dtype),
            "z": jnp.asarray(rng.integers(0, 4, 40), jnp.int32),
            "mu": jnp.asarray(rng.normal(size=(4, 3)), dtype),
            "L": jnp.asarray(np.stack([np.eye(3) + 0.3 * np.outer(v, v)
                                       for v in rng.normal(size=(4, 3))]), dtype)}


@pytest.fixture(scope="module")
def full_gmm64():
    model, x = _full_gmm("float64")
    merged, plain = _compiled(model, x, True), _compiled(model, x, False)
    rng = np.random.default_rng(11)  # F is multilinear: any statistics test the identity
    mu = {n: {s: jnp.asarray(rng.normal(size=i.stat_shape(s))) for s in i.stats}
          for n, i in merged.infos.items()}
    return model, x, merged, plain, mu


def test_full_gmm_program_with_merged_constants_is_exact(full_gmm64, rng):
    """The full-covariance mixture's program holds ``x_n x_n^T`` once, packed ([N, D(D+1)/2]
    and its 0/1 spreading matrix): F(T(z)) = log p(x, z), and F and every block gradient
    equal those of the unmerged program (float64, 1e-11)."""
    model, x, merged, plain, mu = full_gmm64
    shapes = [[tuple(jnp.shape(c)) for c, _ in t.consts] for t in merged.terms]
    assert [(40, 6), (6, 3, 3)] in shapes
    assert not any((40, 6) in sh for sh in
                   [[tuple(jnp.shape(c)) for c, _ in t.consts] for t in plain.terms])
    f_plain = float(plain.F(mu))
    np.testing.assert_allclose(float(merged.F(mu)), f_plain, rtol=1e-11)
    step = jax.jit(cavi.rest_and_grad_block, static_argnums=2)
    for block in merged.infos:
        (rest_m, g_m), (rest_p, g_p) = step(merged, mu, block), step(plain, mu, block)
        for s in g_p:
            scale = float(jnp.max(jnp.abs(g_p[s])))
            np.testing.assert_allclose(np.asarray(g_m[s]), np.asarray(g_p[s]), rtol=1e-11,
                                       atol=1e-11 * scale, err_msg=f"{block}:{s}")
        np.testing.assert_allclose(float(rest_m), float(rest_p), rtol=1e-11,
                                   atol=1e-11 * abs(f_plain))
    z = _gmm_point(rng, jnp.float64)
    np.testing.assert_allclose(float(merged.F(merged.stats_at(z))),
                               float(model.log_joint(z, x)), rtol=1e-11)


def test_full_gmm_merged_program_float32(full_gmm64, rng):
    """The same program built in float32: F and the z and L gradients agree with float64
    to float32 rounding, and F(T(z)) = log p(x, z)."""
    _, _, _, plain, mu = full_gmm64
    with jax.enable_x64(False):
        model, x = _full_gmm("float32")
        merged = _compiled(model, x, True)
        assert merged.terms[0].atoms and x.dtype == jnp.float32
        mu32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), mu)
        f32 = float(merged.F(mu32))
        z = _gmm_point(rng, jnp.float32)
        np.testing.assert_allclose(float(merged.F(merged.stats_at(z))),
                                   float(model.log_joint(z, x)), rtol=2e-5)
        step = jax.jit(cavi.rest_and_grad_block, static_argnums=2)
        grads = {b: step(merged, mu32, b)[1] for b in ("z", "L")}
    np.testing.assert_allclose(f32, float(plain.F(mu)), rtol=2e-5)
    step = jax.jit(cavi.rest_and_grad_block, static_argnums=2)
    for b, g in grads.items():
        ref = step(plain, mu, b)[1]
        for s in ref:
            assert g[s].dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(g[s]), np.asarray(ref[s]), rtol=2e-5,
                                       atol=2e-5 * float(jnp.max(jnp.abs(ref[s]))))
