"""Suite ``gibbs``: vijax's blocked Gibbs sampler (``vj.gibbs``) against NumPyro's NUTS on
the same models, in the same run.

Models (zoo, the same priors in both):

- ``gmm``: the diagonal Bayesian Gaussian mixture (``gaussian_mixture``), N = 1e4, K = 3,
  D = 2 (``full``). Gibbs draws every block (pi, z, mu, tau); NUTS cannot draw the
  discrete z, so its NumPyro model is the same mixture with z summed out (``logsumexp``
  over components).
- ``linreg``: Bayesian linear regression with unknown weight and noise precisions
  (``linear_regression``), N = 1e4, D = 50: Gibbs draws the dense Gaussian block w
  jointly, then alpha and beta.

Per method: compile time (vj.gibbs: first call minus a second, steady call with another
key; NUTS: NumPyro's kernel stepped in one ``lax.scan`` compiled ahead of time), run
time, sweeps (Gibbs) or NUTS iterations per second (warmup included), the minimum
effective sample size over every coordinate of the continuous latents (ArviZ's bulk ESS,
the same estimator for both), and effective samples per second of run time. Posterior
means of the two methods are compared (in posterior sds): both sample the same posterior.

Run: ``python -c "import sys; from benchmarks import run; run.SUITES['gibbs'] =
'benchmarks.bench_gibbs'; sys.exit(run.main(['gibbs', '--dtype', 'float64']))"``;
smoke: ``run("tiny", "float64")`` (the regression only, small sizes: its time is the
four compiles).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness as H
from vijax.inference.gibbs import gibbs
from vijax.models.gaussian import linear_regression
from vijax.models.mixture import GMM_PRIOR, gaussian_mixture

# tiny (the smoke run) compiles one model's two samplers only: each compile is seconds
SIZES = {
    "tiny": {"models": ("linreg",), "gmm": {"n": 200, "k": 2, "d": 2},
             "linreg": {"n": 200, "d": 5}, "gibbs": (100, 50), "nuts": (40, 40)},
    "full": {"models": ("gmm", "linreg"), "gmm": {"n": 10_000, "k": 3, "d": 2},
             "linreg": {"n": 10_000, "d": 50}, "gibbs": (2000, 500), "nuts": (500, 500)},
}
SEED = 0
CONTINUOUS = {"gmm": ("pi", "mu", "tau"), "linreg": ("w", "alpha", "beta")}


# --------------------------------------------------------------------- NumPyro models
def numpyro_gmm(x, k):
    """The zoo mixture with z summed out: p(x_n) = sum_k pi_k N(x_n; mu_k, 1/tau_k)."""
    import numpyro
    import numpyro.distributions as dist
    p = GMM_PRIOR
    d = x.shape[1]
    pi = numpyro.sample("pi", dist.Dirichlet(jnp.full((k,), p["alpha0"])))
    tau = numpyro.sample("tau", dist.Gamma(p["a0"], p["b0"]).expand([k, d]).to_event(2))
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0 / jnp.sqrt(p["beta0"] * tau)).to_event(2))
    comp = dist.Normal(mu, 1.0 / jnp.sqrt(tau)).log_prob(x[:, None, :]).sum(-1)  # [N, K]
    numpyro.factor("x", jax.nn.logsumexp(jnp.log(pi) + comp, axis=-1).sum())


def numpyro_linreg(X, y):
    """The zoo regression: alpha, beta ~ Gamma(1, 1), w ~ N(0, I/alpha), y ~ N(Xw, I/beta)."""
    import numpyro
    import numpyro.distributions as dist
    alpha = numpyro.sample("alpha", dist.Gamma(1.0, 1.0))
    beta = numpyro.sample("beta", dist.Gamma(1.0, 1.0))
    w = numpyro.sample("w", dist.Normal(0.0, 1.0 / jnp.sqrt(alpha))
                       .expand([X.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(X @ w, 1.0 / jnp.sqrt(beta)).to_event(1), obs=y)


# --------------------------------------------------------------------------- measures
def min_ess(draws, names):
    """The smallest ESS over every coordinate of ``names`` (``[chains, draws, ...]``;
    ArviZ's bulk ESS, rank-normalized)."""
    import arviz as az
    out = []
    for n in names:
        x = np.asarray(draws[n], np.float64)
        x = x.reshape(x.shape[:2] + (-1,))
        out += [float(az.ess(x[..., i])) for i in range(x.shape[-1])]
    return float(min(out))


def _posterior_gap(a, b, names, sort_by=None):
    """max over coordinates of |mean_a - mean_b| / sd_b (draws ``[chains, draws, ...]``);
    ``sort_by``: mixture components relabelled by the mean of this latent's first
    coordinate (the two samplers may label them differently)."""
    def moments(draws):
        m = {n: np.asarray(draws[n], np.float64).reshape((-1,) + np.shape(draws[n])[2:])
             for n in names}
        if sort_by is not None:
            perm = np.argsort(m[sort_by].mean(0)[:, 0])
            m = {n: v[:, perm] for n, v in m.items()}
        return {n: (v.mean(0), v.std(0)) for n, v in m.items()}
    ma, mb = moments(a), moments(b)
    return float(max(np.max(np.abs(ma[n][0] - mb[n][0]) / mb[n][1]) for n in names))


def _gibbs_row(model, data, cfg, names, init=None):
    samples, warmup = cfg["gibbs"]
    call = lambda seed: gibbs(model, data, jax.random.key(seed), num_samples=samples,  # noqa: E731
                              num_warmup=warmup, init=init)
    t0 = H.clock()
    call(SEED)
    first = H.clock() - t0
    res = call(SEED + 1)  # compiled sampler cached: the steady run
    steady = res.seconds
    ess = min_ess(res.draws, names)
    return {"method": "vijax Gibbs", "compile_s": max(first - steady, 0.0),
            "run_s": steady, "draws": samples, "warmup": warmup,
            "sweeps_per_s": (samples + warmup) / steady, "grad_evals_per_iter": None,
            "min_ess": ess, "ess_per_s": ess / steady}, res.draws


def _nuts_row(model_fn, args, cfg, names, init=None):
    """NumPyro's NUTS kernel (its own warmup adaptation) stepped in one jitted
    ``lax.scan``, compiled ahead of time so that compile and run are timed apart."""
    from numpyro.infer import NUTS, init_to_uniform, init_to_value
    samples, warmup = cfg["nuts"]
    kernel = NUTS(model_fn, init_strategy=init_to_value(values=init) if init
                  else init_to_uniform)
    state0 = kernel.init(jax.random.key(SEED), warmup, None, model_args=args, model_kwargs={})
    post = kernel.postprocess_fn(args, {})

    def chain(state):
        def body(s, _):
            s = kernel.sample(s, args, {})
            return s, (s.z, s.num_steps)
        _, (zs, steps) = jax.lax.scan(body, state, None, length=warmup + samples)
        kept = jax.tree_util.tree_map(lambda a: a[warmup:], zs)
        return jax.vmap(post)(kept), steps[warmup:]

    exe, comp = H.aot_compile(chain, state0)
    t0 = H.clock()
    draws, steps = H.block(exe(state0))
    steady = H.clock() - t0
    draws = {n: np.asarray(v)[None] for n, v in draws.items()}
    ess = min_ess(draws, names)
    return {"method": "NumPyro NUTS", "compile_s": comp["trace_lower_s"] + comp["xla_compile_s"],
            "run_s": steady, "draws": samples, "warmup": warmup,
            "sweeps_per_s": (samples + warmup) / steady,
            "grad_evals_per_iter": float(np.mean(np.asarray(steps))), "min_ess": ess,
            "ess_per_s": ess / steady}, draws


def _case(name, cfg, dt):
    key = jax.random.key(SEED)
    if name == "gmm":
        c = cfg["gmm"]
        zm = gaussian_mixture(n=c["n"], k=c["k"], d=c["d"])
        x = jnp.asarray(zm.make_data(key), dt)
        # both samplers start at the simulated clusters' means (Gibbs also at their
        # labels, drawn as make_mixture_data draws them), so they sample the same mode
        _, k_labels, _ = jax.random.split(key, 3)
        labels = jax.random.randint(k_labels, (c["n"],), 0, c["k"])
        mu0 = jnp.stack([x[labels == j].mean(0) for j in range(c["k"])]).astype(dt)
        init = {"z": labels.astype(jnp.int32), "mu": mu0,
                "tau": jnp.ones((c["k"], c["d"]), dt),
                "pi": jnp.full((c["k"],), 1.0 / c["k"], dt)}
        nuts_init = {k_: v for k_, v in init.items() if k_ != "z"}
        return (zm.model, x, init, functools.partial(numpyro_gmm, k=c["k"]), (x,), nuts_init,
                {"N": c["n"], "K": c["k"], "D": c["d"]}, "mu")
    c = cfg["linreg"]
    zm = linear_regression(d=c["d"])
    data = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dt), zm.make_data(key, n=c["n"]))
    return (zm.model, data, None, numpyro_linreg, (data["X"], data["y"]), None,
            {"N": c["n"], "D": c["d"]}, None)


