"""The variational hidden Markov model (MacKay 1997, Beal 2003): Gaussian emissions
(:func:`hmm`, mean-field ``q(mu) q(tau)``; :func:`hmm_joint`, one Normal-Gamma factor
``q(mu, tau)`` per state as in hmmlearn's ``VariationalGaussianHMM``) and categorical
emissions (:func:`categorical_hmm`, hmmlearn's ``VariationalCategoricalHMM``)."""

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
    states = _sticky_states(k1, k2, t, k, stay)
    means = sep * (jnp.arange(k) - (k - 1) / 2.0)
    return means[states] + jax.random.normal(k3, (t,))


def _sticky_states(k1, k2, t, k, stay):
    """A state path ``[t]``: ``z_0`` uniform (key ``k2``), then ``A = stay`` on the
    diagonal and ``(1 - stay)/(k - 1)`` elsewhere (keys split from ``k1``)."""
    trans = jnp.full((k, k), (1.0 - stay) / (k - 1)) + (stay - (1.0 - stay) / (k - 1)) \
        * jnp.eye(k)
    keys = jax.random.split(k1, t)
    s0 = jax.random.randint(k2, (), 0, k)

    def step(s, kt):
        nxt = jax.random.categorical(kt, jnp.log(trans[s]))
        return nxt, nxt
    _, rest = jax.lax.scan(step, s0, keys[1:])
    return jnp.concatenate([s0[None], rest])


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


def hmm_joint(t=40, k=3, prior=HMM_PRIOR) -> ZooModel:
    """The Gaussian HMM of :func:`hmm` with one joint factor per state,
    ``q(mu_k, tau_k) = N(mu_k | m_k, 1/(kappa_k tau_k)) Gamma(tau_k | a_k, b_k)``
    (``blocks=[["mu", "tau"]]``): hmmlearn's ``VariationalGaussianHMM`` (1-D,
    ``covariance_type="diag"``), whose prior is ``means_prior = m0``, ``beta_prior =
    beta0``, ``dof_prior = 2 a0``, ``scale_prior = 2 b0`` (a 1-D Wishart(dof, 1/scale) is
    Gamma(dof/2, rate scale/2)), ``transmat_prior = alpha_A``, ``startprob_prior = alpha_0``."""
    supports = {"A": simplex(k, shape=(k,)), "pi0": simplex(k),
                "z": categorical(k, shape=(t,)), "mu": real((k,)), "tau": positive((k,))}
    return ZooModel("hmm_joint", Model(make_hmm_log_joint(prior), supports,
                                       blocks=[["mu", "tau"]]),
                    lambda key: make_hmm_data(key, t, k), True,
                    {"A": "Dirichlet", "pi0": "Dirichlet", "z": "MarkovChain",
                     "mu+tau": "NormalGamma"})


#: Dirichlet concentrations of the transition rows, the initial distribution and the
#: emission rows of the categorical HMM
CATEGORICAL_HMM_PRIOR = {"alpha_A": 1.0, "alpha_0": 1.0, "alpha_B": 1.0}


def hmmlearn_gaussian(x, r0, prior=HMM_PRIOR, n_iter=1, implementation="log",
                      random_state=0):
    """hmmlearn's ``VariationalGaussianHMM`` (1-D, ``covariance_type="diag"``) with the
    priors of :func:`hmm_joint` (``dof_prior = 2 a0``, ``scale_prior = 2 b0``; the rest
    one to one), its posterior set by its own M-step from responsibilities ``r0 [T, K]``
    (``init_params=""``: ``fit`` re-initializes nothing). Not fitted; returns the model
    and ``X [T, 1]``. Needs hmmlearn (the test and bench extras)."""
    import numpy as np
    from hmmlearn.vhmm import VariationalGaussianHMM
    r0 = np.asarray(r0, np.float64)
    k = r0.shape[1]
    X = np.asarray(x, np.float64)[:, None]
    h = VariationalGaussianHMM(k, covariance_type="diag", n_iter=n_iter, tol=-np.inf,
                               init_params="", random_state=random_state,
                               implementation=implementation)
    h.n_features = 1
    h.startprob_prior_ = np.full(k, prior["alpha_0"])
    h.transmat_prior_ = np.full((k, k), prior["alpha_A"])
    h.means_prior_ = np.full((k, 1), prior["m0"])
    h.beta_prior_ = np.full(k, prior["beta0"])
    h.dof_prior_ = np.full(k, 2.0 * prior["a0"])
    h.scale_prior_ = np.full((k, 1), 2.0 * prior["b0"])
    h._do_mstep({"start": r0[0], "trans": np.einsum("tk,tl->kl", r0[:-1], r0[1:]),
                 "post": r0.sum(0), "obs": r0.T @ X, "obs**2": r0.T @ X ** 2})
    return h, X


