"""Compiler rules for factorizations of a positive-definite latent: log-determinants.

A positive-definite latent ``L`` (``vj.positive_definite(D)``) enters the log joint
linearly (quadratic forms ``d @ L @ d``, ``einsum``, ``trace(A @ L)``: the structural
and multilinear rules already read those as its ``x`` statistic) and through its
log-determinant, which users write as

- ``jnp.linalg.slogdet(L)[1]`` (an ``lu`` factorization: ``sum_i log|U_ii| = log|det L|``),
- ``2 * jnp.sum(jnp.log(jnp.diag(jnp.linalg.cholesky(L))))`` (``C C^T = L``).

The factorization of ``c L`` (``c > 0`` a constant; ``L`` possibly symmetrized,
transposed, batched or indexed by constants) becomes a :class:`Factor`: a non-conjugate
value (a :class:`~vijax.conjugacy.values.Poison` carrying its value at the canonical
point and the reason) that remembers which factor entry each position holds. Structural
operations move the entries (``diag``, slices, gathers, reshapes), ``abs``/``log``
and constant multiples are tracked, and a ``reduce_sum`` that adds ``w log|F_ii|`` over
every diagonal entry of a factor with one weight ``w`` becomes the Sym
``w k (log|L| + D log c)`` (``k = 1/2`` for Cholesky, 1 for LU): the ``logdet``
statistic. Any other use keeps the Poison, whose reason names the latent and the
factorization's source line (so CAVI refuses it with a
:class:`~vijax.errors.NonConjugateError`). In slogdet's sign computation, ``U_ii == 0``
is false for a positive-definite matrix; the sign itself is not tracked.

:func:`route` sends equations here before the rule table (``vijax.conjugacy.table``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np

from vijax import _compat
from vijax.conjugacy import rules_control
from vijax.conjugacy import terms as T
from vijax.conjugacy.discrete import nonlinear
from vijax.conjugacy.values import Poison, Reason, is_sym
from vijax.conjugacy.walker import Lazy

#: operations that only move entries (applied to the entry index map)
STRUCTURAL = ("gather", "slice", "reshape", "transpose", "squeeze", "broadcast_in_dim",
              "rev", "copy", "copy_p", "convert_element_type", "expand_dims",
              "dynamic_slice")
FACTORIZATIONS = ("cholesky", "lu")
_KIND = {"cholesky": ("Cholesky", 0.5), "lu": ("LU", 1.0)}


@dataclasses.dataclass(frozen=True)
class Factor(Poison):
    """Entries of the factorization of ``c L`` (non-conjugate unless summed as a
    log-determinant).

    ``idx`` (numpy ints, the value's shape): flat position in the factor array of shape
    ``(n, D, D)``; ``bmap`` (n,): the latent's flat batch element of each factor;
    ``stage``: "entries", "abs" or "log"; ``coef``: multipliers of the log stage.
    """

    latent: str = ""
    method: str = "cholesky"
    idx: Any = None
    bmap: Any = None
    dim: int = 0
    log_scale: float = 0.0
    stage: str = "entries"
    coef: Any = None

    def moved(self, point, idx, coef=None, stage=None):
        return dataclasses.replace(
            self, shape=tuple(np.shape(idx)), point=point, idx=idx,
            coef=coef, stage=stage or self.stage)

    def diagonal_only(self) -> bool:
        _, i, j = np.unravel_index(self.idx, (len(self.bmap), self.dim, self.dim))
        return bool(np.all(i == j))


def is_factor(v) -> bool:
    return isinstance(v, Factor)


def route(eqn, invals):
    """The rule for an equation this module handles, or None (the table decides)."""
    name = eqn.primitive.name
    if name in FACTORIZATIONS and len(invals) == 1 and is_sym(invals[0]):
        return factorize
    if name in ("abs", "log") and len(invals) == 1 and is_sym(invals[0]):
        return _determinant if name == "abs" else _log_determinant
    if not any(is_factor(v) for v in invals):
        return None
    if any(isinstance(v, Poison) and not is_factor(v) for v in invals):
        return None
    if name == "cond" and not any(is_factor(v) for v in invals[:1]):
        return rules_control.RULES["cond"]
    facs = [v for v in invals if is_factor(v)]
    if len(facs) != 1:
        return None
    f = facs[0]
    if name in STRUCTURAL and is_factor(invals[0]):
        return _structural
    if name == "select_n" and f.stage == "entries":
        return _tril_mask
    if name == "abs" and f.stage == "entries":
        return _abs
    if name == "log" and f.method == "det" and f.stage == "abs":
        return _log_of_det
    if name == "log" and (f.stage == "abs" or f.method == "cholesky" and f.stage == "entries"):
        return _log
    if name in ("mul", "div", "neg") and f.stage == "log":
        return _scale
    if name == "reduce_sum" and f.stage == "log":
        return _reduce_sum
    if name in ("eq", "ne") and f.stage in ("entries", "abs"):
        return _nonzero_test
    return None


# ----------------------------------------------------------------- factorization

def _scaled_latent(w, s: T.Sym):
    """``(latent, bmap, c)`` when ``s`` (shape ``S + (D, D)``) is ``c L[b(s)]`` for a
    positive-definite latent ``L`` (each term one first-power atom, possibly transposed:
    ``L`` is symmetric) and a constant ``c > 0``; else None."""
    if len(s.shape) < 2 or s.shape[-1] != s.shape[-2]:
        return None
    shape = tuple(s.shape)
    n = int(math.prod(shape[:-2]))
    d = shape[-1]
    latent, bmap, total = None, None, 0.0
    for t in s.terms:
        if len(t.atoms) != 1 or any(ls for _, ls in t.consts):
            return None
        a = t.atoms[0]
        sup = w.supports[a.latent]
        if sup.kind != "positive_definite" or a.stat != "x" or a.power != 1.0 \
                or sup.dim != d:
            return None
        if latent is not None and a.latent != latent:
            return None
        coef = 1.0
        for c, _ in t.consts:
            if not T.is_concrete(c):
                return None
            coef *= float(np.asarray(c))
        idx = _positions(w, a, t, shape)
        if idx is None:
            return None
        b, i, j = np.unravel_index(idx, (sup.size, d, d))
        p = np.arange(d).reshape(d, 1)
        q = np.arange(d).reshape(1, d)
        if not np.all(((i == p) & (j == q)) | ((i == q) & (j == p))):
            return None
        bb = b.reshape(n, d, d)
        if not np.all(bb == bb[:, :1, :1]):
            return None
        bb = bb[:, 0, 0]
        if bmap is not None and not np.array_equal(bb, bmap):
            return None
        latent, bmap, total = a.latent, bb, total + coef
    if latent is None or not total > 0:
        return None
    return latent, bmap, total


def factorize(w, eqn, invals):
    """``cholesky`` / ``lu`` of ``c L``: a :class:`Factor` (``lu`` also returns its
    pivots and permutation, as non-conjugate values)."""
    name = eqn.primitive.name
    (s,) = invals
    found = _scaled_latent(w, s)
    if found is None:
        return nonlinear(w, eqn, invals, f"{name} of a value that is not a positive-definite "
                         "latent times a positive constant (only log-determinants of such "
                         "a latent are conjugate)")
    latent, bmap, c = found
    points = _compat.bind_eqn(eqn, [w.point(s)])
    outs = list(points) if eqn.primitive.multiple_results else [points]
    what, _ = _KIND[name]
    src = w.source()
    reason = Reason(frozenset({latent}), name, src,
                    f"the {what} factor of '{latent}' is used other than through the sum "
                    f"of the logs of its diagonal (the log-determinant log|{latent}|, "
                    f"the only conjugate use of a factorization); write the model with "
                    f"{latent} itself (quadratic forms, traces) and jnp.linalg.slogdet")
    d = s.shape[-1]
    fac = Factor(tuple(s.shape), outs[0].dtype, None, outs[0], (reason,), latent=latent,
                 method=name, idx=np.arange(int(math.prod(s.shape))).reshape(s.shape),
                 bmap=bmap, dim=d, log_scale=math.log(c))
    if not eqn.primitive.multiple_results:
        return fac
    rest = [w.poison(name, [s], o, f"the pivots of an {what} factorization of '{latent}' "
                     "are not a function of its statistics") for o in outs[1:]]
    return [fac] + rest


# ----------------------------------------------------------------- small determinants

def _positions(w, a: T.Atom, t: T.Term, shape):
    """The flat latent element the atom ``a`` of ``t`` reads at every output position
    (an int array of ``shape``), or None when it also sums over a label (of size > 1) or
    its index is traced data."""
    sizes = w.space.sizes
    if a.idx is not None and not T.is_concrete(a.idx):
        return None
    if any(l not in t.out and sizes[l] != 1 for l in a.labels):
        return None
    sup = w.supports[a.latent]
    idx = np.asarray(T.explicit_idx(a, sup.value_shape))
    if idx.ndim:  # size-1 labels the output does not carry: read at 0
        idx = idx[tuple(slice(None) if l in t.out else 0 for l in a.labels)]
    labels = [l for l in a.labels if l in t.out]
    if len(set(labels)) != len(labels) or len(set(t.out)) != len(t.out):
        return None
    order = [labels.index(l) for l in t.out if l in labels]
    idx = np.transpose(idx, order) if idx.ndim else idx
    return np.broadcast_to(idx.reshape([sizes[l] if l in labels else 1 for l in t.out]), shape)


def _entries(w, t: T.Term, shape):
    """Per atom of ``t``: ``(latent, (b, i, j))`` of the element it reads at every output
    position (arrays of ``shape``), or None when ``t`` is not a product of first powers of
    positive-definite latent entries (no summed labels) times scalar constants."""
    out = []
    for a in t.atoms:
        sup = w.supports[a.latent]
        if sup.kind != "positive_definite" or a.stat != "x" or a.power != 1.0:
            return None
        idx = _positions(w, a, t, shape)
        if idx is None:
            return None
        out.append((a.latent, np.unravel_index(idx, (sup.size, sup.dim, sup.dim))))
    return out


def _det_of_latent(w, s: T.Sym):
    """``(latent, b, c)`` (arrays over the value's positions) when ``s = c det(L[b])``
    for a positive-definite latent of dimension ``D <= 3``, written out as the Leibniz
    polynomial (jnp.linalg.det and slogdet do so for D <= 2, det for D = 3; ``L`` is
    symmetric, so ``L_ij`` and ``L_ji`` are one variable); else None."""
    if not any(w.supports[a.latent].kind == "positive_definite"
               for t in s.terms for a in t.atoms):
        return None  # no matrix latent: nothing to look at (and no per-position work)
    shape = tuple(s.shape)
    n = int(math.prod(shape))
    latent, b_ref, polys = None, None, [dict() for _ in range(n)]
    for t in s.terms:
        if not t.atoms or any(ls for _, ls in t.consts) or not all(
                T.is_concrete(c) for c, _ in t.consts):
            return None
        found = _entries(w, t, shape)
        if found is None or len({lat for lat, _ in found}) != 1:
            return None
        lat = found[0][0]
        if latent is not None and lat != latent:
            return None
        d = w.supports[lat].dim
        if d > 3 or len(found) != d:
            return None
        latent = lat
        coef = float(np.prod([np.asarray(c, np.float64) for c, _ in t.consts]))
        bs = [e[0].reshape(-1) for _, e in found]
        if any(not np.array_equal(bs[0], x) for x in bs[1:]) or (
                b_ref is not None and not np.array_equal(b_ref, bs[0])):
            return None
        b_ref = bs[0]
        pairs = [(np.minimum(e[1], e[2]).reshape(-1), np.maximum(e[1], e[2]).reshape(-1))
                 for _, e in found]
        for p in range(n):
            key = tuple(sorted((int(lo[p]), int(hi[p])) for lo, hi in pairs))
            polys[p][key] = polys[p].get(key, 0.0) + coef
    if latent is None:
        return None
    d = w.supports[latent].dim
    leibniz = {}
    for perm in itertools.permutations(range(d)):
        sign = round(np.linalg.det(np.eye(d)[list(perm)]))
        key = tuple(sorted((min(i, j), max(i, j)) for i, j in enumerate(perm)))
        leibniz[key] = leibniz.get(key, 0) + sign
    ref = max(leibniz, key=lambda k: abs(leibniz[k]))
    scale = np.zeros(n)
    for p, poly in enumerate(polys):
        c = poly.get(ref, 0.0) / leibniz[ref]
        keys = set(poly) | set(leibniz)
        if c == 0 or not all(math.isclose(poly.get(k, 0.0), c * leibniz.get(k, 0), rel_tol=1e-12,
                                          abs_tol=1e-300) for k in keys):
            return None
        scale[p] = c
    return latent, b_ref, scale


def _det_factor(w, eqn, invals, found):
    latent, bmap, scale = found
    s = invals[0]
    src = w.source()
    reason = Reason(frozenset({latent}), eqn.primitive.name, src,
                    f"|det {latent}| is used other than through its log (the "
                    f"log-determinant log|{latent}| is the conjugate statistic)")
    return Factor(tuple(s.shape), s.dtype, None, _point_of(w, eqn, invals), (reason,),
                  latent=latent, method="det", idx=np.arange(len(bmap)).reshape(s.shape),
                  bmap=bmap, dim=w.supports[latent].dim, log_scale=np.log(np.abs(scale)),
                  stage="abs")


def _determinant(w, eqn, invals):
    """``|c det(L)|`` (the Leibniz polynomial of a small positive-definite latent):
    remembered for its log; any other ``abs`` is the table's rule."""
    found = _det_of_latent(w, invals[0])
    if found is None:
        return w.table.rules["abs"](w, eqn, invals)
    return _det_factor(w, eqn, invals, found)


def _log_determinant(w, eqn, invals):
    """``log(c det L)`` with ``c > 0``: the logdet statistic plus ``log c``."""
    found = _det_of_latent(w, invals[0])
    if found is None or not np.all(found[2] > 0):
        return w.table.rules["log"](w, eqn, invals)
    return _log_of_det(w, eqn, [_det_factor(w, eqn, invals, found)])


def _log_of_det(w, eqn, invals):
    f = invals[0]
    shape = tuple(f.shape)
    out = w.space.fresh_many(shape)
    b = np.asarray(f.bmap)[f.idx]
    atom = T.Atom(f.latent, "logdet", out, np.asarray(b).reshape(shape))
    terms = (T.Term(((np.ones(shape), out),), (atom,), out, f.reasons[0].source),)
    const = np.asarray(f.log_scale)[f.idx]
    if np.any(const != 0):
        terms += (_const(w, const, out, shape),)
    return T.Sym(shape, eqn.outvars[0].aval.dtype, terms)


# ----------------------------------------------------------------- moving entries

def _point_of(w, eqn, invals):
    return _compat.bind_eqn(eqn, [w.point(v) for v in invals])


def _structural(w, eqn, invals):
    f = invals[0]
    if eqn.primitive.name == "convert_element_type" and not np.issubdtype(
            np.dtype(eqn.params["new_dtype"]), np.floating):
        return _poison(w, eqn, invals)
    rest = [w.concrete(v) for v in invals[1:]]
    if not all(T.is_concrete(v) for v in rest):
        return _poison(w, eqn, invals)
    idx = np.asarray(_compat.bind_eqn(eqn, [f.idx.astype(np.int32)] + rest)) \
        if eqn.primitive.name != "convert_element_type" else f.idx
    coef = None
    if f.coef is not None:
        coef = np.asarray(_compat.bind_eqn(eqn, [np.asarray(f.coef, np.float64)] + rest)) \
            if eqn.primitive.name != "convert_element_type" else f.coef
    return f.moved(_point_of(w, eqn, invals), np.asarray(idx, np.int64), coef)


def _tril_mask(w, eqn, invals):
    """``where(i >= j, C, 0)`` (jnp.linalg.cholesky's mask): the identity on a lower
    triangular Cholesky factor."""
    pred, *cases = invals
    if eqn.primitive.name != "select_n" or len(cases) != 2 or not is_factor(cases[1]):
        return _poison(w, eqn, invals)
    f, zero = cases[1], w.concrete(cases[0]) if not isinstance(cases[0], Lazy) else \
        cases[0].base
    pred = w.concrete(pred)
    if f.method != "cholesky" or not T.is_concrete(pred) or not T.is_concrete(zero) \
            or np.any(np.asarray(zero)):
        return _poison(w, eqn, invals)
    _, i, j = np.unravel_index(f.idx, (len(f.bmap), f.dim, f.dim))
    keep = np.broadcast_to(np.asarray(pred).astype(bool), f.idx.shape)
    if not np.all(keep[i >= j]):
        return _poison(w, eqn, invals)
    return f.moved(_point_of(w, eqn, invals), f.idx)


def _abs(w, eqn, invals):
    f = invals[0]
    return f.moved(_point_of(w, eqn, invals), f.idx, stage="abs")


def _log(w, eqn, invals):
    f = invals[0]
    return f.moved(_point_of(w, eqn, invals), f.idx, coef=np.ones(f.idx.shape),
                   stage="log")


def _scale(w, eqn, invals):
    """A log stage times (or over) a host constant."""
    name = eqn.primitive.name
    f = next(v for v in invals if is_factor(v))
    shape = tuple(eqn.outvars[0].aval.shape)
    if name == "neg":
        factor = -1.0
    else:
        other = w.concrete(invals[1] if invals[0] is f else invals[0])
        if not T.is_concrete(other) or (name == "div" and invals[0] is not f):
            return _poison(w, eqn, invals)
        other = np.asarray(other, np.float64)
        factor = 1.0 / other if name == "div" else other
    idx = np.broadcast_to(f.idx, shape)
    coef = np.broadcast_to(f.coef, shape) * np.broadcast_to(factor, shape)
    return f.moved(_point_of(w, eqn, invals), np.asarray(idx), np.asarray(coef))


def _nonzero_test(w, eqn, invals):
    """``F_ii == 0`` (False) or ``F_ii != 0`` (True): the diagonal of a factor of a
    positive-definite matrix has no zero."""
    f = next(v for v in invals if is_factor(v))
    other = next(v for v in invals if v is not f)
    other = w.concrete(other)
    if not T.is_concrete(other) or np.any(np.asarray(other)) or not f.diagonal_only():
        return _poison(w, eqn, invals)
    shape = tuple(eqn.outvars[0].aval.shape)
    return np.full(shape, eqn.primitive.name == "ne")


def _reduce_sum(w, eqn, invals):
    """``sum w_i log|F_ii|`` over whole diagonals with one weight per factor: the
    log-determinant statistic (else the Poison is kept)."""
    f = invals[0]
    axes = tuple(eqn.params["axes"])
    out_shape = tuple(eqn.outvars[0].aval.shape)
    if not f.diagonal_only():
        return _poison(w, eqn, invals)
    n, d = len(f.bmap), f.dim
    s_of, i_of, _ = np.unravel_index(f.idx, (n, d, d))
    kept = [ax for ax in range(f.idx.ndim) if ax not in axes]
    grid = np.indices(f.idx.shape)
    o_of = np.ravel_multi_index([grid[ax] for ax in kept], out_shape) if kept \
        else np.zeros(f.idx.shape, np.int64)
    n_out = int(math.prod(out_shape))
    acc = np.zeros((n_out, n, d))
    np.add.at(acc, (o_of.ravel(), s_of.ravel(), i_of.ravel()),
              np.broadcast_to(f.coef, f.idx.shape).ravel())
    weight = acc[..., 0]  # (n_out, n)
    if not np.allclose(acc, weight[..., None], rtol=1e-12, atol=0.0):
        return _poison(w, eqn, invals)
    sup = w.supports[f.latent]
    _, k = _KIND[f.method]
    per_b = np.zeros((n_out, sup.size))
    np.add.at(per_b, (slice(None), f.bmap), weight)
    per_b *= k
    const = (d * f.log_scale * per_b.sum(-1)).reshape(out_shape)
    out = w.space.fresh_many(out_shape)
    nz = np.count_nonzero(per_b, axis=-1)
    if np.all(nz <= 1):  # one latent element per output position: an index, no sum
        which = np.argmax(per_b != 0, axis=-1)
        coef = per_b[np.arange(n_out), which]
        atom = T.Atom(f.latent, "logdet", out, which.reshape(out_shape))
        term = T.Term(((coef.reshape(out_shape), out),), (atom,), out, f.reasons[0].source)
    else:
        lb = w.space.fresh(sup.size)
        atom = T.Atom(f.latent, "logdet", (lb,), np.arange(sup.size))
        term = T.Term(((per_b.reshape(out_shape + (sup.size,)), out + (lb,)),), (atom,),
                      out, f.reasons[0].source)
    terms = (term,)
    if f.log_scale != 0.0:
        terms += (_const(w, const, out, out_shape),)
    return T.Sym(out_shape, eqn.outvars[0].aval.dtype, terms)


def _const(w, const, out, out_shape):
    t = T.const_term(w.space, const, out_shape)
    return t.relabel(dict(zip(t.out, out)))


def _poison(w, eqn, invals):
    """The equation's output as a Poison keeping the factor's reason."""
    point = _point_of(w, eqn, invals)
    if eqn.primitive.multiple_results:
        return [w.poison(eqn.primitive.name, invals, p, "non-multilinear") for p in point]
    return w.poison(eqn.primitive.name, invals, point, "non-multilinear")
