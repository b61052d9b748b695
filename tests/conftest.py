"""Shared test setup: float64 everywhere, and zoo models compiled once per session.

Exactness claims (``F(T(z)) == log p(z)``, one CAVI step == the exact posterior) are
checked in float64, so x64 is switched on here, at import, before any test module
creates an array.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any, NamedTuple

# XLA's CPU compile time dominates the suite (the sizes are small). Its MLIR fusion
# emitters compile the fit programs 2.5-3x slower than the classic ones (a GMM fit's
# program: 4.9 s against 1.9 s), and on these sizes run no faster; the flag has to be in
# the environment before the backend starts (subprocess tests inherit it).
_FLAG = "--xla_cpu_use_fusion_emitters=false"
if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` without an editable install
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
# The suite's sizes are small, so XLA compile time dominates its run time; no test asserts
# a timing, so XLA's expensive optimization passes are skipped (results are unchanged).
jax.config.update("jax_disable_most_optimizations", True)

import pytest  # noqa: E402

ZOO_SEED = 20240611


class ZooCase(NamedTuple):
    """One zoo model with its data set and what the compiler made of it."""

    name: str
    zoo_model: Any  # vijax.models.ZooModel
    data: Any
    analysis: Any  # vj.Analysis (its .compiled is the Compiled)

    @property
    def model(self):
        return self.zoo_model.model

    @property
    def compiled(self):
        return self.analysis.compiled


class ZooCache:
    """Lazily builds, and keeps, one :class:`ZooCase` per zoo model name."""

    def __init__(self):
        self._cases = {}

    def __getitem__(self, name: str) -> ZooCase:
        if name not in self._cases:
            import vijax as vj
            from vijax.models import ZOO
            zm = ZOO[name]()
            data = zm.make_data(jax.random.key(ZOO_SEED))
            self._cases[name] = ZooCase(name, zm, data, vj.analyze(zm.model, data))
        return self._cases[name]


@pytest.fixture(scope="session")
def zoo() -> ZooCache:
    """``zoo[name]`` -> :class:`ZooCase` (model, data, analysis), built once per session."""
    return ZooCache()


@pytest.fixture
def rng(request):
    """A numpy generator seeded from the test's name (fixed, but distinct per test)."""
    import zlib

    import numpy as np
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# ---------------------------------------------------------------- the long slice
def long_enabled(config) -> bool:
    """Whether the long runs were asked for (``-m fuzz`` or ``VIJAX_FUZZ=1``)."""
    import os
    import re
    markexpr = config.getoption("-m", default="") or ""
    return bool(os.environ.get("VIJAX_FUZZ")) or (
        "fuzz" in markexpr and not re.search(r"not\s+fuzz", markexpr))


def pytest_collection_modifyitems(config, items):
    """Items marked ``fuzz`` are skipped in the default run (the long slice)."""
    if long_enabled(config):
        return
    skip = pytest.mark.skip(reason="long run: select it with `pytest -m fuzz` or VIJAX_FUZZ=1")
    for item in items:
        if "fuzz" in item.keywords:
            item.add_marker(skip)


def _memory_mappings() -> int:
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux: no such limit to watch
        return 0


@pytest.fixture(autouse=True, scope="module")
def _release_executables():
    """Last resort against running out of memory mappings: a worker that keeps tens of
    thousands of compiled executables (about 3 mappings each on the CPU) reaches
    vm.max_map_count (65530 by default) and XLA's compiler then crashes with a
    segmentation fault. The suite runs on 3 workers (README), which keeps each under
    about 25000 mappings with the classic emitters above; only above 50000 are JAX's
    caches dropped after a module. (The wrong dispatch once blamed on this clearing, a
    jitted Poisson log_prob returning a Bernoulli's values, was jaxlib's equal tree
    structures of same-field dataclasses: see vijax.families.base.register_fields.)"""
    yield
    if _memory_mappings() > 50000:
        import gc
        jax.clear_caches()
        gc.collect()
