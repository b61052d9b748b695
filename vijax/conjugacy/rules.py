"""The rule table: how each primitive acts on symbolic (latent-dependent) values.

Categories (each registered with one helper where possible):

- structural ops act on every term's labels (broadcast, reshape, transpose, squeeze,
  reduce_sum, convert, slice, rev, gather with constant indices, concatenate);
- multilinear ops expand products (mul, dot_general, triangular_solve with a constant
  matrix, neg/add/sub);
- bespoke: div, integer_pow/square/sqrt/rsqrt/pow (monomials of positive latents),
  log/log1p (log of a monomial, ``log(1 - p)``), select_n (support guards), nested
  jaxprs (jit, custom_jvp/vjp, remat, scan, while, cond);
- everything else that touches a latent is non-multilinear: discrete latents are
  tabulated over their support (exact), continuous ones are poisoned (reported).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _compat
from vijax.conjugacy import discrete
from vijax.conjugacy import terms as T
from vijax.conjugacy.walker import Lazy, Poison, is_sym, is_symbolic, register


def _shape(eqn, i=0):
    return tuple(eqn.outvars[i].aval.shape)


def _dtype(eqn, i=0):
    return eqn.outvars[i].aval.dtype


def _nonlinear(w, eqn, invals, detail):
    """Tabulate over a discrete latent, or poison the value (recording why)."""
    if discrete.discrete_latents(w, invals):
        return discrete.tabulate(w, eqn, invals)
    out = _compat.bind_eqn(eqn, [w.point(v) for v in invals])
    if eqn.primitive.multiple_results:
        return [w.poison(eqn.primitive.name, invals, o, detail) for o in out]
    return w.poison(eqn.primitive.name, invals, out, detail)


# ----------------------------------------------------------------- term surgery

def drop_out(w, t: T.Term, labels):
    """Sum a term over some of its output labels."""
    present = set()
    for _, ls in t.consts:
        present.update(ls)
    for a in t.atoms:
        present.update(a.labels)
    scale = 1
    for l in labels:
        if l not in present:
            scale *= w.space.sizes[l]
    t = t.with_(out=tuple(l for l in t.out if l not in labels))
    return T.scale_term(t, float(scale)) if scale != 1 else t


def _same_element(a1: T.Atom, a2: T.Atom, extra: int) -> bool:
    if a1.labels != a2.labels:
        return False
    if a1.idx is None and a2.idx is None:
        return True
    if a1.idx is None or a2.idx is None:
        return False
    if not (T.is_concrete(a1.idx) and T.is_concrete(a2.idx)):
        return False
    return bool(np.array_equal(np.asarray(a1.idx) // extra, np.asarray(a2.idx) // extra))


def collapse(w, t: T.Term) -> T.Term | None:
    """Merge statistics of one latent element in a term; None if the term vanishes."""
    atoms = list(t.atoms)
    consts = list(t.consts)
    changed = True
    while changed:
        changed = False
        for i in range(len(atoms)):
            for j in range(i + 1, len(atoms)):
                a, b = atoms[i], atoms[j]
                if a.latent != b.latent or a.stat != b.stat or a.stat in ("log", "log1m"):
                    continue
                sup = w.supports[a.latent]
                if a.stat == "onehot":
                    K = sup.num_categories
                    if a.idx is None and b.idx is None and a.labels[:-1] == b.labels[:-1]:
                        ka, kb = a.labels[-1], b.labels[-1]
                        if kb in t.out:
                            eye = jnp.eye(K)
                            consts.append((eye, (ka, kb)))
                            del atoms[j]
                        else:
                            sub = {kb: ka}
                            atoms = [x.relabel(sub) for k, x in enumerate(atoms) if k != j]
                            consts = [(c, tuple(sub.get(l, l) for l in ls)) for c, ls in consts]
                        changed = True
                        break
                    if _same_element(a, b, K) and a.idx is not None:
                        mask = (np.asarray(a.idx) % K) == (np.asarray(b.idx) % K)
                        if not mask.any():
                            return None
                        if not mask.all():
                            consts.append((mask.astype(np.float64), a.labels))
                        del atoms[j]
                        changed = True
                        break
                    continue
                if _same_element(a, b, 1):
                    p = 1.0 if sup.kind == "binary" else a.power + b.power
                    merged = T.Atom(a.latent, a.stat, a.labels, a.idx, p)
                    atoms = [x for k, x in enumerate(atoms) if k not in (i, j)]
                    if p != 0:
                        atoms.append(merged)
                    else:  # the atoms cancel; keep the labels' extent with ones
                        consts.append((np.ones(_label_shape(w, a.labels)), a.labels))
                    changed = True
                    break
            if changed:
                break
    # fold scalar constants
    scal = [c for c, ls in consts if not ls]
    rest = [(c, ls) for c, ls in consts if ls]
    if len(scal) > 1:
        s = T.host(scal[0])
        for c in scal[1:]:
            s = s * T.host(c)
        scal = [s]
    return T.Term(tuple(rest) + tuple((c, ()) for c in scal), tuple(atoms), t.out, t.src)


def _label_shape(w, labels):
    return tuple(w.space.sizes[l] for l in labels)


def product(w, ta: T.Term, tb: T.Term, out_b_to_a=None, src=None) -> T.Term | None:
    """The product of two terms with aligned outputs (``tb.out`` renamed to ``ta.out``)."""
    sub = _fresh_inner(w, tb)
    sub.update(dict(zip(tb.out, ta.out)) if out_b_to_a is None else out_b_to_a)
    tb = tb.relabel(sub)
    t = T.Term(ta.consts + tb.consts, ta.atoms + tb.atoms, ta.out, src or ta.src or tb.src)
    if ta.atoms and tb.atoms:
        t = t.with_(src=src)
    return collapse(w, t)


def _fresh_inner(w, t: T.Term):
    """Fresh names for a term's summed labels (so a term can multiply itself)."""
    outs = set(t.out)
    return {l: w.space.fresh(w.space.sizes[l]) for l in t.labels() if l not in outs}


