"""Suite ``cavi``: the CAVI engine against hand-written and library baselines.

(a) Diagonal GMM: seconds per CAVI sweep, steady state (the jitted loop run with
    ``tol=0`` for a fixed number of sweeps, divided), against the hand-written jitted
    CAVI of :mod:`benchmarks.reference_gmm` (target <= 1.3x) and scikit-learn's
    ``BayesianGaussianMixture(covariance_type="diag", tol=0)`` per iteration (reported).
    Sanity: both JAX CAVIs start from the same factors and must give the same ELBOs.
(b) BayesPy's two GMM settings (K=10, N=200, D=2 and K=40, N=2000, D=10), ms per sweep;
    BayesPy itself when it is importable (optional extra).
(c) 10000 normal-gamma fits in one ``jit(vmap(lambda x: vj.cavi(model, x).elbo))``
    call against fitting them one by one (a sample of fits, extrapolated).
(d) Per conjugate zoo model: analysis time, XLA compile time of one CAVI fit, run time.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

import vijax as vj
from benchmarks import harness as H
from benchmarks import problems as P
from benchmarks import reference_gmm as R
from vijax.conjugacy.program import clear_cache
from vijax.models import CONJUGATE, ZOO
from vijax.models.mixture import GMM_PRIOR

SIZES = {
    # tiny: BayesPy's part reuses the first part's problem and loop (no extra compile)
    "tiny": {"gmm": (100, 2, 3), "iters": 5, "repeats": 2, "sk_iters": 3,
             "bayespy": [(3, 100, 2)], "bp_iters": 5,
             "fits": 64, "fit_n": 20, "one_by_one": 3, "zoo": ("normal_gamma",), "zoo_repeats": 1},
    "full": {"gmm": (100_000, 10, 10), "iters": 20, "repeats": 5, "sk_iters": 10,
             "bayespy": [(10, 200, 2), (40, 2000, 10)], "bp_iters": 100,
             "fits": 10_000, "fit_n": 20, "one_by_one": 50, "zoo": None, "zoo_repeats": 3},
    # the GPU check's (benchmarks.gpu_check): the sweep at N=1e6, no host-CPU baselines
    "gpu": {"gmm": (1_000_000, 10, 10), "iters": 50, "repeats": 7, "sk_iters": 0,
            "bayespy": [], "bp_iters": 100, "fits": 10_000, "fit_n": 20, "one_by_one": 20,
            "zoo": ("normal_gamma", "gaussian_mixture"), "zoo_repeats": 3},
}
SEED = 0
CAVI_LIMIT = 1.3


# --------------------------------------------------------------------------- helpers

def cavi_loop(max_iters):
    """``(compiled, natural0, tol) -> vj.Run``: the public CAVI algorithm run by the
    public driver (what ``vj.cavi`` runs, without the analysis and the result)."""
    def loop(compiled, natural0, tol):
        alg = vj.algorithms.cavi(compiled)
        state = alg.init(natural0)
        return vj.run(alg.step, state, max_iters=max_iters, tol=tol, elbo0=state.elbo)
    return loop


def _vijax_loop(prob, iters):
    """AOT-compiled vijax CAVI loop (tol=0: exactly ``iters`` sweeps)."""
    exe, t = H.aot_compile(cavi_loop(iters), prob.compiled, prob.natural0, 0.0)
    return exe, (prob.compiled, prob.natural0, 0.0), t


_REF_CACHE: dict = {}


def _reference_loop(prob, iters):
    r0 = prob.mean0["z"]["onehot"]
    etau0 = prob.mean0["tau"]["x"]
    if iters not in _REF_CACHE:  # one jitted reference per sweep count (jit caches shapes)
        _REF_CACHE[iters] = R.make_cavi(GMM_PRIOR, iters)
    exe, t = H.aot_compile(_REF_CACHE[iters], r0, etau0, prob.data)
    return exe, (r0, etau0, prob.data), t


def gmm_pair(n, d, k, iters, repeats, dtype):
    """vijax and the reference on one GMM problem: per-sweep timings and the sanity
    check. Returns (rows, ratio, sanity dict, problem)."""
    prob = P.gmm(n, d, k, SEED, dtype)
    v_exe, v_args, v_comp = _vijax_loop(prob, iters)
    r_exe, r_args, r_comp = _reference_loop(prob, iters)
    v_state = v_exe(*v_args)
    _, r_trace = r_exe(*r_args)
    v_trace = np.asarray(v_state.trace, np.float64)
    r_trace = np.asarray(r_trace, np.float64)
    sanity = {"final ELBO vijax": float(v_trace[-1]), "final ELBO reference": float(r_trace[-1]),
              "final rel diff": H.rel_diff(v_trace[-1], r_trace[-1]),
              "max rel diff over trace": float(np.max(np.abs(v_trace - r_trace)
                                                      / np.maximum(np.abs(r_trace), 1.0)))}
    times = H.interleaved({"vijax": (v_exe, v_args), "reference": (r_exe, r_args)}, repeats)
    sv = H.summarize(times["vijax"], iters)
    sr = H.summarize(times["reference"], iters)
    rat = H.ratio(sv, sr)
    rows = []
    for impl, s, comp in (("vijax", sv, v_comp), ("hand-written JAX", sr, r_comp)):
        rows.append({"setting": f"N={n} D={d} K={k}", "impl": impl,
                     "analysis_s": prob.analysis_s if impl == "vijax" else None,
                     "trace_lower_s": comp["trace_lower_s"],
                     "xla_compile_s": comp["xla_compile_s"],
                     "ms_per_iter_min": 1e3 * s["min"], "ms_per_iter_median": 1e3 * s["median"],
                     "ratio_min": rat["min"] if impl == "vijax" else 1.0,
                     "ratio_median": rat["median"] if impl == "vijax" else 1.0})
    return rows, rat, sanity, prob, sr


def _sklearn_per_iter(x, k, iters, repeats):
    """Seconds per iteration of BayesianGaussianMixture: (t(iters) - t(1)) / (iters - 1),
    both fits timed interleaved (initialization and the final E-step cancel)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture
    d = x.shape[1]

    def fit(m):
        def go():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return BayesianGaussianMixture(
                    n_components=k, covariance_type="diag", max_iter=m, tol=0.0,
                    init_params="random", random_state=SEED,
                    weight_concentration_prior_type="dirichlet_distribution",
                    weight_concentration_prior=GMM_PRIOR["alpha0"],
                    mean_precision_prior=GMM_PRIOR["beta0"], mean_prior=np.zeros(d)).fit(x)
        return go

    times = H.interleaved({"long": (fit(iters), ()), "short": (fit(1), ())}, repeats,
                          warmup=0)
    per = [(a - b) / (iters - 1) for a, b in zip(times["long"], times["short"])]
    per = [p for p in per if p > 0] or [float("nan")]
    return H.summarize(per)


