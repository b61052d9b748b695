"""Symbolic values of the conjugacy compiler: sums of einsum terms.

A latent-dependent array value is a :class:`Sym`: a sum of :class:`Term` s, each an
einsum over constant operands and statistic :class:`Atom` s of latents,

    value[out] = sum_{other labels} prod_c const_c[labels_c] * prod_a stat_a[labels_a].

Labels are integers, unique in one compilation (:class:`Space` hands them out and
knows their sizes). An output label no operand carries means the term is constant
(broadcast) along that axis. An atom reads ``stat.reshape(-1)[idx]`` when ``idx`` is an
index array over its labels, or the statistic array itself (one label per axis) when
``idx`` is None.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import opt_einsum

from vijax._compat import is_tracer


class Space:
    """Hands out fresh integer labels and remembers their sizes."""

    def __init__(self):
        self.sizes: dict[int, int] = {}
        self._next = 0

    def fresh(self, size: int) -> int:
        lab = self._next
        self._next += 1
        self.sizes[lab] = int(size)
        return lab

    def fresh_many(self, shape) -> Tuple[int, ...]:
        return tuple(self.fresh(s) for s in shape)


@dataclasses.dataclass(frozen=True)
class Atom:
    """One statistic operand of a latent.

    ``stat`` is "x" (the value, raised to ``power``), "log", "log1m" or "onehot"
    during the walk, and a family statistic name after matching.
    """

    latent: str
    stat: str
    labels: Tuple[int, ...]
    idx: Any = None
    power: float = 1.0

    def relabel(self, sub):
        return dataclasses.replace(self, labels=tuple(sub.get(l, l) for l in self.labels))

    def key(self):
        return (self.latent, self.stat, self.power)


@dataclasses.dataclass(frozen=True)
class Term:
    """An einsum of constant operands ``(array, labels)`` and atoms onto ``out``."""

    consts: Tuple[Tuple[Any, Tuple[int, ...]], ...]
    atoms: Tuple[Atom, ...]
    out: Tuple[int, ...]
    src: str | None = None

    def relabel(self, sub):
        consts = tuple((c, tuple(sub.get(l, l) for l in ls)) for c, ls in self.consts)
        atoms = tuple(a.relabel(sub) for a in self.atoms)
        return Term(consts, atoms, tuple(sub.get(l, l) for l in self.out), self.src)

    def with_(self, **kw):
        return dataclasses.replace(self, **kw)

    def labels(self):
        labs = set(self.out)
        for _, ls in self.consts:
            labs.update(ls)
        for a in self.atoms:
            labs.update(a.labels)
        return labs

    def latents(self):
        return {a.latent for a in self.atoms}


@dataclasses.dataclass(frozen=True)
class Sym:
    """A latent-dependent array: ``shape``, ``dtype`` and a sum of terms."""

    shape: Tuple[int, ...]
    dtype: Any
    terms: Tuple[Term, ...]

    def latents(self):
        out = set()
        for t in self.terms:
            out |= t.latents()
        return out


# --------------------------------------------------------------------------- helpers

def const_term(space: Space, value, shape) -> Term:
    """A term holding a constant array broadcast to ``shape`` (scalars stay scalars)."""
    value = host(value) if is_concrete(value) else jnp.asarray(value)
    value = np.asarray(value) if isinstance(value, (int, float, bool)) else value
    out = space.fresh_many(shape)
    nd = value.ndim
    if nd == 0:
        return Term(((value, ()),), (), out)
    # align trailing axes (numpy broadcasting); size-1 axes are dropped from labels
    lead = len(shape) - nd
    labels, keep = [], []
    views = isinstance(value, np.ndarray)
    for i in range(nd):
        if value.shape[i] == 1 and shape[lead + i] != 1:
            continue
        if views and value.shape[i] > 1 and value.strides[i] == 0:  # broadcast: no label
            continue
        keep.append(i)
        labels.append(out[lead + i])
    drop = tuple(i for i in range(nd) if i not in keep)
    if drop:
        value = value[tuple(0 if i in drop else slice(None) for i in range(nd))] if views \
            else xp(value).squeeze(value, drop)
    return Term(((value, tuple(labels)),), (), out)


def scale_term(t: Term, c) -> Term:
    return t.with_(consts=t.consts + ((host(c) if is_concrete(c) else c, ()),))


def stat_shape(latent_shape, stat, num_categories=None):
    if stat == "onehot":
        return tuple(latent_shape) + (num_categories,)
    return tuple(latent_shape)


def explicit_idx(atom: Atom, shape) -> np.ndarray:
    """The atom's flat index array over its labels (``shape`` is its stat shape)."""
    if atom.idx is not None:
        return atom.idx
    return np.arange(int(math.prod(shape))).reshape(shape)