def _dirichlet_rows_logpdf(p, alpha):
    """``sum_i log Dir(p[i] | alpha 1)`` for a stack of rows ``p [R, n]`` (scalar alpha)."""
    n = p.shape[-1]
    return p.shape[0] * (gammaln(n * alpha) - n * gammaln(alpha)) \
        + (alpha - 1.0) * jnp.sum(jnp.log(p))


def make_categorical_hmm_log_joint(prior=CATEGORICAL_HMM_PRIOR):
    """Log joint of the categorical HMM; ``data`` is the integer symbol sequence ``x[T]``
    in ``{0, ..., M-1}``.

    Latents: ``A`` (transition rows), ``pi0`` (initial distribution), ``B`` (emission
    rows, ``B[k] = p(x_t = . | z_t = k)``) and ``z`` (states, a Markov chain)."""
    def log_joint(v, x):
        A, pi0, B, z = v["A"], v["pi0"], v["B"], v["z"]
        lp = _dirichlet_rows_logpdf(A, prior["alpha_A"])
        lp += _dirichlet_rows_logpdf(pi0[None], prior["alpha_0"])
        lp += _dirichlet_rows_logpdf(B, prior["alpha_B"])
        lp += jnp.log(pi0)[z[0]]
        lp += jnp.sum(jnp.log(A)[z[:-1], z[1:]])
        lp += jnp.sum(jnp.log(B)[z, x])
        return lp
    return log_joint


def make_categorical_hmm_data(key, t=60, k=3, m=4, stay=0.85, sharp=0.3):
    """Symbols of a sticky chain (as :func:`make_hmm_data`) whose emission rows are
    ``Dir(sharp)`` draws (``sharp < 1``: each state favours few symbols)."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    states = _sticky_states(k1, k2, t, k, stay)
    rows = jax.random.dirichlet(k3, jnp.full((m,), sharp), (k,))
    return jax.random.categorical(k4, jnp.log(rows)[states])


def categorical_hmm(t=60, k=3, m=4, prior=CATEGORICAL_HMM_PRIOR) -> ZooModel:
    """x_t ~ Cat(B[z_t]), z_0 ~ Cat(pi0), z_t | z_{t-1} ~ Cat(A[z_{t-1}]), A[i], B[i],
    pi0 Dirichlet (hmmlearn's ``VariationalCategoricalHMM`` with ``transmat_prior =
    alpha_A``, ``startprob_prior = alpha_0``, ``emissionprob_prior = alpha_B``); q(z) is
    one Markov chain, the Dirichlet rows factorize."""
    supports = {"A": simplex(k, shape=(k,)), "pi0": simplex(k), "B": simplex(m, shape=(k,)),
                "z": categorical(k, shape=(t,))}
    return ZooModel("categorical_hmm", Model(make_categorical_hmm_log_joint(prior), supports),
                    lambda key: make_categorical_hmm_data(key, t, k, m), True,
                    {"A": "Dirichlet", "pi0": "Dirichlet", "B": "Dirichlet",
                     "z": "MarkovChain"})