def mul_sym(w, a: T.Sym, b: T.Sym, src=None) -> T.Sym:
    terms = []
    for ta in a.terms:
        for tb in b.terms:
            t = product(w, ta, tb, src=src)
            if t is not None:
                terms.append(t)
    return T.Sym(a.shape, a.dtype, tuple(terms))


def scale_sym(a: T.Sym, c) -> T.Sym:
    return T.Sym(a.shape, a.dtype, tuple(T.scale_term(t, c) for t in a.terms))


def broadcast_sym(w, s: T.Sym, shape, dims) -> T.Sym:
    terms = []
    for t in s.terms:
        out = []
        for i, n in enumerate(shape):
            if i in dims:
                j = dims.index(i)
                out.append(t.out[j] if s.shape[j] == n else w.space.fresh(n))
            else:
                out.append(w.space.fresh(n))
        # input axes of size 1 broadcast to n: their labels are summed (size 1)
        t2 = t.with_(out=tuple(out))
        terms.append(t2)
    return T.Sym(tuple(shape), s.dtype, tuple(terms))


def _operand(w, v, shape):
    """Any input as a Sym of the output shape (scalars and constants broadcast)."""
    if is_sym(v):
        if v.shape != tuple(shape):
            lead = len(shape) - len(v.shape)
            return broadcast_sym(w, v, tuple(shape), tuple(range(lead, len(shape))))
        return v
    return w.to_sym(v, shape) if isinstance(v, Lazy) and tuple(v.shape) == tuple(shape) \
        else w.to_sym(w.concrete(v), shape)


