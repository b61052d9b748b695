"""The conjugacy compiler's walk: its rule table and the walker state its rules read.

:data:`TABLE` is assembled from the rules modules (each registers into its own dict):
:mod:`~vijax.conjugacy.rules` (structural and multilinear),
:mod:`~vijax.conjugacy.rules_nonlinear` (powers, logs, predicates, non-multilinear),
:mod:`~vijax.conjugacy.rules_control` (cond, scan, while), and
:mod:`~vijax.conjugacy.rules_poison` (routes every equation with a non-conjugate input),
:mod:`~vijax.conjugacy.rules_linalg` (log-determinants of positive-definite latents,
routed before it).
:class:`SymbolicWalker` is the generic :class:`~vijax.conjugacy.walker.Walker` plus what
these rules read from it: the latents' supports, the label space, the canonical point.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vijax.conjugacy import rules, rules_control, rules_linalg, rules_nonlinear, rules_poison
from vijax.conjugacy import rules_covariance
from vijax.conjugacy import terms as T
from vijax.conjugacy.values import Poison, Reason, is_symbolic, latents_of
from vijax.conjugacy.walker import Lazy, RuleTable, Walker


def merge(*tables):
    """One rule dict from several; a primitive registered twice is an error."""
    out = {}
    for t in tables:
        twice = set(out) & set(t)
        if twice:
            raise ValueError(f"primitives with two rules: {sorted(twice)}")
        out.update(t)
    return out


def _route(eqn, invals):
    """Solves with a covariance latent's Cholesky factor
    (:mod:`~vijax.conjugacy.rules_covariance`) and factorizations of positive-definite
    latents (:mod:`~vijax.conjugacy.rules_linalg`) first, then equations with a
    non-conjugate input."""
    return (rules_covariance.route(eqn, invals) or rules_linalg.route(eqn, invals)
            or rules_poison.route(eqn, invals))


TABLE = RuleTable(
    rules=merge(rules.RULES, rules_nonlinear.RULES, rules_control.RULES),
    is_symbolic=is_symbolic, latents=latents_of, route=_route,
    provenance=rules.PROVENANCE)


class SymbolicWalker(Walker):
    """Walks a jaxpr symbolically for one model (one set of latent supports)."""

    def __init__(self, table: RuleTable, supports, space: T.Space, dtype):
        super().__init__(table)
        self.supports = supports
        self.space = space
        self.dtype = dtype
        self.point_stats = {name: s.base_stats(s.canonical_point(
            None if s.is_discrete else dtype)) for name, s in supports.items()}

    def point(self, v):
        """Value at the canonical point of every latent (concrete array)."""
        if isinstance(v, T.Sym):
            return T.eval_sym(v, self.point_stats, self.space.sizes).astype(v.dtype)
        if isinstance(v, Poison):
            val = v.point
            if v.good is not None:
                val = val + self.point(v.good)
            return val.astype(v.dtype)
        return self.concrete(v)

    def to_sym(self, v, shape=None):
        """Any non-poison value as a Sym of ``shape`` (constants become one term)."""
        if isinstance(v, T.Sym):
            return v
        if isinstance(v, Lazy):
            out = self.space.fresh_many(v.shape)
            base = T.host(v.base) if T.is_concrete(v.base) else v.base
            base = np.asarray(base) if isinstance(base, (int, float, bool)) else base
            labels, keep = [], []
            for i, d in enumerate(v.dims):
                if base.shape[i] == v.shape[d]:
                    keep.append(i)
                    labels.append(out[d])
            squeeze = tuple(i for i in range(base.ndim) if i not in keep)
            base = T.xp(base).squeeze(base, squeeze) if squeeze else base
            return T.Sym(tuple(v.shape), base.dtype, (T.Term(((base, tuple(labels)),), (), out),))
        v = T.host(v) if T.is_concrete(v) else jnp.asarray(v)
        v = np.asarray(v) if isinstance(v, (int, float, bool)) else v
        shape = tuple(np.shape(v)) if shape is None else tuple(shape)
        return T.Sym(shape, v.dtype, (T.const_term(self.space, v, shape),))

    def poison(self, prim, invals, outval_point, detail):
        """A Poison with value ``outval_point`` at the point, and the inputs' reasons plus
        this one (naming ``prim``, the latents, the source line and enclosing calls)."""
        lats = set()
        reasons = []
        for v in invals:
            if isinstance(v, T.Sym):
                lats |= v.latents()
            if isinstance(v, Poison):
                reasons.extend(v.reasons)
                if v.good is not None:
                    lats |= v.good.latents()
        if lats:
            ctx = self.context()
            if ctx:
                detail = f"{detail} (inside {' > '.join(ctx)})"
            reasons.append(Reason(frozenset(lats), prim, self.source(), detail))
        pt = jnp.asarray(outval_point)
        return Poison(tuple(pt.shape), pt.dtype, None, pt, tuple(reasons))
