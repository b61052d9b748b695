"""The variational hidden Markov model (MacKay 1997, Beal 2003) with Gaussian emissions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import stats
from jax.scipy.special import gammaln

from vijax.model import Model
from vijax.models.base import ZooModel
from vijax.supports import categorical, positive, real, simplex

#: Dirichlet concentrations of the transition rows and the initial distribution; the
#: state means' Normal-Gamma prior ``mu_k | tau_k ~ N(m0, 1/(beta0 tau_k))``,
#: ``tau_k ~ Gamma(a0, rate b0)``
HMM_PRIOR = {"alpha_A": 1.0, "alpha_0": 1.0, "m0": 0.0, "beta0": 0.1, "a0": 2.0, "b0": 1.0}


def make_hmm_log_joint(prior=HMM_PRIOR):
    """Log joint of the Gaussian HMM; ``data`` is the observation sequence ``x[T]``.

    Latents: ``A`` (rows ``A[i] = p(z_t = . | z_{t-1} = i)``), ``pi0`` (initial
    distribution), ``z`` (states, a Markov chain), ``mu`` and ``tau`` (per-state
    emission mean and precision)."""
    def log_joint(v, x):
        A, pi0, z, mu, tau = v["A"], v["pi0"], v["z"], v["mu"], v["tau"]
        K = pi0.shape[-1]
        a = prior["alpha_A"]
        lp = K * (gammaln(K * a) - K * gammaln(a)) + (a - 1.0) * jnp.sum(jnp.log(A))
        lp += stats.dirichlet.logpdf(pi0, jnp.full((K,), prior["alpha_0"]))
        lp += jnp.sum(stats.gamma.logpdf(tau, prior["a0"], scale=1.0 / prior["b0"]))
        lp += jnp.sum(stats.norm.logpdf(mu, prior["m0"],
                                        1.0 / jnp.sqrt(prior["beta0"] * tau)))
        lp += jnp.log(pi0)[z[0]]
        lp += jnp.sum(jnp.log(A)[z[:-1], z[1:]])
        lp += jnp.sum(stats.norm.logpdf(x, mu[z], 1.0 / jnp.sqrt(tau[z])))
        return lp
    return log_joint


def make_hmm_data(key, t=40, k=3, stay=0.85, sep=3.0):
    """A sticky chain (``A = stay`` on the diagonal) with state means ``sep * (k -
    (K-1)/2)`` and unit noise."""
    k1, k2, k3 = jax.random.split(key, 3)
    trans = jnp.full((k, k), (1.0 - stay) / (k - 1)) + (stay - (1.0 - stay) / (k - 1)) \
        * jnp.eye(k)
    keys = jax.random.split(k1, t)
    s0 = jax.random.randint(k2, (), 0, k)

    def step(s, kt):
        nxt = jax.random.categorical(kt, jnp.log(trans[s]))
        return nxt, nxt
    _, rest = jax.lax.scan(step, s0, keys[1:])
    states = jnp.concatenate([s0[None], rest])
    means = sep * (jnp.arange(k) - (k - 1) / 2.0)
    return means[states] + jax.random.normal(k3, (t,))


def hmm(t=40, k=3) -> ZooModel:
    """x_t ~ N(mu_{z_t}, 1/tau_{z_t}), z_0 ~ Cat(pi0), z_t | z_{t-1} ~ Cat(A[z_{t-1}]),
    A[i] ~ Dir(1), pi0 ~ Dir(1), tau_k ~ Gamma(2, 1), mu_k | tau_k ~ N(0, 1/(0.1 tau_k));
    q(z) is one Markov chain (forward-backward), the others factorize."""
    supports = {"A": simplex(k, shape=(k,)), "pi0": simplex(k),
                "z": categorical(k, shape=(t,)), "mu": real((k,)), "tau": positive((k,))}
    return ZooModel("hmm", Model(make_hmm_log_joint(), supports),
                    lambda key: make_hmm_data(key, t, k), True,
                    {"A": "Dirichlet", "pi0": "Dirichlet", "z": "MarkovChain",
                     "mu": "Normal", "tau": "Gamma"})
