"""Suite ``svi``: stochastic VI against full-batch CAVI on a large Gaussian mixture.

The diagonal Bayesian GMM of the zoo (``ZOO["gaussian_mixture"]``, K=3, D=2) at
N = 1e6 (``full``; ``tiny``: N = 2e4), the same data and starting key for both:

- ``vj.cavi(model, x, key)``: full-batch sweeps until its default tolerance;
- ``svi(model, x, key, batch_size=B)``: B = N / 1000 (full) or N / 100 (tiny), default
  schedule ``rho_t = (t + 1)^-0.7``, default windowed stopping rule, then one local pass
  over all data for the exact ELBO.

Each is called twice: the first call compiles, the second is timed (whole call: setup,
loop, result). Reported: ELBO against wall time for both (CAVI's exact ELBO per sweep;
SVI's per-step minibatch estimate, placed at ``step * loop time / steps``), the final exact
ELBOs, SVI's gap to CAVI's optimum and its time in units of one CAVI sweep.
Target: SVI within 1% of CAVI's optimum ELBO in less time than 10 CAVI sweeps.

Run alone: ``python -m benchmarks.bench_svi --size full`` (writes
benchmarks/results/svi.json and .md); smoke: ``run("tiny", "float32")``.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

import vijax as vj
from benchmarks import harness as H
from vijax.inference.svi import svi
from vijax.models import ZOO

SIZES = {"tiny": {"n": 20_000, "batches_per_epoch": 100},
         "full": {"n": 1_000_000, "batches_per_epoch": 1000}}
SEED = 0
TARGET_GAP = 0.01
TARGET_SWEEPS = 10


def _timed(fn):
    fn()  # compile (and analysis) once
    t0 = H.clock()
    out = H.block(fn())
    return H.clock() - t0, out


def _one_dtype(cfg, dt):
    n = cfg["n"]
    b = n // cfg["batches_per_epoch"]
    zm = ZOO["gaussian_mixture"](n=n, k=3, d=2)
    x = jnp.asarray(zm.make_data(jax.random.key(SEED)), dt)
    key = jax.random.key(SEED + 1)
    t_cavi, c = _timed(lambda: vj.cavi(zm.model, x, key=key))
    t_svi, s = _timed(lambda: svi(zm.model, x, key, batch_size=b))
    sweeps = int(c.num_iters)
    per_sweep = t_cavi / max(sweeps, 1)
    steps = int(s.num_iters)
    gap = (float(c.elbo) - float(s.elbo)) / abs(float(c.elbo))
    name = jnp.dtype(dt).name
    rows = [
        {"dtype": name, "method": "vj.cavi (full batch)", "batch": n, "iters": sweeps,
         "time_s": t_cavi, "elbo": float(c.elbo), "elbo_se": 0.0, "gap_vs_cavi": 0.0,
         "time_in_cavi_sweeps": sweeps},
        {"dtype": name, "method": "svi", "batch": b, "iters": steps, "time_s": t_svi,
         "elbo": float(s.elbo), "elbo_se": float(s.diagnostics["elbo_se"]),
         "gap_vs_cavi": gap, "time_in_cavi_sweeps": t_svi / per_sweep},
    ]
    curve = []
    ct = np.asarray(c.elbo_trace)[:sweeps]
    for i in sorted(set(np.linspace(0, sweeps - 1, min(sweeps, 8)).astype(int))):
        curve.append({"dtype": name, "method": "cavi", "time_s": per_sweep * (i + 1),
                      "elbo": float(ct[i]), "kind": "exact"})
    st = np.asarray(s.elbo_trace)[:steps]
    for i in sorted(set(np.linspace(0, steps - 1, min(steps, 8)).astype(int))):
        curve.append({"dtype": name, "method": "svi", "time_s": t_svi * (i + 1) / steps,
                      "elbo": float(st[i]), "kind": "minibatch estimate"})
    curve.append({"dtype": name, "method": "svi", "time_s": t_svi, "elbo": float(s.elbo),
                  "kind": "exact (final local pass)"})
    targets = [
        {"target": f"{name}: svi's exact ELBO gap to CAVI's (relative)", "measured": gap,
         "limit": f"<= {TARGET_GAP}", "met": bool(gap <= TARGET_GAP)},
        {"target": f"{name}: svi's time in CAVI sweeps", "measured": t_svi / per_sweep,
         "limit": f"< {TARGET_SWEEPS}", "met": bool(t_svi < TARGET_SWEEPS * per_sweep)}]
    return rows, curve, targets


def run(size: str, dtype: str) -> dict:
    cfg = SIZES[size]
    rows, curve, targets = [], [], []
    dtypes = ("float64", "float32") if size == "full" else (dtype,)
    for dt_name in dtypes:
        with H.precision(dt_name) as dt:
            r, c, t = _one_dtype(cfg, dt)
        rows += r
        curve += c
        targets += t
    notes = [
        "Second call of each (the first compiles); whole call timed, including SVI's "
        "setup (minibatch program, plate analysis) and its final pass over all data.",
        "SVI's curve shows the per-step minibatch-scaled ELBO estimate (noisy); its last "
        "row is the exact full-data ELBO after one local pass. CAVI's curve is exact.",
        "Both start from the same key; a mixture has several optima, so either may end "
        "in a better one (a negative gap: SVI above CAVI).",
        "full size runs float64 and float32 in one process (--dtype ignored).",
    ]
    return {"suite": "svi", "title": "Stochastic VI vs full-batch CAVI (GMM)",
            "config": {"size": size, "seed": SEED, "n": cfg["n"],
                       "batch": cfg["n"] // cfg["batches_per_epoch"], "k": 3, "d": 2},
            "tables": [{"name": "Final fits", "columns": list(rows[0]), "rows": rows},
                       {"name": "ELBO against wall time", "columns": list(curve[0]),
                        "rows": curve}],
            "targets": targets, "notes": notes}


if __name__ == "__main__":
    from benchmarks import run as runner
    runner.SUITES.setdefault("svi", "benchmarks.bench_svi")
    size = sys.argv[sys.argv.index("--size") + 1] if "--size" in sys.argv else "full"
    res = runner.run_suite("svi", size, "float64", summary=False)
    print(res["paths"])
