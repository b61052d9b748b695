"""Latent-factor models: probabilistic PCA and latent Dirichlet allocation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import stats

from vijax.model import Model
from vijax.models.base import ZooModel
from vijax.supports import categorical, positive, real, simplex


def _ppca_lj(z, x):
    W, Z, tau = z["W"], z["Z"], z["tau"]
    lp = jnp.sum(stats.norm.logpdf(W, 0.0, 1.0)) + jnp.sum(stats.norm.logpdf(Z, 0.0, 1.0))
    lp += stats.gamma.logpdf(tau, 2.0, scale=1.0)
    lp += jnp.sum(stats.norm.logpdf(x, Z @ W.T, 1.0 / jnp.sqrt(tau)))
    return lp


def ppca(n=40, d=5, k=2) -> ZooModel:
    """x_n ~ N(W z_n, 1/tau), W_dk, Z_nk ~ N(0, 1), tau ~ Gamma(2, 1); rows of W and Z
    are dense Gaussians over the K latent dimensions."""
    def make_data(key):
        k1, k2, k3 = jax.random.split(key, 3)
        W = jax.random.normal(k1, (d, k))
        Z = jax.random.normal(k2, (n, k))
        return Z @ W.T + 0.3 * jax.random.normal(k3, (n, d))
    supports = {"W": real((d, k)), "Z": real((n, k)), "tau": positive()}
    return ZooModel("ppca", Model(_ppca_lj, supports), make_data, True,
                    {"W": "MultivariateNormal", "Z": "MultivariateNormal", "tau": "Gamma"})


def make_lda_log_joint(alpha=0.5, eta=0.3):
    """LDA over a flat token list: data = {"doc": (N,) doc index, "word": (N,) word index}."""
    def log_joint(z, data):
        theta, c, beta = z["theta"], z["z"], z["beta"]
        K, V = beta.shape
        lp = jnp.sum(stats.dirichlet.logpdf(theta.T, jnp.full((K,), alpha)))
        lp += jnp.sum(stats.dirichlet.logpdf(beta.T, jnp.full((V,), eta)))
        lp += jnp.sum(jnp.log(theta)[data["doc"], c])
        lp += jnp.sum(jnp.log(beta)[c, data["word"]])
        return lp
    return log_joint


def lda(docs=4, tokens_per_doc=15, k=2, vocab=6) -> ZooModel:
    """theta_d ~ Dir(alpha), beta_k ~ Dir(eta), z_n ~ Cat(theta_{doc_n}),
    w_n ~ Cat(beta_{z_n})."""
    n = docs * tokens_per_doc

    def make_data(key):
        k1, k2, k3 = jax.random.split(key, 3)
        theta = jax.random.dirichlet(k1, jnp.full((k,), 0.5), (docs,))
        beta = jax.random.dirichlet(k2, jnp.full((vocab,), 0.3), (k,))
        doc = jnp.repeat(jnp.arange(docs), tokens_per_doc)
        kz, kw = jax.random.split(k3)
        zs = jax.random.categorical(kz, jnp.log(theta[doc]))
        word = jax.random.categorical(kw, jnp.log(beta[zs]))
        return {"doc": doc, "word": word}
    supports = {"theta": simplex(k, shape=(docs,)), "z": categorical(k, shape=(n,)),
                "beta": simplex(vocab, shape=(k,))}
    return ZooModel("lda", Model(make_lda_log_joint(), supports), make_data, True,
                    {"theta": "Dirichlet", "z": "Categorical", "beta": "Dirichlet"})
