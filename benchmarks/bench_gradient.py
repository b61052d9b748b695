"""Suite ``gradient``: vijax's gradient ELBO path against NumPyro SVI.

Bayesian linear regression (``w ~ N(0, 1/alpha)``, ``y ~ N(X w, 1/beta)``, alpha, beta
~ Gamma(1, 1)), the zoo's model at N=10000, D=50:

- steps per second of a jitted step loop (``lax.scan`` over ``chunk`` steps of the
  public ``vj.algorithms.gradient`` step, the one ``vj.fit_gradient`` runs), for vijax
  ``exact`` and ``reparam`` (adam on the unconstrained parameters) and for NumPyro
  SVI (``AutoNormal`` guide, ``Trace_ELBO``), same optax ``adam``; interleaved, ratios;
- steps to reach within 1e-3 (relative) of the optimal ELBO, taken as CAVI's converged
  ELBO; vijax's ELBO is evaluated exactly (F + entropies) after every chunk, NumPyro's
  by a many-particle Trace_ELBO estimate (its guide is a different family: diagonal
  Normal for w, log-normal for the precisions);
- CAVI sweeps to the same point. Target: vijax at least NumPyro's steps per second.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import vijax as vj
from benchmarks import harness as H
from benchmarks import problems as P

SIZES = {
    "tiny": {"n": 200, "d": 4, "chunk": 25, "max_steps": 100, "repeats": 2,
             "vijax": (("exact", 1),), "numpyro": (1,),
             "eval_particles": 32, "cavi_iters": 10, "public_path": False},
    "full": {"n": 10_000, "d": 50, "chunk": 100, "max_steps": 40_000, "repeats": 10,
             "vijax": (("exact", 1), ("reparam", 1), ("reparam", 16)), "numpyro": (1, 16),
             "eval_particles": 256, "cavi_iters": 100, "public_path": True},
}
SEED = 0
LEARNING_RATE = 1e-2
REL_TOL = 1e-3
LOOSE_TOL = 1e-2  # also reported: where 1e-3 is out of reach in the step budget
TREND_AT = (100, 300, 1000, 3000, 10_000, 20_000, 30_000, 40_000)


def optimizer():
    return optax.adam(LEARNING_RATE)


# --------------------------------------------------------------------------- vijax

def vijax_method(model, data, estimator, num_samples, chunk, dtype, opt):
    """(chunk executable, initial state, exact-ELBO-of-state fn, compile timings).

    Built from the public ``init``/``step`` pair (``vj.algorithms.gradient``, the
    algorithm ``vj.fit_gradient`` runs): the timed chunk is a ``lax.scan`` of ``chunk``
    steps with the data an argument (not a constant folded into the program)."""
    def algorithm(d, est=estimator):
        return vj.algorithms.gradient(model, d, optimizer=opt, estimator=est,
                                      num_samples=num_samples)

    state0 = algorithm(data).init(jax.random.key(SEED + 1))

    def run_chunk(state, d):
        step = algorithm(d).step
        state, info = jax.lax.scan(lambda s, _: step(s), state, None, length=chunk)
        return state, (info.elbo, info.ok)

    exe, comp = H.aot_compile(run_chunk, state0, data)
    # the exact ELBO at a state: Info.elbo of the exact estimator's step there (same
    # family and unconstrained parameters for every estimator of a conjugate model)
    elbo_of = jax.jit(lambda st, d: algorithm(d, "exact").step(st)[1].elbo)

    def progress(state, out, steps):
        ok = np.asarray(out[1])
        bad = steps - chunk + int(np.argmin(ok)) if not ok.all() else -1
        return state, float(elbo_of(state, data)), bad

    return (lambda st: exe(st, data)), state0, progress, comp


# --------------------------------------------------------------------------- numpyro

def numpyro_method(data, num_particles, eval_particles, chunk):
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    X, y = data["X"], data["y"]
    d = X.shape[1]

    def model(X, y):
        alpha = numpyro.sample("alpha", dist.Gamma(1.0, 1.0))
        beta = numpyro.sample("beta", dist.Gamma(1.0, 1.0))
        w = numpyro.sample("w", dist.Normal(0.0, 1.0 / jnp.sqrt(alpha)).expand([d]).to_event(1))
        numpyro.sample("y", dist.Normal(X @ w, 1.0 / jnp.sqrt(beta)).to_event(1), obs=y)

    guide = AutoNormal(model)
    loss = Trace_ELBO(num_particles=num_particles,
                      vectorize_particles=True) if num_particles > 1 else Trace_ELBO()
    svi = SVI(model, guide, optimizer(), loss)
    # jitted: the same initial state as the eager call, in one compilation instead of
    # one per eager op (8 s -> 2 s on this box)
    state0 = jax.jit(svi.init)(jax.random.key(SEED + 2), X, y)

    def run_chunk(state):
        return jax.lax.scan(lambda s, _: svi.update(s, X, y), state, None, length=chunk)

    exe, comp = H.aot_compile(run_chunk, state0)
    big = Trace_ELBO(num_particles=eval_particles, vectorize_particles=True)
    estimate = jax.jit(lambda s, k: -big.loss(k, svi.get_params(s), model, guide, X, y))

    def progress(state, i):
        return float(estimate(state, jax.random.key(1000 + i)))

    return exe, state0, progress, comp


# --------------------------------------------------------------------------- runs

def converge(exe, state0, evaluate, chunk, max_steps, target, kind):
    """Run chunks up to ``max_steps``; ELBO after each chunk. Returns a dict with the
    first step count within ``target`` (None if never), the trend and the final ELBO."""
    state = state0
    steps, hit, hit_loose, trend, diverged = 0, None, None, {}, None
    mean_neg_loss = {}
    opt = target["opt"]
    while steps < max_steps:
        state, out = exe(state)
        steps += chunk
        if kind == "vijax":
            _, e, bad = evaluate(state, out, steps)
            if bad >= 0:
                diverged = bad
        else:
            e = evaluate(state, steps)
            mean_neg_loss[steps] = -float(np.mean(np.asarray(out)))
        if hit is None and abs(e - opt) <= REL_TOL * abs(opt):
            hit = steps
        if hit_loose is None and abs(e - opt) <= LOOSE_TOL * abs(opt):
            hit_loose = steps
        if steps in TREND_AT or steps == max_steps:
            trend[steps] = e
        if diverged is not None:
            break
    return {"steps_to_target": hit, "steps_to_loose": hit_loose, "final_elbo": e,
            "trend": trend, "diverged_at": diverged,
            "neg_loss_trend": {s: mean_neg_loss[s] for s in trend if s in mean_neg_loss}}


def run(size: str, dtype: str) -> dict:
    cfg = SIZES[size]
    with H.precision(dtype) as dt:
        return _run(size, dtype, cfg, dt)


def _run(size, dtype, cfg, dt):
    n, d, chunk = cfg["n"], cfg["d"], cfg["chunk"]
    data = P.linreg_data(n, d, SEED, dt)
    model = P.linreg_model(d)
    # optimum: CAVI to convergence (tol=0: a fixed number of sweeps)
    t0 = H.clock()
    fit = vj.cavi(model, data, tol=0.0, max_iters=cfg["cavi_iters"])
    trace = np.asarray(fit.elbo_trace, np.float64)
    t_cavi = H.clock() - t0
    opt = float(trace[-1])
    within = np.nonzero(np.abs(trace - opt) <= REL_TOL * abs(opt))[0]
    cavi_sweeps = int(within[0]) + 1 if within.size else None
    loose = np.nonzero(np.abs(trace - opt) <= LOOSE_TOL * abs(opt))[0]
    cavi_loose = int(loose[0]) + 1 if loose.size else None
    max_decrease = float(fit.diagnostics["max_decrease"])
    target = {"opt": opt}

    methods = {}
    for est, s in cfg["vijax"]:
        name = f"vijax {est}" + (f" (S={s})" if est == "reparam" else "")
        exe, st0, ev, comp = vijax_method(model, data, est, s, chunk, dt, optimizer())
        methods[name] = ("vijax", exe, st0, ev, comp)
    for p in cfg["numpyro"]:
        name = f"NumPyro AutoNormal (particles={p})"
        exe, st0, ev, comp = numpyro_method(data, p, cfg["eval_particles"], chunk)
        methods[name] = ("numpyro", exe, st0, ev, comp)

    times = H.interleaved({k: (m[1], (m[2],)) for k, m in methods.items()}, cfg["repeats"])
    speed = {k: H.summarize(t, chunk) for k, t in times.items()}
    np_base = {p: speed[f"NumPyro AutoNormal (particles={p})"] for p in cfg["numpyro"]}

    rows, trend_rows, targets = [], [], []
    for name, (kind, exe, st0, ev, comp) in methods.items():
        res = converge(exe, st0, ev, chunk, cfg["max_steps"], target, kind)
        s = speed[name]
        sps = 1.0 / s["median"]
        samples = int(name.split("=")[-1].rstrip(")")) if "=" in name else 1
        base_p = samples if samples in np_base else cfg["numpyro"][0]
        base = np_base[base_p]
        row = {"method": name, "trace_lower_s": comp["trace_lower_s"],
               "xla_compile_s": comp["xla_compile_s"], "steps_per_s": sps,
               "steps_per_s_best": 1.0 / s["min"],
               "vs_numpyro": (sps * base["median"]) if kind == "vijax" else 1.0,
               "numpyro_ref": f"particles={base_p}",
               "steps_to_1e-3": res["steps_to_target"],
               "steps_to_1e-2": res["steps_to_loose"],
               "final_elbo": res["final_elbo"],
               "rel_gap_final": (opt - res["final_elbo"]) / abs(opt),
               "diverged_at_step": res["diverged_at"]}
        rows.append(row)
        for st, e in res["trend"].items():
            trend_rows.append({"method": name, "steps": st, "elbo": e,
                               "rel_gap": (opt - e) / abs(opt),
                               "numpyro_mean_neg_loss": res["neg_loss_trend"].get(st)})
        if kind == "vijax" and samples == 1:
            targets.append({"target": f"{name} steps/s >= NumPyro's (particles={base_p})",
                            "measured": row["vs_numpyro"], "limit": ">= 1.0",
                            "met": row["vs_numpyro"] >= 1.0})
    rows.append({"method": "CAVI (vj.cavi): sweeps", "steps_to_1e-3": cavi_sweeps,
                 "steps_to_1e-2": cavi_loose, "final_elbo": opt, "rel_gap_final": 0.0,
                 "steps_per_s": cfg["cavi_iters"] / t_cavi,
                 "numpyro_ref": "sweeps/s, analysis and compile included"})
    if cfg["public_path"]:
        opt_obj = optimizer()  # one object: fit_gradient's jit cache keys on it
        for which in ("first call", "second call"):
            t0 = H.clock()
            g = vj.fit_gradient(model, data, jax.random.key(SEED + 1), optimizer=opt_obj,
                                estimator="exact", num_steps=10 * chunk, chunk=chunk, tol=0.0)
            H.block(g.elbo)
            t_pub = H.clock() - t0
            rows.append({"method": f"vj.fit_gradient exact, {10 * chunk} steps, {which}",
                         "steps_per_s": 10 * chunk / t_pub,
                         "numpyro_ref": "end to end (analysis, compile if any, "
                                        "chunk loop)"})
    notes = [
        f"Optimizer optax.adam({LEARNING_RATE}) for every method; {chunk} steps per jitted "
        "lax.scan chunk; steps/s = chunk / (median time of one chunk call), all methods' "
        "chunks timed interleaved from their initial states; vs_numpyro = vijax steps/s / "
        "NumPyro steps/s with the same number of Monte Carlo samples (exact vs 1 particle).",
        f"Optimum = CAVI's ELBO after {cfg['cavi_iters']} sweeps ({opt:.6g}); CAVI's largest "
        f"ELBO decrease over the sweeps: {max_decrease:.3g}. steps_to_1e-3: first chunk end "
        f"with |ELBO - optimum| <= {REL_TOL} |optimum| (None: not within {cfg['max_steps']} "
        "steps).",
        "vijax ELBOs are exact (F + entropies at the current factors; q(w) dense Gaussian, "
        "q(alpha), q(beta) Gamma). NumPyro's are "
        f"{cfg['eval_particles']}-particle Trace_ELBO estimates of its own guide (AutoNormal: "
        "diagonal Normal over w, Normal in log space for alpha and beta), a different "
        "family whose optimum is at or below the mean-field optimum; numpyro_mean_neg_loss "
        "is the mean of the optimizer's own one-sample -loss over the chunk ending there.",
        "diverged_at_step: the first step whose Info.ok is false (a non-finite ELBO or "
        "update; fit_gradient raises FitDivergedError there); the run ends and its last "
        "ELBO is reported. (float32 reparam runs: q(w)'s precision, rebuilt from the scale_tril "
        "parameter as S^-T S^-1 and factorized again, becomes numerically singular.)",
        "Initial factors differ (vijax default_init vs AutoNormal's init_to_median with "
        "scale 0.1), so step counts compare optimizers end to end, not from one start.",
    ]
    return {"suite": "gradient", "title": "Gradient ELBO path vs NumPyro SVI (linear regression)",
            "config": {"size": size, "dtype": dtype, "seed": SEED, "N, D": (n, d),
                       "chunk": chunk, "max_steps": cfg["max_steps"],
                       "optimizer": f"adam({LEARNING_RATE})", "repeats": cfg["repeats"],
                       "relative tolerance": REL_TOL, "CAVI optimum": opt,
                       "CAVI wall s (compile incl.)": t_cavi},
            "tables": [{"name": "Steps per second and steps to the optimum",
                        "columns": ["method", "trace_lower_s", "xla_compile_s", "steps_per_s",
                                    "steps_per_s_best", "vs_numpyro", "numpyro_ref",
                                    "steps_to_1e-3", "steps_to_1e-2", "final_elbo", "rel_gap_final",
                                    "diverged_at_step"], "rows": rows},
                       {"name": "ELBO trend", "columns": ["method", "steps", "elbo", "rel_gap",
                                                          "numpyro_mean_neg_loss"],
                        "rows": trend_rows}],
            "targets": targets, "notes": notes}
