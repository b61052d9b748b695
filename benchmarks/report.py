"""Writers: one JSON and one markdown file per suite, and SUMMARY.md over all of them.

A suite returns a dict (the *result*)::

    {"suite": "cavi", "title": "...", "config": {...sizes, seed...},
     "tables": [{"name": "...", "columns": [...], "rows": [{col: value}, ...]}],
     "targets": [{"target": "...", "measured": float, "limit": "<= 1.3", "met": bool}],
     "notes": ["...", ...]}

The runner adds ``environment`` (machine and versions), ``size``, ``dtype`` and
``timestamp`` before writing.
"""

from __future__ import annotations

import datetime
import importlib
import json
import math
import os
import pathlib
import platform
import subprocess
import sys

REQUIRED_KEYS = ("suite", "title", "size", "dtype", "config", "environment", "tables",
                 "targets", "notes", "timestamp")
ENV_KEYS = ("platform", "processor", "cpu_count", "device_kind", "device_platform",
            "num_devices", "python", "jax", "jaxlib", "numpy", "sklearn", "numpyro", "optax",
            "vijax_commit", "load_average", "OPENBLAS_NUM_THREADS", "XLA_FLAGS")


def _version(mod):
    try:
        return importlib.import_module(mod).__version__
    except Exception:  # optional package
        return "not installed"


def environment() -> dict:
    """Machine, accelerator and library versions (what a reader needs to rerun)."""
    import jax
    dev = jax.devices()[0]
    here = pathlib.Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=here, timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "../vijax"],
                               capture_output=True, text=True, cwd=here, timeout=10).stdout
        if dirty.strip():
            commit += " + uncommitted vijax changes"
    except Exception:
        commit = "unknown"
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"platform": platform.platform(), "processor": platform.processor() or
            platform.machine(), "cpu_count": os.cpu_count(), "device_kind": dev.device_kind,
            "device_platform": dev.platform, "num_devices": jax.device_count(),
            "python": sys.version.split()[0], "jax": jax.__version__,
            "jaxlib": _version("jaxlib"), "numpy": _version("numpy"),
            "sklearn": _version("sklearn"), "numpyro": _version("numpyro"),
            "optax": _version("optax"), "vijax_commit": commit, "load_average": load,
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", "unset")}


def _fmt(v):
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1e5 or a < 1e-3:
            return f"{v:.3e}"
        if a >= 100:
            return f"{v:.1f}"
        return f"{v:.4g}"
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _targets_table(targets):
    return md_table(["target", "measured", "limit", "met"], targets)


def to_markdown(result: dict) -> str:
    env = result["environment"]
    out = [f"# {result['title']}", "",
           f"Suite `{result['suite']}`, size `{result['size']}`, dtype `{result['dtype']}`, "
           f"run {result['timestamp']}.", "",
           "## Machine", "",
           md_table(["key", "value"], [{"key": k, "value": env.get(k)} for k in ENV_KEYS]),
           "", "## Configuration", "",
           md_table(["key", "value"], [{"key": k, "value": v}
                                       for k, v in result["config"].items()]), ""]
    if result["targets"]:
        out += ["## Targets", "", _targets_table(result["targets"]), ""]
    for t in result["tables"]:
        out += [f"## {t['name']}", "", md_table(t["columns"], t["rows"]), ""]
    if result["notes"]:
        out += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(out)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (bool, str, int)) or x is None:
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    try:  # numpy / jax scalars
        import numpy as np
        arr = np.asarray(x)
        if arr.ndim == 0:
            return _jsonable(arr.item())
        return _jsonable(arr.tolist())
    except Exception:
        return str(x)


def write(result: dict, out_dir) -> dict:
    """Write ``<suite>.json`` and ``<suite>.md`` into ``out_dir``; return the paths."""
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise ValueError(f"suite result lacks {missing}")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = _jsonable(result)
    jpath = out / f"{result['suite']}.json"
    mpath = out / f"{result['suite']}.md"
    jpath.write_text(json.dumps(clean, indent=1) + "\n")
    mpath.write_text(to_markdown(clean))
    return {"json": str(jpath), "md": str(mpath)}


def write_summary(out_dir) -> str:
    """SUMMARY.md: every suite's targets and tables from the latest JSON files."""
    out = pathlib.Path(out_dir)
    results = []
    for p in sorted(out.glob("*.json")):
        try:
            r = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        if all(k in r for k in REQUIRED_KEYS):
            results.append(r)
    lines = ["# vijax benchmark summary", "",
             f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} from the "
             "latest `<suite>.json` files in this folder (per-suite details, machine and "
             "versions in `<suite>.md`). Rerun: `python -m benchmarks.run` "
             "(see benchmarks/README.md).", ""]
    all_targets = []
    for r in results:
        for t in r["targets"]:
            all_targets.append({"suite": r["suite"], **t})
    if all_targets:
        lines += ["## Targets", "",
                  md_table(["suite", "target", "measured", "limit", "met"], all_targets), ""]
    for r in results:
        env = r["environment"]
        lines += [f"## {r['title']} (`{r['suite']}`)", "",
                  f"size `{r['size']}`, dtype `{r['dtype']}`, {r['timestamp']}, "
                  f"{env.get('device_kind')} ({env.get('cpu_count')} CPUs), "
                  f"jax {env.get('jax')}, vijax {env.get('vijax_commit')}.", ""]
        for t in r["tables"]:
            lines += [f"### {t['name']}", "", md_table(t["columns"], t["rows"]), ""]
        if r["notes"]:
            lines += ["Notes:", ""] + [f"- {n}" for n in r["notes"]] + [""]
    path = out / "SUMMARY.md"
    path.write_text("\n".join(lines))
    return str(path)


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")