def reindex_sym(w, s: T.Sym, new_shape, index_arrays, mask=None) -> T.Sym:
    """``new[q] = old[index_arrays[0][q], ..., index_arrays[r-1][q]]`` (times ``mask``).

    Index arrays broadcast to ``new_shape``; each operand of each term is gathered along
    the output labels it carries (other labels are untouched).
    """
    new_shape = tuple(new_shape)
    nq = len(new_shape)
    ia = [T.host(a) for a in index_arrays]
    ia = [a.reshape((1,) * (nq - a.ndim) + tuple(a.shape)) for a in ia]
    terms = []
    for t in s.terms:
        q = w.space.fresh_many(new_shape)
        pos = {l: i for i, l in enumerate(t.out)}

        def regather(arr, labels):
            if not any(l in pos for l in labels):
                return arr, labels
            others = [l for l in labels if l not in pos]
            no = len(others)
            ix = []
            for l in labels:
                if l in pos:
                    ix.append(ia[pos[l]].reshape(ia[pos[l]].shape + (1,) * no))
                else:
                    k = others.index(l)
                    sh = [1] * (nq + no)
                    sh[nq + k] = w.space.sizes[l]
                    ix.append(np.arange(w.space.sizes[l]).reshape(sh))
            lib = T.xp(arr, *ix)
            if lib is np:
                arr, ix = np.asarray(arr), [np.asarray(x) for x in ix]
            res = arr[tuple(ix)]
            bshape = np.broadcast_shapes(*[x.shape for x in ix])
            keep = [i for i in range(nq) if bshape[i] != 1]
            squeeze = tuple(i for i in range(nq) if bshape[i] == 1)
            res = lib.broadcast_to(res, bshape)
            if squeeze:
                res = lib.squeeze(res, squeeze)
            return res, tuple(q[i] for i in keep) + tuple(others)

        consts = tuple(regather(c, ls) for c, ls in t.consts)
        atoms = []
        for a in t.atoms:
            if any(l in pos for l in a.labels):
                sup = w.supports[a.latent]
                shp = T.stat_shape(sup.value_shape, a.stat, sup.num_categories)
                idx = T.explicit_idx(a, shp)
                new_idx, labels = regather(idx, a.labels)
                if T.is_concrete(new_idx):
                    new_idx = np.asarray(new_idx)
                atoms.append(T.Atom(a.latent, a.stat, labels, new_idx, a.power))
            else:
                atoms.append(a)
        if mask is not None:
            consts = consts + ((T.host(mask).reshape(new_shape), q),)
        terms.append(T.compress(T.Term(consts, tuple(atoms), q, t.src), w.space.sizes))
    return T.Sym(new_shape, s.dtype, tuple(terms))


def split_constant(w, s: T.Sym):
    """(dense value of the atom-free terms, Sym of the rest or None)."""
    const = np.zeros(s.shape)
    rest = []
    for t in s.terms:
        if t.atoms:
            rest.append(t)
        else:
            const = const + T.const_value(t, w.space.sizes)
    return const, (T.Sym(s.shape, s.dtype, tuple(rest)) if rest else None)


def simplify_const(w, s):
    """A Sym without atoms becomes a concrete array."""
    if is_sym(s) and all(not t.atoms for t in s.terms):
        c = split_constant(w, s)[0]
        return c.astype(s.dtype) if T.is_concrete(c) else c.astype(s.dtype)
    return s


# ----------------------------------------------------------------- linear rules

@register("add", "add_any", "sub")
def _add(w, eqn, invals):
    shape = _shape(eqn)
    for i, v in enumerate(invals):
        if not is_symbolic(v) and _is_zero(w, v):
            other = _operand(w, invals[1 - i], shape)
            if i == 0 and eqn.primitive.name == "sub":
                other = scale_sym(other, -1.0)
            return T.Sym(shape, _dtype(eqn), other.terms)
    a, b = (_operand(w, v, shape) for v in invals)
    if eqn.primitive.name == "sub":
        b = scale_sym(b, -1.0)
    return T.Sym(shape, _dtype(eqn), a.terms + b.terms)


def _is_zero(w, v):
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
    new = eqn.params["new_dtype"]
    if jnp.issubdtype(new, jnp.bool_) or (jnp.issubdtype(new, jnp.integer)
                                          and not jnp.issubdtype(s.dtype, jnp.integer)):
        return w.eval_predicate(eqn, invals)
    return T.Sym(s.shape, new, s.terms)


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
        return _nonlinear(w, eqn, invals, "index depends on a latent")
    if not is_sym(s):
        s = w.to_sym(w.concrete(s))
    new = _shape(eqn)
    ia = []
    for i, n in enumerate(new):
        st = jnp.clip(jnp.asarray(w.concrete(starts[i])), 0, s.shape[i] - n)
        sh = [1] * len(new)
        sh[i] = n
        ia.append((st + jnp.arange(n)).reshape(sh))
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