def is_concrete(x) -> bool:
    return x is None or not is_tracer(x)


def xp(*arrays):
    """numpy when every array is concrete (no XLA compile per shape), else jax.numpy."""
    return np if all(is_concrete(a) for a in arrays) else jnp


def host(x):
    """A concrete array as numpy (no-op for numpy), a tracer unchanged."""
    return np.asarray(x) if is_concrete(x) else x


def _einsum(operands, out, sizes):
    """``jnp.einsum`` over ``(array, labels)`` pairs; broadcast out labels no operand has."""
    present = set()
    for _, ls in operands:
        present.update(ls)
    real_out = [l for l in out if l in present]
    lib = xp(*[arr for arr, _ in operands])
    if lib is np:
        operands = [(np.asarray(arr), ls) for arr, ls in operands]
    else:  # host constants beside traced ones: placed, not staged (jnp.asarray of a numpy
        # array compiles one XLA program per shape under ensure_compile_time_eval)
        operands = [(jax.device_put(arr) if isinstance(arr, (np.ndarray, np.generic)) else arr,
                     ls) for arr, ls in operands]
    if not operands:
        return np.ones([sizes[l] for l in out])
    # relabel to small ints for jnp.einsum's interleaved form
    remap = {}
    for _, ls in operands:
        for l in ls:
            remap.setdefault(l, len(remap))
    args = []
    for arr, ls in operands:
        args.append(arr)
        args.append([remap[l] for l in ls])
    args.append([remap[l] for l in real_out])
    if len(operands) == 1 and sorted(operands[0][1]) == sorted(real_out) \
            and len(set(operands[0][1])) == len(operands[0][1]):
        arr, ls = operands[0]
        res = lib.transpose(arr, [ls.index(l) for l in real_out]) if ls else arr
    elif lib is np:
        res = np.einsum(*args, optimize=True)
    else:
        res = jnp.einsum(*args, optimize=_contraction_path(args, len(operands)))
    if len(real_out) == len(out):
        return res
    # insert broadcast axes
    shape_b = [sizes[l] if l in present else 1 for l in out]
    res = lib.reshape(res, [sizes[l] if l in present else 1 for l in out])
    return lib.broadcast_to(res, [sizes[l] for l in out]) if shape_b else res


def _contraction_path(args, n):
    """The cheapest (fewest flops) of opt_einsum's ``optimal`` (up to 4 operands),
    ``greedy`` and ``dp`` paths for an interleaved einsum. ``optimal`` alone is not
    optimal for hadamard-style terms: ``x[n,d] w[k,d] v[k,d] r[n,k]`` gets the [K, N]
    intermediate ``(w v) x^T`` (2 N K D + 2 N K) where ``r^T x`` first costs 2 N K D +
    2 K D (the GMM's data term in F)."""
    key = tuple(tuple(a) if isinstance(a, list) else tuple(np.shape(a)) for a in args)
    path = _PATHS.get(key)
    if path is not None:
        return path
    best = None
    for how in (("optimal",) if n <= 4 else ()) + ("greedy", "dp"):
        p, info = opt_einsum.contract_path(*args, optimize=how)
        if best is None or info.opt_cost < best[0]:
            best = (info.opt_cost, p)
    if len(_PATHS) > 4096:
        _PATHS.clear()
    _PATHS[key] = best[1]
    return best[1]


#: contraction paths by operand shapes and labels (F, its block gradients and the ELBO
#: contract the same terms several times per trace)
_PATHS: dict = {}


def atom_operand(atom: Atom, stats):
    """The array an atom contributes, given ``stats[latent][stat]`` arrays."""
    arr = stats[atom.latent][atom.stat]
    if atom.idx is not None:
        if xp(arr, atom.idx) is np:
            arr = np.reshape(host(arr), (-1,))[atom.idx]
        else:  # a traced index (e.g. a Compiled passed through jit) or traced statistics
            arr = jnp.reshape(jnp.asarray(arr), (-1,))[atom.idx]
    if atom.power != 1.0:
        arr = arr ** atom.power
    return arr


def eval_term(t: Term, stats, sizes):
    ops = [(c, ls) for c, ls in t.consts]
    ops += [(atom_operand(a, stats), a.labels) for a in t.atoms]
    return _einsum(ops, t.out, sizes)


def eval_sym(s: Sym, stats, sizes):
    total = np.zeros(s.shape)
    for t in s.terms:
        total = total + eval_term(t, stats, sizes)
    return total


def const_value(t: Term, sizes):
    """Dense value of an atom-free term."""
    assert not t.atoms
    return _einsum(list(t.consts), t.out, sizes)