def _bayespy_per_iter(x, k, iters):
    """ms per VB iteration of BayesPy's diagonal GMM, or a string saying why not."""
    try:
        import bayespy  # noqa: F401
        from bayespy.inference import VB
        from bayespy.nodes import Categorical, Dirichlet, Gamma, GaussianARD, Mixture
    except ImportError:
        return "not installed"
    try:
        n, d = x.shape
        alpha = Dirichlet(np.full(k, GMM_PRIOR["alpha0"]))
        z = Categorical(alpha, plates=(n,))
        mu = GaussianARD(0.0, GMM_PRIOR["beta0"], shape=(d,), plates=(k,))
        lam = Gamma(GMM_PRIOR["a0"], GMM_PRIOR["b0"], plates=(k, d))
        y = Mixture(z, GaussianARD, mu, lam)
        y.observe(np.asarray(x, np.float64))
        z.initialize_from_random()
        q = VB(y, mu, lam, z, alpha)
        t0 = H.clock()
        q.update(repeat=iters, verbose=False, tol=-1.0)
        dt = H.clock() - t0
        done = int(getattr(q, "iter", iters)) or iters
        return 1e3 * dt / done
    except Exception as e:  # an API drift in the optional extra must not kill the suite
        return f"error: {type(e).__name__}: {e}"


