"""The benchmark problems: models from the zoo, data at benchmark sizes, and the
compiled form, built the same way for every suite."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import vijax as vj
from benchmarks import harness as H
from vijax.conjugacy.compile import compile_model
from vijax.conjugacy.program import clear_cache
from vijax.inference import meanfield as mf
from vijax.models.gaussian import _linreg_lj
from vijax.models.mixture import GMM_PRIOR, make_mixture_data, make_mixture_log_joint


class Problem(NamedTuple):
    model: object
    data: object
    compiled: object
    natural0: dict     # vijax's default initialization (natural parameters)
    mean0: dict        # its mean parameters
    analysis_s: float  # compile_model wall time (trace + walk + match)


def gmm_model(n, d, k):
    supports = {"pi": vj.simplex(k), "z": vj.categorical(k, shape=(n,)),
                "mu": vj.real((k, d)), "tau": vj.positive((k, d))}
    return vj.Model(make_mixture_log_joint(GMM_PRIOR), supports)


_GMM_CACHE: dict = {}


def gmm(n, d, k, seed, dtype) -> Problem:
    """Diagonal Bayesian GMM (zoo prior ``GMM_PRIOR``) on well-separated clusters.

    Built once per process and arguments (suites run in one process share it; its
    ``analysis_s`` is the time of that one build)."""
    key = (n, d, k, seed, jnp.dtype(dtype).name, jax.config.jax_enable_x64)
    if key not in _GMM_CACHE:
        x = jax.jit(lambda key: jnp.asarray(make_mixture_data(key, n, k, d), dtype))(
            jax.random.key(seed))
        _GMM_CACHE[key] = build(gmm_model(n, d, k), x, seed, dtype)
    return _GMM_CACHE[key]


def linreg_model(d):
    return vj.Model(_linreg_lj, {"w": vj.real((d,)), "alpha": vj.positive(),
                                 "beta": vj.positive()})


def linreg_data(n, d, seed, dtype, noise=0.3):
    """``X ~ N(0, 1)``, ``w ~ N(0, I)``, ``y = X w + noise * eps``."""
    @jax.jit  # one compilation instead of one per eager op
    def make(key):
        k1, k2, k3 = jax.random.split(key, 3)
        X = jax.random.normal(k1, (n, d), dtype)
        w = jax.random.normal(k2, (d,), dtype)
        y = X @ w + noise * jax.random.normal(k3, (n,), dtype)
        return {"X": X, "y": y}
    return make(jax.random.key(seed))


def build(model, data, seed, dtype) -> Problem:
    clear_cache()  # programs are cached by (model, data shapes): time a real analysis
    t0 = H.clock()
    compiled = compile_model(model, data)
    H.block(jax.tree_util.tree_leaves(compiled))
    t = H.clock() - t0
    natural0 = jax.jit(lambda c, k: mf.default_init(c, k, dtype))(compiled,
                                                                  jax.random.key(seed + 1))
    mean0 = jax.jit(mf.mean_params)(compiled, natural0)
    return Problem(model, data, compiled, natural0, mean0, t)


def pytree_bytes(tree) -> int:
    return int(sum(np.asarray(l).nbytes if not hasattr(l, "nbytes") else l.nbytes
                   for l in jax.tree_util.tree_leaves(tree)))


def jaxpr_profile(fn, *args) -> dict:
    """Counts of heavy primitives and the largest intermediate in ``fn``'s jaxpr
    (nested jaxprs included): where a compiled form does avoidable work."""
    closed = jax.make_jaxpr(fn)(*args)
    counts: dict = {}
    largest = [0, ""]

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            counts[name] = counts.get(name, 0) + 1
            for v in eqn.outvars:
                aval = getattr(v, "aval", None)
                size = int(np.prod(getattr(aval, "shape", ()) or (1,)))
                if size > largest[0]:
                    largest[:] = [size, f"{name} -> {aval.str_short()}"]
            for p in eqn.params.values():
                for sub in (p if isinstance(p, (list, tuple)) else [p]):
                    inner = getattr(sub, "jaxpr", None)
                    if inner is not None and hasattr(inner, "eqns"):
                        walk(inner)
                    elif hasattr(sub, "eqns"):
                        walk(sub)

    walk(closed.jaxpr)
    heavy = {k: counts[k] for k in ("gather", "scatter-add", "dot_general", "select_n",
                                    "broadcast_in_dim", "exp", "log") if k in counts}
    return {"num_eqns": sum(counts.values()), "heavy": heavy,
            "largest_elems": largest[0], "largest": largest[1]}
