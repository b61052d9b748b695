"""The ``vijax`` command.

``vijax demo`` (:mod:`vijax.demo`) fits two built-in models (the textbook bivariate Gaussian
and the normal-gamma model) by CAVI, by gradient and by blocked Gibbs sampling, compares
CAVI, Laplace and Gibbs with a skewed exact posterior, draws EM's lower bounds, checks every
result against its closed form, and prints the tables; ``--plots DIR`` says where the
figures go. ``vijax analyze NAME`` prints the compiler's report for a zoo model.
"""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from vijax import demo
    return demo.run(args)


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


def build_parser() -> argparse.ArgumentParser:
    """The ``vijax`` argument parser (``demo`` and ``analyze`` sub-commands)."""
    parser = argparse.ArgumentParser(prog="vijax", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="fit built-in models by CAVI, gradient and Gibbs; compare")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--rho", type=float, default=0.9, help="bivariate correlation")
    d.add_argument("--plots", "--out", dest="plots", default="vijax-demo-out", metavar="DIR",
                   help="folder for the figures (default: vijax-demo-out; '' for none; "
                        "skipped without matplotlib)")
    d.set_defaults(fn=_demo)
    a = sub.add_parser("analyze", help="print the compiler's report for a zoo model")
    a.add_argument("name")
    a.set_defaults(fn=_analyze)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