def _constant_axes(arr):
    """Axes along which a concrete array does not vary."""
    out = []
    for ax in range(arr.ndim):
        if arr.shape[ax] > 1 and arr.strides[ax] == 0:  # a broadcast view: no compare
            out.append(ax)
        elif arr.shape[ax] > 1:
            first = np.take(arr, [0], axis=ax)
            if np.array_equal(arr, np.broadcast_to(first, arr.shape)):
                out.append(ax)
    return out


def astype_view(arr: np.ndarray, dtype):
    """``arr.astype(dtype)``, keeping a broadcast view a view (converting only its base)."""
    flat = tuple(ax for ax in range(arr.ndim) if arr.shape[ax] > 1 and arr.strides[ax] == 0)
    if not flat:
        return arr.astype(dtype)
    base = arr[tuple(slice(0, 1) if ax in flat else slice(None) for ax in range(arr.ndim))]
    return np.broadcast_to(base.astype(dtype), arr.shape)


def add_views(a, b):
    """``a + b`` for concrete arrays of one shape, keeping the axes along which both are
    broadcast views unmaterialized."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.shape != b.shape:
        return a + b
    flat = tuple(ax for ax in range(a.ndim) if a.shape[ax] > 1 and a.strides[ax] == 0
                 and b.strides[ax] == 0)
    if not flat:
        return a + b
    sl = tuple(slice(0, 1) if ax in flat else slice(None) for ax in range(a.ndim))
    return np.broadcast_to(a[sl] + b[sl], a.shape)


def _drop_axes(arr, labels, axes):
    arr = arr[tuple(0 if i in axes else slice(None) for i in range(arr.ndim))]  # a view
    return arr, tuple(l for i, l in enumerate(labels) if i not in axes)


def compress(t: Term, sizes, views_only=False) -> Term:
    """Drop operand axes along which a concrete operand is constant (un-broadcast).

    A dropped label that then appears in no operand and not in the output was summed:
    the term is scaled by its size. ``views_only``: only the zero-stride axes of
    constants (broadcast views: no pass over any array).
    """
    consts, atoms = [], []
    changed = False
    for c, ls in t.consts:
        if views_only:
            axes = [ax for ax in range(np.ndim(c)) if isinstance(c, np.ndarray)
                    and c.shape[ax] > 1 and c.strides[ax] == 0]
            if axes:
                c, ls = _drop_axes(c, ls, axes)
                changed = True
        elif is_concrete(c) and np.ndim(c) > 0:
            c = np.asarray(c)
            axes = _constant_axes(c)
            if axes:
                c, ls = _drop_axes(c, ls, axes)
                changed = True
        consts.append((c, ls))
    for a in t.atoms:
        if not views_only and a.idx is not None and is_concrete(a.idx) and np.ndim(a.idx) > 0:
            idx = np.asarray(a.idx)
            axes = _constant_axes(idx)
            if axes:
                idx, ls = _drop_axes(idx, a.labels, axes)
                a = dataclasses.replace(a, idx=idx, labels=ls)
                changed = True
        atoms.append(a)
    if not changed:
        return t
    before = t.labels()
    t2 = Term(tuple(consts), tuple(atoms), t.out, t.src)
    lost = before - t2.labels()
    scale = math.prod(sizes[l] for l in lost) if lost else 1
    return scale_term(t2, float(scale)) if scale != 1 else t2


def as_identity(atom: Atom, stat_shape, space: Space) -> Atom:
    """Replace an explicit index that reads the whole statistic array in order (up to a
    permutation of axes) by ``idx=None`` with labels per statistic axis."""
    idx = atom.idx
    if idx is None or not is_concrete(idx):
        return atom
    idx = np.asarray(idx)
    size = int(math.prod(stat_shape))
    if idx.size != size or idx.ndim == 0 and size != 1:
        return atom
    strides = [int(math.prod(stat_shape[i + 1:])) for i in range(len(stat_shape))]
    axis_of = {}
    for ax in range(idx.ndim):
        n = idx.shape[ax]
        if n == 1:
            continue
        step = int(np.take(idx, 1, axis=ax).flat[0] - np.take(idx, 0, axis=ax).flat[0])
        cands = [i for i, (st, m) in enumerate(zip(strides, stat_shape))
                 if st == step and m == n and i not in axis_of.values()]
        if not cands:
            return atom
        axis_of[ax] = cands[0]
    if sorted(axis_of.values()) != [i for i, m in enumerate(stat_shape) if m > 1]:
        return atom
    expect = np.zeros(idx.shape, dtype=np.int64)
    for ax, i in axis_of.items():
        shp = [1] * idx.ndim
        shp[ax] = idx.shape[ax]
        expect = expect + strides[i] * np.arange(idx.shape[ax]).reshape(shp)
    if not np.array_equal(idx, expect):
        return atom
    labels = []
    for i, m in enumerate(stat_shape):
        ax = [a for a, j in axis_of.items() if j == i]
        labels.append(atom.labels[ax[0]] if ax else space.fresh(1))
    return dataclasses.replace(atom, idx=None, labels=tuple(labels))


def restrict_deltas(t: Term, sizes) -> Term | None:
    """Simplify a term with the zero pattern of its concrete constants.

    Returns None if a constant is identically zero. A summed label along which a constant
    is nonzero at a single index ``j0`` is fixed to ``j0`` in every operand (so
    ``[k = j] mu[j]`` reads ``mu[k]`` and same-element products are recognized).
    """
    for c, _ in t.consts:
        if is_concrete(c) and not np.any(np.asarray(c)):
            return None
    t = _merge_diagonals(t)
    # the category label of a one-hot statistic read in order stays a label (with its
    # delta constant): fixing it would need an index array the size of the latent, and
    # like terms of the K categories merge into one once stacked (a diagonal constant)
    keep = {a.labels[-1] for a in t.atoms if a.stat == "onehot" and a.idx is None}
    for l in keep:  # deltas along a kept label: one product (zero: the term vanishes)
        along = [i for i, (c, ls) in enumerate(t.consts) if ls == (l,) and is_concrete(c)]
        if len(along) > 1:
            prod = np.prod([np.asarray(t.consts[i][0]) for i in along], axis=0)
            if not np.any(prod):
                return None
            rest = tuple(c for i, c in enumerate(t.consts) if i not in along)
            t = Term(rest + ((prod, (l,)),), t.atoms, t.out, t.src)
    changed = True
    while changed:
        changed = False
        for c, ls in t.consts:
            if not is_concrete(c) or np.ndim(c) == 0:
                continue
            c = np.asarray(c)
            for ax, l in enumerate(ls):
                if l in t.out or c.shape[ax] == 1 or l in keep:
                    continue
                nz = np.any(c != 0, axis=tuple(i for i in range(c.ndim) if i != ax))
                where = np.flatnonzero(nz)
                if len(where) == 1:
                    t = _fix_label(t, l, int(where[0]), sizes)
                    changed = True
                    break
            if changed:
                break
    for c, _ in t.consts:  # a label fixed where another constant vanishes
        if is_concrete(c) and np.ndim(c) == 0 and not np.any(np.asarray(c)):
            return None
    return t


def _merge_diagonals(t: Term) -> Term:
    """A concrete square constant ``c[l1, l2]`` that is zero off its diagonal ties the two
    labels: ``l2`` is renamed ``l1`` everywhere and ``c`` becomes its diagonal (so
    ``[k = k'] mu[k] mu[k']`` reads ``mu[k]**2``, one element)."""
    changed = True
    while changed:
        changed = False
        for i, (c, ls) in enumerate(t.consts):
            if not is_concrete(c) or np.ndim(c) != 2 or ls[0] == ls[1]:
                continue
            c = np.asarray(c)
            if c.shape[0] != c.shape[1] or c.shape[0] < 2 or (ls[0] in t.out and ls[1] in t.out):
                continue
            if np.count_nonzero(c) > c.shape[0] or np.any(c - np.diag(np.diag(c))):
                continue
            keep, drop = (ls[1], ls[0]) if ls[0] not in t.out else (ls[0], ls[1])
            rest = t.consts[:i] + ((np.diag(c).copy(), (keep,)),) + t.consts[i + 1:]
            t = Term(rest, t.atoms, t.out, t.src).relabel({drop: keep})
            changed = True
            break
    return t


def _fix_label(t: Term, label, j0, sizes) -> Term:
    """Every operand of ``t`` read at ``label = j0`` (the label disappears)."""
    consts = []
    for c, ls in t.consts:
        if label in ls:
            ax = ls.index(label)
            c = xp(c).take(host(c), j0, axis=ax)
            ls = ls[:ax] + ls[ax + 1:]
        consts.append((c, ls))
    atoms = []
    for a in t.atoms:
        if label in a.labels:
            ax = a.labels.index(label)
            idx = a.idx
            if idx is None:
                idx = np.arange(int(math.prod(sizes[l] for l in a.labels))).reshape(
                    [sizes[l] for l in a.labels])
            idx = xp(idx).take(host(idx), j0, axis=ax)
            a = dataclasses.replace(a, idx=idx, labels=a.labels[:ax] + a.labels[ax + 1:])
        atoms.append(a)
    return Term(tuple(consts), tuple(atoms), t.out, t.src)
