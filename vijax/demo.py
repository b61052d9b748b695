"""``vijax demo``: the lecture's examples, fitted and checked against closed forms.

[1] the textbook bivariate Gaussian and [2] the normal-gamma model, by CAVI, by gradient
and by blocked Gibbs sampling; [3] a skewed posterior (Gamma-Poisson rate) with its exact
density, Gibbs draws, the Laplace Gaussians and the CAVI factor
(:mod:`vijax.demo_laplace`); [4] EM's lower bound against the log likelihood
(:mod:`vijax.demo_em`). Every number that the demo states is checked; a failed check ends
the demo with exit status 1.

Figures (matplotlib optional): written to ``--plots DIR`` (default ``vijax-demo-out``;
``--plots ''`` for none). Without matplotlib the tables are printed and the demo says the
figures were skipped.
"""

from __future__ import annotations

import time

#: Gibbs marginal variances must be within this many Monte Carlo standard errors of the
#: exact ones (and within ``_VAR_RTOL_FLOOR`` relative, if that is larger)
_GIBBS_SE = 5.0
_VAR_RTOL_FLOOR = 0.02


def _gibbs_moments(draws, exact_mean, exact_var):
    """(mean, variance, allowed |mean - exact|, allowed |variance - exact|) of draws
    ``[chains, samples]``: ``_GIBBS_SE`` Monte Carlo standard errors ``sd(f)/sqrt(ESS(f))``
    of ``f = z`` and ``f = (z - exact mean)^2``."""
    import numpy as np
    from vijax.inference.gibbs_diagnostics import ess
    d = np.asarray(draws, np.float64)
    sq = (d - exact_mean) ** 2
    se_m = float(d.std() / np.sqrt(float(ess(d))))
    se_v = float(sq.std() / np.sqrt(float(ess(sq))))
    tol = max(_GIBBS_SE * se_v, _VAR_RTOL_FLOOR * exact_var)
    return float(d.mean()), float(d.var(ddof=1)), _GIBBS_SE * se_m, tol


def _gibbs_table(rows, failures, what):
    """Print exact / CAVI / Gibbs means and variances; a Gibbs mean or variance outside
    its allowance (:func:`_gibbs_moments`) is a failure.

    ``rows``: ``(name, exact mean, exact var, CAVI mean, CAVI var, draws)``."""
    print(f"{'':<4} {'exact mean':>11} {'CAVI mean':>10} {'Gibbs mean':>11} "
          f"{'exact var':>10} {'CAVI var':>9} {'Gibbs var':>10} {'|dvar| tol':>10}")
    for n, em, ev, cm, cv, draws in rows:
        gm, gv, tol_m, tol = _gibbs_moments(draws, em, ev)
        print(f"{n:<4} {em:>11.5f} {cm:>10.5f} {gm:>11.5f} {ev:>10.5f} {cv:>9.5f} "
              f"{gv:>10.5f} {tol:>10.5f}")
        if not abs(gv - ev) <= tol:
            failures.append(f"{what}: Gibbs variance of {n} ({gv:.5f}) is not within {tol:.5f} "
                            f"of the exact {ev:.5f}")
        if not abs(gm - em) <= tol_m:
            failures.append(f"{what}: Gibbs mean of {n} ({gm:.5f}) is not within {tol_m:.5f} "
                            f"of the exact {em:.5f}")


