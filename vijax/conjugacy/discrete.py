"""Exact treatment of binary and categorical latents by tabulation.

For one element ``s`` of a discrete latent, any expression ``f(s)`` equals
``sum_k [s = k] f(k)``, which is linear in ``one_hot(s)``. When a primitive that is
not multilinear (a comparison, an index, a log, a power...) meets a value that depends
on a discrete latent, the primitive is evaluated once per support value ``k`` with the
latent substituted by ``k`` everywhere, and the results are recombined with the
indicator statistics of the element each output position depends on.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from vijax import _compat
from vijax.conjugacy import chains  # pairs of elements (a chain's transitions)
from vijax.conjugacy import terms as T
from vijax.conjugacy.algebra import _operand, mul_sym, simplify_const
from vijax.conjugacy.values import Poison


def discrete_latents(w, invals):
    """Names of discrete latents that the symbolic inputs depend on."""
    out = set()
    for v in invals:
        if isinstance(v, T.Sym):
            for name in v.latents():
                if w.supports[name].kind in ("binary", "categorical"):
                    out.add(name)
    return out


def _num_values(sup):
    return 2 if sup.kind == "binary" else sup.num_categories


def _atom_elements(w, a: T.Atom):
    """(element id array, its labels) of an atom of a discrete latent."""
    sup = w.supports[a.latent]
    if a.stat == "onehot":
        K = sup.num_categories
        if a.idx is None:
            labels = a.labels[:-1]
            return np.arange(sup.size).reshape(sup.shape), labels
        el = np.asarray(a.idx) // K
        axes = [ax for ax in T._constant_axes(el)]  # category axes: the element is fixed
        if axes:
            el, labels = T._drop_axes(el, a.labels, axes)
            return el, labels
        return el, a.labels
    if a.idx is None:
        return np.arange(sup.size).reshape(sup.shape), a.labels
    return np.asarray(a.idx), a.labels


class _Mixed(Exception):
    """A non-multilinear operation mixes several elements of one discrete latent."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name


def _several(w, name):
    raise _Mixed(name)


def _mixed_poison(w, eqn, invals, name):
    """The output of ``eqn`` as a Poison: its value depends jointly on several elements
    of ``name``, so no expansion in one element's indicators exists. Reported (on every
    latent the operation reads, as for any non-multilinear value), never raised: the
    analysis lists it, CAVI refuses the latent, the gradient path fits it."""
    pts = _compat.bind_eqn(eqn, [w.point(v) for v in invals])
    detail = (f"a non-multilinear operation mixes several elements of the discrete latent "
              f"'{name}': its complete conditional does not factorize over elements. Split "
              "the latent into separate latents, or fit by vj.fit_gradient")
    if eqn.primitive.multiple_results:
        return [w.poison(eqn.primitive.name, invals, p, detail) for p in pts]
    return w.poison(eqn.primitive.name, invals, pts, detail)


def element_map(w, s, z, shape):
    """For each position of ``s`` (broadcast to ``shape``), the element of ``z`` it
    depends on (-1 where it does not depend on ``z``)."""
    emap = np.full(shape, -1, dtype=np.int64)
    if not isinstance(s, T.Sym):
        return emap
    lead = len(shape) - len(s.shape)
    for t in s.terms:
        zs = [a for a in t.atoms if a.latent == z]
        if not zs:
            continue
        if len(zs) > 1:
            _several(w, z)
        a = zs[0]
        if not T.is_concrete(a.idx):
            _several(w, z)
        el, labels = _atom_elements(w, a)
        single = [i for i, l in enumerate(labels) if l not in t.out and w.space.sizes[l] == 1]
        if single:  # a summed label of size 1 (a squeezed axis) names no other element
            el = el.reshape([n for i, n in enumerate(el.shape) if i not in single])
            labels = tuple(l for i, l in enumerate(labels) if i not in single)
        if not set(labels) <= set(t.out):
            _several(w, z)
        # arrange along the term's output axes
        order = [labels.index(l) for l in t.out if l in labels]
        el = np.transpose(el, order) if el.ndim else el
        sh = [w.space.sizes[l] if l in labels else 1 for l in t.out]
        el = np.broadcast_to(el.reshape(sh), s.shape)
        el = np.broadcast_to(el.reshape((1,) * lead + tuple(s.shape)), shape)
        clash = (emap >= 0) & (el != emap)
        if clash.any():
            _several(w, z)
        emap = np.where(emap >= 0, emap, el)
    return emap


