"""Test-side reference helpers for the conjugacy compiler.

Everything here is written independently of ``vijax.families``: random points of a
support, and random mean-field factors given by their usual parameters, with their mean
parameters ``E_q[T]`` in closed form and a numpy sampler. The compiler tests then only
trust ``compile_model`` for the thing under test.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import digamma

from vijax.conjugacy.compile import compile_model


def random_point(support, rng: np.random.Generator):
    """A random value of a latent inside its declared support (value shape, dtype)."""
    shape = support.shape
    kind = support.kind
    if kind == "real":
        return jnp.asarray(rng.normal(0.0, 1.5, shape))
    if kind == "positive":
        return jnp.asarray(rng.lognormal(0.0, 0.6, shape))
    if kind == "unit_interval":
        return jnp.asarray(rng.uniform(0.05, 0.95, shape))
    if kind == "simplex":
        return jnp.asarray(rng.dirichlet(np.full(support.num_categories, 2.0), shape))
    if kind == "binary":
        return jnp.asarray(rng.integers(0, 2, shape), jnp.int32)
    if kind == "categorical":
        return jnp.asarray(rng.integers(0, support.num_categories, shape), jnp.int32)
    raise AssertionError(f"no random point for support {support}")


def random_latents(supports, rng):
    return {n: random_point(s, rng) for n, s in supports.items()}


def assert_exact(model, data, rng, n_points=3, compiled=None, rtol=1e-9):
    """``F(T(z)) == log_joint(z, data)`` at ``n_points`` random points of the support."""
    c = compile_model(model, data) if compiled is None else compiled
    bad = {n: i.reason for n, i in c.infos.items() if i.family is None}
    assert not bad, f"expected a conjugate model, compiler says {bad}"
    # jit once rather than op-by-op dispatch: much faster, same arithmetic up to rounding
    via_F = jax.jit(lambda z: c.F(c.stats_at(z)))
    direct = jax.jit(lambda z: model.log_joint(z, data))
    for _ in range(n_points):
        z = random_latents(model.supports, rng)
        expected = float(direct(z))
        got = float(via_F(z))
        assert np.isfinite(expected)
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol,
                                   err_msg=f"F(T(z)) != log p(z) at z={z}")
    return c


def families_of(compiled):
    return {n: i.family for n, i in compiled.infos.items()}


class RandomFactor:
    """A random member of a latent's family: closed-form ``E[T]`` and a sampler."""

    def __init__(self, info, rng: np.random.Generator):
        self.info = info
        sup = info.support
        fam = info.family
        self.family = fam
        shp = sup.shape
        if fam == "Normal":
            self.loc = rng.normal(0.0, 1.0, shp)
            self.scale = rng.uniform(0.3, 1.0, shp)
        elif fam == "MultivariateNormal":
            E = info.event_size
            batch = info.batch_shape
            self.loc = rng.normal(0.0, 1.0, batch + (E,))
            a = rng.normal(0.0, 1.0, batch + (E, E)) / math.sqrt(E)
            self.cov = 0.3 * (a @ np.swapaxes(a, -1, -2)) + 0.2 * np.eye(E)
        elif fam == "Gamma":
            self.a = rng.uniform(3.0, 6.0, shp)
            self.b = rng.uniform(1.0, 3.0, shp)
        elif fam == "InverseGamma":
            self.a = rng.uniform(4.0, 7.0, shp)
            self.b = rng.uniform(1.0, 3.0, shp)
        elif fam == "Beta":
            self.a = rng.uniform(2.0, 6.0, shp)
            self.b = rng.uniform(2.0, 6.0, shp)
        elif fam == "Dirichlet":
            self.alpha = rng.uniform(3.0, 8.0, sup.value_shape)
        elif fam == "Bernoulli":
            self.p = rng.uniform(0.2, 0.8, shp)
        elif fam == "Categorical":
            self.p = rng.dirichlet(np.full(sup.num_categories, 2.0), shp)
        elif fam == "MarkovChain":  # random potentials; moments and draws from the family
            from vijax.families import MarkovChain
            K, S = sup.num_categories, tuple(shp)
            # the pair potential in the compiler's layout (no time axis when homogeneous)
            self.q = MarkovChain({"unary": jnp.asarray(rng.normal(0.0, 1.0, S + (K,))),
                                  "pair": jnp.asarray(rng.normal(0.0, 1.0, info.stat_shape(
                                      "pair")))})
        elif fam == "GaussMarkov":  # a random chain precision; moments and draws from it
            from vijax.families import GaussMarkov
            lay = info.layout
            b, steps, D = lay.batch_shape, lay.num_steps, lay.state_dim
            a = rng.normal(0.0, 1.0, b + (steps, D, D)) / math.sqrt(D)
            jd = a @ np.swapaxes(a, -1, -2) + 2.0 * np.eye(D)
            jo = 0.5 / D * np.tanh(rng.normal(0.0, 1.0, b + (steps - 1, D, D)))
            self.q = GaussMarkov.from_blocks(jnp.asarray(rng.normal(0.0, 1.0, b + (steps, D))),
                                             jnp.asarray(jd), jnp.asarray(jo)).with_layout(lay)
        else:
            raise AssertionError(f"no random factor for family {fam}")

    def mean_params(self):
        fam = self.family
        if fam == "Normal":
            return {"x": self.loc, "x2": self.loc ** 2 + self.scale ** 2}
        if fam == "MultivariateNormal":
            outer = self.loc[..., :, None] * self.loc[..., None, :]
            return {"x": self.loc, "xxT": self.cov + outer}
        if fam == "Gamma":
            return {"x": self.a / self.b, "log": digamma(self.a) - np.log(self.b)}
        if fam == "InverseGamma":
            return {"inv": self.a / self.b, "log": np.log(self.b) - digamma(self.a)}
        if fam == "Beta":
            s = digamma(self.a + self.b)
            return {"log": digamma(self.a) - s, "log1m": digamma(self.b) - s}
        if fam == "Dirichlet":
            return {"log": digamma(self.alpha) - digamma(self.alpha.sum(-1, keepdims=True))}
        if fam == "Bernoulli":
            return {"x": self.p}
        if fam in ("MarkovChain", "GaussMarkov"):
            return {k: np.asarray(v) for k, v in self.q.mean_parameters().items()}
        return {"onehot": self.p}

    def sample(self, rng: np.random.Generator, n: int):
        """``n`` draws with the latent's value shape (leading axis n)."""
        fam = self.family
        sup = self.info.support
        shp = sup.shape
        if fam == "Normal":
            return self.loc + self.scale * rng.normal(size=(n,) + shp)
        if fam == "MultivariateNormal":
            chol = np.linalg.cholesky(self.cov)
            eps = rng.normal(size=(n,) + self.loc.shape)
            x = self.loc + np.einsum("...ij,n...j->n...i", chol, eps)
            return np.asarray(self.info.layout.to_value(jnp.asarray(x)))
        if fam == "Gamma":
            return rng.gamma(self.a, 1.0 / self.b, (n,) + shp)
        if fam == "InverseGamma":
            return self.b / rng.gamma(self.a, 1.0, (n,) + shp)
        if fam == "Beta":
            return rng.beta(self.a, self.b, (n,) + shp)
        if fam == "Dirichlet":
            g = rng.gamma(self.alpha, 1.0, (n,) + self.alpha.shape)
            return g / g.sum(-1, keepdims=True)
        if fam == "Bernoulli":
            return (rng.uniform(size=(n,) + shp) < self.p).astype(np.int32)
        if fam == "GaussMarkov":
            key = jax.random.key(int(rng.integers(2 ** 31)))
            return np.asarray(self.q.sample(key, (n,)))
        if fam == "MarkovChain":
            key = jax.random.key(int(rng.integers(2 ** 31)))
            return np.asarray(self.q.sample(key, (n,))).astype(np.int32)
        u = rng.uniform(size=(n,) + shp + (1,))
        return (u > np.cumsum(self.p, -1)).sum(-1).clip(0, sup.num_categories - 1).astype(
            np.int32)