# --------------------------------------------------------------------------- parts

def part_gmm(cfg, dtype):
    n, d, k = cfg["gmm"]
    rows, rat, sanity, prob, sr = gmm_pair(n, d, k, cfg["iters"], cfg["repeats"], dtype)
    if not cfg["sk_iters"]:
        return rows, _gmm_targets(n, rat, sanity), sanity
    sk = _sklearn_per_iter(np.asarray(prob.data), k, cfg["sk_iters"], cfg["repeats"])
    # the sklearn ratio uses vijax's median per-sweep time from the same run
    v = rows[0]
    rows.append({"setting": f"N={n} D={d} K={k}", "impl": "sklearn BayesianGaussianMixture",
                 "ms_per_iter_min": 1e3 * sk["min"], "ms_per_iter_median": 1e3 * sk["median"],
                 "ratio_min": v["ms_per_iter_min"] / (1e3 * sk["min"]),
                 "ratio_median": v["ms_per_iter_median"] / (1e3 * sk["median"])})
    return rows, _gmm_targets(n, rat, sanity), sanity


def _gmm_targets(n, rat, sanity):
    return [{"target": f"GMM N={n} CAVI sweep: vijax / hand-written JAX (median)",
             "measured": rat["median"], "limit": f"<= {CAVI_LIMIT}",
             "met": rat["median"] <= CAVI_LIMIT},
            {"target": "GMM: vijax and hand-written CAVI reach the same ELBO (rel diff)",
             "measured": sanity["final rel diff"], "limit": "<= 1e-4",
             "met": sanity["final rel diff"] <= 1e-4}]


def part_bayespy(cfg, dtype):
    rows = []
    for k, n, d in cfg["bayespy"]:
        r, rat, sanity, prob, _ = gmm_pair(n, d, k, cfg["bp_iters"], cfg["repeats"], dtype)
        rows += r
        bp = _bayespy_per_iter(np.asarray(prob.data), k, cfg["bp_iters"])
        rows.append({"setting": f"N={n} D={d} K={k}", "impl": "BayesPy",
                     "ms_per_iter_median": bp if isinstance(bp, float) else None,
                     "note": bp if isinstance(bp, str) else "single run",
                     "ratio_median": (r[0]["ms_per_iter_median"] / bp)
                     if isinstance(bp, float) else None})
        rows[-3]["note"] = f"ELBO rel diff vs reference {sanity['final rel diff']:.1e}"
    return rows


