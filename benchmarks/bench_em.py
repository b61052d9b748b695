"""EM on a diagonal Gaussian mixture: vijax (derived from the log joint) vs scikit-learn.

Both run exact EM from the same start (weights, means, precisions) with the same
``reg_covar`` (0: vijax's M-step is the plain maximum-likelihood one), ``tol=0`` so that
every iteration runs. Seconds per EM iteration are steady-state differences,

    per_iter = (T(iters) - T(base)) / (iters - base),

with ``base`` 0 (vijax) or 1 (scikit-learn), both runs warm, so fixed costs (vijax:
argument checks, the first E-step; scikit-learn: its initialization and final E-step)
cancel and every EM iteration of the run is averaged. vijax analyses the model once
(``vj.prepare_em``: the compiler's walk over the log joint and the data, reported as
``vijax_analysis_s``) and runs the fits from it; its compile time (tracing + XLA) is
reported apart, as the first call minus a warm call. Repeats are interleaved (vijax, vijax base,
scikit-learn, scikit-learn base) and the best of each is kept. Every timed vijax call
ends in ``block_until_ready``.

Usage::

    python -m benchmarks.bench_em --n 100000 --d 10 --k 10 --iters 30 --dtype float64

writes ``benchmarks/results/em_gmm_<dtype>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import time

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def _log_joint(v, x):
    """The parameters (weights, means, precisions) and the latent z in one dict."""
    from jax.scipy import stats
    import jax.numpy as jnp
    c = v["z"]
    lp = jnp.sum(jnp.log(v["weights"])[c])
    return lp + jnp.sum(stats.norm.logpdf(x, v["means"][c],
                                          1.0 / jnp.sqrt(v["precisions"][c])))


def make_problem(n, d, k, dtype, seed=0):
    """Data from k well-separated diagonal Gaussians and a common initial point."""
    rng = np.random.default_rng(seed)
    centers = 4.0 * rng.normal(size=(k, d))
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    labels = rng.integers(0, k, n)
    x = (centers[labels] + scales[labels] * rng.normal(size=(n, d))).astype(dtype)
    init = {"weights": np.full(k, 1.0 / k, dtype),
            "means": x[rng.choice(n, k, replace=False)].copy(),
            "precisions": np.ones((k, d), dtype)}
    return x, init


def _jaxlib_version():
    try:
        import jaxlib
        return jaxlib.__version__
    except (ImportError, AttributeError):  # pragma: no cover
        return "unknown"


def _timed(fn, repeats):
    best = float("inf")
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def run(n=100_000, d=10, k=10, iters=30, dtype="float64", seed=0, repeats=3) -> dict:
    """Time EM per iteration for vijax and scikit-learn; returns a JSON-able dict."""
    import jax
    if dtype == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import sklearn
    from sklearn.mixture import GaussianMixture

    import vijax as vj

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    x, init = make_problem(n, d, k, dtype, seed)
    xj = jnp.asarray(x)
    params = {name: jnp.asarray(v) for name, v in init.items()}
    model = vj.Model(_log_joint, {"weights": vj.simplex(k), "means": vj.real((k, d)),
                                  "precisions": vj.positive((k, d)),
                                  "z": vj.categorical(k, shape=(n,))})

    # analysis (the compiler's walk over the log joint and data) once, as a user fitting
    # several starts would; reported apart, like the XLA compile
    t = time.perf_counter()
    prep = vj.prepare_em(model, xj, params=("weights", "means", "precisions"))
    analysis_s = time.perf_counter() - t

    def vj_fit(m):
        fit = prep.run(params, max_iters=m, tol=0.0, reg_covar=0.0)
        jax.block_until_ready((fit.params, fit.elbo))
        return fit

    def sk_fit(m):
        gm = GaussianMixture(k, covariance_type="diag", weights_init=init["weights"],
                             means_init=init["means"], precisions_init=init["precisions"],
                             reg_covar=0.0, tol=0.0, max_iter=m)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return gm.fit(x)

    t = time.perf_counter()
    vj_fit(iters)
    first = time.perf_counter() - t
    vj_fit(0)  # compiled apart when iters >= 8 (the trace buffer is a power of two)
    # interleaved repeats, best of each: a change of load hits both sides alike
    best = {"vj": float("inf"), "vj0": float("inf"), "sk": float("inf"), "sk1": float("inf")}
    for _ in range(repeats):
        for name, fn in (("vj", lambda: vj_fit(iters)), ("vj0", lambda: vj_fit(0)),
                         ("sk", lambda: sk_fit(iters)), ("sk1", lambda: sk_fit(1))):
            t, out = _timed(fn, 1)
            best[name] = min(best[name], t)
            if name == "vj":
                fit = out
            elif name == "sk":
                gm = out
    t_full = best["vj"]
    vj_per_iter = (best["vj"] - best["vj0"]) / max(iters, 1)
    sk_per_iter = (best["sk"] - best["sk1"]) / max(iters - 1, 1)

    ll_vj = float(fit.elbo)
    ll_sk = float(gm.score(x) * n)
    dev = jax.devices()[0]
    return {
        "benchmark": "em_diag_gmm",
        "sizes": {"n": n, "d": d, "k": k, "iters": iters},
        "dtype": dtype,
        "vijax_dtype": str(fit.elbo.dtype),
        "seed": seed,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "device": f"{dev.platform}:{dev.device_kind}",
                    "python": platform.python_version(),
                    # 1-minute load average before and after: other work on the machine
                    # slows both sides alike, the ratio is the robust number
                    "load_average": [load_start, os.getloadavg()[0]
                                     if hasattr(os, "getloadavg") else float("nan")]},
        "versions": {"jax": jax.__version__, "jaxlib": _jaxlib_version(),
                     "sklearn": sklearn.__version__, "numpy": np.__version__,
                     "vijax": vj.__version__},
        "reg_covar": 0.0,
        "vijax_path": fit.diagnostics["path"],
        "vijax_m_step": fit.diagnostics["m_step"],
        "vijax_analysis_s": analysis_s,
        "vijax_last_m_steps": int(fit.diagnostics["m_iters"]),  # optimizer steps or cycles
        "vijax_compile_s": first - t_full,
        "vijax_s_per_iter": vj_per_iter,
        "sklearn_s_per_iter": sk_per_iter,
        # at tiny sizes the difference of two timings can be noise (<= 0): no ratio then
        "speedup": sk_per_iter / vj_per_iter if vj_per_iter > 0 else float("nan"),
        "vijax_final_loglik": ll_vj,
        "sklearn_final_loglik": ll_sk,
        "loglik_rel_diff": abs(ll_vj - ll_sk) / max(abs(ll_sk), 1.0),
        "max_mean_diff": float(np.max(np.abs(np.asarray(fit.params["means"]) - gm.means_))),
    }


def to_markdown(r: dict) -> str:
    s, m, v = r["sizes"], r["machine"], r["versions"]
    return "\n".join([
        f"# EM, diagonal Gaussian mixture (N={s['n']}, D={s['d']}, K={s['k']}, "
        f"{s['iters']} iterations, {r['dtype']})",
        "",
        f"machine: {m['platform']}, {m['cpu_count']} CPUs, device {m['device']}; "
        f"jax {v['jax']}, jaxlib {v['jaxlib']}, scikit-learn {v['sklearn']}, "
        f"numpy {v['numpy']}; reg_covar {r['reg_covar']}; seed {r['seed']}; "
        f"load average {m['load_average'][0]:.1f} -> {m['load_average'][1]:.1f}",
        "",
        "| method | s / EM iteration | compile (s) | final log-likelihood |",
        "|---|---|---|---|",
        f"| vijax `em` ({r['vijax_path']} form, M-step {r.get('vijax_m_step', '?')}) | {r['vijax_s_per_iter']:.4g} | "
        f"{r['vijax_compile_s']:.3g} | {r['vijax_final_loglik']:.10g} |",
        f"| scikit-learn GaussianMixture | {r['sklearn_s_per_iter']:.4g} | - | "
        f"{r['sklearn_final_loglik']:.10g} |",
        "",
        f"speedup (scikit-learn / vijax, per iteration): **{r['speedup']:.2f}x**; "
        f"max |means difference| {r['max_mean_diff']:.2e}, relative log-likelihood "
        f"difference {r['loglik_rel_diff']:.2e}.",
        "",
    ])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=10)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    import jax
    jax.config.update("jax_enable_x64", a.dtype == "float64")
    r = run(a.n, a.d, a.k, a.iters, a.dtype, a.seed, a.repeats)
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"em_gmm_{a.dtype}"
    (out / f"{stem}.json").write_text(json.dumps(r, indent=2) + "\n")
    md = to_markdown(r)
    (out / f"{stem}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
