"""Child process of test_sharding.py: fits on one device and on a 4-device mesh.

Fits: CAVI, gradient and SVI (``mesh=``). Run with
``XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_ENABLE_X64=1 JAX_PLATFORMS=cpu``. Prints one JSON line: per case, the ELBOs' relative difference,
the largest relative difference of the posterior means and natural parameters, and the
shardings of the jitted loop's inputs and outputs that have the plate size as leading
dimension (each must be split over the 4 devices).
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import vijax as vj
from vijax.inference import cavi as cavi_mod
from vijax.inference import gradient as gradient_mod
from vijax.inference import svi as svi_mod
from vijax.models import ZOO


class Recorder:
    """Stands in for a module's jitted loop and keeps the arguments of its last call."""

    def __init__(self, fn):
        self.fn, self.args = fn, None

    def __call__(self, *args, **kwargs):
        self.args = (args, kwargs)
        return self.fn(*args, **kwargs)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(a))) if a.size else 0.0, 1e-300)
    return float(np.max(np.abs(a - b))) / scale if a.size else 0.0


def tree_rel(a, b):
    return max([rel(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                          jax.tree_util.tree_leaves(b))] + [0.0])


def loop_shardings(rec, n):
    """Specs of the compiled loop's inputs and outputs whose leading dimension is ``n``
    (as strings), and their number of devices."""
    args, kwargs = rec.args
    lowered = rec.fn.lower(*args, **kwargs)
    exe = lowered.compile()
    leaves = lambda t: jax.tree_util.tree_leaves(t, is_leaf=lambda l: l is None)  # noqa: E731
    ins, in_avals = leaves(exe.input_shardings), leaves(lowered.args_info)
    assert len(ins) == len(in_avals), (len(ins), len(in_avals))
    outs, out_avals = leaves(exe.output_shardings), leaves(lowered.out_info)
    assert len(outs) == len(out_avals), (len(outs), len(out_avals))

    def pick(shardings, avals):
        found = []
        for s, a in zip(shardings, avals):
            if s is not None and len(a.shape) >= 1 and a.shape[0] == n:
                found.append({"spec": str(getattr(s, "spec", s)),
                              "devices": len(s.device_set), "shape": list(a.shape)})
        return found
    return {"inputs": pick(ins, in_avals), "outputs": pick(outs, out_avals)}


def placement(tree):
    """Where each leaf of a result lives: replicated on every device, or split (spec)."""
    return {jax.tree_util.keystr(p): {"replicated": bool(x.is_fully_replicated),
                                      "spec": str(getattr(x.sharding, "spec", x.sharding)),
                                      "devices": len(x.sharding.device_set)}
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def materialize_shardings(model, data, n):
    """Specs of the data-to-constants executables' inputs of leading dimension ``n``
    (one executable per placement of the data)."""
    from vijax.conjugacy.program import program_for
    found = []
    for exe in program_for(model, data)._exe.values():
        consts_and_leaves = exe.input_shardings[0]
        for s, a in zip(consts_and_leaves[1], jax.tree_util.tree_leaves(data)):
            if a.shape and a.shape[0] == n:
                found.append({"spec": str(s.spec) if hasattr(s, "spec") else str(s),
                              "devices": len(s.device_set)})
    return found


def main():
    assert jax.device_count() == 4, jax.devices()
    assert jnp.zeros(()).dtype == jnp.float64
    mesh = Mesh(np.array(jax.devices()), ("data",))
    cavi_rec = Recorder(cavi_mod._fit_jit)
    grad_rec = Recorder(gradient_mod._fit_jit)
    cavi_mod._fit_jit = cavi_rec
    gradient_mod._fit_jit = grad_rec
    svi_rec = Recorder(None)
    svi_fit_fn = svi_mod._fit_fn

    def recorded_fit_fn(*args):  # svi's jitted loop is built per configuration
        svi_rec.fn = svi_fit_fn(*args)
        return svi_rec
    svi_mod._fit_fn = recorded_fit_fn

    gmm = ZOO["gaussian_mixture"](n=64, k=3, d=2)
    x = gmm.make_data(jax.random.key(0))
    lin = ZOO["linear_regression"](d=3)
    xy = lin.make_data(jax.random.key(1), n=48)

    def fits(name, zm, data, n, methods):
        key = jax.random.key(2)
        runs = {
            "cavi": (lambda d, m: vj.cavi(zm.model, d, key=key, tol=1e-12,
                                                    max_iters=300, mesh=m), cavi_rec),
            "gradient": (lambda d, m: vj.fit_gradient(zm.model, d, key, num_steps=300,
                                                      mesh=m), grad_rec),
            "gradient_reparam": (lambda d, m: vj.fit_gradient(
                zm.model, d, key, optimizer=optax.adam(1e-2), estimator="reparam",
                num_samples=4, num_steps=50, tol=0, mesh=m), grad_rec),
            # minibatches of a quarter of the rows, gathered from the split data
            "svi": (lambda d, m: svi_mod.svi(zm.model, d, key, batch_size=n // 4, tol=0,
                                             max_iters=40, mesh=m), svi_rec),
        }
        runs = {m: runs[m] for m in methods}
        out = {}
        for method, (fit, rec) in runs.items():
            t0 = time.perf_counter()
            one = fit(data, None)
            four = fit(data, mesh)
            case = {
                "elbo_one": float(one.elbo), "elbo_four": float(four.elbo),
                "elbo_rel": abs(float(one.elbo) - float(four.elbo)) / abs(float(one.elbo)),
                "iters": [int(one.num_iters), int(four.num_iters)],
                "mean_rel": max(tree_rel(one.posterior[k].mean(), four.posterior[k].mean())
                                for k in one.posterior),
                "natural_rel": tree_rel(one.natural, four.natural),
                "loop": loop_shardings(rec, n),
            }
            case["placement"] = placement(four.natural)
            case["seconds"] = time.perf_counter() - t0
            if method == "cavi":  # data that arrive sharded, with mesh=None
                pre = jax.device_put(data, NamedSharding(mesh, P("data")))
                again = fit(pre, None)
                case["presharded_elbo_rel"] = (abs(float(again.elbo) - float(four.elbo))
                                               / abs(float(four.elbo)))
            out[f"{name}/{method}"] = case
        out[f"{name}/materialize"] = materialize_shardings(zm.model, data, n)
        return out

    report = {}
    try:  # 10 observations do not split over 4 devices
        vj.cavi(gmm.model, np.ones((10, 2)), mesh=mesh)
        report["indivisible"] = "no error"
    except Exception as e:  # noqa: BLE001 - reported to the parent test
        report["indivisible"] = type(e).__name__
    # a NaN in data split over the devices: counted by a jitted reduction, not on a host
    bad = np.asarray(x).copy()
    bad[50, 1] = np.nan
    try:
        vj.cavi(gmm.model, bad, mesh=mesh)
        report["nan"] = "no error"
    except Exception as e:  # noqa: BLE001 - reported to the parent test
        report["nan"] = f"{type(e).__name__}: {e}"
    # Monte Carlo draws (sharded random numbers): on the GMM only, whose loop holds
    # plate-sized arrays (linear regression's loop sees d x d statistics)
    report.update(fits("gaussian_mixture", gmm, x, 64,
                       ("cavi", "gradient", "gradient_reparam", "svi")))
    report.update(fits("linear_regression", lin, xy, 48, ("cavi", "gradient", "svi")))
    sys.stdout.write("SHARDING_REPORT " + json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
