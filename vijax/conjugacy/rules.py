"""Structural, linear and multilinear rules: how these primitives act on Sym values.

One third of the conjugacy rule table (:mod:`vijax.conjugacy.table` assembles it with
``rules_nonlinear``, ``rules_control`` and ``rules_poison``); the operations on
symbolic values the rules share are in :mod:`vijax.conjugacy.algebra`.

- structural ops act on every term's labels (broadcast, reshape, transpose, squeeze,
  reduce_sum, convert, slice, rev, gather with constant indices, concatenate, stack);
- multilinear ops expand products (mul, dot_general, triangular_solve with a constant
  matrix, neg/add/sub);
- select_n takes the case a support guard picks (tabulated over a discrete predicate);
- an index that depends on a latent is non-multilinear (tabulated or poisoned).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vijax.conjugacy import host_eval, intervals
from vijax.conjugacy import terms as T
from vijax.conjugacy.algebra import (
    _dtype, _fresh_inner, _identity_index, _operand, _shape, broadcast_sym, collapse,
    concat_syms, drop_out, mul_sym, reindex_sym, scale_sym, split_constant)
from vijax.conjugacy.discrete import discrete_latents, nonlinear, tabulate
from vijax.conjugacy.rules_nonlinear import predicate
from vijax.conjugacy.values import is_sym, is_symbolic
from vijax.conjugacy.walker import Lazy, registrar

RULES: dict = {}
register = registrar(RULES)


# ----------------------------------------------------------------- linear rules

@register("add", "add_any", "sub")
def add(w, eqn, invals):
    """Sum (difference for ``sub``) of two operands; an operand that is None or a
    constant zero adds no terms (at least one must be a Sym)."""
    shape = _shape(eqn)
    terms = ()
    for i, v in enumerate(invals):
        if v is None or _is_zero(v):
            continue
        s = _operand(w, v, shape)
        if i == 1 and eqn.primitive.name == "sub":
            s = scale_sym(s, -1.0)
        terms += s.terms
    return T.Sym(shape, _dtype(eqn), terms)


def _is_zero(v):
    if is_symbolic(v):
        return False
    v = v.base if isinstance(v, Lazy) else v
    if not T.is_concrete(v):
        return False
    return not np.any(np.asarray(v))


@register("neg")
def _neg(w, eqn, invals):
    return scale_sym(invals[0], -1.0)


@register("mul")
def _mul(w, eqn, invals):
    shape = _shape(eqn)
    a, b = (_operand(w, v, shape) for v in invals)
    return mul_sym(w, a, b, src=w.source())


@register("reduce_sum")
def _reduce_sum(w, eqn, invals):
    (s,) = invals
    axes = tuple(eqn.params["axes"])
    terms = tuple(drop_out(w, t, [t.out[i] for i in axes]) for t in s.terms)
    return T.Sym(_shape(eqn), s.dtype, terms)


@register("broadcast_in_dim")
def _broadcast(w, eqn, invals):
    return broadcast_sym(w, invals[0], tuple(eqn.params["shape"]),
                         tuple(eqn.params["broadcast_dimensions"]))


@register("transpose")
def _transpose(w, eqn, invals):
    (s,) = invals
    perm = eqn.params["permutation"]
    terms = tuple(t.with_(out=tuple(t.out[p] for p in perm)) for t in s.terms)
    return T.Sym(_shape(eqn), s.dtype, terms)


@register("squeeze")
def _squeeze(w, eqn, invals):
    (s,) = invals
    dims = [d % len(s.shape) for d in eqn.params["dimensions"]]
    terms = tuple(drop_out(w, t, [t.out[d] for d in dims]) for t in s.terms)
    return T.Sym(_shape(eqn), s.dtype, terms)


@register("convert_element_type")
def _convert(w, eqn, invals):
    (s,) = invals
    if rounds(eqn, s):
        return predicate(w, eqn, invals)
    return T.Sym(s.shape, eqn.params["new_dtype"], s.terms)


def rounds(eqn, v):
    """A conversion to bool, or from a float to an integer (not linear in its operand)."""
    new = eqn.params["new_dtype"]
    return bool(jnp.issubdtype(new, jnp.bool_) or (
        jnp.issubdtype(new, jnp.integer) and not jnp.issubdtype(v.dtype, jnp.integer)))


@register("copy", "copy_p", "optimization_barrier")
def _identity(w, eqn, invals):
    return invals if eqn.primitive.multiple_results else invals[0]


@register("reshape")
def _reshape(w, eqn, invals):
    (s,) = invals
    new = _shape(eqn)
    old_nz = [d for d in s.shape if d != 1]
    new_nz = [d for d in new if d != 1]
    if old_nz == new_nz:  # only size-1 axes added or removed: relabel
        terms = []
        for t in s.terms:
            keep = [l for l, d in zip(t.out, s.shape) if d != 1]
            it = iter(keep)
            out = tuple(next(it) if d != 1 else w.space.fresh(1) for d in new)
            terms.append(t.with_(out=out))
        return T.Sym(new, s.dtype, tuple(terms))
    flat = np.arange(int(math.prod(new))).reshape(new)
    idx = np.unravel_index(flat, s.shape) if s.shape else ()
    return reindex_sym(w, s, new, list(idx))


@register("slice")
def _slice(w, eqn, invals):
    (s,) = invals
    new = _shape(eqn)
    starts = eqn.params["start_indices"]
    strides = eqn.params["strides"] or (1,) * len(new)
    ia = []
    for i, n in enumerate(new):
        sh = [1] * len(new)
        sh[i] = n
        ia.append((starts[i] + strides[i] * np.arange(n)).reshape(sh))
    return reindex_sym(w, s, new, ia)


@register("rev")
def _rev(w, eqn, invals):
    (s,) = invals
    shape = s.shape
    ia = []
    for i, n in enumerate(shape):
        sh = [1] * len(shape)
        sh[i] = n
        r = np.arange(n)
        ia.append((n - 1 - r if i in eqn.params["dimensions"] else r).reshape(sh))
    return reindex_sym(w, s, shape, ia)


@register("dynamic_slice")
def _dynamic_slice(w, eqn, invals):
    s, *starts = invals
    if any(is_symbolic(v) for v in starts):
        return nonlinear(w, eqn, invals, "index depends on a latent")
    if not is_sym(s):
        s = w.to_sym(w.concrete(s))
    new = _shape(eqn)
    ia = []
    for i, n in enumerate(new):
        start = w.concrete(starts[i])
        h = host_eval.host_array(start)
        lib = np if h is not None else jnp  # host starts: no XLA compile
        st = lib.clip(h if h is not None else jnp.asarray(start), 0, s.shape[i] - n)
        sh = [1] * len(new)
        sh[i] = n
        ia.append((st + lib.arange(n)).reshape(sh))
    return reindex_sym(w, s, new, ia)


@register("stack")
def _stack_rule(w, eqn, invals):
    axis = eqn.params["axis"]
    shape = _shape(eqn)
    parts = []
    for v in invals:
        one = tuple(shape[:axis]) + (1,) + tuple(shape[axis + 1:])
        s = _operand(w, v, tuple(shape[:axis]) + tuple(shape[axis + 1:]))
        dims = tuple(i for i in range(len(shape)) if i != axis)
        parts.append(broadcast_sym(w, s, one, dims))
    return concat_syms(w, parts, axis, shape, _dtype(eqn))


@register("concatenate")
def _concatenate(w, eqn, invals):
    return concat_syms(w, invals, eqn.params["dimension"], _shape(eqn), _dtype(eqn))


@register("gather")
def _gather(w, eqn, invals):
    op, ind = invals
    if is_symbolic(ind):
        return nonlinear(w, eqn, invals, "index depends on a latent")
    ind = w.concrete(ind)
    shape = tuple(op.shape) if is_sym(op) else jnp.shape(w.concrete(op))
    iota = np.arange(int(math.prod(shape)), dtype=np.int32).reshape(shape)
    params = dict(eqn.params)
    params.pop("fill_value", None)
    params["mode"] = jax.lax.GatherScatterMode.CLIP
    batched = tuple(getattr(params.get("dimension_numbers"), "start_indices_batching_dims",
                            ()) or ())
    if isinstance(ind, np.ndarray) and ind.ndim > 1:
        # batch axes along which the indices are a broadcast view: gather once, broadcast
        # (not the gather's own batching axes, e.g. take_along_axis: they must keep the
        # operand's size)
        flat = [ax for ax in range(ind.ndim - 1) if ind.shape[ax] > 1 and ind.strides[ax] == 0
                and ax not in batched]
        if flat:
            ind = ind[tuple(slice(0, 1) if ax in flat else slice(None)
                            for ax in range(ind.ndim))]
            params["slice_sizes"] = tuple(params["slice_sizes"])
    host_ind = host_eval.host_array(ind)
    if host_ind is not None:  # numpy: no XLA compile per index shape
        pos = host_eval.gather(iota, host_ind, params["dimension_numbers"],
                               params["slice_sizes"])
    else:
        pos = jax.lax.gather(iota, ind, **params)
    if T.is_concrete(pos):
        pos = np.asarray(pos)
        idx = list(np.unravel_index(pos, shape)) if shape else []
    else:
        idx = list(jnp.unravel_index(pos, shape)) if shape else []
    return reindex_sym(w, op, _shape(eqn), list(idx))  # size-1 axes of pos broadcast


@register("select_n")
def _select_n(w, eqn, invals):
    pred, *cases = invals
    if is_symbolic(pred):
        if discrete_latents(w, [pred]):
            return tabulate(w, eqn, invals)
        const = intervals.constant_index(w, pred)
        if const is None:  # the case taken varies over the support: not conjugate
            return nonlinear(w, eqn, invals, "select_n on a predicate that depends on the "
                              "value of a latent")
        pred = const
    guarded = _zero_guarded_product(w, pred, cases)
    if guarded is not None:
        return guarded
    pred = w.concrete(pred)
    shape = _shape(eqn)
    if T.is_concrete(pred):
        p = np.asarray(pred)
        vals = np.unique(p)
        if vals.size == 1:
            return cases[int(vals[0])]
    # host constants stay numpy (no XLA compile per operation); data make jax values
    xp = np if host_eval.host_array(pred) is not None else jnp
    pred = xp.broadcast_to(xp.asarray(pred).astype(np.int32), shape)
    dense, terms = [], []
    for i, c in enumerate(cases):
        if is_sym(c):
            cv, rest = split_constant(w, c)
        else:
            cv, rest = w.concrete(c), None
        dense.append(cv)
        if rest is not None:
            mask = (pred == i).astype(w.dtype)
            terms.extend(reindex_sym(w, rest, shape, _identity_index(shape), mask=mask).terms)
    host = [host_eval.host_array(d) for d in dense]
    if xp is np and all(h is not None for h in host):
        const = np.choose(pred, [np.broadcast_to(h, shape).astype(_dtype(eqn)) for h in host])
    else:
        const = jax.lax.select_n(pred, *[jnp.broadcast_to(d, shape).astype(_dtype(eqn))
                                         for d in dense])
    return T.Sym(shape, _dtype(eqn), tuple(terms) + (T.const_term(w.space, const, shape),))


#: primitives whose results the zero-guard rule traces back (RuleTable.provenance)
PROVENANCE = frozenset({"ne", "or", "convert_element_type", "mul"})


def _zeros(w, v):
    if is_sym(v):
        return False
    c = v.base if isinstance(v, Lazy) else v
    return T.is_concrete(c) and not np.any(np.asarray(c))


def _nonzero_tests(w, pred):
    """The values ``e`` such that ``pred`` false implies ``e == 0``: ``pred`` is built from
    ``e != 0`` through ``or`` (false only if every operand is) and bool conversions."""
    out = []
    o = w.origin(pred)
    if o is None:
        return out
    name, ins = o
    if name == "convert_element_type":
        return _nonzero_tests(w, ins[0])
    if name == "or":
        return [e for v in ins for e in _nonzero_tests(w, v)]
    if name == "ne":
        a, b = ins
        if _zeros(w, b) and not is_sym(a):
            out.append(a)
        elif _zeros(w, a) and not is_sym(b):
            out.append(b)
    return out


def _zero_guarded_product(w, pred, cases):
    """``where(e != 0, e * s, 0)`` (jax.scipy's ``xlogy``, ``xlog1py``) with data ``e`` is
    ``e * s`` for every value when ``s`` is finite over the supports: where the guard
    fails, ``e == 0`` and ``e * s == 0``. Returning the product (no mask) keeps the
    value and gives the derivative in ``e`` of the guarded function's own JVP (the mask
    would give 0 at ``e == 0``). Returns None when the pattern does not hold."""
    if len(cases) != 2 or not _zeros(w, cases[0]) or not is_sym(cases[1]):
        return None
    tests = _nonzero_tests(w, pred)
    o = w.origin(cases[1])
    if not tests or o is None or o[0] != "mul":
        return None
    a, b = o[1]
    for e, s in ((a, b), (b, a)):
        if any(e is t for t in tests) and is_sym(s) and intervals.value_range(w, s).finite():
            if tuple(jnp.shape(cases[1])) == _shape(w.eqn):
                return cases[1]
    return None


# ----------------------------------------------------------------- multilinear rules

def dot_syms(w, a: T.Sym, b: T.Sym, dimension_numbers, out_shape, src=None) -> T.Sym:
    (lc, rc), (lb, rb) = dimension_numbers
    terms = []
    for ta in a.terms:
        for tb in b.terms:
            sub = _fresh_inner(w, tb)
            for i, j in zip(rc, lc):
                sub[tb.out[i]] = ta.out[j]
            for i, j in zip(rb, lb):
                sub[tb.out[i]] = ta.out[j]
            # a free label of b that a also carries (two broadcasts of one latent share
            # its labels) is renamed: keeping it would tie the two output axes
            taken = ta.labels()
            for i in range(len(b.shape)):
                lab = tb.out[i]
                if i not in rc and i not in rb and lab in taken and lab not in sub:
                    sub[lab] = w.space.fresh(w.space.sizes[lab])
            free_a = [ta.out[i] for i in range(len(a.shape)) if i not in lc and i not in lb]
            free_b = [sub.get(tb.out[i], tb.out[i]) for i in range(len(b.shape))
                      if i not in rc and i not in rb]
            out = tuple(ta.out[i] for i in lb) + tuple(free_a) + tuple(free_b)
            tb2 = tb.relabel(sub)
            t = T.Term(ta.consts + tb2.consts, ta.atoms + tb2.atoms,
                       ta.out, src if (ta.atoms and tb.atoms) else (ta.src or tb.src))
            t = drop_out(w, t, [ta.out[j] for j in lc])
            t = collapse(w, t.with_(out=out))
            if t is not None:
                terms.append(t)
    return T.Sym(tuple(out_shape), a.dtype, tuple(terms))


@register("dot_general")
def _dot_general(w, eqn, invals):
    a, b = invals
    a = a if is_sym(a) else w.to_sym(w.concrete(a))
    b = b if is_sym(b) else w.to_sym(w.concrete(b))
    return dot_syms(w, a, b, eqn.params["dimension_numbers"], _shape(eqn), src=w.source())


@register("triangular_solve")
def _triangular_solve(w, eqn, invals):
    a, b = invals
    if is_symbolic(a):
        return nonlinear(w, eqn, invals, "matrix of a linear solve depends on a latent")
    a = w.concrete(a)
    p = dict(eqn.params)
    m = a.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(m, dtype=a.dtype), a.shape)
    inv = jax.lax.linalg.triangular_solve(
        a, eye, left_side=p["left_side"], lower=p["lower"], transpose_a=p["transpose_a"],
        conjugate_a=p["conjugate_a"], unit_diagonal=p["unit_diagonal"])
    nd = len(b.shape)
    batch = tuple(range(nd - 2))
    inv_s = w.to_sym(inv)
    if p["left_side"]:  # x = inv @ b
        return dot_syms(w, inv_s, b, (((nd - 1,), (nd - 2,)), (batch, batch)), _shape(eqn))
    return dot_syms(w, b, inv_s, (((nd - 1,), (nd - 2,)), (batch, batch)), _shape(eqn))
