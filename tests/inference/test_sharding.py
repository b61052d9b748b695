"""Data-sharded fits equal one-device fits (4 forced host devices, float64): CAVI,
gradient (score-function and reparameterized) and SVI (minibatches gathered from the
split rows, 40 steps) on the GMM and linear regression.

The device count is fixed when JAX starts, so the fits run in a child process
(``sharding_child.py``) with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``;
it prints one JSON line that these tests read.

Tolerance: the sharded program sums the sufficient statistics per device and then
across devices (an all-reduce), a different order of the same float64 additions, so the
results agree to rounding, not bit for bit: 1e-10 relative is asserted (observed:
ELBOs within ~5e-15, posterior means and natural parameters within ~1e-13).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from vijax.inference.sharding import plate_size, shard_data

CHILD = pathlib.Path(__file__).with_name("sharding_child.py")
TOL = 1e-10
MODELS = ("gaussian_mixture", "linear_regression")
METHODS = ("cavi", "gradient", "gradient_reparam", "svi")



@pytest.fixture(scope="module")  # one worker runs the module (--dist loadfile)
def report():
    flags = os.environ.get("XLA_FLAGS", "")  # the suite's compile flags (conftest)
    env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=4",
               JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    root = pathlib.Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(CHILD)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("SHARDING_REPORT ")][-1]
    return json.loads(line.split(" ", 1)[1])


CASES = [(m, k) for m in MODELS for k in METHODS
         if not (m == "linear_regression" and k == "gradient_reparam")]


@pytest.mark.parametrize("model,method", CASES)
def test_sharded_equals_one_device(report, model, method):
    case = report[f"{model}/{method}"]
    assert case["iters"][0] == case["iters"][1]
    assert case["elbo_rel"] <= TOL, case
    assert case["mean_rel"] <= TOL, case
    assert case["natural_rel"] <= TOL, case
    if method == "cavi":  # data passed already sharded, mesh=None: the same program
        assert case["presharded_elbo_rel"] <= TOL


@pytest.mark.parametrize("method", METHODS)
def test_gmm_loop_stays_sharded(report, method):
    """The compiled loop's plate-sized inputs (the data, the constants of F) and outputs
    (the responsibilities' parameters) are split over the 4 devices, not gathered."""
    loop = report[f"gaussian_mixture/{method}"]["loop"]
    assert loop["inputs"] and loop["outputs"]
    for s in loop["inputs"] + loop["outputs"]:
        assert s["spec"] == "P('data',)" and s["devices"] == 4, loop


@pytest.mark.parametrize("model", MODELS)
def test_materialize_takes_sharded_data(report, model):
    """The data-to-constants program has one executable per placement of the data (the
    one-device fit's and the sharded one), and the sharded one keeps the data split.
    (Linear regression's loop sees only d x d statistics: its plate-sized sums, X^T X
    and X^T y, are all-reduced here, once.)"""
    found = report[f"{model}/materialize"]
    assert any(s["spec"] == "P('data',)" and s["devices"] == 4 for s in found), found


def test_shard_data_rule_one_device():
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    data = {"X": np.ones((6, 2)), "y": np.ones(6), "w0": np.zeros(2), "c": 1.5}
    assert plate_size(data) == 6
    out = shard_data(data, mesh)
    assert out["X"].sharding.spec == jax.sharding.PartitionSpec("data")
    assert out["y"].sharding.spec == jax.sharding.PartitionSpec("data")
    assert out["w0"].sharding.spec == jax.sharding.PartitionSpec()
    assert out["c"] == 1.5


def test_indivisible_plate_raises(report):
    assert report["indivisible"] == "DataError"


@pytest.mark.parametrize("model,method", CASES)
def test_result_placement(report, model, method):
    """What a sharded fit returns: local latents' parameters (the mixture's
    responsibilities, one row per observation) stay split like the data; the global
    latents' parameters are replicated on every device."""
    for leaf, where in report[f"{model}/{method}"]["placement"].items():
        if model == "gaussian_mixture" and leaf.startswith("['z']"):
            assert where["spec"] == "P('data',)" and not where["replicated"], (leaf, where)
            assert where["devices"] == 4
        else:
            assert where["replicated"], (leaf, where)


def test_nan_in_sharded_data_raises(report):
    assert report["nan"].startswith("DataError") and "1 NaN/Inf" in report["nan"], report["nan"]