def run(size: str, dtype: str) -> dict:
    cfg = SIZES[size]
    rows = []
    with H.precision(dtype) as dt:
        for name in cfg["models"]:
            model, data, init, np_fn, np_args, np_init, shape, sort_by = _case(name, cfg, dt)
            names = CONTINUOUS[name]
            g_row, g_draws = _gibbs_row(model, data, cfg, names, init)
            n_row, n_draws = _nuts_row(np_fn, np_args, cfg, names, np_init)
            gap = _posterior_gap(g_draws, n_draws, names, sort_by)
            for r in (g_row, n_row):
                r.update(model=name, size=str(shape), mean_gap_sd=gap)
                r["ess_per_s_vs_nuts"] = r["ess_per_s"] / n_row["ess_per_s"]
                rows.append(r)
    cols = ["model", "size", "method", "draws", "warmup", "compile_s", "run_s",
            "sweeps_per_s", "grad_evals_per_iter", "min_ess", "ess_per_s",
            "ess_per_s_vs_nuts", "mean_gap_sd"]
    rows = [{c: r[c] for c in cols} for r in rows]
    return {"suite": "gibbs", "title": "Gibbs from the compiler's conditionals vs NumPyro NUTS",
            "config": {"size": size, "seed": SEED, "chains": 1, "models": list(cfg["models"]),
                       "gibbs_draws_warmup": list(cfg["gibbs"]),
                       "nuts_draws_warmup": list(cfg["nuts"]),
                       "gmm": cfg["gmm"], "linreg": cfg["linreg"]},
            "tables": [{"name": "Samplers", "columns": cols, "rows": rows}],
            "targets": _targets(rows), "notes": NOTES}