def concat_syms(w, invals, dim, new, dtype):
    """Concatenate constant and symbolic parts along ``dim``."""
    const_parts, terms, offset = [], [], 0
    for v in invals:
        n = jnp.shape(w.point(v))[dim] if not is_sym(v) else v.shape[dim]
        if not is_sym(v):
            const_parts.append(jnp.asarray(w.concrete(v)).astype(dtype))
            offset += n
            continue
        c, rest = split_constant(w, v)
        const_parts.append(c.astype(dtype))
        if rest is not None:
            ia = []
            for i, m in enumerate(new):
                sh = [1] * len(new)
                sh[i] = m
                r = np.arange(m)
                if i == dim:
                    r = np.clip(r - offset, 0, n - 1)
                ia.append(r.reshape(sh))
            sh = [1] * len(new)
            sh[dim] = new[dim]
            r = np.arange(new[dim])
            mask = np.broadcast_to(((r >= offset) & (r < offset + n)).reshape(sh), new)
            terms.extend(reindex_sym(w, rest, new, ia, mask=mask).terms)
        offset += n
    const = jnp.concatenate(const_parts, axis=dim)
    return T.Sym(new, dtype, tuple(terms) + (T.const_term(w.space, const, new),))


@register("gather")
def _gather(w, eqn, invals):
    op, ind = invals
    if is_symbolic(ind):
        return _nonlinear(w, eqn, invals, "index depends on a latent")
    ind = w.concrete(ind)
    shape = tuple(op.shape) if is_sym(op) else jnp.shape(w.concrete(op))
    iota = np.arange(int(math.prod(shape)), dtype=np.int32).reshape(shape)
    params = dict(eqn.params)
    params.pop("fill_value", None)
    params["mode"] = jax.lax.GatherScatterMode.CLIP
    pos = jax.lax.gather(iota, ind, **params)
    if T.is_concrete(pos):
        pos = np.asarray(pos)
        idx = list(np.unravel_index(pos, shape)) if shape else []
    else:
        idx = list(jnp.unravel_index(pos, shape)) if shape else []
    return reindex_sym(w, op, tuple(pos.shape), list(idx))


@register("select_n")
def _select_n(w, eqn, invals):
    pred, *cases = invals
    if is_symbolic(pred):
        if discrete.discrete_latents(w, [pred]):
            return discrete.tabulate(w, eqn, invals)
        pred = w.point(pred)
    pred = w.concrete(pred)
    shape = _shape(eqn)
    if T.is_concrete(pred):
        p = np.asarray(pred)
        vals = np.unique(p)
        if vals.size == 1:
            return cases[int(vals[0])]
    pred = jnp.broadcast_to(jnp.asarray(pred).astype(jnp.int32), shape)
    dense, terms = [], []
    for i, c in enumerate(cases):
        if is_sym(c):
            cv, rest = split_constant(w, c)
        else:
            cv, rest = jnp.broadcast_to(w.concrete(c), shape), None
        dense.append(cv)
        if rest is not None:
            mask = (pred == i).astype(w.dtype)
            terms.extend(reindex_sym(w, rest, shape, _identity_index(shape), mask=mask).terms)
    const = jax.lax.select_n(pred, *[d.astype(_dtype(eqn)) for d in dense])
    return T.Sym(shape, _dtype(eqn), tuple(terms) + (T.const_term(w.space, const, shape),))


def _identity_index(shape):
    ia = []
    for i, n in enumerate(shape):
        sh = [1] * len(shape)
        sh[i] = n
        ia.append(np.arange(n).reshape(sh))
    return ia


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
            free_a = [ta.out[i] for i in range(len(a.shape)) if i not in lc and i not in lb]
            free_b = [tb.out[i] for i in range(len(b.shape)) if i not in rc and i not in rb]
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
        return _nonlinear(w, eqn, invals, "matrix of a linear solve depends on a latent")
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


# ----------------------------------------------------------------- monomials

def _monomial(w, s):
    """The single term of ``s`` if it is an elementwise product of continuous-latent
    powers and constants (no summed labels), else None."""
    if not is_sym(s) or len(s.terms) != 1:
        return None
    t = s.terms[0]
    outs = set(t.out)
    for _, ls in t.consts:
        if not set(ls) <= outs:
            return None
    for a in t.atoms:
        if a.stat != "x" or not set(a.labels) <= outs:
            return None
        if w.supports[a.latent].is_discrete:
            return None
    return t