def assert_expectation_matches_mc(model, data, rng, compiled=None, n_samples=3000,
                                  n_se=5.0):
    """``F(E_q[T]) == E_q[log p]`` within ``n_se`` Monte Carlo standard errors."""
    c = compile_model(model, data) if compiled is None else compiled
    factors = {n: RandomFactor(i, rng) for n, i in c.infos.items()}
    mu = {n: {s: jnp.asarray(v) for s, v in f.mean_params().items()}
          for n, f in factors.items()}
    exact = float(c.F(mu))
    samples = {n: jnp.asarray(f.sample(rng, n_samples)) for n, f in factors.items()}
    lps = np.asarray(jax.jit(jax.vmap(lambda z: model.log_joint(z, data)))(samples))
    assert np.all(np.isfinite(lps))
    mc = lps.mean()
    se = lps.std(ddof=1) / math.sqrt(n_samples)
    assert abs(exact - mc) <= n_se * se + 1e-9 * abs(mc), (
        f"F(E_q[T]) = {exact:.6f} but Monte Carlo E_q[log p] = {mc:.6f} +- {se:.2g} "
        f"({abs(exact - mc) / se:.1f} standard errors)")
    return exact, mc, se


def perturbed(fit, key, scale=0.05):
    """A fit's factors with their unconstrained parameters jittered (same family): a
    start next to that fit's optimum, for comparisons on multimodal models."""
    import zlib
    out = {}
    for n, q in fit.posterior.items():
        u = q.to_unconstrained()
        leaves, tree = jax.tree_util.tree_flatten(u)
        keys = jax.random.split(jax.random.fold_in(key, zlib.crc32(n.encode())), len(leaves))
        leaves = [l + scale * jax.random.normal(k, jnp.shape(l)) for l, k in zip(leaves, keys)]
        out[n] = type(q).from_unconstrained(jax.tree_util.tree_unflatten(tree, leaves))
    return out


def long_params(names, long):
    """``names`` as pytest params, those in ``long`` marked ``fuzz``: the default run
    skips them (tests/conftest.py), ``-m fuzz`` or ``VIJAX_FUZZ=1`` runs them too."""
    import pytest
    return [pytest.param(n, marks=pytest.mark.fuzz) if n in long else n for n in names]


def compiles_during(caplog, fn):
    """``(fn(), names)``: the names of the XLA programs compiled while ``fn`` ran
    (``jax_log_compiles`` records, e.g. ``"jit(gather)"``)."""
    import logging
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            out = fn()
    finally:
        jax.config.update("jax_log_compiles", False)
    return out, [r.getMessage().split(" ")[1] for r in caplog.records
                 if r.getMessage().startswith("Compiling ")]
