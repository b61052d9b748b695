"""Monte Carlo checks against the closed forms: E[T(x)] = mu, entropy = -E[log q],
KL = E_p[log p - log q], and pathwise gradients of E[T(x)]. Tolerances are 5 Monte
Carlo standard errors (fixed seeds, derandomized hypothesis)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from family_cases import CASES, as_jnp
from hypothesis import given, settings
from hypothesis import strategies as st

from vijax.families import Categorical

N = 10_000
SETTINGS = settings(max_examples=6, deadline=None, derandomize=True)
parametrize_cases = pytest.mark.parametrize("case", CASES, ids=str)


def _stats(fam, x):
    if isinstance(fam, Categorical):
        return Categorical.stats(x, num_classes=fam.num_classes)
    return type(fam).stats(x)


def assert_mc_close(samples, expected, n_se=5.0, atol=1e-10, what=""):
    """``mean(samples, 0)`` within ``n_se`` standard errors of ``expected``."""
    samples = np.asarray(samples)
    mean = samples.mean(0)
    se = samples.std(0) / np.sqrt(samples.shape[0])
    err = np.abs(mean - np.asarray(expected))
    bad = err > n_se * se + atol
    assert not np.any(bad), (f"{what}: MC mean {mean[bad]} vs {np.asarray(expected)[bad]}"
                             f" (se {se[bad]})")


def _total(stats):
    return sum(jnp.sum(v) for v in stats.values())


@functools.partial(jax.jit, static_argnums=(3, 4))
def _monte_carlo(u, q, key, n, pathwise):
    """n independent draws from p = from_unconstrained(u): per-draw statistics, log p,
    log q and (if ``pathwise``) the reparameterized gradient of sum T(x) w.r.t. u."""
    cls = type(q)

    def one_draw(u, key):
        p = cls.from_unconstrained(u)
        x = p.sample(key)
        stats = _stats(p, x)
        return _total(stats), {"stats": stats, "log_p": p.log_prob(x), "log_q": q.log_prob(x)}

    keys = jax.random.split(key, n)
    if pathwise:
        (_, draws), grads = jax.vmap(jax.value_and_grad(one_draw, has_aux=True),
                                     (None, 0))(u, keys)
        exact_grads = jax.grad(
            lambda u: _total(cls.mean_params(cls.from_unconstrained(u).natural)))(u)
    else:
        _, draws = jax.vmap(one_draw, (None, 0))(u, keys)
        grads = exact_grads = None
    p = cls.from_unconstrained(u)
    samples = {"stats": draws["stats"], "entropy": -draws["log_p"],
               "kl": draws["log_p"] - draws["log_q"], "grads": grads}
    closed = {"stats": p.mean_parameters(), "entropy": p.entropy(), "kl": p.kl(q),
              "grads": exact_grads, "kl_self": p.kl(p)}
    return samples, closed


@parametrize_cases
@SETTINGS
@given(data=st.data())
def test_monte_carlo(case, data):
    """E_p[T] = mu_p, E_p[-log p] = H(p), E_p[log p - log q] = KL(p||q) >= 0,
    KL(p||p) = 0, and (reparameterized families) the pathwise gradient of E[sum T]
    equals the gradient of the closed-form mean parameters."""
    p = case.build(as_jnp(data.draw(case.params)))
    q = case.build(as_jnp(data.draw(case.params)))
    key = jax.random.PRNGKey(data.draw(st.integers(0, 2**31)))
    samples, closed = _monte_carlo(p.to_unconstrained(), q, key, N, case.reparameterized)
    for name in case.cls.stat_names:
        assert_mc_close(samples["stats"][name], closed["stats"][name], what=f"E[T_{name}]")
    assert_mc_close(samples["entropy"], closed["entropy"], what="entropy")
    assert_mc_close(samples["kl"], closed["kl"], atol=1e-8, what="KL")
    assert closed["kl"] >= -1e-12
    np.testing.assert_allclose(closed["kl_self"], 0.0, atol=1e-10)
    if case.reparameterized:
        for name, g in samples["grads"].items():
            assert_mc_close(g, closed["grads"][name], atol=1e-8, what=f"d/d{name}")
