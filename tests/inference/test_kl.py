"""Reverse vs forward KL projections onto a factorized Gaussian, and the figures."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vijax.errors import InvalidParameterError  # noqa: E402
from vijax.inference import kl_projection as klp  # noqa: E402

MEAN = jnp.array([1.0, -0.5])
COV = jnp.array([[1.0, 0.9], [0.9, 2.0]])


def test_bivariate_closed_forms():
    lam = np.linalg.inv(np.asarray(COV))
    rev = klp.reverse_kl_gaussian(MEAN, COV)  # vj.cavi on one latent per coordinate
    np.testing.assert_allclose(np.asarray(rev.mean()), np.asarray(MEAN), atol=1e-6)
    np.testing.assert_allclose(np.asarray(rev.variance()), 1 / np.diag(lam), rtol=1e-6)
    closed = klp.reverse_kl_gaussian(MEAN, COV, method="closed_form")
    np.testing.assert_allclose(np.asarray(closed.variance()), 1 / np.diag(lam), rtol=1e-12)
    fwd = klp.forward_kl_gaussian(MEAN, COV)
    np.testing.assert_allclose(np.asarray(fwd.mean()), np.asarray(MEAN), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(fwd.variance()), np.diag(np.asarray(COV)), rtol=1e-12)
    # correlation makes the reverse projection strictly narrower than the marginals
    assert np.all(np.asarray(rev.variance()) < np.asarray(fwd.variance()) - 0.1)


def test_forward_kl_from_samples_is_moment_matching():
    key = jax.random.key(0)
    s = jax.random.multivariate_normal(key, MEAN, COV, (200_000,))
    q = klp.forward_kl_samples(s)
    se_mean = np.sqrt(np.diag(np.asarray(COV)) / s.shape[0])
    assert np.all(np.abs(np.asarray(q.mean() - MEAN)) < 5 * se_mean)
    se_var = np.diag(np.asarray(COV)) * np.sqrt(2 / s.shape[0])
    assert np.all(np.abs(np.asarray(q.variance()) - np.diag(np.asarray(COV))) < 5 * se_var)
    # weights: duplicating a sample = weight 2
    x = jnp.array([[0.0, 1.0], [2.0, 3.0], [2.0, 3.0]])
    w = klp.forward_kl_samples(x[:2], weights=jnp.array([1.0, 2.0]))
    u = klp.forward_kl_samples(x)
    np.testing.assert_allclose(np.asarray(w.mean()), np.asarray(u.mean()), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(w.variance()), np.asarray(u.variance()), rtol=1e-12)
    with pytest.raises(InvalidParameterError):
        klp.forward_kl_samples(jnp.ones(3))


def test_reverse_kl_by_gradient_matches_cavi_on_a_gaussian():
    target = lambda x: jax.scipy.stats.multivariate_normal.logpdf(x, MEAN, COV)  # noqa: E731
    fit = klp.reverse_kl_fit(target, jnp.zeros(2), key=jax.random.key(1), num_steps=3000,
                             num_samples=64)
    lam = np.linalg.inv(np.asarray(COV))
    np.testing.assert_allclose(np.asarray(fit.q.mean()), np.asarray(MEAN), atol=0.05)
    np.testing.assert_allclose(np.asarray(fit.q.variance()), 1 / np.diag(lam), rtol=0.08)
    # at the optimum q = N(mu, diag(1/Lambda_ii)) the trace term of KL(q||p) is D, so
    # ELBO = -KL(q*||p) = -(1/2) [log det Sigma + sum_i log Lambda_ii]
    kl = 0.5 * (np.sum(np.log(np.diag(lam))) + np.linalg.slogdet(np.asarray(COV))[1])
    assert abs(float(fit.elbo) + kl) < 0.02


def test_two_mode_reverse_locks_on_one_mode_forward_covers_both():
    target = klp.two_mode_target(separation=4.0, scale=0.6)
    modes = np.asarray(target.means)
    for seed, start in ((2, [0.3, 0.1]), (3, [-0.2, -0.4])):
        fit = klp.reverse_kl_fit(target.log_prob, jnp.array(start),
                                 key=jax.random.key(seed), num_steps=1500, num_samples=32)
        m = np.asarray(fit.q.mean())
        dist = np.linalg.norm(modes - m, axis=1)
        assert dist.min() < 0.15, (m, dist)  # on a mode ...
        nearest = modes[np.argmin(dist)]
        assert np.sign(nearest[0]) == np.sign(start[0])  # ... the one it started towards
        np.testing.assert_allclose(np.asarray(fit.q.variance()), 0.36, rtol=0.15)
    fwd = klp.forward_kl_samples(target.sample(jax.random.key(4), 100_000))
    mix_mean, mix_cov = np.asarray(target.mean()), np.asarray(target.cov())
    np.testing.assert_allclose(mix_mean, 0.0, atol=1e-12)
    assert np.all(np.abs(np.asarray(fwd.mean()) - mix_mean) < 0.05)  # ~7 standard errors
    np.testing.assert_allclose(np.asarray(fwd.variance()), np.diag(mix_cov), rtol=0.03)
    assert np.all(np.asarray(fwd.variance()) > 10 * 0.36)  # covers both modes


def test_figures(tmp_path):
    pytest.importorskip("matplotlib")
    from vijax import plots
    p1 = plots.plot_kl_bivariate(tmp_path)
    p2 = plots.plot_kl_two_mode(tmp_path, num_steps=200, num_samples=2000)
    p3 = plots.plot_elbo_traces(tmp_path / "sub", np.linspace(-5, -1, 20),
                                -1 - np.exp(-np.arange(200) / 30.0))
    for p in (p1, p2, p3):
        assert p.exists() and p.stat().st_size > 10_000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
