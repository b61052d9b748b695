"""Suite ``compiler``: the conjugacy compiler's output F and the cost of building it.

(a) ``F(mu)`` and ``value_and_grad`` of F w.r.t. the mean parameters for the diagonal
    Gaussian mixture, against the hand-written expected log joint of
    :mod:`benchmarks.reference_gmm` (same inputs). Target: at most 1.3x (issue 10).
(b) Analysis time per zoo model: trace (``make_jaxpr``), walk + family matching
    (the rest of ``compile_model``) and the XLA compile of F. Target: under 1 s each.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness as H
from benchmarks import problems as P
from benchmarks import reference_gmm as R
from vijax.conjugacy.compile import compile_model, trace
from vijax.conjugacy.program import clear_cache
from vijax.inference import meanfield as mf
from vijax.models import ZOO
from vijax.models.mixture import GMM_PRIOR

SIZES = {"tiny": {"n": 100, "d": 2, "k": 3, "repeats": 3, "zoo_runs": 1,
                  "zoo": ("normal_gamma",), "cold": False},
         "full": {"n": 100_000, "d": 10, "k": 10, "repeats": 10, "zoo_runs": 3, "zoo": None,
                  "cold": True}}
SEED = 0
F_LIMIT = 1.3  # issue 10: F alone at most 1.3x the hand-written
ANALYSIS_LIMIT_S = 1.0


def _max_rel_tree(a, b):
    def rel(u, v):
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        return float(np.max(np.abs(u - v)) / max(float(np.max(np.abs(v))), 1e-30))
    return max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(rel, a, b)))


def gmm_f(cfg, dtype):
    prob = P.gmm(cfg["n"], cfg["d"], cfg["k"], SEED, dtype)
    c, x, mean = prob.compiled, prob.data, prob.mean0
    ref = lambda m, x: R.expected_log_joint(m, x, GMM_PRIOR)  # noqa: E731
    vj_f = lambda c, m: c.F(m)  # noqa: E731
    vj_vg = jax.value_and_grad(lambda m, c: c.F(m))
    ref_vg = jax.value_and_grad(ref)
    exes, comp = {}, {}
    for name, fn, args in (("vijax F", vj_f, (c, mean)), ("reference F", ref, (mean, x)),
                           ("vijax value_and_grad", vj_vg, (mean, c)),
                           ("reference value_and_grad", ref_vg, (mean, x))):
        exe, t = H.aot_compile(fn, *args)
        exes[name] = (exe, args)
        comp[name] = t
    # sanity: same value and gradient
    fv, fr = float(exes["vijax F"][0](c, mean)), float(exes["reference F"][0](mean, x))
    (_, gv), (_, gr) = exes["vijax value_and_grad"][0](mean, c), \
        exes["reference value_and_grad"][0](mean, x)
    grad_diff = _max_rel_tree(gv, gr)
    times = H.interleaved(exes, cfg["repeats"])
    s = {n: H.summarize(t) for n, t in times.items()}
    rows, targets = [], []
    for what in ("F", "value_and_grad"):
        v, r = s[f"vijax {what}"], s[f"reference {what}"]
        rat = H.ratio(v, r)
        for impl, st in (("vijax", v), ("reference", r)):
            name = f"{impl} {what}"
            rows.append({"case": what, "impl": impl,
                         "trace_lower_s": comp[name]["trace_lower_s"],
                         "xla_compile_s": comp[name]["xla_compile_s"],
                         "steady_min_ms": 1e3 * st["min"], "steady_median_ms": 1e3 * st["median"],
                         "ratio_min": rat["min"] if impl == "vijax" else 1.0,
                         "ratio_median": rat["median"] if impl == "vijax" else 1.0})
        targets.append({"target": f"GMM {what}: vijax / hand-written (median)",
                        "measured": rat["median"], "limit": f"<= {F_LIMIT}",
                        "met": rat["median"] <= F_LIMIT})
    prof = P.jaxpr_profile(lambda m: c.F(m), mean)
    prof_ref = P.jaxpr_profile(lambda m: ref(m, x), mean)
    extra = {"analysis_s (compile_model)": prob.analysis_s,
             "F value vijax": fv, "F value reference": fr,
             "F rel diff": H.rel_diff(fv, fr), "grad max rel diff": grad_diff,
             "Compiled constants (MB)": P.pytree_bytes(c) / 2**20,
             "data (MB)": P.pytree_bytes(x) / 2**20,
             "F jaxpr eqns vijax / reference": f"{prof['num_eqns']} / {prof_ref['num_eqns']}",
             "F heavy ops vijax": str(prof["heavy"]),
             "F heavy ops reference": str(prof_ref["heavy"]),
             "F largest intermediate vijax": f"{prof['largest']} ({prof['largest_elems']} elems)",
             "F largest intermediate reference":
                 f"{prof_ref['largest']} ({prof_ref['largest_elems']} elems)"}
    return rows, targets, extra


def _zoo_data(name, dtype):
    zm = ZOO[name]()

    @jax.jit  # one compilation instead of one per eager op
    def make(key):
        return jax.tree_util.tree_map(
            lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
            zm.make_data(key))
    return zm, make(jax.random.key(SEED))


def analyze_once(name, dtype):
    """One analysis of zoo model ``name``: (trace_s, compile_model_s, F_compile_s or
    None, compiled). ``trace_s`` is a separate ``make_jaxpr`` of the log joint (for
    information; ``compile_model`` traces again inside)."""
    zm, data = _zoo_data(name, dtype)
    clear_cache()  # programs are cached by (model, data shapes): time a real analysis
    t0 = H.clock()
    trace(zm.model, data)  # the closed jaxpr only (timed for scale)
    t_trace = H.clock() - t0
    t0 = H.clock()
    compiled = compile_model(zm.model, data)
    H.block(jax.tree_util.tree_leaves(compiled))
    t_model = H.clock() - t0
    f_comp = None
    if compiled.conjugate:
        mean = jax.jit(lambda c, k: mf.mean_params(c, mf.default_init(c, k, dtype)))(
            compiled, jax.random.key(SEED))
        _, t = H.aot_compile(lambda c, m: c.F(m), compiled, mean)
        f_comp = t["trace_lower_s"] + t["xla_compile_s"]
    return t_trace, t_model, f_comp, compiled


_COLD_SCRIPT = """
import json, sys, jax
jax.config.update("jax_enable_x64", sys.argv[2] == "float64")
jax.devices()  # backend start-up is not analysis
import jax.numpy as jnp
from benchmarks.bench_compiler import analyze_once
t, m, f, _ = analyze_once(sys.argv[1], jnp.dtype(sys.argv[2]))
print(json.dumps([m, f]))
"""


def analyze_cold(name, dtype_name):
    """compile_model + F compile of one model in a fresh Python process (after imports
    and backend start-up): what a user pays for the first analysis."""
    root = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _COLD_SCRIPT, name, dtype_name], cwd=root,
                         env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return None
    m, f = json.loads(out.stdout.strip().splitlines()[-1])
    return m + (f or 0.0)


def zoo_analysis(cfg, dtype):
    names = cfg["zoo"] or tuple(ZOO)
    rows, targets = [], []
    for name in names:
        runs = []
        for _ in range(cfg["zoo_runs"]):
            t_trace, t_model, f_comp, compiled = analyze_once(name, dtype)
            runs.append((t_trace, t_model, f_comp))
        best = min(runs, key=lambda r: r[1] + (r[2] or 0.0))
        total = best[1] + (best[2] or 0.0)
        first = runs[0][1] + (runs[0][2] or 0.0)
        cold = analyze_cold(name, jnp.dtype(dtype).name) if cfg["cold"] else None
        rows.append({"model": name, "conjugate": compiled.conjugate,
                     "trace_s": best[0], "compile_model_s": best[1],
                     "F_compile_s": best[2], "total_s": total, "first_in_process_s": first,
                     "cold_process_s": cold, "terms": len(compiled.terms),
                     "families": ", ".join(f"{n}:{i.family}" for n, i in compiled.infos.items())})
        measured = cold if cold is not None else total
        how = "fresh process" if cold is not None else f"best of {cfg['zoo_runs']}"
        targets.append({"target": f"analysis time {name} ({how})",
                        "measured": measured, "limit": f"< {ANALYSIS_LIMIT_S} s",
                        "met": measured < ANALYSIS_LIMIT_S})
    return rows, targets


def run(size: str, dtype: str) -> dict:
    cfg = SIZES[size]
    with H.precision(dtype) as dt:
        f_rows, f_targets, extra = gmm_f(cfg, dt)
        z_rows, z_targets = zoo_analysis(cfg, dt)
    notes = [
        "F and value_and_grad are compiled ahead of time (trace_lower_s, xla_compile_s) and "
        "the executables are timed interleaved with the reference; ratio = vijax / "
        "reference (> 1: vijax slower). The gradient is w.r.t. all mean parameters "
        "(pi, z, mu, tau), i.e. every CAVI update direction at once.",
        "The Compiled pytree is passed to the jitted function as an argument, so its "
        "constants are runtime inputs (not folded into the executable).",
        "Zoo analysis at the zoo's default sizes: compile_model_s = vijax's analysis "
        "(trace, rule walk with constant folding, discrete tabulation, family matching, "
        "term merging); F_compile_s = lower + XLA compile of F (conjugate models only); "
        "total_s = their sum, best of the runs in this process; trace_s = a separate "
        "make_jaxpr of the log joint, for scale. first_in_process_s = the first of those "
        "runs (some one-time costs already paid by earlier models); cold_process_s = the "
        "same in a fresh Python process after imports and backend start-up, i.e. what a "
        "user's first vj.analyze of that model costs. The target uses cold_process_s when "
        "measured (full size).",
        f"GMM at benchmark size: compile_model took {extra['analysis_s (compile_model)']:.2f} s "
        "(not a zoo size; listed for the lead).",
    ]
    return {"suite": "compiler", "title": "Conjugacy compiler: F evaluation and analysis time",
            "config": {"size": size, "dtype": dtype, "seed": SEED,
                       "gmm N, D, K": (cfg["n"], cfg["d"], cfg["k"]),
                       "repeats": cfg["repeats"], "zoo runs": cfg["zoo_runs"],
                       "gmm prior": str(GMM_PRIOR)},
            "tables": [{"name": "GMM: F and its gradient vs hand-written expected log joint",
                        "columns": ["case", "impl", "trace_lower_s", "xla_compile_s",
                                    "steady_min_ms", "steady_median_ms", "ratio_min",
                                    "ratio_median"], "rows": f_rows},
                       {"name": "GMM: F diagnostics", "columns": ["key", "value"],
                        "rows": [{"key": k, "value": v} for k, v in extra.items()]},
                       {"name": "Analysis time per zoo model",
                        "columns": ["model", "conjugate", "trace_s", "compile_model_s",
                                    "F_compile_s", "total_s", "first_in_process_s",
                                    "cold_process_s", "terms", "families"],
                        "rows": z_rows}],
            "targets": f_targets + z_targets, "notes": notes}
