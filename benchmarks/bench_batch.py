"""Suite ``batch``: many small fits in one call against a hand-written vmapped CAVI.

10000 normal-gamma data sets (n=20 points each; ``vijax.models.ZOO["normal_gamma"]``)
are fitted in one call by

- ``vj.batch_cavi(model, xs)``: the whole result (posteriors, diagnostics, per-lane
  ELBO traces, host-side lane report) from the batched driver
  (:mod:`vijax.inference.batch_driver`: one loop, shared step counter, vmapped step);
  fresh compile (first call) and steady state,
- the batched driver's jitted first segment returning only ELBOs and sweep counts
  (the same loop as ``vj.batch_cavi``),
- ``jax.jit(jax.vmap(lambda x: vj.cavi(model, x)))`` (the recipe a user writes), once
  returning only the ELBOs and sweep counts (XLA drops the rest) and once the whole
  result (posteriors, diagnostics, each lane's ELBO trace of ``max_iters`` entries),
- a hand-written vmapped CAVI of the same model (:func:`reference_fit`: closed-form
  updates of ``q(mu)`` and ``q(tau)``, the ELBO after each sweep, the same stopping rule
  ``|L_t - L_{t-1}| <= tol * max(|L_t|, 1)`` with vijax's default tolerance for the
  dtype, or a decrease (float rounding), in a ``lax.while_loop`` under ``vmap``),

timed interleaved in the same run; ratio = vijax / hand-written (target <= 1.5x).
Sanity: the per-lane ELBOs agree and the sweep counts are reported.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln

import vijax as vj
from benchmarks import harness as H
from vijax.inference.stopping import default_tol
from vijax.models import ZOO
from vijax.models.gaussian import NORMAL_GAMMA_PRIOR

SIZES = {"tiny": {"fits": 64, "fit_n": 20, "repeats": 2},
         "full": {"fits": 10_000, "fit_n": 20, "repeats": 100}}
SEED = 0
LIMIT = 1.5
MAX_ITERS = 500
#: candidates timed interleaved with the hand-written fit, group by group (each group has
#: its own reference timings: the [lanes, max_iters] buffers of the vmap recipe's whole
#: result evict the caches and fault fresh pages for whichever call runs next)
GROUPS = {
    "batch": ("hand-written vmapped CAVI, ELBO only", "vj.batch_cavi, whole result",
              "batched driver (jit), ELBO only"),
    "vmap recipe": ("jit(vmap(vj.cavi)), ELBO only", "jit(vmap(vj.cavi)), whole result"),
}


def reference_fit(x, tol, max_iters=MAX_ITERS):
    """Hand-written CAVI of the normal-gamma model for one data set ``x`` (vmap it),
    started where vijax's default start is (``q(tau) = Gamma(1, 1)``, ``E[tau] = 1``;
    ``q(mu)`` is updated first and does not depend on its own start).

    Returns ``(elbo, num_iters, converged, (m, prec, a, b))``: the ELBO, the sweeps, the
    stopping rule's verdict and the posterior ``q(mu) = N(m, 1/prec)``,
    ``q(tau) = Gamma(a, b)``."""
    p = NORMAL_GAMMA_PRIOR
    mu0, lam0, a0, b0 = p["mu0"], p["lambda0"], p["a0"], p["b0"]
    dt = x.dtype
    n = x.shape[0]
    sx, sxx = jnp.sum(x), jnp.sum(x * x)
    # q(mu) = N(m, 1/prec) with m fixed by the data; q(tau) = Gamma(a, b) with a fixed
    m = (lam0 * mu0 + sx) / (lam0 + n)
    a = jnp.asarray(a0 + 0.5 * (n + 1), dt)
    log2pi = jnp.log(2 * jnp.pi).astype(dt)

    def elbo(prec, b):
        etau, elog = a / b, digamma(a) - jnp.log(b)
        emu2 = m * m + 1.0 / prec
        ll = (a0 * jnp.log(b0) - gammaln(a0) + (a0 - 1) * elog - b0 * etau
              + 0.5 * (jnp.log(lam0) + elog - log2pi)
              - 0.5 * lam0 * etau * (emu2 - 2 * mu0 * m + mu0 * mu0)
              + 0.5 * n * (elog - log2pi) - 0.5 * etau * (sxx - 2 * m * sx + n * emu2))
        h_mu = 0.5 * (log2pi + 1.0 - jnp.log(prec))
        h_tau = a - jnp.log(b) + gammaln(a) + (1 - a) * digamma(a)
        return ll + h_mu + h_tau

    def sweep(b):
        prec = (lam0 + n) * a / b
        emu2 = m * m + 1.0 / prec
        b = b0 + 0.5 * (sxx - 2 * m * sx + n * emu2
                        + lam0 * (emu2 - 2 * mu0 * m + mu0 * mu0))
        return prec, b

    def cond(c):
        i, _, _, _, done = c
        return (i < max_iters) & ~done

    def body(c):
        i, b, _, e_old, _ = c
        prec, b = sweep(b)
        e = elbo(prec, b)
        change = e - e_old
        done = (jnp.abs(change) <= tol * jnp.maximum(jnp.abs(e), 1.0)) | (change <= 0)
        return i + 1, b, prec, e, done

    b_init = a  # E[tau] = a / b = 1, vijax's default start
    prec_init = jnp.asarray(lam0 + n, dt)
    c0 = (jnp.asarray(0), b_init, prec_init, elbo(prec_init, b_init), jnp.asarray(False))
    i, b, prec, e, done = jax.lax.while_loop(cond, body, c0)
    return e, i, done, (m, prec, a, b)


def _data(n_fits, n, dtype):
    zm = ZOO["normal_gamma"]()
    keys = jax.random.split(jax.random.key(SEED), n_fits)
    return zm.model, jax.jit(jax.vmap(lambda k: zm.make_data(k, n).astype(dtype)))(keys)


def run(size: str, dtype: str) -> dict:
    cfg = SIZES[size]
    rows, targets, sanity = [], [], []
    for dt_name in ("float32", "float64"):
        with H.precision(dt_name) as dt:
            r, t, s = _one_dtype(cfg, dt)
        rows += r
        targets += t
        sanity += s
    notes = [
        "Both dtypes run in the same process (the suite's --dtype is ignored). Each "
        "candidate is AOT-compiled (compile time reported apart; vj.batch_cavi's is its "
        "first call: tracing + XLA compile + one run) and the executables are timed "
        f"interleaved, median (and min) of {cfg['repeats']} calls, in two groups, each "
        "with the hand-written fit timed again among its members ('group'; ratios are "
        "to the reference of the same group): the vmap recipe's whole result writes "
        "[lanes, max_iters] buffers (20-40 MB) whose freed pages and evicted caches slowed "
        "whichever call came next by up to 0.4 ms. The machine is a shared 2-core box: "
        "ratios of interleaved calls are the meaningful numbers; ratio_min compares the "
        "least disturbed calls.",
        "Loops run until the slowest lane stops; a stopped lane is frozen and reports its "
        "own num_iters. 'sweeps' gives min / mean / max per lane.",
        "The hand-written CAVI starts where vijax's default start is (q(tau) = "
        "Gamma(1, 1); q(mu) is updated first) and returns its posterior parameters, "
        "ELBO, sweep count and converged flag ('ELBO only': the first two); vijax's "
        "q(mu) starts at random means, so its first sweep moves more and some lanes take "
        "one sweep more (see 'sweeps').",
        "Where the time went in jit(vmap(vj.cavi)), whole result (XLA profile, float32, "
        "10000 lanes): under vmap JAX's while loop has a per-lane predicate and selects "
        "every carry leaf per lane at every step, the [10000, 500] ELBO trace (20 MB; "
        "40 MB in float64) included: 7 passes over it per call. driver.run now runs the "
        "first 16 steps with a 16-entry trace and the rest in a second plain loop (not "
        "entered when every lane stops within 16 steps); what remains is writing the "
        "[lanes, max_iters] trace output itself: a jitted function that only writes a "
        "fresh [10000, 500] float32 array takes 1.6 ms here (min; page faults of a fresh "
        "20 MB buffer), about 3x the whole hand-written fit, so this row cannot meet the "
        "target while the result holds max_iters ELBOs per lane (select fields, e.g. the "
        "ELBO-only row, or use vj.batch_cavi, whose trace has the sweeps run).",
        "vj.batch_cavi runs its own batched CAVI loop (batch_driver.lean_advance): one "
        "step counter shared by the lanes, the sweep vmapped, a stopped lane frozen; the "
        "ELBO and its rounding bound carried once, num_iters / converged / failed_at / "
        "the refused block one int32 code per lane, the step's ELBO and bound computed "
        "once (driver.materialized), the first sweep peeled out of the loop. Since the "
        "last report (measured by paired A/B calls of the old and new code in one "
        "process, float32, 10000 lanes): (1) constants of F that do not read the data "
        "(priors) stay one value for all lanes instead of a per-lane copy carried through "
        "the loop (Program.data_dependent, read off the data program's jaxpr); (2) a "
        "stopped lane keeps its state from before its last sweep and that sweep is "
        "replayed once after the loop (undamped sweeps), so the loop carries and computes "
        "only the mean parameters the next sweep reads, not the result's natural "
        "parameters (14 fusions per sweep, was 19); (3) an update's finiteness verdicts "
        "joined by & (jnp.all of a stacked array became an unvectorized pad + reduce in "
        "the loop's fusion, ~30 us a sweep) and the trace buffer starts as a broadcast "
        "(a zeros-then-write became a pad fusion, ~0.15 ms); (4) host: tol as a cached "
        "device scalar (a Python float argument cost ~70 us of dispatch), one cache look-"
        "up for program and fitters, the data's NaN/Inf check (a BLAS sum of squares, "
        "model.all_finite) and the result's host-side parts made while the device runs, "
        "the first segment's outputs returned flat (the pytree rebuilt on the host "
        "meanwhile). Together: float32 whole result 2.5-2.9x -> 1.6-1.8x, float64 "
        "1.9-2.2x -> 1.35-1.45x; values unchanged (A/B results bit-identical).",
        "Where vj.batch_cavi's float32 time still goes (same process, percentiles of 800 "
        "interleaved calls): its device program alone is 1.31-1.39x the hand-written fit "
        "(1.13-1.14x in float64): in float32 the slowest of 10000 lanes needs 7 sweeps "
        "against the hand-written's 6 (the lanes stop at the ELBO's float32 resolution, "
        "so the sweep counts follow rounding noise: 'sweeps' column), and each sweep "
        "evaluates the generic F, the entropies, the rounding bound, the update's validity "
        "and the per-lane freezing (13 loop fusions against 9); the result's decoding, "
        "the replayed sweep and the status reduction run once after the loop. The call "
        "adds ~0.2 ms on the host (0.3x): cache look-ups and option checks (~35 us), "
        "dispatch (~55 us), the NaN/Inf check of the data (~60 us, overlapped with the "
        "device but sharing the 2 cores: ~0.1x), the status read, the lane report and "
        "the harness's block on the whole result pytree (~35 us). XLA's classic CPU "
        "emitters (vijax._xla.jit, used by other fit programs) ran this loop 2x slower: "
        "vj.batch_cavi keeps XLA's defaults.",
        "The batched driver's ELBO-only row (the same loop, outputs limited to ELBO and "
        "sweeps) meets the target in both dtypes: the whole result's extra cost is the "
        "per-lane bookkeeping the result needs (posterior parameters, diagnostics, trace) "
        "and the host work of a documented, checked, chunking call.",
    ]
    return {"suite": "batch",
            "title": "Batch fitting: 10000 normal-gamma fits in one call",
            "config": {"size": size, "seed": SEED, "fits, points each":
                       (cfg["fits"], cfg["fit_n"]), "max_iters": MAX_ITERS,
                       "repeats": cfg["repeats"]},
            "tables": [{"name": "Many fits in one call (median seconds per call)",
                        "columns": ["dtype", "group", "method", "compile_s", "total_s",
                                    "min_s", "fits_per_s", "ratio_vs_hand_written", "ratio_min",
                                    "sweeps"], "rows": rows},
                       {"name": "Sanity checks", "columns": ["key", "value"],
                        "rows": sanity}],
            "targets": targets, "notes": notes}


def _one_dtype(cfg, dt):
    from vijax.conjugacy.program import program_for
    from vijax.inference import batch as vjbatch
    model, xs = _data(cfg["fits"], cfg["fit_n"], dt)
    tol = default_tol(dt)
    key = jax.random.key(0)

    def vmapped(x):
        res = vj.cavi(model, x)
        return res.elbo, res.num_iters

    cands = {
        "hand-written vmapped CAVI": jax.jit(jax.vmap(lambda x: reference_fit(x, tol))),
        "hand-written vmapped CAVI, ELBO only": jax.jit(
            jax.vmap(lambda x: reference_fit(x, tol)[:2])),
        "jit(vmap(vj.cavi)), ELBO only": jax.jit(jax.vmap(vmapped)),
    }
    exes, comps = {}, {}
    for name, fn in cands.items():
        exes[name], comps[name] = H.aot_compile(fn, xs)
    # the whole FitResult (posteriors, diagnostics, the per-lane ELBO trace of max_iters)
    full, comps["jit(vmap(vj.cavi)), whole result"] = H.aot_compile(
        jax.jit(jax.vmap(lambda x: vj.cavi(model, x))), xs)
    exes["jit(vmap(vj.cavi)), whole result"] = lambda x: _batch_out(full(x))
    # vj.batch_cavi: fresh compile = its first call (analysis cached, jitted fitters not)
    vjbatch._CACHE.clear()
    batch = lambda x: _batch_out(vj.batch_cavi(model, x))  # noqa: E731
    t0 = H.clock()
    H.block(batch(xs))
    comps["vj.batch_cavi, whole result"] = {"trace_lower_s": H.clock() - t0,
                                            "xla_compile_s": 0.0}
    exes["vj.batch_cavi, whole result"] = batch
    # the batched driver's first segment (every lane stops within it here), ELBO only
    fitter = vjbatch._fitter(model, program_for(model, xs[0]), MAX_ITERS, None, None,
                             False)  # (traced by the vj.batch_cavi call above)

    def elbo_only(x):
        res = fitter.unflatten_first(fitter.first(x, key, None, tol))[1]
        return res.elbo, res.num_iters

    exes["batched driver (jit), ELBO only"], comps["batched driver (jit), ELBO only"] = \
        H.aot_compile(elbo_only, xs)
    outs = {k: [np.asarray(a) for a in f(xs)[:2]] for k, f in exes.items()}
    rows, targets, sanity = [], [], []
    name = jnp.dtype(dt).name
    hand = "hand-written vmapped CAVI"
    for group, members in GROUPS.items():
        times = H.interleaved({k: (exes[k], (xs,)) for k in (hand,) + members},
                              cfg["repeats"])
        ref = H.summarize(times[hand])
        for k in (hand,) + members:
            s = H.summarize(times[k])
            it = outs[k][1]
            rows.append({"dtype": name, "group": group, "method": k,
                         "compile_s": comps[k]["trace_lower_s"] + comps[k]["xla_compile_s"],
                         "total_s": s["median"], "min_s": s["min"],
                         "fits_per_s": cfg["fits"] / s["median"],
                         "ratio_vs_hand_written": s["median"] / ref["median"],
                         "ratio_min": s["min"] / ref["min"],
                         "sweeps": f"{it.min()} / {it.mean():.1f} / {it.max()}"})
            if not k.startswith("hand-written"):
                e, e_ref = outs[k][0].astype(np.float64), outs[hand][0]
                diff = float(np.max(np.abs(e - e_ref) / np.maximum(np.abs(e_ref), 1.0)))
                sanity.append({"key": f"{name} {k}: max rel ELBO diff vs hand-written",
                               "value": diff})
                ratio = s["median"] / ref["median"]
                targets.append({"target": f"{name}: {k} / hand-written vmapped CAVI "
                                          "(median)",
                                "measured": ratio, "limit": f"<= {LIMIT}",
                                "met": ratio <= LIMIT})
    # the posteriors agree too (vj.batch_cavi against the hand-written fit's)
    fit = vj.batch_cavi(model, xs)
    m, prec, a, b = (np.asarray(v, np.float64) for v in cands["hand-written vmapped CAVI"](
        xs)[3])
    for key_, got, want in (("E[mu]", fit.posterior["mu"].mean(), m),
                            ("Var[mu]", fit.posterior["mu"].variance(), 1.0 / prec),
                            ("E[tau]", fit.posterior["tau"].mean(), a / b)):
        got = np.asarray(got, np.float64)
        sanity.append({"key": f"{name} vj.batch_cavi: max rel {key_} diff vs hand-written",
                       "value": float(np.max(np.abs(got - want) / np.abs(want)))})
    return rows, targets, sanity


def _batch_out(res):
    return res.elbo, res.num_iters, res  # blocked on as a whole when timed