def part_vmap(cfg, dtype):
    zm = ZOO["normal_gamma"]()
    model = zm.model
    n_fits, n = cfg["fits"], cfg["fit_n"]
    keys = jax.random.split(jax.random.key(SEED), n_fits)
    xs = jax.jit(jax.vmap(lambda k: zm.make_data(k, n).astype(dtype)))(keys)

    def fit(x):
        res = vj.cavi(model, x)
        return res.elbo, res.num_iters

    batched = jax.jit(jax.vmap(fit))
    exe, comp = H.aot_compile(batched, xs)
    t_vmap = H.summarize(H.interleaved({"vmap": (exe, (xs,))}, cfg["repeats"])["vmap"])
    elbos, iters = exe(xs)
    elbos = np.asarray(elbos)
    m = cfg["one_by_one"]
    # one by one, (i) eager vj.cavi (what a user's Python loop does), (ii) one jitted
    # single-dataset fit reused in a loop (compiled once, compile excluded)
    single = jax.jit(lambda x: vj.cavi(model, x).elbo)
    single_exe, single_comp = H.aot_compile(single, xs[0])
    H.block(vj.cavi(model, xs[0]).elbo)  # warm the eager path's caches
    t0 = H.clock()
    eager = [float(vj.cavi(model, xs[i]).elbo) for i in range(m)]
    t_eager = (H.clock() - t0) / m
    t0 = H.clock()
    jitted = [float(single_exe(xs[i])) for i in range(m)]
    t_jit = (H.clock() - t0) / m
    agree = float(np.max(np.abs(np.asarray(eager) - elbos[:m]) / np.abs(elbos[:m])))
    rows = [{"method": f"jit(vmap(vj.cavi)) over {n_fits} datasets (n={n})",
             "compile_s": comp["trace_lower_s"] + comp["xla_compile_s"],
             "total_s": t_vmap["median"], "fits_per_s": n_fits / t_vmap["median"],
             "speedup_vs_this": 1.0, "measured": f"median of {cfg['repeats']} calls"},
            {"method": "eager vj.cavi, one dataset per call",
             "compile_s": None, "total_s": t_eager * n_fits, "fits_per_s": 1.0 / t_eager,
             "speedup_vs_this": t_eager * n_fits / t_vmap["median"],
             "measured": f"{m} fits, extrapolated x{n_fits // m}"},
            {"method": "one jitted single-dataset fit, Python loop",
             "compile_s": single_comp["trace_lower_s"] + single_comp["xla_compile_s"],
             "total_s": t_jit * n_fits, "fits_per_s": 1.0 / t_jit,
             "speedup_vs_this": t_jit * n_fits / t_vmap["median"],
             "measured": f"{m} fits, extrapolated x{n_fits // m}"}]
    info = {"vmap vs eager max rel ELBO diff (first fits)": agree,
            "vmap vs jitted-single max rel ELBO diff":
                float(np.max(np.abs(np.asarray(jitted) - elbos[:m]) / np.abs(elbos[:m]))),
            "sweeps per fit: min / mean / max (the vmapped loop runs the max)":
                f"{int(jnp.min(iters))} / {float(jnp.mean(iters)):.1f} / {int(jnp.max(iters))}"}
    return rows, info


def part_zoo(cfg, dtype):
    names = cfg["zoo"] or tuple(CONJUGATE)
    key = jax.random.key(SEED)
    rows = []
    for name in names:
        zm = ZOO[name]()
        data = jax.jit(lambda k: jax.tree_util.tree_map(
            lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
            zm.make_data(k)))(key)
        clear_cache()  # programs are cached by (model, data shapes): time a real analysis
        t0 = H.clock()
        compiled = H.block(vj.compile(zm.model, data).materialize(data))
        t_an = H.clock() - t0
        nat0 = jax.jit(lambda c, k: vj.algorithms.cavi(c).init(key=k).natural)(compiled, key)
        exe, comp = H.aot_compile(cavi_loop(500), compiled, nat0, 1e-8)
        times = H.interleaved({"run": (exe, (compiled, nat0, 1e-8))}, cfg["zoo_repeats"])
        state = exe(compiled, nat0, 1e-8)
        s = H.summarize(times["run"])
        it = int(state.num_iters)
        rows.append({"model": name, "analysis_s": t_an, "trace_lower_s": comp["trace_lower_s"],
                     "xla_compile_s": comp["xla_compile_s"], "run_ms": 1e3 * s["median"],
                     "sweeps": it, "ms_per_sweep": 1e3 * s["median"] / max(it, 1),
                     "converged": bool(state.converged)})
    return rows