def monomial_pow(w, s, p):
    """``s ** p`` for a monomial ``s`` (None when ``s`` is not one)."""
    t = _monomial(w, s)
    if t is None:
        return None
    consts = tuple((T.host(c) ** p, ls) for c, ls in t.consts)
    atoms = tuple(T.Atom(a.latent, a.stat, a.labels, a.idx, a.power * p) for a in t.atoms)
    atoms = tuple(a for a in atoms if a.power != 0)
    return T.Sym(s.shape, s.dtype, (T.Term(consts, atoms, t.out, w.source()),))


def _power_rule(w, eqn, invals, p):
    s = invals[0]
    if float(p).is_integer() and p >= 0:
        out = _operand(w, 1.0, s.shape)
        for _ in range(int(p)):
            out = mul_sym(w, out, s, src=w.source())
        return T.Sym(s.shape, s.dtype, out.terms)
    r = monomial_pow(w, s, p)
    if r is None:
        return _nonlinear(w, eqn, invals, f"power {p} of a sum (only monomials of positive "
                                          "latents can be raised to non-integer or negative powers)")
    return r


@register("integer_pow")
def _integer_pow(w, eqn, invals):
    return _power_rule(w, eqn, invals, eqn.params["y"])


@register("square")
def _square(w, eqn, invals):
    return _power_rule(w, eqn, invals, 2)


@register("sqrt")
def _sqrt(w, eqn, invals):
    return _power_rule(w, eqn, invals, 0.5)


@register("rsqrt")
def _rsqrt(w, eqn, invals):
    return _power_rule(w, eqn, invals, -0.5)


@register("pow")
def _pow(w, eqn, invals):
    base, ex = invals
    if is_symbolic(ex):
        return _nonlinear(w, eqn, invals, "exponent depends on a latent")
    ex = w.concrete(ex)
    if not T.is_concrete(ex) or np.unique(np.asarray(ex)).size != 1:
        return _nonlinear(w, eqn, invals, "power with a non-uniform exponent")
    if not is_sym(base):
        return _nonlinear(w, eqn, invals, "power of a latent-dependent value")
    return _power_rule(w, eqn, [base], float(np.asarray(ex).reshape(-1)[0]))


@register("div")
def _div(w, eqn, invals):
    a, b = invals
    shape = _shape(eqn)
    if not is_symbolic(b):
        bc = b
        if isinstance(b, Lazy):
            inv = Lazy(1.0 / T.host(b.base), b.shape, b.dims)
        else:
            inv = 1.0 / T.host(w.concrete(bc))
        return mul_sym(w, _operand(w, a, shape), _operand(w, inv, shape))
    inv = monomial_pow(w, _operand(w, b, shape), -1.0)
    if inv is None:
        return _nonlinear(w, eqn, invals, "division by a latent-dependent sum "
                                          "(only monomials of positive latents can divide)")
    return mul_sym(w, _operand(w, a, shape), inv, src=w.source())


# ----------------------------------------------------------------- logarithms

def log_sym(w, s: T.Sym):
    """log of a monomial or of ``1 - p``; None if not expressible."""
    t = _monomial(w, s)
    if t is not None:
        terms = []
        for c, ls in t.consts:
            terms.append(T.Term(((T.xp(c).log(T.host(c)), ls),), (), t.out, t.src))
        for a in t.atoms:
            kind = w.supports[a.latent].kind
            if kind not in ("positive", "simplex", "unit_interval"):
                return None
            terms.append(T.Term(((np.asarray(a.power), ()),),
                                (T.Atom(a.latent, "log", a.labels, a.idx, 1.0),),
                                t.out, w.source()))
        return T.Sym(s.shape, s.dtype, tuple(terms))
    # log(1 - p) for a unit-interval p
    const, rest = split_constant(w, s)
    if rest is None or len(rest.terms) != 1 or not T.is_concrete(const):
        return None
    t = rest.terms[0]
    if len(t.atoms) != 1:
        return None
    a = t.atoms[0]
    if a.stat != "x" or a.power != 1 or w.supports[a.latent].kind != "unit_interval" \
            or not set(a.labels) <= set(t.out):
        return None
    coef = split_constant(w, T.Sym(s.shape, s.dtype, (t.with_(
        atoms=(), consts=t.consts + ((jnp.ones(_label_shape(w, a.labels), w.dtype), a.labels),)),)))[0]
    if not T.is_concrete(coef):
        return None
    if not (np.allclose(np.asarray(const), 1.0) and np.allclose(np.asarray(coef), -1.0)):
        return None
    return T.Sym(s.shape, s.dtype, (T.Term((), (T.Atom(a.latent, "log1m", a.labels, a.idx),),
                                           t.out, w.source()),))