def identity_axes(w, s, z, shape):
    """The output axes that carry ``z``'s element axes, when every term of ``s``
    (broadcast to ``shape``) reads ``z`` elementwise in order (``one_hot(z)[n, k]`` or
    ``b[n]`` with no index array): position ``o`` then depends on element ``z[o[axes]]``.
    None when the map is not of that form (the caller builds the explicit map).

    This is the structural form of :func:`element_map`: no array of the data's size."""
    sup = w.supports[z]
    lead = len(shape) - len(s.shape)
    axes = None
    for t in s.terms:
        zs = [a for a in t.atoms if a.latent == z]
        if not zs:
            continue
        if len(zs) > 1 or zs[0].idx is not None or zs[0].power != 1.0:
            return None
        a = zs[0]
        elab = a.labels[:-1] if a.stat == "onehot" else a.labels
        if len(elab) != len(sup.shape) or any(l not in t.out for l in elab):
            return None
        ax = tuple(lead + t.out.index(l) for l in elab)
        if len(set(ax)) != len(ax) or any(shape[x] != n for x, n in zip(ax, sup.shape)):
            return None
        if axes is None:
            axes = ax
        elif axes != ax:
            return None
    return axes


def _gather_axes(w, eqn, ind, z):
    """:func:`identity_axes` of a gather's output from its (z-dependent) indices."""
    ishape = tuple(ind.shape)
    ax = identity_axes(w, ind, z, ishape)
    if ax is None or not ishape or len(ishape) - 1 in ax:
        return None
    out_shape = tuple(eqn.outvars[0].aval.shape)
    offset = set(eqn.params["dimension_numbers"].offset_dims)
    batch = [d for d in range(len(out_shape)) if d not in offset]
    if len(batch) != len(ishape) - 1:
        return None
    return tuple(batch[i] for i in ax)


def identity_indicator(w, z, k, axes, shape):
    """Sym over ``shape``: ``[z_{o[axes]} = k]``, one statistic atom read in order (no
    index array) times a delta over the categories."""
    sup = w.supports[z]
    q = w.space.fresh_many(shape)
    elab = tuple(q[a] for a in axes)
    if sup.kind == "binary":  # [b = 1] = b, [b = 0] = 1 - b
        pos = T.Term((), (T.Atom(z, "x", elab),), q)
        terms = (pos,) if k == 1 else (T.Term(((np.ones(()), ()),), (), q),
                                       T.scale_term(pos, -1.0))
        return T.Sym(shape, w.dtype, terms)
    K = sup.num_categories
    kk = w.space.fresh(K)
    delta = np.zeros(K)
    delta[k] = 1.0
    return T.Sym(shape, w.dtype, (T.Term(((delta, (kk,)),), (T.Atom(z, "onehot", elab + (kk,)),),
                                         q),))


def _gather_map(w, eqn, ind, z):
    """Element map of a gather's output from its (z-dependent) indices."""
    ishape = tuple(ind.shape)
    e = element_map(w, ind, z, ishape)
    e = e.max(axis=-1) if ishape else e  # the index vector is the last axis
    out_shape = tuple(eqn.outvars[0].aval.shape)
    offset = set(eqn.params["dimension_numbers"].offset_dims)
    sh = [1 if d in offset else None for d in range(len(out_shape))]
    it = iter(e.shape)
    sh = [next(it) if s is None else 1 for s in sh]
    return np.broadcast_to(e.reshape(sh), out_shape)


def _value_at(a: T.Atom, sup, k, sizes):
    """The operand of atom ``a`` when every element of its latent equals ``k`` (or, for
    an integer array ``k`` over the latent's flat elements, element ``e`` equals
    ``k[e]``: :mod:`~vijax.conjugacy.chains` substitutes two colours of elements)."""
    shape = tuple(sizes[l] for l in a.labels)
    if np.ndim(k):
        return _values_at(a, sup, np.asarray(k), shape)
    if a.stat == "onehot":
        K = sup.num_categories
        if a.idx is None:  # labels: elements..., category
            return np.broadcast_to(np.eye(K)[k], shape)
        idx = a.idx
        return ((idx % K) == k).astype(np.float64) if T.is_concrete(idx) else \
            ((idx % K) == k).astype(jnp.float32)
    return np.broadcast_to(np.float64(float(k) ** a.power), shape)  # a view: O(1)


