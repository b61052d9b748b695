"""One end-to-end GMM fit, run in a fresh Python process by the ``e2e`` suite.

    python -m benchmarks.e2e_fit '<json arguments>'

``impl`` is one of

- ``vijax``: import vijax, declare the diagonal GMM, ``vj.cavi(model, x, key=...,
  max_iters=iters, tol=0.0)``, print the ELBO (what a user's script does);
- ``reference``: the hand-written JAX CAVI of :mod:`benchmarks.reference_gmm` (jit of
  random responsibilities + ``iters`` sweeps), print the ELBO; vijax is not imported;
- ``sklearn``: ``BayesianGaussianMixture(covariance_type="diag", max_iter=iters,
  tol=0)``, print its lower bound; JAX is not imported;
- ``second``: in one process, vijax's first call on ``data`` (with its analysis
  timings) and the reference's first call, then each of them on every dataset of
  ``more`` (new data of the same shape), interleaved: the cost of a second fit.

The data are ``.npy`` files written by the suite (float64), so that no process pays for
generating them and all three fit the same numbers. The last line printed is a JSON
object with the process's own timings; the suite times the whole process from outside.
"""

from __future__ import annotations

import json
import logging
import sys
import time

clock = time.perf_counter
T_START = clock()


def _vijax_setup(args):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import vijax as vj
    from vijax.models.mixture import make_mixture_log_joint
    t_import = clock() - T_START
    x = jnp.asarray(np.load(args["data"]))
    n, d = x.shape
    k = args["k"]
    model = vj.Model(make_mixture_log_joint(args["prior"]),
                     {"pi": vj.simplex(k), "z": vj.categorical(k, shape=(n,)),
                      "mu": vj.real((k, d)), "tau": vj.positive((k, d))})
    return jax, jnp, np, vj, model, x, t_import


def _vijax_fit(jax, vj, model, x, args, tol):
    res = vj.cavi(model, x, key=jax.random.key(args["seed"]), max_iters=args["iters"],
                  tol=tol)
    return float(res.elbo), int(res.num_iters)


def run_vijax(args):
    jax, jnp, np, vj, model, x, t_import = _vijax_setup(args)
    tol = 0.0  # exactly ``iters`` sweeps
    t0 = clock()
    elbo, it = _vijax_fit(jax, vj, model, x, args, tol)
    return {"elbo": elbo, "sweeps": it, "tol": tol, "import_s": t_import,
            "fit_s": clock() - t0}


def _reference_fit(args):
    import jax
    import jax.numpy as jnp

    from benchmarks import reference_gmm as R
    k, iters, prior = args["k"], args["iters"], args["prior"]

    @jax.jit
    def fit(key, x):
        n, d = x.shape
        # Dirichlet(1, ..., 1) responsibilities as normalized Exp(1) draws (what vijax's
        # default start does; jax.random.dirichlet's Gamma sampler costs ~3.6 s here)
        e = jax.random.exponential(key, (n, k), x.dtype)
        r0 = e / jnp.sum(e, axis=-1, keepdims=True)
        etau0 = jnp.ones((k, d), x.dtype)
        state, trace = R.cavi_loop(r0, etau0, x, prior, iters)
        return trace[-1]

    return fit


def run_reference(args):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    fit = _reference_fit(args)
    t_import = clock() - T_START
    x = jnp.asarray(np.load(args["data"]))
    t0 = clock()
    elbo = float(fit(jax.random.key(args["seed"]), x))
    return {"elbo": elbo, "sweeps": args["iters"], "tol": None, "import_s": t_import,
            "fit_s": clock() - t0}


def run_sklearn(args):
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture
    t_import = clock() - T_START
    x = np.load(args["data"])
    p = args["prior"]
    t0 = clock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = BayesianGaussianMixture(
            n_components=args["k"], covariance_type="diag", max_iter=args["iters"], tol=0.0,
            init_params="random", random_state=args["seed"],
            weight_concentration_prior_type="dirichlet_distribution",
            weight_concentration_prior=p["alpha0"], mean_precision_prior=p["beta0"],
            mean_prior=np.zeros(x.shape[1])).fit(x)
    return {"elbo": float(gm.lower_bound_), "sweeps": int(gm.n_iter_), "tol": 0.0,
            "import_s": t_import, "fit_s": clock() - t0}


def run_second(args):
    """vijax's first and later calls against the reference's, in one process."""
    jax, jnp, np, vj, model, x, t_import = _vijax_setup(args)
    tol = 0.0  # exactly ``iters`` sweeps
    t0 = clock()
    v_elbo, it = _vijax_fit(jax, vj, model, x, args, tol)
    v_first = clock() - t0
    spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
    timings = dict(vj.analyze(model, spec).timings)  # cached: the first call's program
    fit = _reference_fit(args)
    key = jax.random.key(args["seed"])
    t0 = clock()
    r_elbo = float(fit(key, x))
    r_first = clock() - t0
    compiles = _CompileLog(jax)  # XLA compiles during the later calls (vijax and reference)
    compiles.__enter__()
    v_times, r_times, v_elbos, r_elbos = [], [], [], []
    for j, path in enumerate(args["more"]):
        xj = jax.block_until_ready(jnp.asarray(np.load(path)))  # data: not timed
        order = ("v", "r") if j % 2 == 0 else ("r", "v")
        for who in order:
            t0 = clock()
            if who == "v":
                v_elbos.append(_vijax_fit(jax, vj, model, xj, args, tol)[0])
                v_times.append(clock() - t0)
            else:
                r_elbos.append(float(fit(key, xj)))
                r_times.append(clock() - t0)
    compiles.__exit__(None, None, None)
    return {"import_s": t_import, "tol": tol, "sweeps": it,
            "vijax_first_s": v_first, "reference_first_s": r_first,
            "vijax_first_elbo": v_elbo, "reference_first_elbo": r_elbo,
            "analysis_timings": timings, "vijax_later_s": v_times, "reference_later_s": r_times,
            "vijax_later_elbo": v_elbos, "reference_later_elbo": r_elbos,
            "loop_compiles_during_later_calls": compiles.count}


class _CompileLog(logging.Handler):
    """Counts JAX's "Compiling ..." log records while installed (a context manager)."""

    def __init__(self, jax):
        super().__init__(level=logging.DEBUG)
        self.jax, self.count = jax, 0

    def emit(self, record):
        self.count += "ompil" in record.getMessage()

    def __enter__(self):
        logger = logging.getLogger("jax")
        self._level = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)
        self._ctx = self.jax.log_compiles(True)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        logger = logging.getLogger("jax")
        logger.removeHandler(self)
        logger.setLevel(self._level)
        return False


RUNNERS = {"vijax": run_vijax, "reference": run_reference, "sklearn": run_sklearn,
           "second": run_second}


def main(argv):
    args = json.loads(argv[1])
    out = RUNNERS[args["impl"]](args)
    out["process_inner_s"] = clock() - T_START
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv)