def run(args) -> int:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    import vijax as vj
    from vijax.compare_draws import compare_draws
    from vijax.inference.gibbs import gibbs
    from vijax.models import ZOO

    failures = []
    t0 = time.time()
    print("vijax demo: CAVI derived from the log joint, the same ELBO by gradient, and their "
          "agreement\n")

    # 1. the textbook bivariate Gaussian with one factor per coordinate
    zm = ZOO["bivariate_gaussian"]()
    data = zm.make_data(rho=args.rho)
    print(f"[1] bivariate Gaussian target, correlation {args.rho}, q(z1) q(z2)")
    print(vj.analyze(zm.model, data))
    fit = vj.cavi(zm.model, data, key=jax.random.key(args.seed), tol=1e-15, max_iters=2000)
    gfit = vj.fit_gradient(zm.model, data, jax.random.key(args.seed + 1),
                           optimizer=optax.adam(5e-2), estimator="exact", tol=1e-10)
    prec = jnp.linalg.inv(data["cov"])
    print(f"\n{'':<4} {'CAVI mean':>10} {'exact mean':>11} {'CAVI var':>10} {'1/Lambda_ii':>12}"
          f" {'Sigma_ii':>9}")
    for i, n in enumerate(("z1", "z2")):
        q = fit.posterior[n]
        m, v = float(q.mean()), float(q.variance())
        print(f"{n:<4} {m:>10.6f} {float(data['mean'][i]):>11.6f} {v:>10.6f} "
              f"{float(1 / prec[i, i]):>12.6f} {float(data['cov'][i, i]):>9.6f}")
        if abs(m - float(data["mean"][i])) > 1e-6 or abs(v - float(1 / prec[i, i])) > 1e-8:
            failures.append(f"bivariate {n} does not match the closed form")
    print("(mean-field reverse KL: variances 1/Lambda_ii, smaller than the marginal Sigma_ii)\n")
    rep = vj.compare(fit, gfit, names=("cavi", "gradient"))
    print(rep)
    if not rep.agree:
        failures.append("bivariate: CAVI and gradient disagree")
    res = gibbs(zm.model, data, jax.random.key(args.seed + 3), num_samples=20000,
                num_warmup=100, num_chains=4)
    print(f"\nblocked Gibbs from the same complete conditionals, {res.num_chains} chains x "
          f"{res.num_samples} draws ({res.seconds:.2f} s):")
    _gibbs_table([(n, float(data["mean"][i]), float(data["cov"][i, i]),
                   float(fit.posterior[n].mean()), float(fit.posterior[n].variance()),
                   res.draws[n]) for i, n in enumerate(("z1", "z2"))], failures, "bivariate")
    print(f"(Gibbs targets the exact posterior: marginal variances Sigma_ii; checked to "
          f"{_GIBBS_SE:g} Monte Carlo standard errors, or {_VAR_RTOL_FLOOR:.0%} if larger)\n")
    print(compare_draws(fit, res, names=("cavi", "gibbs")))

    # 2. normal-gamma: unknown mean and precision
    zm = ZOO["normal_gamma"]()
    x = zm.make_data(jax.random.key(args.seed), n=50)
    print(f"\n[2] normal-gamma model, {x.shape[0]} observations, q(mu) q(tau)")
    print(vj.analyze(zm.model, x))
    fit = vj.cavi(zm.model, x, key=jax.random.key(args.seed))
    print(f"CAVI: {int(fit.num_iters)} sweeps, ELBO {float(fit.elbo):.8g}")
    # exact: deterministic gradient of F + H; reparam: Monte Carlo, judged as in the
    # agreement tests (ELBO gap < 1e-2, means within 0.1 posterior sd)
    for est, opt, tol in (("exact", optax.adam(5e-2), 1e-10),
                          ("reparam", optax.adam(optax.exponential_decay(5e-2, 600, 0.3)), 0.0)):
        g = vj.fit_gradient(zm.model, x, jax.random.key(args.seed + 2), optimizer=opt,
                            estimator=est, num_samples=32, num_steps=2400, tol=tol)
        crit = (dict(elbo_tol=1e-5, kl_tol=1e-4) if est == "exact"
                else dict(elbo_tol=1e-2, kl_tol=float("inf"), mean_tol_sd=0.1))
        rep = vj.compare(fit, g, names=("cavi", est), **crit)
        print(f"\ngradient ({est}), {int(g.num_iters)} steps:")
        print(rep)
        if not rep.agree:
            failures.append(f"normal-gamma: CAVI and gradient ({est}) disagree")
    res = gibbs(zm.model, x, jax.random.key(args.seed + 4), num_samples=5000, num_warmup=100,
                num_chains=4)
    ex = _normal_gamma_exact(x)
    print(f"\nblocked Gibbs, {res.num_chains} chains x {res.num_samples} draws "
          f"({res.seconds:.2f} s); exact: tau ~ Gamma(a_n, b_n), mu ~ Student-t:")
    _gibbs_table([(n, ex[n][0], ex[n][1], float(fit.posterior[n].mean()),
                   float(fit.posterior[n].variance()), res.draws[n]) for n in ("mu", "tau")],
                 failures, "normal-gamma")
    drep = compare_draws(fit, res, mean_tol_sd=0.25, names=("cavi", "gibbs"))
    print(drep)
    if not drep.agree:
        failures.append("normal-gamma: CAVI means are not within 0.25 sd of Gibbs'")

    sp, eb = pictures(args.seed, failures)
    figures(args.plots, sp, eb)
    print(f"\ndemo finished in {time.time() - t0:.1f} s")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print("all checks passed")
    return 0


