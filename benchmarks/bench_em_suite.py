"""Suite ``em``: registers ``benchmarks/bench_em.py`` (EM on a diagonal Gaussian
mixture, vijax vs scikit-learn; owned by its own author) with the runner.

``bench_em.run(n, d, k, iters, dtype) -> dict`` returns its own flat dictionary; this
adapter picks the sizes for ``tiny`` and ``full`` and turns the dictionary into the
runner's tables (every scalar kept, nested dictionaries flattened with dotted keys).
"""

from __future__ import annotations

import inspect
import math

from benchmarks import harness as H

SIZES = {"tiny": {"n": 200, "d": 2, "k": 3, "iters": 4, "repeats": 1},
         "full": {"n": 100_000, "d": 10, "k": 10, "iters": 50, "repeats": 3}}


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _as_float(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def run(size: str, dtype: str) -> dict:
    from benchmarks import bench_em
    cfg = SIZES[size]
    extra = {}
    if "repeats" in inspect.signature(bench_em.run).parameters:
        extra["repeats"] = cfg["repeats"]
    with H.precision(dtype):
        raw = bench_em.run(cfg["n"], cfg["d"], cfg["k"], cfg["iters"], dtype, **extra)
    flat = _flatten(dict(raw))
    tables = [{"name": "bench_em.run output", "columns": ["key", "value"],
               "rows": [{"key": k, "value": v} for k, v in flat.items()]}]
    vj_s, sk_s = _as_float(flat.get("vijax_s_per_iter")), _as_float(flat.get("sklearn_s_per_iter"))
    if vj_s is not None and sk_s is not None:
        tables.insert(0, {"name": "EM: time per iteration",
                          "columns": ["impl", "compile_s", "ms_per_iter", "ratio_vs_sklearn"],
                          "rows": [{"impl": "vijax em", "compile_s": flat.get("vijax_compile_s"),
                                    "ms_per_iter": 1e3 * vj_s,
                                    "ratio_vs_sklearn": vj_s / sk_s if sk_s > 0 else None},
                                   {"impl": "sklearn GaussianMixture (diag)",
                                    "ms_per_iter": 1e3 * sk_s, "ratio_vs_sklearn": 1.0}]})
    targets = []
    if vj_s is not None and sk_s is not None and vj_s > 0 and size == "full":
        speedup = sk_s / vj_s
        targets.append({"target": f"EM GMM N={cfg['n']}: scikit-learn / vijax time per "
                                  f"iteration ({dtype})",
                        "measured": speedup, "limit": ">= 10", "met": speedup >= 10})
        rel = _as_float(flat.get("loglik_rel_diff"))
        if rel is not None:
            targets.append({"target": "EM GMM: same final log-likelihood as scikit-learn "
                                      "(rel diff)", "measured": rel, "limit": "<= 1e-5",
                            "met": rel <= 1e-5})
    return {"suite": "em", "title": "EM on a diagonal Gaussian mixture (bench_em.py)",
            "config": {"size": size, "dtype": dtype, "seed": flat.get("seed", 0), **cfg},
            "tables": tables, "targets": targets,
            "notes": ["Measured by benchmarks/bench_em.py (see its docstring for the method: "
                      "per-iteration times are differences of two run lengths; compile "
                      "reported apart). ratio_vs_sklearn = vijax / scikit-learn time per "
                      "iteration (> 1: vijax slower)."]}
