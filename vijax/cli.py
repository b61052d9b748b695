"""The ``vijax`` command.

``vijax demo`` fits two built-in models (the textbook bivariate Gaussian and the
normal-gamma model) by CAVI and by gradient, checks the bivariate result against its
closed form, and prints the agreement tables. ``vijax analyze NAME`` prints the
compiler's report for a zoo model.
"""

from __future__ import annotations

import argparse
import sys
import time


def _demo(args) -> int:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    import vijax as vj
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

    if args.out:
        try:
            from vijax import plots
        except ImportError:
            plots = None
        if plots is not None and hasattr(plots, "demo_figures"):
            try:
                paths = plots.demo_figures(args.out)
                print("\nfigures written:", ", ".join(str(p) for p in paths))
            except ImportError as e:
                print(f"\n(no figures: {e})")
    print(f"\ndemo finished in {time.time() - t0:.1f} s")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print("all checks passed")
    return 0


def _analyze(args) -> int:
    import jax
    import vijax as vj
    from vijax.models import ZOO
    if args.name not in ZOO:
        print(f"unknown zoo model {args.name!r}; choose from {sorted(ZOO)}", file=sys.stderr)
        return 2
    zm = ZOO[args.name]()
    print(vj.analyze(zm.model, zm.make_data(jax.random.key(0))))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vijax", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="fit built-in models by CAVI and gradient, compare")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--rho", type=float, default=0.9, help="bivariate correlation")
    d.add_argument("--out", default="vijax-demo-out", help="folder for figures ('' for none)")
    d.set_defaults(fn=_demo)
    a = sub.add_parser("analyze", help="print the compiler's report for a zoo model")
    a.add_argument("name")
    a.set_defaults(fn=_analyze)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