@register("log")
def _log(w, eqn, invals):
    (s,) = invals
    if discrete.discrete_latents(w, invals):
        return discrete.tabulate(w, eqn, invals)
    r = log_sym(w, s)
    if r is None:
        return _nonlinear(w, eqn, invals, "log of a latent-dependent sum, or of a real latent")
    return r


@register("log1p")
def _log1p(w, eqn, invals):
    (s,) = invals
    if discrete.discrete_latents(w, invals):
        return discrete.tabulate(w, eqn, invals)
    one_plus = T.Sym(s.shape, s.dtype, s.terms + (T.const_term(w.space, 1.0, s.shape),))
    r = log_sym(w, one_plus)
    if r is None:
        return _nonlinear(w, eqn, invals, "log1p of a latent-dependent value")
    return r


@register("cumsum")
def _cumsum(w, eqn, invals):
    """Linear: ``out[i] = sum_j [j <= i] in[j]`` along the axis (a triangular constant)."""
    (s,) = invals
    axis = eqn.params["axis"] % len(s.shape)
    n = s.shape[axis]
    tri = np.tril(np.ones((n, n)))
    if eqn.params.get("reverse", False):
        tri = tri.T
    terms = []
    for t in s.terms:
        i = w.space.fresh(n)
        old = t.out[axis]
        out = t.out[:axis] + (i,) + t.out[axis + 1:]
        t2 = T.Term(t.consts + ((tri, (i, old)),), t.atoms, t.out, t.src)
        terms.append(drop_out(w, t2, [old]).with_(out=out))
    return T.Sym(s.shape, s.dtype, tuple(terms))


_NONLINEAR = ("exp", "exp2", "expm1", "lgamma", "digamma", "logistic", "tanh", "sin", "cos",
              "abs", "max", "min", "erf", "erfc", "erf_inv", "atan2", "tan", "asinh",
              "reduce_max", "reduce_min", "argmax", "argmin", "cumlogsumexp",
              "cumprod", "cummax", "reduce_prod", "rem", "cholesky", "custom_linear_solve",
              "lu", "eigh", "polygamma", "igamma", "lgamma", "sort", "clamp", "nextafter",
              "bessel_i0e", "bessel_i1e", "regularized_incomplete_beta", "random_gamma_grad",
              "log_softmax", "sinh", "cosh", "atan", "asin", "acos", "cbrt", "stop_gradient",
              "reduce_and", "reduce_or", "top_k", "scatter-add", "scatter_add", "scatter",
              "dynamic_update_slice", "pad", "split", "iota", "argsort", "logaddexp")


def _nonlinear_rule(w, eqn, invals):
    name = eqn.primitive.name
    if name == "stop_gradient":
        return invals[0]
    if name == "max" or name == "min":
        return _nonlinear(w, eqn, invals, f"{name} of a latent-dependent value")
    return _nonlinear(w, eqn, invals, f"{name} of a latent-dependent value is not multilinear "
                                      "in any exponential-family statistic")


register(*_NONLINEAR)(_nonlinear_rule)


# ----------------------------------------------------------------- nested jaxprs

@register("pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
          "custom_vjp_call_jaxpr", "remat", "remat2", "checkpoint")
def _call(w, eqn, invals):
    jaxpr, consts = _compat.sub_jaxpr(eqn)
    n_extra = len(invals) - len(jaxpr.invars)
    outs = w.walk(jaxpr, consts, invals[n_extra:] if n_extra > 0 else invals)
    return outs if eqn.primitive.multiple_results else outs[0]


@register("cond")
def _cond(w, eqn, invals):
    index, *ops = invals
    if is_symbolic(index):
        if discrete.discrete_latents(w, [index]):
            return discrete.tabulate(w, eqn, invals)
        index = w.point(index)
    index = w.concrete(index)
    if not T.is_concrete(index):
        raise _compat_error(eqn, "a cond whose branch depends on traced data")
    branch = eqn.params["branches"][int(np.asarray(index))]
    jaxpr, consts = _compat.open_jaxpr(branch)
    return w.walk(jaxpr, consts, ops)


