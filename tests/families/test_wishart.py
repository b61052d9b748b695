"""The Wishart family and the positive-definite support, against scipy.stats.wishart
(float64, the families' conftest) and Monte Carlo with tolerances from the standard
error."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as ss
from family_cases import assert_matrix_family_maps
from scipy.special import multigammaln

from vijax.errors import InvalidParameterError, ModelSpecError
from vijax.families import Wishart, registry
from vijax.supports import positive_definite

D = 3


def _spd(seed, scale=1.0, dim=D):
    a = np.random.default_rng(seed).normal(size=(dim, dim)) * scale
    return a @ a.T + 0.5 * np.eye(dim)


CASES = [(6.3, _spd(0)), (2.2, _spd(1, 0.3)), (40.0, _spd(2, 2.0))]


@pytest.fixture(scope="module")
def draws():
    """50k Bartlett draws of the first case (one compiled call)."""
    q = _wishart(*CASES[0])
    return q, np.asarray(jax.jit(lambda k: q.sample(k, (50_000,)))(jax.random.key(0)))


def _wishart(nu, v):
    """Built from numpy natural parameters (no eager validation ops)."""
    return Wishart({"x": -0.5 * np.linalg.inv(v), "logdet": np.float64(0.5 * (nu - D - 1))})


NUS = np.array([nu for nu, _ in CASES])
VS = np.stack([v for _, v in CASES])


@pytest.fixture(scope="module")
def closed_forms():
    """Everything the closed-form tests read, for the three cases as one batch (one
    compiled call)."""
    xs = np.stack([ss.wishart(df=nu, scale=v).rvs(random_state=3) for nu, v in CASES])

    @jax.jit
    def run(nus, vs, xs):
        q = Wishart({"x": -0.5 * jnp.linalg.inv(vs), "logdet": 0.5 * (nus - D - 1.0)})
        mu = q.mean_parameters()
        back = Wishart.from_mean(mu)
        rt = Wishart.from_unconstrained(q.to_unconstrained())
        return dict(logp=q.log_prob(xs), entropy=q.entropy(), a=q.log_normalizer_value(),
                    mu=mu, ad=Wishart.mean_params_autodiff(q.natural), df=q.df,
                    scale=q.scale, back_df=back.df, back_scale=back.scale,
                    rt=rt.natural, nat=q.natural, mode=Wishart.mode(q.natural),
                    variance=q.variance(), kl_self=q.kl(q))
    return xs, jax.tree_util.tree_map(np.asarray, run(NUS, VS, xs))


def test_density_entropy_and_normalizer_match_scipy(closed_forms):
    xs, r = closed_forms
    for k, (nu, v) in enumerate(CASES):
        ref = ss.wishart(df=nu, scale=v)
        np.testing.assert_allclose(r["logp"][k], ref.logpdf(xs[k]), rtol=1e-11)
        np.testing.assert_allclose(r["entropy"][k], ref.entropy(), rtol=1e-11)
        # A(eta) = log Gamma_D(nu/2) + nu/2 log|V| + nu D/2 log 2
        a = multigammaln(nu / 2, D) + nu / 2 * np.linalg.slogdet(v)[1] + nu * D / 2 * np.log(2)
        np.testing.assert_allclose(r["a"][k], a, rtol=1e-12)
        np.testing.assert_allclose(r["df"][k], nu, rtol=1e-13)
        np.testing.assert_allclose(r["scale"][k], v, rtol=1e-11)
        np.testing.assert_allclose(r["kl_self"][k], 0.0, atol=1e-10)


def test_mean_parameters_closed_form_equal_grad_log_normalizer(closed_forms):
    from scipy.special import digamma
    _, r = closed_forms
    mu = r["mu"]
    for k, (nu, v) in enumerate(CASES):
        np.testing.assert_allclose(mu["x"][k], nu * v, rtol=1e-12)
        # E log|L| = sum_j digamma((nu + 1 - j)/2) + D log 2 + log|V|
        ell = sum(digamma((nu + 1 - j) / 2) for j in range(1, D + 1)) + D * np.log(2) \
            + np.linalg.slogdet(v)[1]
        np.testing.assert_allclose(mu["logdet"][k], ell, rtol=1e-12)
    assert_matrix_family_maps(r, "x", NUS, VS)


def test_mode_variance_and_registry(closed_forms):
    _, r = closed_forms
    mode, valid = r["mode"]
    np.testing.assert_allclose(mode[0], (NUS[0] - D - 1) * VS[0], rtol=1e-11)
    np.testing.assert_allclose(mode[2], (NUS[2] - D - 1) * VS[2], rtol=1e-11)
    assert valid[0].all() and not valid[1].any()  # nu <= D + 1: no interior maximum
    # the mode maximizes the density: small symmetric perturbations lower it
    ref = ss.wishart(df=NUS[0], scale=VS[0])
    e = 1e-3 * _spd(5)
    assert ref.logpdf(mode[0]) > max(ref.logpdf(mode[0] + e), ref.logpdf(mode[0] - e))
    v = VS[:, :, :, None]
    dg = np.diagonal(VS, axis1=1, axis2=2)
    np.testing.assert_allclose(r["variance"], NUS[:, None, None] * (
        VS ** 2 + dg[:, :, None] * dg[:, None, :]), rtol=1e-11)
    del v
    assert registry.default_family("positive_definite") is Wishart
    assert registry.select("positive_definite", {("x", 1.0), ("logdet", 1.0)}) is Wishart


def test_sampler_moments_and_monte_carlo_mean_parameters(draws):
    q, x = draws
    n = x.shape[0]
    mu = q.mean_parameters()
    # E[T] by Monte Carlo, within 5 standard errors
    for name, stat in (("x", x), ("logdet", np.linalg.slogdet(x)[1])):
        se = stat.std(0) / np.sqrt(n)
        assert np.all(np.abs(stat.mean(0) - np.asarray(mu[name])) < 5 * se + 1e-12), name
    # Var(L_ij) = nu (V_ij^2 + V_ii V_jj): the sample variance within 10%
    np.testing.assert_allclose(x.var(0), q.variance(), rtol=0.1)
    assert np.all(np.linalg.eigvalsh(x[:1000]) > 0)


def test_kl_against_monte_carlo_and_zero_at_self(draws):
    q, x = draws
    p = _wishart(4.5, _spd(7))
    diff, kl = jax.jit(lambda x: (q.log_prob(x) - p.log_prob(x), q.kl(p)))(x)
    diff, kl = np.asarray(diff), float(kl)
    assert abs(diff.mean() - kl) < 5 * diff.std() / np.sqrt(len(diff))
    # independent closed form through scipy's entropy and a cross-entropy in mean parameters
    mu = q.mean_parameters()
    cross = -(Wishart.inner(p.natural, mu) - p.log_normalizer_value())
    np.testing.assert_allclose(kl, cross - ss.wishart(df=float(q.df), scale=np.asarray(q.scale)).entropy(),
                               rtol=1e-10)
    np.testing.assert_allclose(q.kl(q), 0.0, atol=1e-10)


def test_repr_and_sample_shape(draws):
    q, x = draws
    assert "Wishart(df=6.3" in repr(q)
    assert x.shape == (50_000, D, D)


@pytest.mark.parametrize("df,scale,match", [
    (2.0, _spd(0), "df"),  # df <= D - 1
    (float("nan"), _spd(0), "df"),
    (5.0, np.diag([1.0, -1.0, 1.0]), "positive definite"),
    (5.0, _spd(0) + np.triu(np.ones((D, D)), 1), "symmetric"),
    (5.0, np.ones(D), "shape"),
])
def test_invalid_parameters_raise(df, scale, match):
    with pytest.raises(InvalidParameterError, match=match):
        Wishart.from_df_scale(df, scale)


def test_support_bijection_log_jacobian_and_membership():
    sup = positive_definite(D, shape=(2,))
    assert sup.value_shape == (2, D, D) and sup.unconstrained_shape == (2, 6)
    u = np.random.default_rng(0).normal(size=(2, 6))
    one = positive_definite(D)
    rows, cols = np.tril_indices(D)

    @jax.jit
    def run(u):
        x = sup.from_unconstrained(u)
        jac = jax.jacfwd(lambda v: one.from_unconstrained(v)[rows, cols])(u[0])
        return (x, sup.to_unconstrained(x), sup.contains(x), one.log_det_jacobian(u[0]),
                jnp.linalg.slogdet(jac)[1])
    x, back, inside, ldj, ref = run(u)
    np.testing.assert_allclose(back, u, rtol=1e-10, atol=1e-12)
    assert bool(inside.all())
    np.testing.assert_allclose(ldj, ref, rtol=1e-10)
    assert not bool(one.contains(np.diag([1.0, -1.0, 2.0])))
    assert bool(sup.contains(sup.probe_points()).all())
    st = one.base_stats(one.canonical_point())
    np.testing.assert_allclose(st["logdet"], np.linalg.slogdet(st["x"])[1])
    with pytest.raises(ModelSpecError, match="dimension"):
        positive_definite(0)
