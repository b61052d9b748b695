"""Compiler rules for a positive-definite latent used as a covariance: ``S^{-1}`` through
its Cholesky factor.

A covariance-parameterized Gaussian reads ``S`` through ``C = cholesky(S)`` (a
:class:`~vijax.conjugacy.rules_linalg.Factor`) and triangular solves:

- ``jax.scipy.stats.multivariate_normal.logpdf(x, m, S)``: ``y = (x - m) C^{-T}``, then
  ``-1/2 sum_h y_h^2`` and ``-sum_i log C_ii``;
- ``jax.scipy.linalg.cho_solve((cholesky(S), True), b) = C^{-T} C^{-1} b = S^{-1} b``.

With ``G = C^{-T}`` (so ``G G^T = S^{-1}``), every such solve is linear in ``G``: it becomes
a Sym whose atom is the walk-internal statistic ``half`` (``G``, labels ``(a, h)``), and
a product of two of them summed over ``h`` is ``sum_h G_ah G_ch = (S^{-1})_ac``: the
``inv`` statistic of the Inverse-Wishart family (``T(S) = (S^{-1}, log|S|)``). Pairs are
merged after every rule that sees a ``half`` atom (:func:`route`); a ``half`` atom left
unpaired at the end is not a statistic of any family, so the latent is refused (the
report says it "appears as half(S)": a factor inverse used other than in ``S^{-1}``). The
log-determinant comes from :mod:`~vijax.conjugacy.rules_linalg` (``log C_ii``).

Covered: one ``D x D`` matrix (a latent of shape ``()`` or one element of a batch chosen
by constants) factored by ``cholesky`` (``c S`` with ``c > 0`` too), solves with a 2-D
right-hand side in the four lower-triangular orientations. Not covered (refused, as
before): ``jnp.linalg.solve``/``inv`` (an LU factorization whose pivots depend on the
value of ``S``), batched factors, ``D = 1``.
"""

from __future__ import annotations

import math

import numpy as np

from vijax.conjugacy import rules_linalg
from vijax.conjugacy import terms as T
from vijax.conjugacy.discrete import nonlinear
from vijax.conjugacy.rules import dot_syms
from vijax.conjugacy.values import Poison

HALF = "half"   # walk-internal: G = C^{-T}, G G^T = S^{-1}
INV = "inv"     # the Inverse-Wishart statistic S^{-1}


def _has_half(v) -> bool:
    return isinstance(v, T.Sym) and any(a.stat == HALF for t in v.terms for a in t.atoms)


def route(eqn, invals):
    """The rule for an equation this module handles, or None (the next router decides)."""
    if eqn.primitive.name == "triangular_solve" and len(invals) == 2 \
            and rules_linalg.is_factor(invals[0]) and invals[0].method == "cholesky" \
            and invals[0].stage == "entries" and not isinstance(invals[1], Poison):
        return _solve
    if any(isinstance(v, Poison) for v in invals):
        return None
    if any(_has_half(v) for v in invals):
        return _then_pair
    return None


# ----------------------------------------------------------------- the point values

def _point_stats(w, latent):
    """``half`` and ``inv`` at the canonical point (added to the walker's table once)."""
    ps = w.point_stats[latent]
    if HALF not in ps:
        x = np.asarray(ps["x"], np.float64)
        chol = np.linalg.cholesky(x)
        ps[HALF] = np.swapaxes(np.linalg.inv(chol), -1, -2).astype(ps["x"].dtype)
        ps[INV] = np.linalg.inv(x).astype(ps["x"].dtype)


def _half_sym(w, f, dtype) -> T.Sym | None:
    """``G = C^{-T}`` of the factored element as a Sym of shape ``(D, D)`` (the factor of
    ``c S`` gives ``G / sqrt(c)``); None when the factor is not one whole matrix."""
    d = f.dim
    if tuple(f.shape) != (d, d) or len(f.bmap) != 1 or d < 2 \
            or not np.array_equal(f.idx, np.arange(d * d).reshape(d, d)):
        return None
    _point_stats(w, f.latent)
    labels = w.space.fresh_many((d, d))
    b = int(f.bmap[0])
    shape = w.supports[f.latent].shape
    idx = None if not shape else b * d * d + np.arange(d * d).reshape(d, d)
    atom = T.Atom(f.latent, HALF, labels, idx)
    consts = ((np.asarray(math.exp(-0.5 * f.log_scale)), ()),) if f.log_scale else ()
    return T.Sym((d, d), dtype, (T.Term(consts, (atom,), labels, w.source()),))


