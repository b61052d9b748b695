"""Suite ``state_space``: the linear-Gaussian state-space model, Gauss-Markov chain factor
vs today's dense Gaussian vs a hand-written Kalman/RTS smoother in JAX.

The zoo model ``state_space(T, vectorized=True)`` (x_t = 0.9 x_{t-1} + N(0, 0.5^2),
y_t = x_t + N(0, 0.4^2)) at T = 1e3, 1e4, 1e5 (``full``; ``tiny``: 50 and 500):

- ``chain``: vijax CAVI with the GaussMarkov factor the compiler picks (one sweep is the
  exact smoother);
- ``dense``: the same with the chain family left out (``registry.without``), i.e. one
  dense ``T x T`` Gaussian: only where it fits (T <= ``dense_max``);
- ``hand RTS``: a Kalman filter + RTS smoother written with ``lax.scan`` (jitted), the
  hand-written CAVI sweep of this model;
- the same model written with ``lax.scan`` (``written = lax.scan``) at small T: its
  analysis time, which grows with T (the walk unrolls the scan).

Per row: analysis time (fresh program cache), XLA compile time, time per sweep (AOT loops,
differenced), and a whole ``vj.cavi`` call (first and steady). Targets (issue 12): sweep
time linear in T, analysis time flat in T, and the chain's sweep within 2x of the
hand-written smoother's at T = 1e4.

Run alone: ``python -m benchmarks.bench_state_space --size full`` (writes
benchmarks/results/state_space.json and .md); smoke: ``run("tiny", "float64")``.
"""

from __future__ import annotations

import contextlib
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

import vijax as vj
from benchmarks import harness as H
from vijax.conjugacy import joint_blocks
from vijax.conjugacy import program as P
from vijax.families import GaussMarkov, registry
from vijax.inference import meanfield as mf
from vijax.models.state_space import SSM_PARAMS, state_space

SIZES = {"tiny": {"ts": (50, 500), "dense_max": 50, "scan_ts": (20, 40), "repeats": 2,
                  "iters": 3, "step_repeats": 3},
         "full": {"ts": (1000, 10_000, 100_000), "dense_max": 1000,
                  "scan_ts": (100, 300, 1000), "repeats": 5, "iters": 10, "step_repeats": 21}}
SEED = 0
SWEEP_LIMIT = 2.0   # chain sweep / hand-written smoother sweep at T = 1e4 (issue 12)


@jax.jit
def hand_rts(y):
    """Kalman filter + RTS smoother of the zoo model: smoothed means, variances, log p(y)."""
    a, q, r = SSM_PARAMS["a"], SSM_PARAMS["q"], SSM_PARAMS["r"]

    def filt(c, yt):
        m, p, ll = c
        s = p + r * r
        k = p / s
        ll = ll - 0.5 * (jnp.log(2 * jnp.pi * s) + (yt - m) ** 2 / s)
        mf, pf = m + k * (yt - m), (1 - k) * p
        return (a * mf, a * a * pf + q * q, ll), (mf, pf, m, p)

    one = jnp.ones((), y.dtype)
    (_, _, ll), (mf, pf, mp, pp) = jax.lax.scan(filt, (0 * one, one, 0 * one), y)

    def smooth(c, xs):
        ms, ps = c
        mf_t, pf_t, mp_n, pp_n = xs
        g = pf_t * a / pp_n
        m, p = mf_t + g * (ms - mp_n), pf_t + g * g * (ps - pp_n)
        return (m, p), (m, p)

    _, (ms, ps) = jax.lax.scan(smooth, (mf[-1], pf[-1]), (mf[:-1], pf[:-1], mp[1:], pp[1:]),
                               reverse=True)
    return jnp.append(ms, mf[-1]), jnp.append(ps, pf[-1]), ll


