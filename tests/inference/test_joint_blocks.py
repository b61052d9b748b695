"""Declared joint blocks (vijax/conjugacy/joint_blocks.py): a Normal-Gamma or
Normal-Wishart block is exact in one sweep on the single-block models (the exact joint
posterior and ELBO = log evidence, float64 to 1e-10; float32 with eps-scaled
tolerances for the Normal-Gamma), refusals name the latents and the cause, analyze suggests the block."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import vijax as vj
from block_posteriors import (NW_DIM, NW_X, normal_gamma_posterior,
                              normal_wishart_posterior, nw_log_joint)
from vijax.errors import ModelSpecError
from vijax.inference.cavi import cavi
from vijax.models import ZOO
from vijax.models.gaussian import NORMAL_GAMMA_PRIOR
from vijax.models.wishart_models import normal_wishart

# ---------------------------------------------------------------- Normal-Gamma


@pytest.fixture(scope="module")
def ng():
    zm = ZOO["normal_gamma"]()
    x = np.asarray(zm.make_data(jax.random.key(3)), np.float64)
    model = vj.Model(zm.model.log_joint, zm.model.supports, blocks=[["mu", "tau"]])
    return zm, model, x


def _ng_exact(x):
    p = NORMAL_GAMMA_PRIOR
    return normal_gamma_posterior(x, p["mu0"], p["lambda0"], p["a0"], p["b0"])


def test_normal_gamma_block_exact_in_one_sweep(ng):
    zm, model, x = ng
    mn, ln, an, bn, log_z = _ng_exact(x)
    fit = cavi(model, x, tol=0.0, max_iters=1)
    q = vj.families.NormalGamma(fit.natural["mu+tau"])
    np.testing.assert_allclose([float(v) for v in q.params()], [mn, ln, an, bn], rtol=1e-10)
    np.testing.assert_allclose(float(fit.elbo), log_z, rtol=1e-10)
    # marginals: tau ~ Gamma(a, b), mu ~ t_{2a}(m, sqrt(b/(a kappa)))
    post = fit.posterior
    assert sorted(post) == ["mu", "tau"]
    np.testing.assert_allclose(float(post["tau"].rate), bn, rtol=1e-10)
    np.testing.assert_allclose(float(post["mu"].scale), math.sqrt(bn / (an * ln)), rtol=1e-10)
    np.testing.assert_allclose(float(post["mu"].df), 2 * an, rtol=1e-10)
    print(fit)  # the result's repr works with the marginals


def test_normal_gamma_block_float32(ng):
    _, model, x = ng
    mn, ln, an, bn, log_z = _ng_exact(x)
    with jax.enable_x64(False):
        fit = cavi(model, x.astype(np.float32), tol=0.0, max_iters=2)
        assert fit.elbo.dtype == jnp.float32
        m, kappa, a, b = (float(v) for v in vj.families.NormalGamma(
            fit.natural["mu+tau"]).params())
    eps = float(np.finfo(np.float32).eps)
    np.testing.assert_allclose([m, kappa, a, b], [mn, ln, an, bn], rtol=200 * eps)
    np.testing.assert_allclose(float(fit.elbo), log_z, rtol=200 * eps)


def test_analyze_suggests_and_reports_the_block(ng):
    zm, model, x = ng
    text = str(vj.analyze(zm.model, x))
    assert "mu and tau form a NormalGamma block: blocks=[['mu', 'tau']]" in text
    declared = vj.analyze(model, x)
    assert any("joint NormalGamma" in b for b in declared.blocks)
    assert not any("form a" in b for b in declared.blocks)


# ---------------------------------------------------------------- Normal-Wishart

DIM = NW_DIM


@pytest.fixture(scope="module")
def nw():
    model = vj.Model(nw_log_joint, {"mu": vj.real((DIM,)), "L": vj.positive_definite(DIM)},
                     blocks=[["L", "mu"]])
    mn, bn, nun, vn, log_z = normal_wishart_posterior(NW_X)
    return model, NW_X, (mn, bn, nun, vn, log_z)


def test_normal_wishart_block_exact(nw):
    model, x, (mn, bn, nun, vn, log_z) = nw
    fit = cavi(model, x, tol=0.0, max_iters=1)
    q = vj.families.NormalWishart(fit.natural["L+mu"])
    m, kappa, nu, v = q.params()
    np.testing.assert_allclose(m, mn, rtol=1e-10)
    np.testing.assert_allclose([float(kappa), float(nu)], [bn, nun], rtol=1e-10)
    np.testing.assert_allclose(v, vn, rtol=1e-10)
    np.testing.assert_allclose(float(fit.elbo), log_z, rtol=0, atol=1e-10 * abs(log_z))
    post = fit.posterior
    np.testing.assert_allclose(post["L"].mean(), nun * vn, rtol=1e-10)
    np.testing.assert_allclose(post["mu"].mean(), mn, rtol=1e-10)
    # mu's marginal covariance: V^{-1} / (kappa (nu - D - 1))
    np.testing.assert_allclose(post["mu"].covariance(),
                               np.linalg.inv(vn) / (bn * (nun - DIM - 1)), rtol=1e-10)


# ---------------------------------------------------------------- refusals


def test_block_whose_terms_fit_no_family_is_refused():
    zm = normal_wishart()  # mu ~ N(0, 4I) independently of L: not Normal-Wishart
    x = zm.make_data(jax.random.key(0))
    model = vj.Model(zm.model.log_joint, zm.model.supports, blocks=[["mu", "L"]])
    with pytest.raises(ModelSpecError, match=r"block \['mu', 'L'\].*'mu'.*without 'L'"):
        cavi(model, x, max_iters=2)
    assert any("refused" in b for b in vj.analyze(model, x).blocks)


def test_normal_gamma_with_independent_mean_prior_is_refused():
    def lj(z, x):
        return (stats.norm.logpdf(z["mu"], 0.0, 3.0) + stats.gamma.logpdf(z["tau"], 2.0)
                + jnp.sum(stats.norm.logpdf(x, z["mu"], 1.0 / jnp.sqrt(z["tau"]))))
    model = vj.Model(lj, {"mu": vj.real(), "tau": vj.positive()}, blocks=[["tau", "mu"]])
    with pytest.raises(ModelSpecError, match=r"NormalGamma family needs mu \| tau"):
        cavi(model, jnp.arange(4.0), max_iters=2)


def test_block_of_latents_with_no_joint_family():
    zm = ZOO["bivariate_gaussian"]()  # two real latents: no mean-precision pair
    model = vj.Model(zm.model.log_joint, zm.model.supports, blocks=[["z1", "z2"]])
    with pytest.raises(ModelSpecError, match=r"block \['z1', 'z2'\]: no joint family fits"):
        cavi(model, zm.make_data(), max_iters=2)


def test_block_declarations_are_checked():
    sup = {"mu": vj.real(), "tau": vj.positive()}
    lj = ZOO["normal_gamma"]().model.log_joint
    with pytest.raises(ModelSpecError, match="'sigma', which is not declared"):
        vj.Model(lj, sup, blocks=[["mu", "sigma"]])
    with pytest.raises(ModelSpecError, match="'mu' is in two blocks"):
        vj.Model(lj, sup, blocks=[["mu", "tau"], ["mu"]])
    with pytest.raises(ModelSpecError, match="list of lists"):
        vj.Model(lj, sup, blocks=["mu"])
    m = vj.Model(lj, sup, blocks=[["tau", "mu"]])
    assert m.blocks == [["tau", "mu"]]


def test_mean_field_fitters_refuse_declared_blocks():
    """Fitters that update one factor per latent refuse a declared joint block instead of
    silently fitting the mean-field approximation."""
    zm = ZOO["normal_gamma"]()
    x = zm.make_data(jax.random.key(0))
    model = vj.Model(zm.model.log_joint, zm.model.supports, blocks=[["mu", "tau"]])
    with pytest.raises(vj.ModelSpecError, match="joint block"):
        vj.em(model, x, params=("tau",), init={"tau": jnp.ones(())})
    with pytest.raises(vj.ModelSpecError, match="vj.batch_cavi"):
        vj.batch_cavi(model, jnp.stack([x, x]))
    with pytest.raises(vj.ModelSpecError, match="vj.svi"):
        vj.svi(model, x, jax.random.key(0), batch_size=5)
