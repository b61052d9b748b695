"""Two JAX processes, each holding half the data, fit what one process fits (float64).

``multiprocess_child.py`` is started twice on this machine (``jax.distributed`` with a
coordinator on localhost, CPU collectives through gloo); each builds the global arrays
from its half of the rows with ``vijax.inference.distributed.shard_local`` and fits the
Gaussian mixture and the linear regression by CAVI and by gradient. The parent fits the
whole data in this one process with the same arguments and compares.

Tolerance: each process sums its rows' statistics and the two partial sums are then
added (an all-reduce), another order of the same float64 additions: 1e-10 relative is
asserted on the ELBO and on every natural parameter (observed: ~1e-15), and the number of
iterations must be equal.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import multiprocess_child as child  # noqa: E402

CHILD = pathlib.Path(__file__).with_name("multiprocess_child.py")
NPROC = 2
TOL = 1e-10


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



@pytest.fixture(scope="module")  # one worker runs the module (--dist loadfile)
def data():
    from vijax.models import ZOO
    gmm = ZOO["gaussian_mixture"](**child.SIZES["gaussian_mixture"])
    lin = ZOO["linear_regression"](**child.SIZES["linear_regression"])
    xy = lin.make_data(jax.random.key(1), n=48)
    return {"gaussian_mixture": np.asarray(gmm.make_data(jax.random.key(0))),
            "linear_regression": {k: np.asarray(v) for k, v in xy.items()}}


@pytest.fixture(scope="module")  # one worker runs the module (--dist loadfile)
def runs(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multiprocess")
    path = tmp / "data.npz"
    np.savez(path, gmm_x=data["gaussian_mixture"], lin_X=data["linear_regression"]["X"],
             lin_y=data["linear_regression"]["y"])
    root = pathlib.Path(__file__).resolve().parents[2]
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    # one CPU device per process; the suite's compile flags (conftest) kept
    env["XLA_FLAGS"] = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                                if "device_count" not in f)
    port = str(_free_port())
    logs = [(open(tmp / f"stdout{i}", "w+"), open(tmp / f"stderr{i}", "w+"))
            for i in range(NPROC)]
    procs = [subprocess.Popen([sys.executable, str(CHILD), str(i), str(NPROC), port,
                               str(path), str(tmp / "out")], env=env, text=True,
                              stdout=o, stderr=e) for i, (o, e) in enumerate(logs)]
    try:
        # the one-process fits run here while the children start
        one = {case: child.fit(name, method, data[name], kwargs)
               for case, (name, method, kwargs) in child.FITS.items()}
        # a child that fails leaves the other waiting in a collective: stop it too
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outs = []
    for o, e in logs:
        o.seek(0), e.seek(0)
        outs.append((o.read(), e.read()))
        o.close(), e.close()
    skips = [l for o, _ in outs for l in o.splitlines() if l.startswith("MULTIPROC_SKIP")]
    if skips:
        pytest.skip(skips[0].split(" ", 1)[1])
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0 and "MULTIPROC_DONE" in o, (o[-2000:], e[-4000:])
    found = [(dict(np.load(tmp / f"out{i}.npz")), json.loads((tmp / f"out{i}.json").read_text()))
             for i in range(NPROC)]
    return one, found


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(a))), 1e-300)


@pytest.mark.parametrize("case", list(child.FITS))
def test_two_processes_equal_one(runs, case):
    one, found = runs
    ref = one[case]
    natural = {f"{case}/natural{jax.tree_util.keystr(p)}": x
               for p, x in jax.tree_util.tree_leaves_with_path(ref.natural)}
    for pid, (arrays, report) in enumerate(found):
        assert report["devices"] == NPROC and report["local"] == 1
        assert int(arrays[f"{case}/iters"]) == int(ref.num_iters), pid
        assert abs(float(arrays[f"{case}/elbo"]) - float(ref.elbo)) <= TOL * abs(float(ref.elbo))
        assert set(k for k in arrays if "/natural" in k and k.startswith(case)) == set(natural)
        for k, x in natural.items():
            assert arrays[k].shape == x.shape, k
            assert _rel(x, arrays[k]) <= TOL, (k, _rel(x, arrays[k]))


def test_global_latents_replicated_local_latents_split(runs):
    """What a process gets back: the mixture's responsibilities (per datum) are split,
    process i holding rows [32 i, 32 (i+1)); everything else is replicated."""
    _, found = runs
    for pid, (_, report) in enumerate(found):
        for case in child.FITS:
            where = report[case]["placement"]
            n = 64 if case.startswith("gmm") else 48
            assert report[case]["data_global"][0] == n
            for leaf, p in where.items():
                if case.startswith("gmm") and leaf.startswith("['z']"):
                    assert not p["replicated"] and p["rows"] == [[32 * pid, 32 * (pid + 1)]], p
                else:
                    assert p["replicated"], (case, leaf, p)
        assert "split over 2 processes" in report["gmm/cavi"]["repr"]


def test_bad_input_raises_on_every_process(runs):
    _, found = runs
    for _, report in found:
        assert report["nan"].startswith("DataError") and "1 NaN/Inf" in report["nan"], report["nan"]
        assert "(64, 2)" in report["nan"]  # the global array's shape
        assert report["columns"].startswith("DataError") and "trailing shape" in report["columns"]
        assert report["rows"].startswith("DataError") and "numbers of rows" in report["rows"]
        assert report["hyper"].startswith("DataError") and "hyper-parameters" in report["hyper"]


def test_shard_local_and_gather_keep_dtypes(runs, data):
    """float32 rows and integer rows stay what they were, split over the two processes;
    a hyper-parameter is replicated, a Python scalar left as it is; gather returns the
    whole arrays, process 0's rows first."""
    _, found = runs
    x = data["gaussian_mixture"].astype(np.float32)
    for arrays, report in found:
        mixed = report["mixed"]
        assert mixed["x"] == ["float32", [64, 2], False]
        assert mixed["i"][1] == [64] and not mixed["i"][2] and mixed["i"][0].startswith("int")
        assert mixed["w"] == ["float32", [3], True]
        assert mixed["c"] == "1.5"
        assert arrays["mixed/x"].dtype == np.float32
        np.testing.assert_array_equal(arrays["mixed/x"], x)
        np.testing.assert_array_equal(arrays["mixed/i"], np.arange(64))


def test_shard_local_one_process():
    """With one process, shard_local is shard_data's placement of the same rows."""
    from vijax.errors import ModelSpecError
    from vijax.inference import distributed
    data = {"x": np.arange(12.0).reshape(6, 2), "w": np.ones(3), "c": 2}
    out = distributed.shard_local(data)
    assert out["x"].sharding.spec == jax.sharding.PartitionSpec("data")
    assert out["w"].sharding.spec == jax.sharding.PartitionSpec()
    assert out["c"] == 2
    np.testing.assert_array_equal(distributed.gather(out)["x"], data["x"])
    with pytest.raises(ModelSpecError, match="Mesh"):
        distributed.shard_local(data, mesh="data")