def run(size: str, dtype: str) -> dict:
    cfg = SIZES[size]
    with H.precision(dtype) as dt:
        g_rows, g_targets, sanity = part_gmm(cfg, dt)
        b_rows = part_bayespy(cfg, dt)
        v_rows, v_info = part_vmap(cfg, dt)
        z_rows = part_zoo(cfg, dt)
    n, d, k = cfg["gmm"]
    cols = ["setting", "impl", "analysis_s", "trace_lower_s", "xla_compile_s",
            "ms_per_iter_min", "ms_per_iter_median", "ratio_min", "ratio_median"]
    notes = [
        "Per-iteration times: the AOT-compiled loop runs a fixed number of sweeps "
        f"({cfg['iters']} for the large GMM, {cfg['bp_iters']} for BayesPy's settings; "
        "vijax with tol=0, the reference as lax.scan), each computing the ELBO after the "
        "sweep; time / sweeps. vijax and the reference run interleaved; ratio = vijax / "
        "baseline (> 1: vijax slower). analysis_s = compile_model (trace + walk + match), "
        "paid once per fit outside the loop.",
        "The hand-written reference (benchmarks/reference_gmm.py) updates pi, mu, tau, z in "
        "vijax's order from N_k, r^T x, r^T x^2, with the same mean-field family "
        "(q(mu) Normal and q(tau) Gamma separately), starting from vijax's default "
        "initialization, so the ELBO traces must coincide.",
        "scikit-learn's BayesianGaussianMixture (diag) uses a Normal-Gamma-type joint "
        "q(mu, tau) (same cost per iteration, different family) and keeps the data's dtype "
        "(float32 or float64) from its input validation; its per-iteration cost is "
        "(t(max_iter=M) - t(max_iter=1)) / (M - 1) with tol=0, M = "
        f"{cfg['sk_iters']}. The sklearn row's ratio is vijax / sklearn.",
        "BayesPy rows: its diagonal GMM (Dirichlet, Categorical, GaussianARD means "
        "independent of the precisions, Gamma precisions, Mixture) timed with "
        "VB.update(repeat=...) when bayespy imports; it is an optional extra and was "
        "'not installed' when this says so.",
        "Batch fits: the vmapped while_loop runs until the slowest fit meets tol (default "
        "tol: 1e-8 in float64, eps in float32; max_iters=500), a stopped lane frozen. "
        "One-by-one rows time a sample of fits and extrapolate linearly to the full count. "
        "The comparison with a hand-written vmapped CAVI is the 'batch' suite.",
    ]
    sanity_rows = [{"key": k_, "value": v_} for k_, v_ in {**sanity, **v_info}.items()]
    return {"suite": "cavi", "title": "CAVI engine: per-sweep cost, batch fits, compile time",
            "config": {"size": size, "dtype": dtype, "seed": SEED, "gmm N, D, K": (n, d, k),
                       "gmm sweeps timed": cfg["iters"], "repeats": cfg["repeats"],
                       "sklearn max_iter": cfg["sk_iters"],
                       "BayesPy settings (K, N, D)": [list(s) for s in cfg["bayespy"]],
                       "BayesPy-setting sweeps": cfg["bp_iters"],
                       "normal-gamma fits, points each": (cfg["fits"], cfg["fit_n"]),
                       "one-by-one sample": cfg["one_by_one"], "gmm prior": str(GMM_PRIOR)},
            "tables": [{"name": "GMM: time per CAVI sweep", "columns": cols, "rows": g_rows},
                       {"name": "BayesPy's GMM settings: time per sweep",
                        "columns": cols + ["note"], "rows": b_rows},
                       {"name": "Normal-gamma: many fits in one vmapped call",
                        "columns": ["method", "compile_s", "total_s", "fits_per_s",
                                    "speedup_vs_this", "measured"], "rows": v_rows},
                       {"name": "Sanity checks", "columns": ["key", "value"],
                        "rows": sanity_rows},
                       {"name": "Compile time of one CAVI fit per conjugate zoo model",
                        "columns": ["model", "analysis_s", "trace_lower_s", "xla_compile_s",
                                    "run_ms", "sweeps", "ms_per_sweep", "converged"],
                        "rows": z_rows}],
            "targets": g_targets, "notes": notes}
