"""A Bayesian Gaussian mixture fitted by several JAX processes, each holding its rows.

Every process runs this same script (SPMD): it joins ``jax.distributed``, makes (here:
generates; in practice: reads) only its own block of rows, turns the blocks into one
global data array with ``vijax.inference.distributed.shard_local`` and calls ``vj.cavi``
and ``vj.fit_gradient`` exactly as on one process. The sufficient statistics are summed
across processes inside the jitted loop (on CPU through JAX's gloo collectives), so the
fit is the one-process fit up to the order of floating-point summation.

On one machine (this script starts the processes itself)::

    python examples/multiprocess_fit.py --num-processes 2
    python examples/multiprocess_fit.py --num-processes 2 --check   # vs one process

On several hosts (one command per host, the same coordinator address)::

    python examples/multiprocess_fit.py --num-processes 2 --process-id 0 --coordinator host0:12345
    python examples/multiprocess_fit.py --num-processes 2 --process-id 1 --coordinator host0:12345
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

import numpy as np

K, D = 3, 2


def log_joint(z, x):
    """Diagonal Gaussian mixture: pi ~ Dir(1), tau ~ Gamma(1, 1), mu | tau ~ N(0, 1/(0.01
    tau)), z_n ~ Cat(pi), x_n ~ N(mu_{z_n}, 1/tau_{z_n})."""
    import jax.numpy as jnp
    from jax.scipy import stats
    lp = stats.dirichlet.logpdf(z["pi"], jnp.ones(K))
    lp += jnp.sum(stats.gamma.logpdf(z["tau"], 1.0))
    lp += jnp.sum(stats.norm.logpdf(z["mu"], 0.0, 1.0 / jnp.sqrt(0.01 * z["tau"])))
    lp += jnp.sum(jnp.log(z["pi"])[z["z"]])
    lp += jnp.sum(stats.norm.logpdf(x, z["mu"][z["z"]], 1.0 / jnp.sqrt(z["tau"][z["z"]])))
    return lp


def local_rows(process_id, rows, seed):
    """This process's rows: draws from the same three clusters on every process."""
    centers = 6.0 * np.random.default_rng(seed).normal(size=(K, D))
    rng = np.random.default_rng([seed, process_id])
    labels = rng.integers(0, K, rows)
    return centers[labels] + rng.normal(size=(rows, D))


def run(args):
    import jax
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    jax.distributed.initialize(args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id)
    import vijax as vj
    from vijax.inference import distributed

    pid, nproc = jax.process_index(), jax.process_count()
    rows = args.n // nproc
    model = vj.Model(log_joint, {"pi": vj.simplex(K), "z": vj.categorical(K, shape=(rows * nproc,)),
                                 "mu": vj.real((K, D)), "tau": vj.positive((K, D))})
    x = distributed.shard_local(local_rows(pid, rows, args.seed))  # global (N, D) array
    say = print if pid == 0 else (lambda *a, **k: None)
    say(f"{nproc} processes, {jax.device_count()} devices; data {x.shape} {x.dtype}, "
        f"split {x.sharding.spec} (process 0 holds rows 0..{rows - 1})")

    t0 = time.perf_counter()
    fit = vj.cavi(model, x, key=jax.random.key(0))
    fit.elbo.block_until_ready()
    say(f"CAVI      ELBO {float(fit.elbo):.6f}  sweeps {int(fit.num_iters)}  "
        f"{time.perf_counter() - t0:.2f} s (compile included)")
    order = np.argsort(np.asarray(fit.posterior["mu"].mean())[:, 0])
    say("  cluster means (replicated, read on every process):\n",
        np.round(np.asarray(fit.posterior["mu"].mean())[order], 3))
    say("  weights:", np.round(np.asarray(fit.posterior["pi"].mean())[order], 3))
    probs = fit.posterior["z"].probs  # local latent: split like the data
    mine = probs.addressable_shards[0]
    print(f"  process {pid}: responsibilities {probs.shape}, holds rows "
          f"{mine.index[0].start}..{mine.index[0].stop - 1} "
          f"(fully replicated: {probs.is_fully_replicated})", flush=True)

    t0 = time.perf_counter()
    grad = vj.fit_gradient(model, x, jax.random.key(0), num_steps=args.steps)
    grad.elbo.block_until_ready()
    say(f"gradient  ELBO {float(grad.elbo):.6f}  steps {int(grad.num_iters)}  "
        f"{time.perf_counter() - t0:.2f} s (compile included)")

    if args.check:  # every process refits all rows on its own device, process 0 reports
        whole = np.concatenate([local_rows(p, rows, args.seed) for p in range(nproc)])
        one = vj.cavi(model, whole, key=jax.random.key(0))
        rel = abs(float(one.elbo) - float(fit.elbo)) / abs(float(one.elbo))
        gathered = distributed.gather(fit.natural)  # a collective: every process calls it
        worst = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))) /
                          max(float(np.max(np.abs(np.asarray(a)))), 1e-300))
                    for a, b in zip(jax.tree_util.tree_leaves(one.natural),
                                    jax.tree_util.tree_leaves(gathered)))
        say(f"one process on all rows: ELBO {float(one.elbo):.6f}, sweeps {int(one.num_iters)}; "
            f"relative difference: ELBO {rel:.1e}, natural parameters {worst:.1e}")


def spawn(args):
    """Start ``--num-processes`` copies of this script on this machine and wait."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    base = [sys.executable, os.path.abspath(__file__), "--num-processes",
            str(args.num_processes), "--coordinator", f"127.0.0.1:{port}", "--n", str(args.n),
            "--steps", str(args.steps), "--seed", str(args.seed)]
    base += ["--float64"] * args.float64 + ["--check"] * args.check
    procs = [subprocess.Popen(base + ["--process-id", str(i)], env=env)
             for i in range(args.num_processes)]
    try:
        codes = [p.wait(timeout=args.timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return max(codes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-processes", type=int, default=2)
    p.add_argument("--process-id", type=int, default=None,
                   help="this process's index; omit to start all processes on this machine")
    p.add_argument("--coordinator", default=None, help="host:port of process 0")
    p.add_argument("--n", type=int, default=20_000, help="rows in all (split evenly)")
    p.add_argument("--steps", type=int, default=500, help="gradient steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--float64", action="store_true")
    p.add_argument("--check", action="store_true", help="compare with a one-process fit")
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args(argv)
    if args.process_id is None:
        return spawn(args)
    if args.coordinator is None:
        p.error("--coordinator host:port is needed with --process-id")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
