"""Timing helpers shared by the suites.

Rules every suite follows (STYLE.md, "Benchmarks"):

- XLA compilation is measured apart from steady state: functions are compiled ahead of
  time (``jax.jit(f).lower(*args).compile()``) and the compiled executable is timed.
- ``jax.block_until_ready`` runs before the clock stops.
- Baselines run in the same process, interleaved with the candidate (A B A B ...,
  order alternating), and are reported as ratios: the machine is shared, so absolute
  seconds drift while ratios of interleaved runs stay meaningful. Both the minimum
  (least disturbed) and the median of the repeats are kept.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp

clock = time.perf_counter


def block(x):
    """Wait for every array in ``x`` (a pytree)."""
    return jax.block_until_ready(x)


def aot_compile(fn: Callable, *args, static_kwargs=None, jit_kwargs=None):
    """Trace, lower and compile ``fn`` for ``args``; return (executable, timings).

    ``timings`` has ``trace_lower_s`` (Python tracing + StableHLO lowering) and
    ``xla_compile_s``. ``static_kwargs`` are passed to ``lower`` (static arguments of an
    already jitted ``fn``); the executable then takes the dynamic ``args`` only.
    """
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn, **(jit_kwargs or {}))
    t0 = clock()
    lowered = jitted.lower(*args, **(static_kwargs or {}))
    t1 = clock()
    exe = lowered.compile()
    t2 = clock()
    return exe, {"trace_lower_s": t1 - t0, "xla_compile_s": t2 - t1}


def time_once(fn: Callable, *args) -> Tuple[float, object]:
    t0 = clock()
    out = block(fn(*args))
    return clock() - t0, out


def interleaved(cands: Dict[str, Tuple[Callable, Sequence]], repeats: int,
                warmup: int = 1) -> Dict[str, list]:
    """Time each ``name -> (fn, args)`` ``repeats`` times, interleaved.

    The order of the candidates alternates between rounds so neither side always runs
    first after an idle gap. Returns ``name -> [seconds, ...]``.
    """
    names = list(cands)
    for _ in range(warmup):
        for n in names:
            fn, args = cands[n]
            block(fn(*args))
    out = {n: [] for n in names}
    for i in range(repeats):
        for n in (names if i % 2 == 0 else names[::-1]):
            fn, args = cands[n]
            out[n].append(time_once(fn, *args)[0])
    return out


def summarize(times: Sequence[float], scale: float = 1.0) -> dict:
    """min / median of ``times`` (divided by ``scale``, e.g. iterations per call)."""
    return {"min": min(times) / scale, "median": statistics.median(times) / scale,
            "repeats": len(times)}


def ratio(cand: dict, base: dict) -> dict:
    """Candidate / baseline for the min and the median (> 1: the candidate is slower)."""
    return {"min": cand["min"] / base["min"], "median": cand["median"] / base["median"]}


@contextlib.contextmanager
def precision(dtype: str):
    """Run with ``jax_enable_x64`` matching ``dtype`` (restored afterwards).

    vijax picks its working dtype from ``jnp.zeros(()).dtype``, so the flag decides the
    precision of every array a suite creates.
    """
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    with jax.enable_x64(dtype == "float64"):
        yield jnp.dtype(dtype)


def rel_diff(a, b) -> float:
    a, b = float(a), float(b)
    return abs(a - b) / max(abs(b), 1e-30)