def pictures(seed, failures):
    """Sections [3] and [4]: the skewed posterior's table and EM's bounds, checked
    (:func:`vijax.demo_laplace.problems`, :func:`vijax.demo_em.problems`); returns
    their numbers for :func:`figures`."""
    from vijax import demo_em, demo_laplace
    t = time.time()
    sp = demo_laplace.skewed_posterior(seed=seed)
    a, b = sp.shape, sp.rate
    print(f"\n[3] a skewed posterior: Gamma-Poisson rate, counts {list(sp.counts)}; exact "
          f"p(lam | x) = Gamma({a:g}, {b:g}); Gibbs {sp.draws.shape[0]} x "
          f"{sp.draws.shape[1]} draws; KL by quadrature")
    print(demo_laplace.format_table(sp))
    print("(one conjugate block: the CAVI factor is the exact posterior. Laplace on lam "
          "matches the mode and the curvature there and has no skew; on log lam, the "
          "library's default for a positive latent, it is log-normal: skewed, too much)")
    failures += [f"skewed posterior: {m}" for m in demo_laplace.problems(sp)]
    eb = demo_em.em_bound(seed=seed)
    print(f"\n[4] EM's lower bound l(w, w_n) = E_q_n[log p(x, c | w)] + H(q_n) <= l(w): "
          f"mixture of N({demo_em.MU0:g}, 1) and N({demo_em.MU1:g}, 1), weight w unknown, "
          f"{eb.x.size} points, w_0 = {eb.iterates[0]:g}")
    print(demo_em.format_table(eb))
    print("(the bound touches l at w_n, lies below it, and peaks at EM's next iterate)")
    failures += [f"EM bound: {m}" for m in demo_em.problems(eb)]
    print(f"[3] and [4] took {time.time() - t:.1f} s")
    return sp, eb


def figures(folder, sp, eb):
    """Write the demo's figures into ``folder`` (none when empty): :mod:`vijax.plots`'
    three and :mod:`vijax.plots_lecture`'s two. Returns the paths (empty when matplotlib
    is missing: then it says so)."""
    if not folder:
        return []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("\nfigures skipped: matplotlib is not installed (pip install vijax[plot])")
        return []
    from vijax import plots, plots_lecture
    paths = plots.demo_figures(folder)
    paths += [plots_lecture.plot_laplace_comparison(folder, sp),
              plots_lecture.plot_em_bound(folder, eb)]
    print("\nfigures written:", ", ".join(str(p) for p in paths))
    return paths


def _normal_gamma_exact(x):
    """Exact posterior moments of the zoo's normal-gamma model: ``tau ~ Gamma(a_n, b_n)``,
    ``mu`` Student-t with mean ``mu_n`` and variance ``b_n / (lambda_n (a_n - 1))``."""
    import numpy as np
    from vijax.models.gaussian import NORMAL_GAMMA_PRIOR as P
    x = np.asarray(x, np.float64)
    n, xbar = x.size, x.mean()
    lam_n = P["lambda0"] + n
    mu_n = (P["lambda0"] * P["mu0"] + n * xbar) / lam_n
    a_n = P["a0"] + n / 2
    b_n = (P["b0"] + 0.5 * np.sum((x - xbar) ** 2)
           + P["lambda0"] * n * (xbar - P["mu0"]) ** 2 / (2 * lam_n))
    return {"mu": (mu_n, b_n / (lam_n * (a_n - 1))), "tau": (a_n / b_n, a_n / b_n ** 2)}
