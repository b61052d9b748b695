"""ELBO estimators of the gradient path (:mod:`vijax.inference.gradient`).

``L(q) = E_q[log p(x, z)] + H[q]`` for the mean-field family the compiler chose (a
default by support for the latents it gives no family):

- :class:`Objective`: the ELBO of the unconstrained parameters (``to_unconstrained``),
  ``"exact"`` (``F(mu) + H``) or ``"reparam"`` (Monte Carlo; see :meth:`Objective.surrogate`);
- :func:`natural_parts`: the exact ELBO of the natural parameters with its natural
  gradient ``dF/dmu - eta`` and its Euclidean gradient (for a line search and the
  stopping test).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vijax.conjugacy.compile import point_statistics
from vijax.inference import meanfield as mf


class Objective:
    """The ELBO estimator for one model, data set and estimator choice, as a function of
    the unconstrained parameters."""

    def __init__(self, model, data, compiled, infos, estimator, num_samples):
        self.model, self.data, self.compiled, self.infos = model, data, compiled, infos
        self.estimator, self.num_samples = estimator, num_samples
        self.discrete = [n for n, i in infos.items() if i.support.is_discrete]
        self.continuous = [n for n in infos if n not in self.discrete]
        # discrete latents summed out exactly when F exists for every latent
        self.enumerate = compiled is not None and compiled.conjugate

    def factors(self, params):
        """Per latent: (mean parameters, entropy, sampler) from the unconstrained
        parameters (each family's ``factor_from_unconstrained``: the dense Gaussian reads
        them off its scale factor, the others go through their natural parameters)."""
        fams = mf.families_of(self.infos)
        return {n: fams[n].factor_from_unconstrained(u) for n, u in params.items()}

    def surrogate(self, params, key):
        """(surrogate objective whose gradient estimates grad ELBO, ELBO estimate).

        Reparam: continuous latents by reparameterized draws; discrete latents summed
        out exactly through F when the model is linear in their one-hot statistic, else
        a score-function term with a leave-one-out baseline."""
        fac = self.factors(params)
        entropy = sum(f[1] for f in fac.values())
        if self.estimator == "exact":
            e = self.compiled.F({n: f[0] for n, f in fac.items()}) + entropy
            return e, e
        fams = mf.families_of(self.infos)
        S = self.num_samples
        keys = dict(zip(self.infos, jax.random.split(key, len(self.infos))))
        samples = {n: fac[n][2](keys[n], (S,)) for n in self.continuous}
        if self.enumerate:
            mu_disc = {n: fac[n][0] for n in self.discrete}

            def one(i):
                st = {n: point_statistics(self.infos[n],
                                          self.infos[n].value_of_sample(_draw(samples[n], i)))
                      for n in self.continuous}
                return self.compiled.F({**st, **mu_disc})
            logp = jax.vmap(one)(jnp.arange(S))
            e = jnp.mean(logp) + entropy
            return e, e
        qs = {n: fams[n].from_unconstrained(params[n]) for n in self.discrete}
        dsamples = {n: jax.lax.stop_gradient(qs[n].sample(keys[n], (S,))) for n in self.discrete}

        def logp_at(i):
            z = {n: self.infos[n].value_of_sample(_draw(samples[n], i)) for n in self.continuous}
            z.update({n: self.infos[n].value_of_sample(dsamples[n][i]) for n in self.discrete})
            # a joint block's draw {"mean", "precision"} under its members' names
            return self.model.log_joint(mf.to_latents(self.infos, z), self.data)
        logp = jax.vmap(logp_at)(jnp.arange(S))
        e = jnp.mean(logp) + entropy
        if not self.discrete:
            return e, e
        # score-function term for the discrete latents, leave-one-out baseline
        logq = sum(jnp.sum(jax.vmap(qs[n].log_prob)(dsamples[n]).reshape(S, -1), axis=1)
                   for n in self.discrete)
        f = jax.lax.stop_gradient(logp - logq)
        base = (jnp.sum(f) - f) / max(S - 1, 1)
        score = jnp.mean((f - base) * logq)
        return e + score - jax.lax.stop_gradient(score), e


def _draw(samples, i):
    """The ``i``-th of ``S`` draws (an array, or a joint block's dict of arrays)."""
    return jax.tree_util.tree_map(lambda a: a[i], samples)


def exact_elbo(compiled, fams, natural):
    """``F(mu(eta)) + sum_j H[q_j]`` of natural parameters (NaN-free only inside the
    families' domains)."""
    mu = {n: fams[n].mean_params(natural[n]) for n in natural}
    return compiled.F(mu) + _entropy(fams, natural)


def _entropy(fams, natural):
    return sum(jnp.sum(fams[n](natural[n]).entropy()) for n in natural)


def natural_parts(compiled, fams, natural):
    """``(L, natural gradient, Euclidean gradient)`` at natural parameters ``eta``.

    The natural gradient of ``L = F(mu) + H`` is ``dF/dmu - eta`` (DESIGN section 1: a
    step of 1 on one block is its CAVI update). The Euclidean gradient ``dL/deta`` is
    the same quantity times the Fisher information ``dmu/deta``; it is taken here by
    autodiff (one pass back through ``mu(eta)`` and the entropies), so that a line
    search's sufficient-decrease test and the stopping test use the true slope."""
    mu, mu_vjp = jax.vjp(lambda e: {n: fams[n].mean_params(e[n]) for n in e}, natural)
    f, dF = jax.value_and_grad(compiled.F)(mu)
    h, dH = jax.value_and_grad(lambda e: _entropy(fams, e))(natural)
    (through_mu,) = mu_vjp({n: {s: dF[n][s] for s in mu[n]} for n in mu})
    euclid = jax.tree_util.tree_map(jnp.add, through_mu, dH)
    natgrad = {n: {s: dF[n][s] - natural[n][s] for s in natural[n]} for n in natural}
    return f + h, natgrad, euclid