def _solve(w, eqn, invals):
    """``triangular_solve`` with a Cholesky factor of the latent: linear in ``G``."""
    f, b = invals
    p = eqn.params
    dtype = eqn.outvars[0].aval.dtype
    why = ("a triangular solve with the Cholesky factor of '{}' other than S^{{-1}} b or "
           "b C^{{-T}} of a 2-D right-hand side (only S^{{-1}} and log|S| are conjugate "
           "statistics of a covariance)").format(f.latent)
    g = _half_sym(w, f, dtype)
    if g is None or not p["lower"] or p["unit_diagonal"] or p["conjugate_a"] \
            or len(b.shape) != 2:
        return nonlinear(w, eqn, invals, why)
    b = b if isinstance(b, T.Sym) else w.to_sym(w.concrete(b))
    shape = tuple(eqn.outvars[0].aval.shape)
    none = ((), ())
    if p["left_side"]:
        # C^{-1} b = G^T b (contract G's first axis); C^{-T} b = G b (its second)
        axis = 1 if p["transpose_a"] else 0
        out = dot_syms(w, g, b, (((axis,), (0,)), none), shape, src=w.source())
    else:
        # b C^{-T} = b G (G's first axis); b C^{-1} = b G^T (its second)
        axis = 0 if p["transpose_a"] else 1
        out = dot_syms(w, b, g, (((1,), (axis,)), none), shape, src=w.source())
    return pair_halves(w, out)


def _then_pair(w, eqn, invals):
    """The table's rule, then pairs of ``half`` atoms merged into ``inv``."""
    rule = w.table.rules.get(eqn.primitive.name)
    if rule is None:
        return nonlinear(w, eqn, invals, f"{eqn.primitive.name} of a value that holds the "
                         "Cholesky factor's inverse of a covariance latent")
    out = rule(w, eqn, invals)
    if isinstance(out, (list, tuple)):
        return type(out)(pair_halves(w, o) for o in out)
    return pair_halves(w, out)


# ----------------------------------------------------------------- pairing

def _element(a: T.Atom, d: int):
    """The latent's flat batch element an atom reads (None: a latent of shape ())."""
    if a.idx is None:
        return None
    el = np.unique(np.asarray(a.idx) // (d * d))
    return int(el[0]) if el.size == 1 else -1


def _ones(c) -> bool:
    return T.is_concrete(c) and bool(np.all(np.asarray(c) == 1))


def _merge_pair(w, t: T.Term):
    """One pair ``G_ah G_ch`` summed over ``h`` replaced by ``inv_ac``; None if none.
    ``h`` may appear elsewhere only in all-ones constants (broadcasts)."""
    used = {}
    for c, ls in t.consts:
        for l in ls:
            if not _ones(c):
                used[l] = used.get(l, 0) + 1
    for a in t.atoms:
        for l in a.labels:
            used[l] = used.get(l, 0) + 1
    halves = [i for i, a in enumerate(t.atoms) if a.stat == HALF and a.power == 1.0]
    for x in range(len(halves)):
        for y in range(x + 1, len(halves)):
            a, b = t.atoms[halves[x]], t.atoms[halves[y]]
            if a.latent != b.latent:
                continue
            d = w.supports[a.latent].dim
            h = a.labels[1]
            if b.labels[1] != h or h in t.out or used[h] != 2 or a.labels[0] == b.labels[0]:
                continue
            ea, eb = _element(a, d), _element(b, d)
            if ea != eb or ea == -1:
                continue
            labels = (a.labels[0], b.labels[0])
            idx = None if ea is None else ea * d * d + np.arange(d * d).reshape(d, d)
            inv = T.Atom(a.latent, INV, labels, idx)
            atoms = tuple(v for i, v in enumerate(t.atoms) if i not in (halves[x], halves[y]))
            # an all-ones constant over h keeps the extent of its other labels
            consts = tuple((c, ls) if h not in ls else
                           (np.ones([w.space.sizes[l] for l in ls if l != h]),
                            tuple(l for l in ls if l != h)) for c, ls in t.consts)
            return t.with_(atoms=atoms + (inv,), consts=consts)
    return None


def pair_halves(w, v):
    """Merge every summed pair of ``half`` atoms of one matrix in each term of ``v``."""
    if not _has_half(v):
        return v
    terms = []
    for t in v.terms:
        merged = _merge_pair(w, t)
        while merged is not None:
            t = merged
            merged = _merge_pair(w, t)
        terms.append(t)
    return T.Sym(v.shape, v.dtype, tuple(terms))


__all__ = ["route", "pair_halves", "HALF", "INV"]
