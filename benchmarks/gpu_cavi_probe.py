"""Where a CAVI sweep of the diagonal GMM spends its time on an accelerator.

    python -m benchmarks.gpu_cavi_probe --out DIR [--n 1000000] [--iters 50]

One problem (float32, D=10, K=10), analysed once. It times, interleaved with the
hand-written reference (benchmarks/reference_gmm.py), the vijax CAVI loop under three
settings of the sweep's guard on an update (``cavi._BRANCH_MIN_SIZE``): a ``lax.cond``
branch for every block, for large blocks only (the default), or a select everywhere; and
loops that update a single block per sweep (where a sweep's time goes), and the block
gradients and the sweep alone as single jitted calls. Writes
``cavi_probe.json`` and ``cavi_probe.md`` to ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import bench_cavi as B
from benchmarks import harness as H
from benchmarks import problems as P
from vijax.inference import cavi as C
from vijax.inference import meanfield as mf


def _time(fn, args, repeats=20):
    jax.block_until_ready(fn(*args))
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        out.append(time.perf_counter() - t)
    return 1e3 * float(np.median(out))


def run(n, iters, repeats):
    dev = jax.devices()[0]
    t = time.perf_counter()
    prob = P.gmm(n, 10, 10, B.SEED, "float32")
    result = {"device": f"{dev.platform}:{dev.device_kind}", "jax": jax.__version__, "n": n,
              "iters": iters, "analysis_s": time.perf_counter() - t, "loops": [],
              "pieces_ms": {}}
    r_exe, r_args, _ = B._reference_loop(prob, iters)
    default = C._BRANCH_MIN_SIZE
    for label, size in (("branch for every block", 0),
                        (f"branch for blocks >= {default} (default)", default),
                        ("select everywhere", 1 << 62)):
        C._BRANCH_MIN_SIZE = size
        jax.clear_caches()
        v_exe, v_args, _ = B._vijax_loop(prob, iters)
        times = H.interleaved({"vijax": (v_exe, v_args), "reference": (r_exe, r_args)},
                              repeats)
        sv, sr = H.summarize(times["vijax"], iters), H.summarize(times["reference"], iters)
        result["loops"].append({"setting": label, "vijax_ms": 1e3 * sv["median"],
                                "reference_ms": 1e3 * sr["median"],
                                "ratio": sv["median"] / sr["median"]})
        print(result["loops"][-1], flush=True)
    C._BRANCH_MIN_SIZE = default
    jax.clear_caches()
    # loops that update one block per sweep: where a full sweep's time goes
    result["one_block_loops_ms"] = {}
    for name in C.default_order(prob.compiled):
        exe, _ = H.aot_compile(C._loop_jit, prob.compiled, prob.natural0, 0.0,
                                     static_kwargs={"order": (name,), "max_iters": iters,
                                                    "damping": None})
        args = (prob.compiled, prob.natural0, 0.0)
        times = H.interleaved({"one": (exe, args)}, repeats)
        result["one_block_loops_ms"][name] = 1e3 * H.summarize(times["one"], iters)["median"]
    print(result["one_block_loops_ms"], flush=True)
    compiled, mu = prob.compiled, mf.mean_params(prob.compiled, prob.natural0)
    for name in C.default_order(compiled):
        fn = jax.jit(lambda c, m, name=name: C.rest_and_grad_block(c, m, name))
        result["pieces_ms"][f"rest_and_grad_block({name})"] = _time(fn, (compiled, mu))
    fams = mf.families_of(compiled)
    order = C.default_order(compiled)
    fn = jax.jit(lambda c, nat, m: C.sweep(lambda mm: (c, mm), fams, nat, m, order)[2])
    result["pieces_ms"]["one sweep (jit call)"] = _time(fn, (compiled, prob.natural0, mu))
    fn = jax.jit(lambda nat: jnp.sum(fams["z"].mean_and_log_normalizer(nat["z"])[1]))
    result["pieces_ms"]["z softmax + log-normalizer"] = _time(fn, (prob.natural0,))
    print(result["pieces_ms"], flush=True)
    return result


def to_markdown(r):
    lines = [f"# CAVI sweep probe ({r['device']}, jax {r['jax']}, GMM N={r['n']}, D=10, "
             f"K=10, float32)", "", f"analysis {r['analysis_s']:.1f} s; {r['iters']} sweeps "
             "per timed loop call, interleaved with the hand-written reference.", "",
             "| setting | vijax ms/sweep | reference ms/sweep | ratio |", "|---|---|---|---|"]
    for row in r["loops"]:
        lines.append(f"| {row['setting']} | {row['vijax_ms']:.4g} | {row['reference_ms']:.4g} "
                     f"| {row['ratio']:.3g} |")
    lines += ["", "| loop updating one block per sweep | ms/sweep |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in r.get("one_block_loops_ms", {}).items()]
    lines += ["", "| piece (one jitted call, median; includes passing the constants) | ms |",
              "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in r["pieces_ms"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    r = run(a.n, a.iters, a.repeats)
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cavi_probe.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / "cavi_probe.md").write_text(to_markdown(r))
    print(to_markdown(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
