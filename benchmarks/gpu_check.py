"""One-shot GPU check: correctness tests and benchmarks on the accelerator, in one command.

    python -m benchmarks.gpu_check --out "$OUT"          # full sizes (GPU machine, < 6 min)
    python -m benchmarks.gpu_check --tiny --out /tmp/g   # smoke sizes (CPU, ~2-3 min)

Runs on whatever JAX's default backend is (it does not require a GPU; it reports the
device it ran on). Five parts, in this order:

1. ``environment``: python, jax / jaxlib / numpy / optax / scikit-learn / numpyro versions,
   ``jax.devices()``, the device kind, CPU count, ``nvidia-smi`` when present.
2. ``pytest``: ``python -m pytest -q -x -p no:cacheprovider tests/inference/test_gradient.py``
   in a subprocess (float64, as ``tests/conftest.py`` sets it), restricted with ``-k`` to
   the CAVI-vs-gradient agreement tests (``exact`` and ``reparam`` estimators) on a few
   zoo models plus logistic regression: the whole file takes ~135 s on a 2-core CPU, the
   subset ~70 s (``--pytest-all`` runs the whole file). The child process does not
   preallocate GPU memory (``XLA_PYTHON_CLIENT_PREALLOCATE=false``): this process
   already holds JAX's default share. Its full output goes to ``pytest_gpu.log``.
3. ``cavi_gmm``: diagonal Bayesian GMM, float32, D=10, K=10, N=1e6 and 1e7: seconds per
   CAVI sweep of vijax (its jitted loop, ``tol=0``) against the hand-written JAX CAVI of
   :mod:`benchmarks.reference_gmm`, both AOT-compiled and timed interleaved, and their
   ELBO traces compared (same start) -- :func:`benchmarks.bench_cavi._gmm_pair`, without
   scikit-learn. vijax's analysis (``compile_model``) constant-folds on the host with
   numpy, linear in N (~50 us per point on a 2-core CPU: ~50 s at N=1e6); a larger N runs
   only if its analysis, extrapolated linearly from the previous N, fits
   ``--cavi-analysis-cap`` (60 s) and the part's remaining time, else it is recorded as
   skipped with the estimate.
4. ``gradient``: :mod:`benchmarks.bench_gradient` (Bayesian linear regression N=10000,
   D=50, float32): steps per second of vijax ``exact`` and ``reparam`` (1 sample) and
   NumPyro SVI (1 particle), interleaved, plus the ELBO reached within a short step
   budget -- the suite's own ``run()`` with a reduced configuration (fewer steps).
5. ``em``: ``benchmarks.bench_em.run(n=100000, d=10, k=10, dtype="float32", ...)``: vijax
   EM on the device against scikit-learn ``GaussianMixture`` on this machine's CPU.

Time: a wall-clock budget (``--budget``, default 320 s from start) is checked between
parts. Every part has a cap and a minimum (``PART_LIMITS``); a part runs for at most
``min(cap, max(its minimum, time left - the minimums of the parts after it))``, so later
parts keep their minimum when they can, and it is recorded as ``skipped: time budget``
(with the rest) once the time left is below its minimum. The cap is enforced with
``SIGALRM`` for in-process parts (it fires once control is back in Python) and with a
subprocess timeout for pytest. Results are rewritten after every part (and a "running"
marker before it), so a kill keeps what finished:

- ``<out>/gpu_results.json``: everything (environment, per-part status, wall time, results);
- ``<out>/gpu_results.md``: one table per part, device, dtype, sizes, versions, wall times;
- ``<out>/pytest_gpu.log``: pytest's output.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
import traceback

T_START = time.perf_counter()
ROOT = pathlib.Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------- sizes

PYTEST_FILE = "tests/inference/test_gradient.py"
# CAVI-vs-gradient agreement (exact and reparam estimators) on a few zoo models, and
# logistic regression (refused by CAVI, fitted by the gradient path vs a Laplace reference)
PYTEST_K_FULL = ("(exact or reparam) and (normal_gamma or linear_regression or "
                 "gaussian_mixture or beta_bernoulli) or logistic")
PYTEST_K_TINY = "normal_gamma and (exact or reparam)"

SIZES = {
    "full": {
        "pytest_k": PYTEST_K_FULL,
        "cavi": {"ns": (1_000_000, 10_000_000), "d": 10, "k": 10, "iters": 50, "repeats": 7},
        "gradient": {"n": 10_000, "d": 50, "chunk": 100, "max_steps": 2_000, "repeats": 10,
                     "vijax": (("exact", 1), ("reparam", 1)), "numpyro": (1,),
                     "eval_particles": 256, "cavi_iters": 100, "public_path": False},
        "em": {"n": 100_000, "d": 10, "k": 10, "iters": 20, "repeats": 3},
    },
    "tiny": {
        "pytest_k": PYTEST_K_TINY,
        "cavi": {"ns": (2_000, 5_000), "d": 10, "k": 10, "iters": 10, "repeats": 3},
        "gradient": {"n": 200, "d": 4, "chunk": 25, "max_steps": 100, "repeats": 2,
                     "vijax": (("exact", 1), ("reparam", 1)), "numpyro": (1,),
                     "eval_particles": 32, "cavi_iters": 10, "public_path": False},
        "em": {"n": 2_000, "d": 10, "k": 10, "iters": 5, "repeats": 1},
    },
}
DTYPE = "float32"  # parts 3-5; the pytest part runs in float64 (tests/conftest.py)

# name -> (cap_s, min_s): a part runs for at most its cap and is skipped below its minimum
PART_LIMITS = {"environment": (30, 5), "pytest": (150, 40), "cavi_gmm": (120, 40),
               "gradient": (60, 25), "em": (60, 25)}


def elapsed() -> float:
    return time.perf_counter() - T_START


# ---------------------------------------------------------------------------- helpers

class PartTimeout(Exception):
    """Raised by SIGALRM when a part runs past its cap."""


@contextlib.contextmanager
def alarm(seconds: float):
    """Raise :class:`PartTimeout` in this (main) thread after ``seconds`` (best effort: a
    long call into C, e.g. an XLA compile, is interrupted only when it returns)."""
    if not hasattr(signal, "setitimer") or seconds <= 0:
        yield
        return

    def handler(signum, frame):
        raise PartTimeout(f"part cap of {seconds:.0f} s reached")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _version(mod: str) -> str:
    try:
        import importlib
        return str(importlib.import_module(mod).__version__)
    except Exception as e:  # optional package, or a broken install: say which
        return f"unavailable ({type(e).__name__})"


def _jsonable(x):
    from benchmarks import report
    return report._jsonable(x)


def _md_table(columns, rows) -> str:
    from benchmarks import report
    return report.md_table(columns, rows)


def _fmt(v) -> str:
    from benchmarks import report
    return report._fmt(v)


# ---------------------------------------------------------------------------- parts

def _safe(fn):
    """``fn()``, or a string saying why it failed (an environment field must not fail
    the part)."""
    try:
        return fn()
    except Exception as e:
        return f"unavailable ({type(e).__name__}: {str(e)[:100]})"


def _nvidia_smi():
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,"
                          "clocks.max.sm,power.limit", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=15)
    return smi.stdout.strip() or smi.stderr.strip()


def part_environment(cfg, ctx):
    import jax
    devs = jax.devices()
    dev = devs[0]
    env = {"python": sys.version.split()[0], "executable": sys.executable,
           "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "jax": jax.__version__, "jaxlib": _version("jaxlib"), "numpy": _version("numpy"),
           "optax": _version("optax"), "sklearn": _version("sklearn"),
           "numpyro": _version("numpyro"), "chex": _version("chex"),
           "vijax": _version("vijax"), "default_backend": jax.default_backend(),
           "devices": [str(d) for d in devs], "device_count": len(devs),
           "device_kind": dev.device_kind, "device_platform": dev.platform,
           "jax_enable_x64": _safe(lambda: bool(jax.config.jax_enable_x64)),
           "jax_default_matmul_precision":
               _safe(lambda: str(jax.config.jax_default_matmul_precision)),
           "env": {k: os.environ.get(k, "unset") for k in
                   ("JAX_PLATFORMS", "XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE",
                    "XLA_PYTHON_CLIENT_MEM_FRACTION", "OPENBLAS_NUM_THREADS",
                    "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")},
           "load_average": _safe(lambda: [round(x, 2) for x in os.getloadavg()]),
           "device_memory_bytes_limit":
               _safe(lambda: (dev.memory_stats() or {}).get("bytes_limit")),
           "nvidia_smi": _safe(_nvidia_smi)}
    from benchmarks import report
    env["vijax_commit"] = _safe(lambda: report.environment().get("vijax_commit"))
    return env


def _parse_pytest(text: str) -> dict:
    """Counts from pytest's final line ("3 passed, 1 failed, 22 deselected in 9.1s"), or,
    when the run was cut off before it, from the progress characters ('.', 'F', 'E', ...)."""
    counts = {}
    final = None
    for line in text.splitlines():
        if re.search(r"\b(passed|failed|error|errors|no tests ran)\b.* in [\d.]+s", line):
            final = line.strip("= \n")
    if final is not None:
        for num, what in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected|"
                                    r"xfailed|xpassed|warnings?)", final):
            counts[what.rstrip("s") if what.startswith(("error", "warning")) else what] = int(num)
        return {"summary_line": final, "counts": counts, "complete": True}
    prog = "".join(m.group(1) for line in text.splitlines()
                   if (m := re.match(r"^([.FEsxX]+)\s*(\[\s*\d+%\])?\s*$", line)))
    for ch, what in ((".", "passed"), ("F", "failed"), ("E", "error"), ("s", "skipped")):
        if prog.count(ch):
            counts[what] = prog.count(ch)
    return {"summary_line": None, "counts": counts, "complete": False}


def part_pytest(cfg, ctx):
    out: pathlib.Path = ctx["out"]
    log = out / "pytest_gpu.log"
    subset = None if ctx["pytest_all"] else cfg["pytest_k"]
    cmd = ([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", PYTEST_FILE]
           + (["-k", subset] if subset else []) + ["-rfE", "--durations=15"])
    env = dict(os.environ)
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # this process holds the default share
    env["PYTHONUNBUFFERED"] = "1"
    timeout = max(ctx["cap"] - 5.0, 10.0)  # leave time to read and record the log
    t0 = time.perf_counter()
    timed_out = False
    with open(log, "w") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n# cwd {ROOT}; timeout {timeout:.0f} s; "
                 "XLA_PYTHON_CLIENT_PREALLOCATE=false\n\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the child and its own children only
            rc = proc.wait()
        wall = time.perf_counter() - t0
        if timed_out:
            fh.write(f"\n# gpu_check: killed after {timeout:.0f} s (part time cap)\n")
    text = log.read_text(errors="replace")
    parsed = _parse_pytest(text)
    counts = parsed["counts"]
    ok = (rc == 0 and not timed_out and counts.get("passed", 0) > 0
          and not counts.get("failed") and not counts.get("error"))
    return {"command": shlex.join(cmd), "subset_k": subset or "(whole file)",
            "returncode": rc, "timed_out": timed_out, "timeout_s": timeout, "wall_s": wall,
            "counts": counts, "summary_line": parsed["summary_line"],
            "complete": parsed["complete"], "all_passed": ok,
            "dtype": "float64 (tests/conftest.py enables jax_enable_x64)",
            "tail": text.splitlines()[-60:], "log": log.name}


def part_cavi(cfg, ctx):
    from benchmarks import bench_cavi as BC
    from benchmarks import harness as H
    from benchmarks import problems as P
    c = cfg["cavi"]
    d, k, iters, repeats = c["d"], c["k"], c["iters"], c["repeats"]
    part_end = time.perf_counter() + ctx["cap"]
    rows, sanity_rows, skipped = [], [], []
    res = {"dtype": DTYPE, "d": d, "k": k, "sweeps_timed": iters, "repeats": repeats,
           "analysis_cap_s": ctx["analysis_cap"], "rows": rows, "sanity": sanity_rows,
           "skipped": skipped}
    ctx["part"]["result"] = res  # filled in place: a kill keeps the sizes already done
    prev = None  # (n, analysis_s, other_s) of the last size run
    for n in c["ns"]:
        if prev is not None:
            est_an = prev[1] * n / prev[0]
            est_total = est_an + prev[2] * max(1.0, n / prev[0] / 4)  # compiles ~flat, runs ~N
            left = part_end - time.perf_counter()
            if est_an > ctx["analysis_cap"] or est_total > left:
                why = (f"N={n}: skipped, vijax analysis (compile_model, host numpy) estimated "
                       f"{est_an:.0f} s from {prev[1]:.1f} s at N={prev[0]} (linear in N); cap "
                       f"{ctx['analysis_cap']:.0f} s, part time left {left:.0f} s, "
                       f"estimated total {est_total:.0f} s")
                skipped.append(why)
                print(f"  [cavi_gmm] {why}", flush=True)
                continue
        t0 = time.perf_counter()
        try:
            with H.precision(DTYPE) as dt:
                r, rat, sanity, prob, _ = BC._gmm_pair(n, d, k, iters, repeats, dt)
                data_gb = P.pytree_bytes(prob.data) / 1e9
                an = float(prob.analysis_s)
        except Exception as e:  # e.g. out of memory at the larger N: keep the smaller
            res.setdefault("errors", []).append(
                f"N={n}: {type(e).__name__}: {str(e)[:300]} (after "
                f"{time.perf_counter() - t0:.0f} s)")
            print(f"  [cavi_gmm] N={n} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
            getattr(P, "_GMM_CACHE", {}).clear()
            if not rows:
                raise
            break
        total = time.perf_counter() - t0
        for row in r:
            row["data_GB"] = data_gb
            row["setup_plus_timing_s"] = total if row["impl"] == "vijax" else None
        rows.extend(r)
        sanity_rows.append({"setting": f"N={n} D={d} K={k}", **sanity})
        prev = (n, an, max(total - an, 0.0))
        print(f"  [cavi_gmm] N={n}: vijax/reference {rat['median']:.3f} (median), "
              f"analysis {an:.1f} s, ELBO rel diff {sanity['final rel diff']:.2e}, "
              f"{total:.1f} s", flush=True)
        ctx["save"]()  # partial result of this part
        # free the problem (data, compiled form) before a larger N
        getattr(P, "_GMM_CACHE", {}).clear()
        del prob
    return res


def part_gradient(cfg, ctx):
    from benchmarks import bench_gradient as BG
    g = dict(cfg["gradient"])
    name = "gpu_check"
    BG.SIZES[name] = g  # the suite's run(), with this (smaller) configuration
    try:
        result = BG.run(name, DTYPE)
    finally:
        BG.SIZES.pop(name, None)
    return {"dtype": DTYPE, "config": g, "suite_result": result}


def part_em(cfg, ctx):
    from benchmarks import bench_em
    from benchmarks import harness as H
    e = cfg["em"]
    with H.precision(DTYPE):
        r = bench_em.run(n=e["n"], d=e["d"], k=e["k"], iters=e["iters"], dtype=DTYPE, seed=0,
                         repeats=e["repeats"])
    return {"dtype": DTYPE, "config": e, "bench_em": dict(r)}


PARTS = [("environment", part_environment), ("pytest", part_pytest),
         ("cavi_gmm", part_cavi), ("gradient", part_gradient), ("em", part_em)]


# ---------------------------------------------------------------------------- report

def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _md_environment(r):
    env = r or {}
    keys = ["device_kind", "device_platform", "devices", "nvidia_smi",
            "device_memory_bytes_limit", "python", "jax", "jaxlib", "numpy", "optax",
            "sklearn", "numpyro", "chex", "vijax", "vijax_commit", "cpu_count", "platform",
            "jax_default_matmul_precision", "load_average"]
    rows = [{"key": k, "value": env.get(k)} for k in keys if k in env]
    rows += [{"key": f"env {k}", "value": v} for k, v in env.get("env", {}).items()]
    return [_md_table(["key", "value"], rows)]


def _md_pytest(r):
    lines = [f"`{r['command']}` (cwd: repository root)", "",
             _md_table(["subset (-k)", "passed", "failed", "error", "deselected", "returncode",
                        "timed out", "wall_s", "all passed"],
                       [{"subset (-k)": r["subset_k"], **r["counts"],
                         "returncode": r["returncode"],
                         "timed out": "yes" if r["timed_out"] else "no",
                         "wall_s": r["wall_s"], "all passed": r["all_passed"]}]), "",
             f"dtype: {r['dtype']}. Summary: `{r['summary_line']}`. Full output: "
             f"`{r['log']}`; its last lines:", "", "```"]
    lines += r["tail"][-25:] + ["```"]
    return lines


def _md_cavi(r):
    cols = ["setting", "impl", "data_GB", "analysis_s", "trace_lower_s", "xla_compile_s",
            "ms_per_iter_min", "ms_per_iter_median", "ratio_min", "ratio_median"]
    lines = [f"dtype {r['dtype']}, D={r['d']}, K={r['k']}; {r['sweeps_timed']} sweeps per "
             f"timed call (tol=0, ELBO after every sweep), {r['repeats']} interleaved "
             "repeats; ratio = vijax / hand-written JAX (> 1: vijax slower).", "",
             _md_table(cols, r["rows"]), ""]
    if r["sanity"]:
        lines += ["ELBO agreement (same start, same number of sweeps):", "",
                  _md_table(["setting", "final ELBO vijax", "final ELBO reference",
                             "final rel diff", "max rel diff over trace"], r["sanity"]), ""]
    lines += [f"- {s}" for s in r["skipped"] + r.get("errors", [])]
    return lines


def _md_gradient(r):
    res = r["suite_result"]
    g = r["config"]
    lines = [f"dtype {r['dtype']}, N={g['n']}, D={g['d']}, chunk {g['chunk']} steps, "
             f"{g['repeats']} timed chunks per method (interleaved), then up to "
             f"{g['max_steps']} steps to follow the ELBO; optimizer adam(1e-2).", ""]
    for t in res.get("tables", [])[:1]:
        cols = [c for c in t["columns"] if c in ("method", "xla_compile_s", "steps_per_s",
                                                  "steps_per_s_best", "vs_numpyro",
                                                  "numpyro_ref", "steps_to_1e-2",
                                                  "steps_to_1e-3", "final_elbo",
                                                  "rel_gap_final", "diverged_at_step")]
        lines += [_md_table(cols, t["rows"]), ""]
    opt = res.get("config", {}).get("CAVI optimum")
    lines.append(f"vs_numpyro = vijax steps/s / NumPyro steps/s (1 particle). CAVI optimum "
                 f"(reference ELBO): {_fmt(opt)}. Only {g['max_steps']} steps are run after "
                 "the timing (the CPU suite runs 40000), so steps_to_* are mostly '-' and "
                 "final_elbo is not converged: this part measures speed, not convergence.")
    return lines


def _md_em(r):
    b = r["bench_em"]
    e = r["config"]
    lines = [f"dtype {r['dtype']}, N={e['n']}, D={e['d']}, K={e['k']}, {e['iters']} EM "
             f"iterations, {e['repeats']} repeats (best kept); vijax on "
             f"{b.get('machine', {}).get('device', '?')}, scikit-learn on the host CPU "
             f"({b.get('machine', {}).get('cpu_count', '?')} cores).", "",
             _md_table(["method", "s_per_iter", "compile_s", "final_loglik"],
                       [{"method": f"vijax em ({b.get('vijax_path', '?')})",
                         "s_per_iter": b.get("vijax_s_per_iter"),
                         "compile_s": b.get("vijax_compile_s"),
                         "final_loglik": b.get("vijax_final_loglik")},
                        {"method": "scikit-learn GaussianMixture (diag)",
                         "s_per_iter": b.get("sklearn_s_per_iter"),
                         "final_loglik": b.get("sklearn_final_loglik")}]), "",
             f"speedup (scikit-learn / vijax per iteration): {_fmt(b.get('speedup'))}; "
             f"log-likelihood rel diff {_fmt(b.get('loglik_rel_diff'))}; max |means diff| "
             f"{_fmt(b.get('max_mean_diff'))}.", "", "<details><summary>all fields</summary>",
             "", _md_table(["key", "value"], [{"key": k, "value": v} for k, v in
                                              _flatten(b).items()]), "", "</details>"]
    return lines


MD_PARTS = {"environment": _md_environment, "pytest": _md_pytest, "cavi_gmm": _md_cavi,
            "gradient": _md_gradient, "em": _md_em}
TITLES = {"environment": "1. Environment", "pytest": "2. Agreement tests (pytest)",
          "cavi_gmm": "3. CAVI, Gaussian mixture: vijax vs hand-written JAX",
          "gradient": "4. Gradient path vs NumPyro SVI (linear regression)",
          "em": "5. EM, Gaussian mixture: vijax vs scikit-learn"}


def to_markdown(results: dict) -> str:
    env = results["parts"].get("environment", {}).get("result") or {}
    lines = ["# vijax GPU check", "",
             f"Device **{env.get('device_kind', '?')}** ({env.get('device_platform', '?')}), "
             f"mode `{results['mode']}`, benchmarks in {DTYPE} (tests in float64); jax "
             f"{env.get('jax', '?')}, jaxlib {env.get('jaxlib', '?')}, python "
             f"{env.get('python', '?')}; started {results['started']}; status "
             f"**{results['status']}**; elapsed {results['elapsed_s']:.1f} s of a "
             f"{results['budget_s']:.0f} s budget.", "",
             f"Command: `{results['command']}`", "", "## Parts", "",
             _md_table(["part", "status", "wall_s", "cap_s"],
                       [{"part": n, **{k: p.get(k) for k in ("status", "wall_s", "cap_s")}}
                        for n, p in results["parts"].items()]), ""]
    for name, p in results["parts"].items():
        lines += [f"## {TITLES.get(name, name)}", "",
                  f"status: {p['status']}; wall {_fmt(p.get('wall_s'))} s", ""]
        if p.get("result"):
            try:
                lines += MD_PARTS[name](p["result"])
            except Exception as e:  # a report bug must not hide the JSON
                lines += [f"(markdown rendering failed: {type(e).__name__}: {e}; see "
                          "gpu_results.json)"]
            lines.append("")
        if p.get("error"):
            lines += ["```", p["error"].rstrip()[-3000:], "```", ""]
    return "\n".join(lines) + "\n"


def write(results: dict, out: pathlib.Path):
    """Atomically rewrite gpu_results.json and gpu_results.md."""
    results["elapsed_s"] = elapsed()
    clean = _jsonable(results)
    for name, text in (("gpu_results.json", json.dumps(clean, indent=1) + "\n"),
                       ("gpu_results.md", to_markdown(clean))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


# ---------------------------------------------------------------------------- driver

def _summary_line(name, p) -> str:
    r = p.get("result") or {}
    s = f"{name:12s} {p['status'][:60]:60s} {_fmt(p.get('wall_s')):>8s} s"
    try:
        if name == "environment" and r:
            s += f"  | {r['device_kind']} jax {r['jax']}"
        elif name == "pytest" and r:
            s += f"  | {r['counts']} rc={r['returncode']}"
        elif name == "cavi_gmm" and r:
            s += "  | " + ", ".join(f"{x['setting'].split()[0]} ratio {x['ratio_median']:.3f}"
                                    for x in r["rows"] if x["impl"] == "vijax")
        elif name == "gradient" and r:
            s += "  | " + ", ".join(f"{x['method']}: {x['steps_per_s']:.0f}/s"
                                    for x in r["suite_result"]["tables"][0]["rows"]
                                    if x.get("steps_per_s") and "CAVI" not in x["method"])
        elif name == "em" and r:
            b = r["bench_em"]
            s += (f"  | vijax {1e3 * b['vijax_s_per_iter']:.2f} ms/it, sklearn "
                  f"{1e3 * b['sklearn_s_per_iter']:.2f} ms/it, speedup {b['speedup']:.2f}")
    except (KeyError, IndexError, TypeError, ValueError):
        pass  # a part that failed has no numbers to summarize; its status says why
    return s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="results folder (created if missing)")
    p.add_argument("--tiny", action="store_true", help="smoke sizes (CPU, ~2-3 min)")
    p.add_argument("--budget", type=float, default=320.0,
                   help="wall-clock budget in seconds from start (default 320)")
    p.add_argument("--pytest-all", action="store_true",
                   help=f"run the whole of {PYTEST_FILE} instead of the -k subset")
    p.add_argument("--cavi-analysis-cap", type=float, default=60.0,
                   help="skip a CAVI size whose extrapolated analysis time exceeds this (s)")
    p.add_argument("--parts", default=",".join(n for n, _ in PARTS),
                   help="comma-separated subset of parts to run (default: all)")
    a = p.parse_args(argv)
    mode = "tiny" if a.tiny else "full"
    cfg = SIZES[mode]
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [s.strip() for s in a.parts.split(",") if s.strip()]
    unknown = set(wanted) - {n for n, _ in PARTS}
    if unknown:
        p.error(f"unknown part(s) {sorted(unknown)}")

    results = {"script": "benchmarks/gpu_check.py", "mode": mode,
               "command": " ".join([os.path.basename(sys.executable), "-m",
                                    "benchmarks.gpu_check"] + list(argv or sys.argv[1:])),
               "started": datetime.datetime.now().isoformat(timespec="seconds"),
               "budget_s": a.budget, "status": "starting", "sizes": cfg,
               "part_limits": {k: {"cap_s": c, "min_s": m} for k, (c, m) in PART_LIMITS.items()},
               "parts": {}}
    ctx = {"out": out, "pytest_all": a.pytest_all, "analysis_cap": a.cavi_analysis_cap,
           "save": lambda: write(results, out)}
    print(f"[gpu_check] mode {mode}, budget {a.budget:.0f} s, out {out}", flush=True)
    names = [n for n, _ in PARTS if n in wanted]
    for i, (name, fn) in enumerate(PARTS):
        if name not in wanted:
            continue
        cap, need = PART_LIMITS[name]
        later = sum(PART_LIMITS[n][1] for n in names[names.index(name) + 1:])
        left = a.budget - elapsed()
        # earlier parts first: a part is shortened to leave later parts their minimum,
        # never below its own minimum; it is skipped only when the budget is below that
        avail = min(cap, left, max(need, left - later))
        part = {"status": "running", "cap_s": round(avail, 1), "wall_s": None,
                "started_at_s": round(elapsed(), 1)}
        results["parts"][name] = part
        if left < need or avail < 1.0:
            part["status"] = (f"skipped: time budget ({left:.0f} s left of {a.budget:.0f} s; "
                              f"this part needs {need} s)")
            print(f"[gpu_check] {name}: {part['status']}", flush=True)
            write(results, out)
            continue
        results["status"] = f"running part {i + 1}/{len(PARTS)}: {name}"
        write(results, out)
        print(f"[gpu_check] {name} (cap {avail:.0f} s, elapsed {elapsed():.0f} s) ...",
              flush=True)
        ctx["cap"] = avail
        part["result"] = None
        t0 = time.perf_counter()
        try:
            # pytest enforces its own cap (subprocess timeout); the alarm is a backstop
            with alarm(avail + (15 if name == "pytest" else 0)):
                res = fn(cfg, {**ctx, "part": part})
            part["result"] = res
            part["status"] = "ok"
            if name == "pytest" and not res["all_passed"]:
                part["status"] = ("timeout: killed at the part cap" if res["timed_out"]
                                  else "ok (tests FAILED)")
        except PartTimeout as e:
            part["status"] = f"timeout: {e}"
            part["error"] = traceback.format_exc()
        except BaseException as e:  # noqa: BLE001 -- keep the other parts' results
            if isinstance(e, KeyboardInterrupt):
                part["status"] = "interrupted"
                part["wall_s"] = time.perf_counter() - t0
                results["status"] = "interrupted"
                write(results, out)
                raise
            part["status"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
            part["error"] = traceback.format_exc()
        part["wall_s"] = time.perf_counter() - t0
        write(results, out)
        print(f"[gpu_check] {name}: {part['status']} ({part['wall_s']:.1f} s)", flush=True)
    results["status"] = "done"
    write(results, out)
    print("\n[gpu_check] summary (elapsed {:.1f} s; {} and {} in {})".format(
        elapsed(), "gpu_results.json", "gpu_results.md", out))
    for name, part in results["parts"].items():
        print("  " + _summary_line(name, part))
    return 0


if __name__ == "__main__":
    sys.exit(main())
