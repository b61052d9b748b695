"""The benchmark runner: a registry of suites and one CLI.

    python -m benchmarks.run                       # every suite, full size, float32
    python -m benchmarks.run cavi --size tiny      # one suite, smoke size
    python -m benchmarks.run compiler gradient --dtype float64 --out /tmp/bench
    python -m benchmarks.run --profile gpu --out "$OUT"   # the GPU check

Every suite is ``run(size, dtype) -> dict`` (see :mod:`benchmarks.report` for the
dict's shape). The runner adds the machine description, writes
``<out>/<suite>.json`` and ``<out>/<suite>.md`` and refreshes ``<out>/SUMMARY.md``.
A suite may declare sizes of its own (its module's ``SIZES``). A *profile* is a list of
``(suite, size, dtype)`` run in order (``PROFILES``; ``gpu`` is the accelerator check of
:mod:`benchmarks.gpu_check`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pathlib
import sys
import traceback
from typing import Callable, Dict

# Multithreaded OpenBLAS (used by jaxlib's LAPACK kernels, numpy and scikit-learn)
# stalls for tens of milliseconds per call when the machine is oversubscribed, which
# swamps small factorizations (a 50 x 50 triangular solve: 0.06 ms single-threaded,
# 15-40 ms threaded on a loaded 2-core box). One BLAS thread unless the caller says
# otherwise; it must be set before numpy/scipy load, and is recorded in the results.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from benchmarks import report  # noqa: E402

SIZES = ("tiny", "full")
DTYPES = ("float32", "float64")
DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "results"

# name -> module (imported lazily: a suite's optional dependencies load only when it runs)
SUITES: Dict[str, str] = {
    "compiler": "benchmarks.bench_compiler",
    "cavi": "benchmarks.bench_cavi",
    "gradient": "benchmarks.bench_gradient",
    "e2e": "benchmarks.bench_e2e",
    "sharding": "benchmarks.bench_sharding",
    "batch": "benchmarks.bench_batch",
    "svi": "benchmarks.bench_svi",
    "state_space": "benchmarks.bench_state_space",
    "gmm_full": "benchmarks.bench_gmm_full",
    "hmm": "benchmarks.bench_hmm",
    "gibbs": "benchmarks.bench_gibbs",
}
# suites that only profiles run (not part of "every suite")
PROFILE_SUITES: Dict[str, str] = {"agreement": "benchmarks.gpu_check"}


def _em_available() -> bool:
    try:
        mod = importlib.import_module("benchmarks.bench_em")
    except ImportError:
        return False
    return callable(getattr(mod, "run", None))


if _em_available():
    SUITES["em"] = "benchmarks.bench_em_suite"


def _module(name: str):
    where = SUITES.get(name) or PROFILE_SUITES.get(name)
    if where is None:
        raise KeyError(f"unknown suite {name!r}; known: {sorted(SUITES)}")
    return importlib.import_module(where)


def get_suite(name: str) -> Callable[[str, str], dict]:
    return _module(name).run


def suite_sizes(name: str) -> tuple:
    """The sizes a suite accepts: ``tiny``, ``full`` and any its module declares."""
    declared = getattr(_module(name), "SIZES", {})
    return tuple(dict.fromkeys((*SIZES, *declared)))


def _largest(name, sizes):
    """The first of ``sizes`` that the suite declares (``full`` if none)."""
    return next((s for s in sizes if s in suite_sizes(name)), "full")


# name -> [(suite, size, dtype)]: the GPU check (benchmarks/gpu_check.py) and its smoke run
PROFILES = {
    "gpu": [("agreement", "gpu", "float64"), ("cavi", "gpu", "float32"),
            ("gradient", ("gpu", "tiny"), "float32"), ("em", ("gpu", "full"), "float32")],
    "gpu_tiny": [("agreement", "tiny", "float64"), ("cavi", "tiny", "float32"),
                 ("gradient", "tiny", "float32"), ("em", "tiny", "float32")],
}


def run_suite(name: str, size: str = "full", dtype: str = "float32", out=DEFAULT_OUT,
              summary: bool = True) -> dict:
    """Run one suite and write its files; returns the result dict (with ``paths``)."""
    if size not in suite_sizes(name):
        raise ValueError(f"size must be one of {suite_sizes(name)}, got {size!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    started = report.now()
    fn = get_suite(name)
    wants_out = "out" in inspect.signature(fn).parameters  # a suite that writes a log
    result = dict(fn(size, dtype, out=out) if wants_out else fn(size, dtype))
    result.setdefault("suite", name)
    result.setdefault("title", name)
    result.setdefault("config", {})
    result.setdefault("tables", [])
    result.setdefault("targets", [])
    result.setdefault("notes", [])
    result.update(size=size, dtype=dtype, timestamp=started, environment=report.environment())
    result["paths"] = report.write(result, out)
    if summary:
        result["paths"]["summary"] = report.write_summary(out)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suites", nargs="*", metavar="suite",
                   help=f"suites to run (default: all of {', '.join(SUITES)})")
    p.add_argument("--size", default="full", help=f"{', '.join(SIZES)} or a suite's own")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    p.add_argument("--list", action="store_true", help="list the suites and exit")
    p.add_argument("--profile", choices=sorted(PROFILES),
                   help="run a profile's (suite, size, dtype) list instead")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(SUITES))
        return 0
    if args.profile:
        plan = [(n, sz if isinstance(sz, str) else _largest(n, sz), dt)
                for n, sz, dt in PROFILES[args.profile]
                if n in SUITES or n in PROFILE_SUITES]
    else:
        names = args.suites or list(SUITES)
        unknown = [n for n in names if n not in SUITES]
        if unknown:
            p.error(f"unknown suite(s) {unknown}; known: {list(SUITES)}")
        plan = [(n, args.size, args.dtype) for n in names]
    failed = []
    for name, size, dtype in plan:
        print(f"[benchmarks] {name} ({size}, {dtype}) ...", flush=True)
        try:
            res = run_suite(name, size, dtype, args.out)
        except Exception:  # keep going with the other suites, fail at the end
            traceback.print_exc()
            failed.append(name)
            continue
        for t in res["targets"]:
            mark = "ok  " if t["met"] else "MISS"
            print(f"  [{mark}] {t['target']}: {report._fmt(t['measured'])} ({t['limit']})")
        print(f"  wrote {res['paths']['json']} and {res['paths']['md']}", flush=True)
    if failed:
        print(f"[benchmarks] failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
