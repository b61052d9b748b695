"""The benchmark runner: a registry of suites and one CLI.

    python -m benchmarks.run                       # every suite, full size, float32
    python -m benchmarks.run cavi --size tiny      # one suite, smoke size
    python -m benchmarks.run compiler gradient --dtype float64 --out /tmp/bench

Every suite is ``run(size, dtype) -> dict`` (see :mod:`benchmarks.report` for the
dict's shape). The runner adds the machine description, writes
``<out>/<suite>.json`` and ``<out>/<suite>.md`` and refreshes ``<out>/SUMMARY.md``.
"""

from __future__ import annotations

import argparse
import importlib
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
}


def _em_available() -> bool:
    try:
        mod = importlib.import_module("benchmarks.bench_em")
    except ImportError:
        return False
    return callable(getattr(mod, "run", None))


if _em_available():
    SUITES["em"] = "benchmarks.bench_em_suite"


def get_suite(name: str) -> Callable[[str, str], dict]:
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; known: {sorted(SUITES)}")
    return importlib.import_module(SUITES[name]).run


def run_suite(name: str, size: str = "full", dtype: str = "float32", out=DEFAULT_OUT,
              summary: bool = True) -> dict:
    """Run one suite and write its files; returns the result dict (with ``paths``)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    started = report.now()
    result = dict(get_suite(name)(size, dtype))
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
    p.add_argument("--size", choices=SIZES, default="full")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results folder")
    p.add_argument("--list", action="store_true", help="list the suites and exit")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(SUITES))
        return 0
    names = args.suites or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        p.error(f"unknown suite(s) {unknown}; known: {list(SUITES)}")
    failed = []
    for name in names:
        print(f"[benchmarks] {name} ({args.size}, {args.dtype}) ...", flush=True)
        try:
            res = run_suite(name, args.size, args.dtype, args.out)
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
