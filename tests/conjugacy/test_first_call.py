"""What a first call pays: the analysis compiles no XLA program of its own, and its host
gather (numpy) equals ``lax.gather`` in CLIP mode on every index form jnp produces."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats

import vijax as vj
from vijax.conjugacy import host_eval

from .helpers import compiles_during


def _gathers(f, *args):
    """The gather equations of ``f``'s jaxpr, nested ones (jnp's jitted helpers) too."""
    def walk(jaxpr):
        for e in jaxpr.eqns:
            if e.primitive.name == "gather":
                yield e
            for p in e.params.values():
                inner = getattr(p, "jaxpr", p)
                if hasattr(inner, "eqns"):
                    yield from walk(inner)
    return list(walk(jax.make_jaxpr(f)(*args).jaxpr))


X = jnp.zeros((4, 5, 6))
I = jnp.zeros((3,), jnp.int32)
J = jnp.zeros((3, 2), jnp.int32)
CASES = {
    "x[i]": (lambda x, i: x[i], X, I),
    "x[:, i]": (lambda x, i: x[:, i], X, I),
    "x[:, :, i]": (lambda x, i: x[:, :, i], X, I),
    "x[i[:, None], j]": (lambda x, i, j: x[i[:, None], j], X, I, J),
    "x[j] (2-d index)": (lambda x, j: x[j], X, J),
    "x[i, 2:4]": (lambda x, i: x[i, 2:4], X, I),
    "x[1, i, 3]": (lambda x, i: x[1, i, 3], X, I),
    "x[i, :, i]": (lambda x, i: x[i, :, i], X, I),
    "take_along_axis 2": (lambda x, j: jnp.take_along_axis(x, j, axis=2), X,
                          jnp.zeros((4, 5, 2), jnp.int32)),
    "take_along_axis 1": (lambda x, j: jnp.take_along_axis(x, j, axis=1), X,
                          jnp.zeros((4, 1, 6), jnp.int32)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_host_gather_matches_lax_gather_in_clip_mode(case):
    f, *args = CASES[case]
    eqns = _gathers(f, *args)
    assert eqns, case
    rng = np.random.default_rng(0)
    for eqn in eqns:
        op_aval, ind_aval = eqn.invars[0].aval, eqn.invars[1].aval
        op = np.arange(int(np.prod(op_aval.shape)), dtype=np.int32).reshape(op_aval.shape)
        # out-of-range and negative starts: clamped, as XLA's CLIP mode does
        ind = rng.integers(-3, max(op_aval.shape) + 3, size=ind_aval.shape).astype(
            ind_aval.dtype)
        params = dict(eqn.params)
        params.pop("fill_value", None)
        params["mode"] = jax.lax.GatherScatterMode.CLIP
        want = np.asarray(jax.lax.gather(op, ind, **params))
        got = host_eval.gather(op, ind, params["dimension_numbers"], params["slice_sizes"])
        assert got.shape == want.shape and got.dtype.kind == want.dtype.kind
        np.testing.assert_array_equal(got, want)


def test_gmm_analysis_compiles_nothing(caplog):
    """Analysing the diagonal GMM on data shapes (gathers of a categorical index,
    tabulation, like-term merging) runs no XLA compile: the first call pays only the
    data -> constants program and the fit's own."""
    k, d, n = 6, 3, 13  # unusual shapes: no executable cached by other tests

    def log_joint(z, x):
        pi, c, mu, tau = z["pi"], z["z"], z["mu"], z["tau"]
        lp = stats.dirichlet.logpdf(pi, jnp.full((k,), 1.0))
        lp += jnp.sum(stats.gamma.logpdf(tau, 1.0, scale=1.0))
        lp += jnp.sum(stats.norm.logpdf(mu, 0.0, 1.0 / jnp.sqrt(0.01 * tau)))
        lp += jnp.sum(jnp.log(pi)[c])
        return lp + jnp.sum(stats.norm.logpdf(x, mu[c], 1.0 / jnp.sqrt(tau[c])))

    model = vj.Model(log_joint, {"pi": vj.simplex(k), "z": vj.categorical(k, shape=(n,)),
                                 "mu": vj.real((k, d)), "tau": vj.positive((k, d))})
    spec = jax.ShapeDtypeStruct((n, d), jnp.zeros(()).dtype)
    prog, compiled = compiles_during(caplog, lambda: vj.compile(model, spec))
    assert {m: i.family for m, i in prog.infos.items()} == {
        "pi": "Dirichlet", "z": "Categorical", "mu": "Normal", "tau": "Gamma"}
    assert compiled == [], compiled


def test_import_vijax_loads_the_fit_path_only():
    """``import vijax`` binds every public name lazily: the Gibbs, SVI, EM, Laplace and
    NumPyro modules (and jax.extend's Pallas) load on first use, and every name of
    ``__all__`` still resolves to the object its module defines."""
    import subprocess
    import sys
    code = (
        "import sys, importlib, vijax\n"
        "heavy = ['vijax.inference.gibbs', 'vijax.inference.svi', 'vijax.inference.em',\n"
        "         'vijax.inference.laplace', 'vijax.numpyro_bridge', 'jax.extend']\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "assert vijax.cavi is importlib.import_module('vijax.inference.cavi').cavi\n"
        "assert vijax.gibbs is importlib.import_module('vijax.inference.gibbs').gibbs\n"
        "assert vijax.prepare_em is importlib.import_module('vijax.inference.em').prepare\n"
        "missing = [n for n in vijax.__all__ if getattr(vijax, n, None) is None]\n"
        "assert not missing, missing\n"
        "import vijax.compare\n"
        "assert callable(vijax.compare) and vijax.compare.__name__ == 'compare'\n"
        "try:\n"
        "    vijax.no_such_name\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