def _values_at(a: T.Atom, sup, k, shape):
    """:func:`_value_at` with a value ``k[e]`` per flat element ``e``."""
    if a.stat == "onehot":
        K = sup.num_categories
        if a.idx is None:  # labels: elements..., category
            return np.eye(K)[k.reshape(sup.value_shape)].reshape(shape)
        lib = T.xp(a.idx)
        return ((a.idx % K) == lib.asarray(k)[a.idx // K]).astype(np.float64)
    vals = k.astype(np.float64) ** a.power
    if a.idx is None:
        return vals.reshape(shape)
    return T.xp(a.idx).asarray(vals)[a.idx]


def substitute(w, v, z, k):
    """``v`` with every statistic of ``z`` evaluated at ``z = k`` (all elements)."""
    if not isinstance(v, T.Sym) or z not in v.latents():
        return v
    sup = w.supports[z]
    terms = []
    for t in v.terms:
        if np.ndim(k) == 0 and _vanishes_at(t, z, k):
            continue
        consts = list(t.consts)
        atoms = []
        zero = False
        for a in t.atoms:
            if a.latent != z:
                atoms.append(a)
                continue
            val = _value_at(a, sup, k, w.space.sizes)
            if a.idx is not None and T.is_concrete(val) and not np.any(val):
                zero = True
                break
            consts.append((val, a.labels))
        if zero:
            continue
        # broadcast views lose their element axes; a delta [k' = k] times the substituted
        # one-hot row fixes the category label, and the term vanishes when k' != k
        t2 = T.Term(tuple(consts), tuple(atoms), t.out, t.src)
        if any(a.latent == z and a.idx is None for a in t.atoms):
            t2 = T.restrict_deltas(T.compress(t2, w.space.sizes, views_only=True),
                                   w.space.sizes)
        if t2 is not None:  # substituted rows over a size-1 axis: squeeze it
            t2 = t2.with_(consts=tuple(_squeeze_unit(c, ls, w.space.sizes) for c, ls in t2.consts))
        if t2 is not None and not any(T.is_concrete(c) and np.ndim(c) == 0 and not np.any(c)
                                      for c, _ in t2.consts):
            terms.append(t2)
    if not terms:  # a broadcast view of zero (no pass over the shape)
        return np.broadcast_to(np.zeros((), np.dtype(v.dtype)), v.shape)
    return simplify_const(w, T.Sym(v.shape, v.dtype, tuple(terms)))


def _vanishes_at(t, z, k):
    """Whether term ``t`` is zero at ``z = k`` before substituting: a one-hot of ``z``
    read in order over a summed category label ``c`` that a concrete constant over ``c``
    alone weights by zero at ``k`` (``sum_c [k = c] delta[c] = delta[k] = 0``; the K - 1
    other categories of a tabulated term). What restricting the substituted term's
    deltas finds, without building it."""
    for a in t.atoms:
        if a.latent != z or a.stat != "onehot" or a.idx is not None:
            continue
        cat = a.labels[-1]
        if cat in t.out:
            continue
        for c, ls in t.consts:
            if ls == (cat,) and T.is_concrete(c) and np.ndim(c) == 1 and c[k] == 0:
                return True
    return False


def _squeeze_unit(c, labels, sizes):
    """A concrete constant without its size-1 axes (an einsum operand may drop them)."""
    unit = [i for i, l in enumerate(labels) if sizes[l] == 1]
    if not unit or not T.is_concrete(c):
        return c, labels
    c = np.asarray(c)
    return c.reshape([n for i, n in enumerate(c.shape) if i not in unit]), \
        tuple(l for i, l in enumerate(labels) if i not in unit)


def indicator(w, z, k, emap):
    """Sym over ``emap.shape``: ``[z_{emap(o)} = k]`` (1 for k = 0 where emap is -1)."""
    sup = w.supports[z]
    shape = emap.shape
    q = w.space.fresh_many(shape)
    dep = emap >= 0
    e = np.where(dep, emap, 0)
    if sup.kind == "binary":  # [b = 1] = b, [b = 0] = 1 - b
        pos = T.Term((), (T.Atom(z, "x", q, e),), q)
        terms = [pos] if k == 1 else [T.Term(((np.ones(()), ()),), (), q),
                                      T.scale_term(pos, -1.0)]
    else:
        terms = [T.Term((), (T.Atom(z, "onehot", q, e * sup.num_categories + k),), q)]
    if not dep.all():
        mask = dep.astype(np.float64)
        terms = [t.with_(consts=t.consts + ((mask, q),)) for t in terms]
        if k == 0:
            terms.append(T.Term(((1.0 - mask, q),), (), q))
    return T.Sym(shape, w.dtype, tuple(T.compress(t, w.space.sizes) for t in terms))


def _tabulation_axes(w, eqn, invals, z, shape):
    """Identity axes shared by every input that depends on ``z`` (None: use the
    explicit element map)."""
    if eqn.primitive.name == "gather" and isinstance(invals[1], T.Sym):
        if isinstance(invals[0], T.Sym) and z in invals[0].latents():
            return None
        return _gather_axes(w, eqn, invals[1], z)
    axes = None
    for v in invals:
        if isinstance(v, T.Sym) and z in v.latents():
            if len(v.shape) > len(shape) or math.prod(v.shape) > math.prod(shape):
                return None
            ax = identity_axes(w, v, z, shape)
            if ax is None or (axes is not None and ax != axes):
                return None
            axes = ax
    return axes


def nonlinear(w, eqn, invals, detail):
    """A primitive with no multilinear form: tabulated over a discrete latent (exact),
    else its output poisoned (``detail`` says why)."""
    if discrete_latents(w, invals):
        return tabulate(w, eqn, invals)
    out = _compat.bind_eqn(eqn, [w.point(v) for v in invals])
    if eqn.primitive.multiple_results:
        return [w.poison(eqn.primitive.name, invals, o, detail) for o in out]
    return w.poison(eqn.primitive.name, invals, out, detail)


def tabulate(w, eqn, invals):
    """Evaluate ``eqn`` once per value of one discrete latent and recombine exactly;
    a Poison (a reason on the latents, not an error) where an output position depends
    on several elements of the latent."""
    try:
        return _tabulate(w, eqn, invals)
    except _Mixed as e:
        out = chains.tabulate_pairs(w, eqn, invals, e.name)
        return _mixed_poison(w, eqn, invals, e.name) if out is None else out


def evaluate_substituted(w, eqn, sub):
    """``eqn`` evaluated on inputs in which a discrete latent's value was substituted: a
    Poison, a Sym, or a constant (float64 on the host, else the walk's dtype)."""
    out = w.eval_eqn(eqn, sub)
    if isinstance(out, (Poison, T.Sym)):
        return out
    out = T.host(w.concrete(out))
    return T.astype_view(np.asarray(out), np.float64) if T.is_concrete(out) \
        else out.astype(w.dtype)


def _tabulate(w, eqn, invals):
    z = sorted(discrete_latents(w, invals))[0]
    sup = w.supports[z]
    if eqn.primitive.multiple_results:
        pts = _compat.bind_eqn(eqn, [w.point(v) for v in invals])
        return [w.poison(eqn.primitive.name, invals, p, "an operation with several outputs "
                         f"applied to a value of the discrete latent '{z}' (not expanded)")
                for p in pts]
    shape = tuple(eqn.outvars[0].aval.shape)
    axes = _tabulation_axes(w, eqn, invals, z, shape)
    if axes is not None:
        emap = None
    elif eqn.primitive.name == "gather" and isinstance(invals[1], T.Sym):
        if isinstance(invals[0], T.Sym) and z in invals[0].latents():
            _several(w, z)
        emap = _gather_map(w, eqn, invals[1], z)
    else:
        emap = np.full(shape, -1, dtype=np.int64)
        for v in invals:
            if isinstance(v, T.Sym) and z in v.latents():
                if len(v.shape) > len(shape) or math.prod(v.shape) > math.prod(shape):
                    _several(w, z)
                e = element_map(w, v, z, shape)
                if ((emap >= 0) & (e >= 0) & (e != emap)).any():
                    _several(w, z)
                emap = np.where(emap >= 0, emap, e)
    dtype = eqn.outvars[0].aval.dtype
    total = None
    poisons = []
    for k in range(_num_values(sup)):
        out_k = evaluate_substituted(w, eqn, [substitute(w, v, z, k) for v in invals])
        if isinstance(out_k, Poison):
            poisons.append(out_k)
            continue
        ind_k = identity_indicator(w, z, k, axes, shape) if axes is not None else \
            indicator(w, z, k, emap)
        piece = mul_sym(w, ind_k, _operand(w, out_k, shape))
        total = piece if total is None else T.Sym(shape, dtype, total.terms + piece.terms)
    if poisons:
        pts = [w.point(p) for p in poisons]
        return w.poison(eqn.primitive.name, poisons, pts[0], "non-conjugate after expanding "
                        f"the discrete latent '{z}'")
    return T.Sym(shape, dtype, total.terms)
