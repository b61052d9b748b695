"""The GPU check: a profile of the benchmark runner, plus the agreement-test suite.

    python -m benchmarks.gpu_check --out "$OUT"          # accelerator sizes
    python -m benchmarks.gpu_check --tiny --out /tmp/g   # smoke sizes (CPU)
    python -m benchmarks.run --profile gpu --out "$OUT"  # the same

Runs on whatever JAX's default backend is and reports the device it ran on. Every part is
a runner suite (:func:`benchmarks.run.run_suite`): one environment capture
(:func:`benchmarks.report.environment`), one JSON and markdown writer
(:mod:`benchmarks.report`), one ``SUMMARY.md``. The profile (``run.PROFILES["gpu"]``):

1. ``agreement`` (this module's :func:`run`): the CAVI-vs-gradient agreement tests
   (``exact`` and ``reparam`` estimators on a few zoo models, and logistic regression
   against Laplace) of ``tests/inference/test_gradient.py`` in a pytest subprocess
   (float64, as ``tests/conftest.py`` sets it; no GPU memory preallocation in the child:
   this process holds JAX's default share), its counts as the table, the log beside it;
2. ``cavi`` at size ``gpu``: seconds per sweep of the diagonal GMM at N=1e6 (float32)
   against the hand-written JAX CAVI, ELBO traces compared, batch fits and compile times;
3. ``gradient`` and ``em`` at the largest size each suite declares for the profile
   (``gpu`` when it has one).

The earlier CAVI probe's finding is recorded in
``benchmarks/results/gpu_h100/cavi_probe.md``: on an H100 the guard on an update (a
``lax.cond`` for large blocks, or a select) does not explain the 2.6x per-sweep gap to the
hand-written CAVI (every one-block loop costs about 1 ms); the probe is gone, and a
profiler run of this profile is the next look.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTEST_FILE = "tests/inference/test_gradient.py"
SIZES = {
    "full": {"k": "(exact or reparam) and (normal_gamma or linear_regression or "
                  "gaussian_mixture or beta_bernoulli) or logistic", "timeout_s": 300},
    "tiny": {"k": "normal_gamma and (exact or reparam)", "timeout_s": 300},
}
SIZES["gpu"] = SIZES["full"]


def _counts(text: str) -> tuple:
    """pytest's final line ("3 passed, 1 failed, 22 deselected in 9.1s") and its counts."""
    final = None
    for line in text.splitlines():
        if re.search(r"\b(passed|failed|errors?|no tests ran)\b.* in [\d.]+s", line):
            final = line.strip("= \n")
    counts = {}
    for num, what in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)",
                                final or ""):
        counts[what.rstrip("s") if what.startswith("error") else what] = int(num)
    return final, counts


def run(size: str, dtype: str, out=None) -> dict:
    """Suite ``agreement``: the pytest subset in a subprocess (``dtype`` is the tests'
    own, float64)."""
    cfg = SIZES[size]
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           PYTEST_FILE, "-k", cfg["k"], "-rfE"]
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=cfg["timeout_s"])
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        text, rc = (e.stdout or b"").decode(errors="replace") + "\n# timed out", None
    if out is not None:
        pathlib.Path(out).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(out) / "agreement_pytest.log").write_text(f"$ {shlex.join(cmd)}\n{text}")
    final, counts = _counts(text)
    ok = rc == 0 and counts.get("passed", 0) > 0 and not counts.get("failed")
    return {"suite": "agreement", "title": "CAVI-vs-gradient agreement tests on this device",
            "config": {"command": shlex.join(cmd), "timeout_s": cfg["timeout_s"],
                       "tests dtype": "float64 (tests/conftest.py)"},
            "tables": [{"name": "pytest", "columns": ["returncode", "summary", *counts],
                        "rows": [{"returncode": rc, "summary": final, **counts}]}],
            "targets": [{"target": "agreement tests pass on this device", "measured": ok,
                         "limit": "True", "met": ok}],
            "notes": ["Full output: agreement_pytest.log beside this file.",
                      "Output tail:\n" + "\n".join(text.splitlines()[-15:])] if not ok else
                     ["Full output: agreement_pytest.log beside this file."]}


def main(argv=None) -> int:
    from benchmarks import run as R
    argv = list(sys.argv[1:] if argv is None else argv)
    profile = "gpu_tiny" if "--tiny" in argv else "gpu"
    argv = [a for a in argv if a != "--tiny"]
    return R.main(["--profile", profile, *argv])


if __name__ == "__main__":
    sys.exit(main())
