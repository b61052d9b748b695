"""Compiler rules for positive-definite latents (vijax/conjugacy/rules_linalg.py):
every way of writing log|L| and the linear uses of L gives the Wishart statistics with
``F(T(z)) == log p(z)`` exactly (float64); anything not linear in (L, log|L|) is refused
with the latent and this file's line."""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as ss

from vijax.conjugacy.compile import compile_model
from vijax.conjugacy.program import program_for
from vijax.errors import NonConjugateError
from vijax.model import Model
from vijax.stats import wishart_logpdf
from vijax.supports import positive_definite

X = np.random.default_rng(0).normal(size=(7, 3))


def _pd(d, seed=0, batch=()):
    a = np.random.default_rng(seed).normal(size=batch + (d, d))
    return a @ np.swapaxes(a, -1, -2) + d * np.eye(d)


def _chol_logdet(L):
    return 2.0 * jnp.sum(jnp.log(jnp.diag(jnp.linalg.cholesky(L))))


STYLES = {
    # name: (log joint of L (D x D) and x (N x 3, first D columns used), D)
    "slogdet_D3": (lambda L, x: jnp.linalg.slogdet(L)[1] - 0.5 * jnp.trace(L), 3),
    "slogdet_D2": (lambda L, x: 2.5 * jnp.linalg.slogdet(L)[1] - jnp.sum(L * np.eye(2)), 2),
    "slogdet_D1": (lambda L, x: jnp.linalg.slogdet(L)[1] - L[0, 0], 1),
    "cholesky": (lambda L, x: 3.0 * _chol_logdet(L) - 0.5 * jnp.trace(L), 3),
    "cholesky_scaled": (lambda L, x: jnp.sum(jnp.log(jnp.diagonal(
        jnp.linalg.cholesky(2.0 * L)))) - 0.5 * jnp.trace(L), 3),
    "det_D2": (lambda L, x: jnp.log(jnp.linalg.det(L)) - 0.5 * jnp.trace(L), 2),
    "det_D3": (lambda L, x: jnp.log(jnp.linalg.det(L)) - 0.5 * jnp.trace(L), 3),
    "einsum_quadratic": (lambda L, x: -0.5 * jnp.einsum("ni,ij,nj->", x, L, x)
                         + 0.5 * x.shape[0] * jnp.linalg.slogdet(L)[1], 3),
    "vector_quadratic": (lambda L, x: -0.5 * x[0] @ L @ x[0] + jnp.linalg.slogdet(L)[1], 3),
    "trace_of_scatter": (lambda L, x: -0.5 * jnp.trace(x.T @ x @ L)
                         + 4 * jnp.linalg.slogdet(L)[1], 3),
    "wishart_logpdf": (lambda L, x: wishart_logpdf(L, _pd(3, 1), 5.5)
                       - 0.5 * jnp.sum((x @ L) * x), 3),
}


@pytest.mark.parametrize("name", list(STYLES))
def test_written_styles_give_wishart_statistics_exactly(name):
    f, d = STYLES[name]
    model = Model(lambda z, x: f(z["L"], x[:, :d]), {"L": positive_definite(d)})
    comp = compile_model(model, X)
    assert comp.infos["L"].family == "Wishart", comp.infos["L"].reason
    _assert_exact(comp, model.log_joint, {"L": np.stack([_pd(d, 3), _pd(d, 4)])}, X)


def _assert_exact(comp, log_joint, zs, x):
    """``F(T(z)) == log p(z)`` at each stacked point (one compiled call)."""
    run = jax.jit(jax.vmap(lambda z: (comp.F(comp.stats_at(z)), log_joint(z, x))))
    f, lp = run(zs)
    np.testing.assert_allclose(f, lp, rtol=1e-11)


def test_wishart_logpdf_matches_scipy_batched():
    L = _pd(3, 2, (2,))
    V = _pd(3, 4)
    got = jax.jit(wishart_logpdf)(L, V, jnp.array([4.0, 7.5]))
    ref = [ss.wishart(df=nu, scale=V).logpdf(L[k]) for k, nu in enumerate((4.0, 7.5))]
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_batched_latent_indexed_and_weighted_logdets():
    """L of shape (K, D, D): per-component slogdet weighted by data, one component
    indexed for a Cholesky log-determinant, and a batched quadratic form."""
    K, d = 3, 2
    w = np.arange(1.0, K + 1)

    def lj(z, x):
        L = z["L"]
        lp = jnp.sum(wishart_logpdf(L, np.eye(d), d + 1.0))
        lp += jnp.sum(w * jnp.linalg.slogdet(L)[1]) - 0.5 * jnp.einsum("ni,kij,nj->", x, L, x)
        return lp + _chol_logdet(L[1])

    model = Model(lj, {"L": positive_definite(d, shape=(K,))})
    x = X[:, :d]
    comp = compile_model(model, x)
    assert comp.infos["L"].family == "Wishart"
    _assert_exact(comp, lj, {"L": _pd(d, 5, (2, K))}, x)


def _line_of(fn):
    return inspect.getsourcelines(fn)[1]


# each refused log joint is on one line, so the error's source line is that line
REFUSED = {
    "log_of_entry": lambda z, x: jnp.log(z["L"][0, 0]) - jnp.trace(z["L"]),
    "inverse": lambda z, x: -jnp.sum(x[0] @ jnp.linalg.inv(z["L"]) @ x[0]),
    "product_of_entries": lambda z, x: -jnp.sum(z["L"] @ z["L"]),
    "cholesky_with_jitter": lambda z, x: jnp.sum(jnp.log(jnp.diag(jnp.linalg.cholesky(z["L"] + np.eye(3))))),
    "partial_log_diagonal": lambda z, x: jnp.log(jnp.diag(jnp.linalg.cholesky(z["L"])))[0] - jnp.trace(z["L"]),
    "uneven_log_diagonal": lambda z, x: jnp.sum(np.arange(3.0) * jnp.log(jnp.diag(jnp.linalg.cholesky(z["L"])))) - jnp.trace(z["L"]),
    "cholesky_quadratic": lambda z, x: -jnp.sum((jnp.linalg.cholesky(z["L"]).T @ x[0]) ** 2),
    "logdet_times_trace": lambda z, x: jnp.linalg.slogdet(z["L"])[1] * jnp.trace(z["L"]),
    "slogdet_sign": lambda z, x: jnp.sum(jnp.stack(jnp.linalg.slogdet(z["L"]))) - jnp.trace(z["L"]),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_nonlinear_uses_are_refused_with_latent_and_line(name):
    fn = REFUSED[name]
    comp = program_for(Model(fn, {"L": positive_definite(3)}), X)  # analysis only
    inf = comp.infos["L"]
    assert inf.family is None
    with pytest.raises(NonConjugateError) as e:
        comp.require_conjugate()
    assert e.value.latent == "L"
    where = f"{__file__}:{_line_of(fn)}"
    assert where in str(e.value), str(e.value)


def test_factorization_reason_names_the_factor():
    comp = program_for(Model(REFUSED["cholesky_quadratic"], {"L": positive_definite(3)}), X)
    assert "Cholesky factor of 'L'" in comp.infos["L"].reason
    assert comp.infos["L"].primitive == "cholesky"
    assert math.isfinite(float(REFUSED["cholesky_quadratic"]({"L": _pd(3)}, X)))
