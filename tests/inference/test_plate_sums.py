"""Which constants of F are sums over the plate, read from the jaxpr (no data values):
the classes of typical data reductions, the exact prior/plate split of a merged term,
and SVI's refusals of reductions that are not sums over observations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import vijax as vj
from vijax.errors import ModelSpecError
from vijax.inference import plate_sums as P
from vijax.inference.svi import svi

SIZES = (4, 8, 20)
G = np.array([1.0, 2.0, 3.0])

#: (name, x [n, 3] and g [3] -> value, class, free part or None)
CASES = [
    ("sum of squares", lambda x, g: jnp.sum(x ** 2), P.SUM, 0.0),
    ("mean", lambda x, g: jnp.mean(x), P.OTHER, None),
    ("square of a sum", lambda x, g: jnp.sum(x) ** 2, P.OTHER, None),
    ("count merged with a prior", lambda x, g: jnp.asarray(1.0 + x.shape[0] / 2), P.SUM, 1.0),
    ("count squared", lambda x, g: jnp.asarray(float(x.shape[0]) ** 2), P.OTHER, None),
    ("X^T X", lambda x, g: x.T @ x, P.SUM, np.zeros((3, 3))),
    ("linear map of a sum plus a free part", lambda x, g: 3.0 * jnp.sum(x, 0) - 2.0 * g,
     P.SUM, -2.0 * G),
    ("rows times free weights, summed", lambda x, g: jnp.sum(jnp.log(x) * g), P.SUM, 0.0),
    ("cumulative sum", lambda x, g: jnp.cumsum(x[:, 0])[-1], P.OTHER, None),
    ("row times a plate sum", lambda x, g: x * jnp.sum(x), P.OTHER, None),
    ("sort along the plate", lambda x, g: jnp.sort(x, axis=0)[0], P.OTHER, None),
    ("all rows but the first", lambda x, g: jnp.sum(x[1:]), P.OTHER, None),
    ("position weights", lambda x, g: jnp.sum(jnp.arange(x.shape[0]) * x[:, 0]), P.OTHER,
     None),
    ("max of a sum", lambda x, g: jnp.max(jnp.sum(x, 0)), P.OTHER, None),
    ("elementwise rows", lambda x, g: jnp.exp(x) + g, P.ROW, None),
    ("per-row reduction", lambda x, g: jnp.sum(x, 1), P.ROW, None),
    ("per-row index into a free table", lambda x, g: g[jnp.argmax(x, 1)], P.ROW, None),
    ("free", lambda x, g: g * 2, P.FREE, 2 * G),
]


@pytest.fixture(scope="module")
def classes():
    fns = [lambda x, g: [c[1](x, g) for c in CASES]] * 3
    specs = [[jax.ShapeDtypeStruct((s, 3), jnp.float64), jax.ShapeDtypeStruct((3,), jnp.float64)]
             for s in SIZES]
    return P.classify(fns, specs, (True, False), [None, G], SIZES)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c[0] for c in CASES])
def test_reduction_classes(classes, i):
    _, _, cls, free = CASES[i]
    got = classes[i]
    assert got.cls == cls
    if free is not None:
        np.testing.assert_allclose(np.asarray(got.val), free, rtol=1e-15, atol=1e-15)


def test_programs_that_differ_are_refused():
    specs = [[jax.ShapeDtypeStruct((s, 3), jnp.float64)] for s in SIZES]
    fns = [lambda x: [jnp.sum(x)], lambda x: [jnp.sum(jnp.exp(x))], lambda x: [jnp.sum(x)]]
    with pytest.raises(P.Structure):
        P.classify(fns, specs, (True,), [None], SIZES)


# ------------------------------------------------------------------ through svi
A0, B0 = 2.0, 1.5


def precision_model():
    """tau ~ Gamma(a0, b0), x_n ~ N(0, 1/tau): F's log-tau coefficient is
    a0 - 1 + B/2 (a prior part merged with a count) and its tau coefficient
    -b0 - sum_n x_n^2 / 2 (merged with a data sum)."""
    def lj(z, x):
        t = z["tau"]
        return (stats.gamma.logpdf(t, A0, scale=1 / B0)
                + jnp.sum(stats.norm.logpdf(x, 0.0, 1 / jnp.sqrt(t))))
    return vj.Model(lj, {"tau": vj.positive()})


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_one_full_step_scales_only_the_plate_part(dtype):
    """rho = 1, one step on a minibatch of B = N/4: q(tau) = Gamma(a0 + N/2,
    b0 + (N/B) sum_batch x^2 / 2); with |x_n| = c for all n, the rate is b0 + N c^2 / 2
    whichever rows are drawn. (Scaling the merged coefficients whole would give
    a0 - 1 + N/B (a0 - 1 + B/2) + 1.)"""
    n, c = 40, 1.3
    signs = np.where(np.random.default_rng(0).random(n) < 0.5, -1.0, 1.0)
    x = jnp.asarray(c * signs, dtype)
    fit = svi(precision_model(), x, jax.random.key(0), batch_size=10,
              schedule=lambda count: 1.0, max_iters=1, tol=0)
    q = fit.posterior["tau"]
    tol = 1e-12 if dtype == jnp.float64 else 1e-5
    np.testing.assert_allclose(float(q.concentration), A0 + n / 2, rtol=tol)
    np.testing.assert_allclose(float(q.rate), B0 + n * c * c / 2, rtol=tol)


def test_reductions_that_are_not_sums_are_refused():
    key = jax.random.key(0)
    prior = lambda z: stats.norm.logpdf(z["m"])  # noqa: E731
    with pytest.raises(ModelSpecError, match=r"'m'.*not a sum over observations"):
        svi(vj.Model(lambda z, d: prior(z) + z["m"] * jnp.mean(d), {"m": vj.real()}),
            jnp.arange(8.0), key, batch_size=4)

    # a local latent whose coefficient pairs its row with the whole batch's sum
    def paired(z, d):
        u = z["u"]
        lp = prior(z) + jnp.sum(stats.norm.logpdf(u, z["m"], 1.0))
        return lp + jnp.sum(stats.norm.logpdf(d, u, 1.0)) + 1e-3 * jnp.sum(u * d) * jnp.sum(d)
    with pytest.raises(ModelSpecError, match=r"'u'.*pairs different observations"):
        svi(vj.Model(paired, {"m": vj.real(), "u": vj.real((8,))}), jnp.arange(8.0), key,
            batch_size=4)

    # the data-only part: a log-normalizer of the data that is not a sum over rows
    def spread(z, d):
        return (prior(z) + jnp.sum(stats.norm.logpdf(d, z["m"], 1.0))
                - jnp.log(jnp.std(d)))
    with pytest.raises(ModelSpecError, match="data-only part"):
        svi(vj.Model(spread, {"m": vj.real()}), jnp.arange(8.0), key, batch_size=4)