def _compat_error(eqn, what):
    from vijax.errors import UnsupportedPrimitiveError
    return UnsupportedPrimitiveError(f"{what} is not supported on latent-dependent values",
                                     primitive=eqn.primitive.name,
                                     source=_compat.source_line(eqn))


def _index_leading(w, v, i):
    """``v[i]`` along axis 0 for a constant or symbolic value."""
    if is_sym(v):
        shape = v.shape[1:]
        ia = [np.full((1,) * len(shape), i)] + _identity_index(shape)
        return reindex_sym(w, v, shape, ia)
    if isinstance(v, Poison):
        return w.poison("scan", [v], v.point[i] if v.good is None else w.point(v)[i],
                        "scanned over a non-conjugate value")
    return w.concrete(v)[i]


def _stack(w, vals, dtype):
    if not any(is_symbolic(v) for v in vals):
        return jnp.stack([w.concrete(v) for v in vals])
    if any(isinstance(v, Poison) for v in vals):
        pts = jnp.stack([w.point(v) for v in vals])
        return w.poison("scan", [v for v in vals if isinstance(v, Poison)], pts,
                        "stacked a non-conjugate value")
    shape0 = tuple(jnp.shape(w.point(vals[0]))) if not is_sym(vals[0]) else vals[0].shape
    n = len(vals)
    terms = []
    for i, v in enumerate(vals):
        s = _operand(w, v, shape0)
        s = broadcast_sym(w, s, (1,) + shape0, tuple(range(1, len(shape0) + 1)))
        new = (n,) + shape0
        ia = [np.zeros((n,) + (1,) * len(shape0), int)] + [
            np.arange(m).reshape((1,) * (k + 1) + (m,) + (1,) * (len(shape0) - k - 1))
            for k, m in enumerate(shape0)]
        mask = np.zeros(new)
        mask[i] = 1
        terms.extend(reindex_sym(w, s, new, ia, mask=mask).terms)
    return T.Sym((n,) + shape0, dtype, tuple(terms))


@register("scan")
def _scan(w, eqn, invals):
    p = eqn.params
    jaxpr, consts = _compat.open_jaxpr(p["jaxpr"])
    nc, ncar = p["num_consts"], p["num_carry"]
    cvals, carry, xs = invals[:nc], list(invals[nc:nc + ncar]), invals[nc + ncar:]
    length = p["length"]
    order = range(length - 1, -1, -1) if p["reverse"] else range(length)
    ys_all = []
    for i in order:
        x_i = [_index_leading(w, x, i) for x in xs]
        outs = w.walk(jaxpr, consts, list(cvals) + carry + x_i)
        carry, ys = list(outs[:ncar]), outs[ncar:]
        ys_all.append(ys)
    if p["reverse"]:
        ys_all = ys_all[::-1]
    n_ys = len(eqn.outvars) - ncar
    stacked = []
    for k in range(n_ys):
        stacked.append(_stack(w, [ys[k] for ys in ys_all], _dtype(eqn, ncar + k))
                       if length else jnp.zeros(_shape(eqn, ncar + k), _dtype(eqn, ncar + k)))
    return carry + stacked


@register("while")
def _while(w, eqn, invals):
    p = eqn.params
    cj, cconsts = _compat.open_jaxpr(p["cond_jaxpr"])
    bj, bconsts = _compat.open_jaxpr(p["body_jaxpr"])
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cvals, bvals, carry = invals[:cn], invals[cn:cn + bn], list(invals[cn + bn:])
    for _ in range(100000):
        (keep,) = w.walk(cj, cconsts, list(cvals) + carry)
        if is_symbolic(keep):
            keep = w.point(keep)
        keep = w.concrete(keep)
        if not T.is_concrete(keep):
            raise _compat_error(eqn, "a while loop whose trip count depends on traced data")
        if not bool(keep):
            return carry
        carry = list(w.walk(bj, bconsts, list(bvals) + carry))
    raise _compat_error(eqn, "a while loop of more than 100000 iterations")