def _steady(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = H.clock()
        H.block(fn())
        times.append(H.clock() - t0)
    return statistics.median(times)


def _cavi_loop(iters):
    """The public CAVI step run by the public driver for ``iters`` sweeps (tol=0)."""
    def loop(compiled, natural0):
        alg = vj.algorithms.cavi(compiled)
        state = alg.init(natural0)
        return vj.run(alg.step, state, max_iters=iters, tol=0.0, elbo0=state.elbo).info.elbo
    return loop


def _hand_loop(iters):
    """``iters`` sweeps of the hand-written smoother (each reads the last one's log
    likelihood, so XLA cannot hoist the sweep out of the loop)."""
    def loop(y):
        return jax.lax.fori_loop(1, iters, lambda i, c: hand_rts(y + 0 * c[2]), hand_rts(y))
    return loop


def _per_sweep(make, args, iters, repeats):
    """Seconds per sweep: (t(1 + iters sweeps) - t(1 sweep)) / iters, AOT-compiled loops
    timed interleaved (the start and the call overhead cancel). Also the compile time."""
    long_exe, comp = H.aot_compile(make(1 + iters), *args)
    short_exe, _ = H.aot_compile(make(1), *args)
    t = H.interleaved({"long": (long_exe, args), "short": (short_exe, args)}, repeats)
    per = [(a - b) / iters for a, b in zip(t["long"], t["short"])]
    return statistics.median(per), comp["xla_compile_s"]


def _step(compiled, natural0):
    """One CAVI sweep as one compiled call: the public step from the default start (so
    every call redoes the smoother and the ELBO; in a loop, XLA hoists the sweep of this
    one-latent model out as loop-invariant). It returns the whole new state and info (a
    step returning only the ELBO lets XLA drop the validity check and the stored
    moments)."""
    state0 = jax.jit(lambda c, n: vj.algorithms.cavi(c).init(n))(compiled, natural0)
    # the compiled form is an argument (captured, its arrays would be constants of the
    # executable, which XLA folds)
    step = jax.jit(lambda c, s: vj.algorithms.cavi(c).step(s))
    _, comp = H.aot_compile(step, compiled, state0)
    H.block(step(compiled, state0))  # timed through jit's dispatch (as the hand RTS)
    return step, (compiled, state0), comp["xla_compile_s"]


def _vijax_row(T, form, method, model, y, cfg, dt, whole_fit=True):
    ctx = registry.without("GaussMarkov") if method == "dense" else contextlib.nullcontext()
    with ctx:
        P.clear_cache()
        t0 = H.clock()
        a = vj.analyze(model, y)
        t_an = H.clock() - t0
        prog = P.program_for(model, y)
        compiled = joint_blocks.apply(prog.materialize(y), prog.blocks)
        natural0 = mf.default_init_jit(compiled, jax.random.key(SEED), dt)
        exe, args, comp = _step(compiled, natural0)
        iters, reps = (cfg["iters"], cfg["repeats"]) if method == "chain" else (1, 3)
        in_loop, _ = _per_sweep(_cavi_loop, (compiled, natural0), iters, reps)
        fit = lambda: vj.cavi(model, y, max_iters=2).elbo  # noqa: E731
        t0 = H.clock()
        elbo = float(H.block(fit()))
        first = H.clock() - t0
        steady = _steady(fit, cfg["repeats"]) if whole_fit else None
    fam = a.families["x"].__name__
    row = {"T": T, "written": form, "method": f"{method} ({fam})", "analysis_s": t_an,
           "xla_compile_s": comp, "ms_per_sweep": None, "ms_per_sweep_in_loop": 1e3 * in_loop,
           "first_fit_s": first, "steady_fit_s": steady, "elbo": elbo}
    return row, (exe, args)


def step_natural(compiled, state0):
    """The chain's natural parameters after one sweep (the exact posterior)."""
    return jax.jit(lambda c, s: vj.algorithms.cavi(c).step(s)[0].natural["x"])(
        compiled, state0)


@jax.jit
def chain_update(natural):
    """What the CAVI step asks of the GaussMarkov family: the validity check, the mean
    parameters and the log-normalizer (filter + smoother)."""
    return GaussMarkov.is_valid_natural(natural), GaussMarkov.mean_and_log_normalizer(natural)


def _update_row(T, natural):
    exe, comp = H.aot_compile(chain_update, natural)
    H.block(exe(natural))
    row = {"T": T, "written": "-", "method": "GaussMarkov update alone", "analysis_s": 0.0,
           "xla_compile_s": comp["xla_compile_s"], "ms_per_sweep": None,
           "ms_per_sweep_in_loop": None, "first_fit_s": None, "steady_fit_s": None,
           "elbo": None}
    return row, (chain_update, (natural,))


def _hand_row(T, y, cfg):
    t0 = H.clock()
    exe, comp = H.aot_compile(hand_rts, y)  # first at this T: a real compile
    ll = float(H.block(exe(y))[2])
    first = H.clock() - t0
    in_loop, _ = _per_sweep(_hand_loop, (y,), cfg["iters"], cfg["repeats"])
    row = {"T": T, "written": "-", "method": "hand RTS (lax.scan)", "analysis_s": 0.0,
           "xla_compile_s": comp["xla_compile_s"], "ms_per_sweep": None,
           "ms_per_sweep_in_loop": 1e3 * in_loop, "first_fit_s": first,
           "steady_fit_s": _steady(lambda: hand_rts(y), cfg["repeats"]), "elbo": ll}
    return row, (hand_rts, (y,))


def _time_sweeps(pairs, repeats):
    """Median seconds of one call each, the candidates interleaved: row -> ms_per_sweep."""
    times = H.interleaved({i: c for i, (_, c) in enumerate(pairs)}, repeats)
    for i, (row, _) in enumerate(pairs):
        row["ms_per_sweep"] = 1e3 * statistics.median(times[i])


def _data(T, dt):
    zm = state_space(T, vectorized=True)
    return jnp.asarray(zm.make_data(jax.random.key(SEED)), dt)


def run(size: str, dtype: str) -> dict:
    cfg = SIZES[size]
    rows = []
    with H.precision(dtype) as dt:
        for T in cfg["ts"]:
            y = _data(T, dt)
            pairs = [_vijax_row(T, "vectorized", "chain", state_space(T, True).model, y,
                                cfg, dt)]
            # the family's update alone, on the posterior's parameters
            pairs.append(_update_row(T, step_natural(*pairs[0][1][1])))
            if T <= cfg["dense_max"]:  # slow: no whole-fit repeats
                pairs.append(_vijax_row(T, "vectorized", "dense",
                                        state_space(T, True).model, y, cfg, dt, False))
            pairs.append(_hand_row(T, y, cfg))
            _time_sweeps(pairs, cfg["step_repeats"])
            rows += [r for r, _ in pairs]
        for T in cfg["scan_ts"]:  # the lax.scan-written model: its analysis grows with T
            pair = _vijax_row(T, "lax.scan", "chain", state_space(T, False).model,
                              _data(T, dt), cfg, dt, whole_fit=False)
            _time_sweeps([pair], cfg["step_repeats"])
            rows.append(pair[0])
    for r in rows:
        r["dtype"] = jnp.dtype(dt).name
    targets = _targets(rows, cfg)
    return {"suite": "state_space", "title": "State-space model: Gauss-Markov chain vs dense "
            "vs hand-written Kalman smoother",
            "config": {"size": size, "seed": SEED, "ts": list(cfg["ts"]),
                       "scan_ts": list(cfg["scan_ts"]), "dense_max": cfg["dense_max"],
                       "repeats": cfg["repeats"], "iters": cfg["iters"]},
            "tables": [{"name": "Fits", "columns": list(rows[0]), "rows": rows}],
            "targets": targets, "notes": _notes(cfg)}


def _targets(rows, cfg):
    def pick(written, method):
        return {r["T"]: r for r in rows if r["written"] == written
                and r["method"].startswith(method)}
    chain, hand = pick("vectorized", "chain"), pick("-", "hand")
    dense, scan = pick("vectorized", "dense"), pick("lax.scan", "chain")
    t0, t1 = min(chain), max(chain)
    tref = max(t for t in chain if t <= 10_000)
    growth = chain[t1]["ms_per_sweep"] / chain[t0]["ms_per_sweep"]
    an = chain[t1]["analysis_s"] / chain[t0]["analysis_s"]
    vs_hand = chain[tref]["ms_per_sweep"] / hand[tref]["ms_per_sweep"]
    for r in rows:
        r["sweep_vs_hand"] = (r["ms_per_sweep"] / hand[r["T"]]["ms_per_sweep"]
                              if r["T"] in hand else None)
    out = [
        {"target": f"chain sweep time T={t1} over T={t0} (linear: {t1 / t0:g})",
         "measured": growth, "limit": f"<= {2 * t1 / t0:g}", "met": bool(growth <= 2 * t1 / t0)},
        {"target": f"analysis time (whole-array model) T={t1} over T={t0} (flat)",
         "measured": an, "limit": "<= 2", "met": bool(an <= 2.0)},
        {"target": f"chain sweep over hand-written Kalman/RTS smoother sweep at T={tref}",
         "measured": vs_hand, "limit": f"<= {SWEEP_LIMIT:g}", "met": bool(vs_hand <= SWEEP_LIMIT)}]
    update = pick("-", "GaussMarkov update")
    if tref in update:
        out.append({"target": f"GaussMarkov update alone over the hand-written smoother at "
                              f"T={tref}",
                    "measured": update[tref]["ms_per_sweep"] / hand[tref]["ms_per_sweep"],
                    "limit": "(information)", "met": True})
    if dense:
        td = max(dense)
        gap = abs(dense[td]["elbo"] - chain[td]["elbo"])
        out += [{"target": f"dense over chain sweep time at T={td}",
                 "measured": dense[td]["ms_per_sweep"] / chain[td]["ms_per_sweep"],
                 "limit": "(information)", "met": True},
                {"target": f"|ELBO chain - ELBO dense| at T={td}", "measured": gap,
                 "limit": "<= 1e-6 |ELBO|", "met": bool(gap <= 1e-6 * abs(chain[td]["elbo"]))}]
    if len(scan) > 1:
        s0, s1 = min(scan), max(scan)
        out.append({"target": f"analysis time (lax.scan-written model) T={s1} over T={s0}",
                    "measured": scan[s1]["analysis_s"] / scan[s0]["analysis_s"],
                    "limit": "(information: the walk unrolls the scan)", "met": True})
    return out


def _notes(cfg):
    return [
        "ms_per_sweep: one sweep as one jitted call, median of the calls interleaved "
        "with the other methods at the same T: vijax's public CAVI step (vj.algorithms.cavi) "
        "from the default start (its smoother, moments and ELBO), against the hand-written "
        "Kalman filter + RTS smoother (the exact CAVI update of this model; its log "
        "likelihood is the ELBO). Both include one call's dispatch (tens of microseconds). "
        "The step returns its whole new state and info (returning only the ELBO, XLA "
        "drops the validity check and the stored moments).",
        "GaussMarkov update alone: what the step asks of the family, jitted on the "
        "posterior's natural parameters: is_valid_natural (a scan-free diagonal-dominance "
        "test) and mean_and_log_normalizer (Kalman filter + RTS smoother, two scans, the "
        "lag-one moments and A). The rest of the sweep is the step's: F's gradient, the "
        "ELBO's terms, and for a block under 2^16 numbers (T < ~2.2e4 at D = 1) the gap "
        "term <grad - eta, mu>, three passes over the moments that are zero for an "
        "undamped update (vijax/inference/cavi.py).",
        "ms_per_sweep_in_loop: (t(1 + iters sweeps) - t(1 sweep)) / iters of the loops "
        "(vj.run over the step; the smoother in a fori_loop that reads the last log "
        "likelihood). vijax's loop is not a fair per-sweep measure here: with one latent and "
        "known parameters every update is loop-invariant, so XLA hoists the smoother out of "
        "the loop; what remains per sweep is the ELBO's rounding-bound pass over |F| that "
        "the step takes when the ELBO did not increase (at the fixed point: every sweep).",
        "analysis_s: vj.analyze with an empty program cache (walk, match, data program); "
        "xla_compile_s: the loop of 1 + iters sweeps. first_fit_s: a whole vj.cavi call "
        "(max_iters=2) with the program cached (compile + run + result); steady_fit_s: the "
        "same call again (median), including result assembly and its host checks.",
        f"written: 'vectorized' is state_space(T, vectorized=True) (whole-array "
        f"operations); 'lax.scan' the same model written with a scan (ZOO['state_space']), "
        f"measured only at T in {list(cfg['scan_ts'])}: the walk unrolls the scan, so its "
        "analysis grows with T (superlinearly: about 80 s at T=1000 on this machine).",
        f"dense rows only up to T={cfg['dense_max']} (one T x T Gaussian factor; the sweep "
        "timed once, no whole-fit repeats).",
    ]


if __name__ == "__main__":
    from benchmarks import run as runner
    runner.SUITES.setdefault("state_space", "benchmarks.bench_state_space")
    size = sys.argv[sys.argv.index("--size") + 1] if "--size" in sys.argv else "full"
    dtype = sys.argv[sys.argv.index("--dtype") + 1] if "--dtype" in sys.argv else "float64"
    res = runner.run_suite("state_space", size, dtype, summary=False)
    print(res["paths"])
    np.set_printoptions(precision=4)
    for r in res["tables"][0]["rows"]:
        print(r)