def _targets(rows):
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        g = next(r for r in rows if r["model"] == name and r["method"].startswith("vijax"))
        out.append({"target": f"{name}: Gibbs effective samples/s over NUTS's",
                    "measured": g["ess_per_s_vs_nuts"], "limit": ">= 1",
                    "met": bool(g["ess_per_s_vs_nuts"] >= 1)})
        out.append({"target": f"{name}: posterior means of Gibbs and NUTS (max |diff| / sd)",
                    "measured": g["mean_gap_sd"], "limit": "<= 0.5",
                    "met": bool(g["mean_gap_sd"] <= 0.5)})
    return out


NOTES = [
    "One chain per method, run one after the other (not interleaved; the load average is "
    "in the machine table). vj.gibbs: compile_s is the first call minus a second, steady "
    "call with another key (analysis, data program and XLA compile of the sampler; the "
    "compiled sampler is cached per shapes and draw count); run_s is the steady call's "
    "jitted loop (GibbsResult.seconds). NUTS: NumPyro's NUTS kernel (init, then "
    "kernel.sample with its own step-size and mass-matrix adaptation during warmup) "
    "stepped in one lax.scan compiled ahead of time: compile_s is its trace + XLA "
    "compile (kernel.init's own compile left out), run_s one call of the executable.",
    "sweeps_per_s: (draws + warmup) / run_s; one Gibbs sweep draws every block once, one "
    "NUTS iteration takes grad_evals_per_iter leapfrog steps (mean over the kept draws).",
    "min_ess: the smallest effective sample size (arviz.ess, bulk: rank-normalized, "
    "split chains) over every coordinate of the continuous latents (GMM: pi, mu, "
    "tau; regression: w, alpha, beta); ess_per_s = min_ess / run_s.",
    "GMM: NUTS samples the mixture with z summed out (logsumexp), Gibbs draws z too. Both "
    "start at the data's cluster means (label switching is left out); mean_gap_sd compares "
    "the posterior means after sorting components by mu[:, 0].",
]


if __name__ == "__main__":
    import sys

    from benchmarks import run as runner
    runner.SUITES.setdefault("gibbs", "benchmarks.bench_gibbs")
    sys.exit(runner.main(["gibbs", *sys.argv[1:]]))
