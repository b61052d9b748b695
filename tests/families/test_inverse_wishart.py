"""The Inverse-Wishart family against scipy.stats.invwishart (float64, the families'
conftest), Monte Carlo with tolerances from the standard error, and a float32 run.

Entropy: scipy 1.17's ``invwishart.entropy`` is ``(D + 1) log 2`` above the Monte Carlo
value ``-E[log p(S)]`` (with its own ``logpdf`` and sampler), so the reference here is the
change of variables ``S = W^{-1}`` (``|dS/dW| = |W|^{-(D+1)}``) through scipy's Wishart:
``H[S] = H[W] - (D + 1) E[log|W|]``, ``W ~ W(Psi^{-1}, nu)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as ss
from family_cases import assert_matrix_family_maps
from scipy.special import digamma, multigammaln

from vijax.errors import InvalidParameterError
from vijax.families import InverseWishart, Wishart, registry

D = 3


def _spd(seed, scale=1.0, dim=D):
    a = np.random.default_rng(seed).normal(size=(dim, dim)) * scale
    return a @ a.T + 0.5 * np.eye(dim)


# (nu, Psi): a usual case, one near the lower df bound (no mean), a concentrated one
CASES = [(8.3, _spd(0)), (2.4, _spd(1, 0.3)), (40.0, _spd(2, 2.0))]
NUS = np.array([nu for nu, _ in CASES])
PSIS = np.stack([p for _, p in CASES])


def _entropy_ref(nu, psi):
    """``H[W] - (D + 1) E log|W|`` with ``W ~ W(Psi^{-1}, nu)`` (scipy's Wishart)."""
    d = psi.shape[-1]
    e_logdet_w = sum(digamma((nu + 1 - j) / 2) for j in range(1, d + 1)) + d * np.log(2) \
        - np.linalg.slogdet(psi)[1]
    return ss.wishart(df=nu, scale=np.linalg.inv(psi)).entropy() - (d + 1) * e_logdet_w


def _natural(nu, psi):
    return {"inv": -0.5 * psi, "logdet": -0.5 * (jnp.asarray(nu) + psi.shape[-1] + 1.0)}


@pytest.fixture(scope="module")
def closed_forms():
    """Everything the closed-form tests read, the three cases as one batch (one call)."""
    xs = np.stack([ss.invwishart(df=nu, scale=p).rvs(random_state=3) for nu, p in CASES])

    @jax.jit
    def run(nus, psis, xs):
        q = InverseWishart(_natural(nus, psis))
        mu = q.mean_parameters()
        back = InverseWishart.from_mean(mu)
        rt = InverseWishart.from_unconstrained(q.to_unconstrained())
        return dict(logp=q.log_prob(xs), entropy=q.entropy(), a=q.log_normalizer_value(),
                    mu=mu, ad=InverseWishart.mean_params_autodiff(q.natural), df=q.df,
                    scale=q.scale, back_df=back.df, back_scale=back.scale, rt=rt.natural,
                    nat=q.natural, mode=InverseWishart.mode(q.natural), mean=q.mean(),
                    variance=q.variance(), kl_self=q.kl(q))
    return xs, jax.tree_util.tree_map(np.asarray, run(NUS, PSIS, xs))


def test_density_entropy_and_normalizer_match_scipy(closed_forms):
    xs, r = closed_forms
    for k, (nu, psi) in enumerate(CASES):
        ref = ss.invwishart(df=nu, scale=psi)
        np.testing.assert_allclose(r["logp"][k], ref.logpdf(xs[k]), rtol=1e-11)
        np.testing.assert_allclose(r["entropy"][k], _entropy_ref(nu, psi), rtol=1e-10)
        # A(eta) = log Gamma_D(nu/2) - nu/2 log|Psi| + nu D/2 log 2
        a = multigammaln(nu / 2, D) - nu / 2 * np.linalg.slogdet(psi)[1] \
            + nu * D / 2 * np.log(2)
        np.testing.assert_allclose(r["a"][k], a, rtol=1e-12)
        np.testing.assert_allclose(r["df"][k], nu, rtol=1e-13)
        np.testing.assert_allclose(r["scale"][k], psi, rtol=1e-13)
    np.testing.assert_allclose(r["kl_self"], 0.0, atol=1e-10)


def test_mean_parameters_closed_form_equal_grad_log_normalizer(closed_forms):
    _, r = closed_forms
    mu = r["mu"]
    for k, (nu, psi) in enumerate(CASES):
        np.testing.assert_allclose(mu["inv"][k], nu * np.linalg.inv(psi), rtol=1e-11)
        # E log|S| = log|Psi| - D log 2 - sum_j digamma((nu + 1 - j)/2)
        ell = np.linalg.slogdet(psi)[1] - D * np.log(2) - sum(
            digamma((nu + 1 - j) / 2) for j in range(1, D + 1))
        np.testing.assert_allclose(mu["logdet"][k], ell, rtol=1e-12)
    assert_matrix_family_maps(r, "inv", NUS, PSIS)


def test_mean_mode_variance_and_registry(closed_forms):
    _, r = closed_forms
    for k, (nu, psi) in enumerate(CASES):
        ref = ss.invwishart(df=nu, scale=psi)
        if nu > D + 1:
            np.testing.assert_allclose(r["mean"][k], ref.mean(), rtol=1e-12)
        else:
            assert np.isnan(r["mean"][k]).all()
        np.testing.assert_allclose(r["mode"][0][k], ref.mode(), rtol=1e-12)
        if nu > D + 3:
            np.testing.assert_allclose(r["variance"][k], ref.var(), rtol=1e-11)
    assert r["mode"][1].all()
    # the mode maximizes the density: small symmetric perturbations lower it
    ref = ss.invwishart(df=NUS[0], scale=PSIS[0])
    m, e = r["mode"][0][0], 1e-3 * _spd(5)
    assert ref.logpdf(m) > max(ref.logpdf(m + e), ref.logpdf(m - e))
    # Wishart stays the family of L, log|L|; S^{-1}, log|S| select the Inverse-Wishart
    assert registry.default_family("positive_definite") is Wishart
    assert registry.select("positive_definite", {("x", 1.0), ("logdet", 1.0)}) is Wishart
    assert registry.select("positive_definite", {("logdet", 1.0)}) is Wishart
    assert registry.select("positive_definite", {("inv", 1.0), ("logdet", 1.0)}) \
        is InverseWishart
    assert registry.select("positive_definite", {("inv", 1.0)}) is InverseWishart
    assert registry.select("positive_definite", {("inv", 1.0), ("x", 1.0)}) is None


@pytest.fixture(scope="module")
def draws():
    """20k draws of the first case and a KL partner (one compiled call each)."""
    q = InverseWishart(_natural(*CASES[0]))
    p = InverseWishart(_natural(10.5, _spd(7)))
    x = jax.jit(lambda k: q.sample(k, (20_000,)))(jax.random.key(0))
    diff, kl = jax.jit(lambda x: (q.log_prob(x) - p.log_prob(x), q.kl(p)))(x)
    return q, p, np.asarray(x), np.asarray(diff), float(kl)


def test_sampler_and_monte_carlo_mean_parameters(draws):
    q, _, x, _, _ = draws
    n = x.shape[0]
    assert x.shape == (n, D, D) and np.all(np.linalg.eigvalsh(x[:1000]) > 0)
    mu = q.mean_parameters()
    # A'(eta) = E[T] by Monte Carlo, within 5 standard errors
    for name, stat in (("inv", np.linalg.inv(x)), ("logdet", np.linalg.slogdet(x)[1])):
        se = stat.std(0) / np.sqrt(n)
        assert np.all(np.abs(stat.mean(0) - np.asarray(mu[name])) < 5 * se + 1e-12), name
    se = x.std(0) / np.sqrt(n)
    assert np.all(np.abs(x.mean(0) - np.asarray(q.mean())) < 5 * se)
    # the samples follow scipy's law: its mean of log p equals minus our entropy
    lp = ss.invwishart(df=CASES[0][0], scale=CASES[0][1]).logpdf(x[:2000].T)
    assert abs(-lp.mean() - float(q.entropy())) < 5 * lp.std() / np.sqrt(2000)


def test_kl_against_monte_carlo_and_scipy(draws):
    q, p, _, diff, kl = draws
    assert abs(diff.mean() - kl) < 5 * diff.std() / np.sqrt(len(diff))
    # an independent closed form: cross-entropy in mean parameters minus scipy's entropy
    mu = q.mean_parameters()
    cross = -(InverseWishart.inner(p.natural, mu) - p.log_normalizer_value())
    ent = _entropy_ref(float(q.df), np.asarray(q.scale))
    np.testing.assert_allclose(kl, cross - ent, rtol=1e-10)
    assert "InverseWishart(df=8.3" in repr(q)


def test_float32():
    """The same identities in float32 with float32 tolerances."""
    nu, psi = CASES[0]
    x = ss.invwishart(df=nu, scale=psi).rvs(random_state=4)
    with jax.enable_x64(False):
        q = InverseWishart.from_df_scale(np.float32(nu), psi.astype(np.float32))
        logp, mu, ent = jax.jit(lambda q, x: (q.log_prob(x), q.mean_parameters(),
                                              q.entropy()))(q, x.astype(np.float32))
        assert logp.dtype == jnp.float32 and mu["inv"].dtype == jnp.float32
    ref = ss.invwishart(df=nu, scale=psi)
    np.testing.assert_allclose(logp, ref.logpdf(x), rtol=2e-5)
    np.testing.assert_allclose(ent, _entropy_ref(nu, psi), rtol=2e-5)
    np.testing.assert_allclose(mu["inv"], nu * np.linalg.inv(psi), rtol=2e-5)


@pytest.mark.parametrize("df,scale,match", [
    (2.0, _spd(0), "df"),  # df <= D - 1
    (float("nan"), _spd(0), "df"),
    (5.0, np.diag([1.0, -1.0, 1.0]), "positive definite"),
    (5.0, _spd(0) + np.triu(np.ones((D, D)), 1), "symmetric"),
    (5.0, np.ones(D), "shape"),
])
def test_invalid_parameters_raise(df, scale, match):
    with pytest.raises(InvalidParameterError, match=match):
        InverseWishart.from_df_scale(df, scale)
