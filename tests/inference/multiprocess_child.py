"""Child of test_multiprocess.py: one of two JAX processes fitting a shared data set.

Usage: ``multiprocess_child.py PROCESS_ID NUM_PROCESSES PORT DATA.npz OUT_PREFIX`` with
``JAX_ENABLE_X64=1 JAX_PLATFORMS=cpu``. The process joins ``jax.distributed`` (coordinator
``127.0.0.1:PORT``, CPU collectives through gloo), takes its block of rows of the Gaussian
mixture's and the linear regression's data, builds the global arrays with
``vj.distributed.shard_local`` and fits them by CAVI and by gradient. It writes
``OUT_PREFIX<id>.npz`` (ELBO, iterations and every natural parameter, gathered) and
``OUT_PREFIX<id>.json`` (where each result leaf lives, the errors seen on bad input).
When the CPU collectives do not work in this jaxlib it prints ``MULTIPROC_SKIP <reason>``
and exits 0.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np

# case -> (model name, method, fitter keyword arguments). Each fit costs every process
# (and the parent) an XLA compile of a few seconds, so the set is the three distinct
# paths: local latents split in the CAVI loop and in the gradient loop (the mixture's
# responsibilities), and plate sums done once, in the data-to-constants program, before
# a loop over replicated d x d statistics (linear regression's X^T X). VIJAX_MULTIPROC_FULL=1
# adds linear regression by gradient.
FITS = {
    "gmm/cavi": ("gaussian_mixture", "cavi", dict(tol=1e-12, max_iters=300)),
    "gmm/gradient": ("gaussian_mixture", "gradient", dict(num_steps=300)),
    "linreg/cavi": ("linear_regression", "cavi", dict(tol=1e-12, max_iters=300)),
}
if os.environ.get("VIJAX_MULTIPROC_FULL") == "1":
    FITS["linreg/gradient"] = ("linear_regression", "gradient", dict(num_steps=300))
SIZES = {"gaussian_mixture": dict(n=64, k=3, d=2), "linear_regression": dict(d=3)}


def fit(name, method, data, kwargs):
    """The fit every process (and the parent, on all the data) runs."""
    import vijax as vj
    from vijax.models import ZOO
    model = ZOO[name](**SIZES[name]).model
    key = jax.random.key(2)
    if method == "cavi":
        return vj.cavi(model, data, key=key, **kwargs)
    return vj.fit_gradient(model, data, key, **kwargs)


def split_rows(data, pid, nproc):
    n = max(np.shape(l)[0] for l in jax.tree_util.tree_leaves(data))
    b = n // nproc
    return jax.tree_util.tree_map(
        lambda l: l[pid * b:(pid + 1) * b] if np.shape(l)[0] == n else l, data)


def placement(x):
    """Where a result leaf lives: replicated, or this process's rows of a split array."""
    if x.is_fully_replicated:
        return {"replicated": True}
    rows = sorted({(s.index[0].start or 0, s.index[0].stop or x.shape[0])
                   for s in x.addressable_shards})
    return {"replicated": False, "rows": rows, "shape": list(x.shape)}


def error_of(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - reported to the parent test
        return f"{type(e).__name__}: {e}"
    return "no error"


_T0 = time.perf_counter()


def _mark(what):
    print(f"[{time.perf_counter() - _T0:7.2f} s, cpu {time.process_time():6.2f} s] {what}",
          file=sys.stderr, flush=True)


def main():
    pid, nproc, port, path, prefix = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                      sys.argv[4], sys.argv[5])
    jax.config.update("jax_disable_most_optimizations", True)  # as the parent's conftest
    try:  # the default in jax >= 0.5; older versions have no CPU collectives without it
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError) as e:  # no such option: no CPU collectives
        print(f"MULTIPROC_SKIP jax {jax.__version__} has no CPU collectives option ({e})")
        return
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
    from jax.experimental import multihost_utils
    try:  # the first collective across processes
        probe = multihost_utils.process_allgather(np.array([pid]))
        assert sorted(np.asarray(probe).reshape(-1)) == list(range(nproc)), probe
    except Exception as e:  # noqa: BLE001 - no CPU collectives in this jaxlib
        print(f"MULTIPROC_SKIP CPU collectives across processes failed: "
              f"{type(e).__name__}: {e}")
        return
    _mark("initialized")
    import vijax as vj  # imported after jax.distributed.initialize
    from vijax.inference import distributed

    store = np.load(path)
    datasets = {"gaussian_mixture": store["gmm_x"],
                "linear_regression": {"X": store["lin_X"], "y": store["lin_y"]}}
    arrays, report = {}, {"devices": jax.device_count(), "local": jax.local_device_count()}
    for case, (name, method, kwargs) in FITS.items():
        local = split_rows(datasets[name], pid, nproc)
        data = distributed.shard_local(local)
        result = fit(name, method, data, kwargs)
        report[case] = {
            "repr": repr(result),
            "placement": {jax.tree_util.keystr(p): placement(x) for p, x in
                          jax.tree_util.tree_leaves_with_path(result.natural)},
            "data_global": list(jax.tree_util.tree_leaves(data)[0].shape),
        }
        arrays[f"{case}/elbo"] = float(result.elbo)  # replicated: readable here
        arrays[f"{case}/iters"] = int(result.num_iters)
        for p, x in jax.tree_util.tree_leaves_with_path(distributed.gather(result.natural)):
            arrays[f"{case}/natural{jax.tree_util.keystr(p)}"] = np.asarray(x)
        _mark(case)

    # float32 and integer leaves, a replicated hyper-parameter and a Python scalar through
    # shard_local and back with gather
    rows = split_rows(datasets["gaussian_mixture"], pid, nproc).astype(np.float32)
    ids = jax.numpy.arange(len(rows)) + len(rows) * pid  # a jax.Array on this process
    mixed = distributed.shard_local({"x": rows, "i": ids,
                                     "w": np.full(3, 0.5, np.float32), "c": 1.5})
    report["mixed"] = {k: [str(v.dtype), list(v.shape), bool(v.is_fully_replicated)]
                       for k, v in mixed.items() if k != "c"}
    report["mixed"]["c"] = repr(mixed["c"])
    back = distributed.gather(mixed)
    arrays["mixed/x"], arrays["mixed/i"] = np.asarray(back["x"]), np.asarray(back["i"])

    # bad input: a NaN in the last process's float32 rows only, found on every process by
    # the jitted reduction (the fit stops before its analysis)
    if pid == nproc - 1:
        rows[3, 1] = np.nan
    report["nan"] = error_of(lambda: vj.cavi(_gmm(), distributed.shard_local(rows)))
    # a process whose rows have another number of columns, or fewer rows
    x = np.nan_to_num(rows)
    last = pid == nproc - 1
    report["columns"] = error_of(lambda: distributed.shard_local(x[:, :1] if last else x))
    report["rows"] = error_of(lambda: distributed.shard_local(x[:-2] if last else x))
    report["hyper"] = error_of(lambda: distributed.shard_local(
        {"x": x, "w": np.full(3, 0.5 + last)}))
    np.savez(f"{prefix}{pid}.npz", **arrays)
    with open(f"{prefix}{pid}.json", "w") as f:
        json.dump(report, f)
    _mark("errors")
    multihost_utils.sync_global_devices("done")
    print("MULTIPROC_DONE")


def _gmm():
    from vijax.models import ZOO
    return ZOO["gaussian_mixture"](**SIZES["gaussian_mixture"]).model


if __name__ == "__main__":
    main()
