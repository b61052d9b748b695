"""Operations on symbolic values shared by the rules: products with same-element
collapse, broadcasting, re-indexing (gathers, reshapes, slices), constant splitting.

Pure term algebra on :class:`~vijax.conjugacy.terms.Sym` values: no rule, no dispatch
(``w`` is the walker, read for the latents' supports and the label space)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vijax.conjugacy import host_eval
from vijax.conjugacy import terms as T
from vijax.conjugacy.values import is_sym
from vijax.conjugacy.walker import Lazy


def _shape(eqn, i=0):
    return tuple(eqn.outvars[i].aval.shape)


def _dtype(eqn, i=0):
    return eqn.outvars[i].aval.dtype


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


def _same_element(a1: T.Atom, a2: T.Atom, extra: int, sizes=None) -> bool:
    if a1.labels != a2.labels:
        # one element each (every label of size 1, e.g. mu[c[0]] after a squeeze): the
        # same element when their flat indices name it
        if sizes is None or any(sizes[l] != 1 for l in a1.labels + a2.labels):
            return False
        if not all(a.idx is None or T.is_concrete(a.idx) for a in (a1, a2)):
            return False
        e1, e2 = (0 if a.idx is None else int(np.ravel(np.asarray(a.idx))[0]) for a in (a1, a2))
        return e1 // extra == e2 // extra
    if a1.idx is None and a2.idx is None:
        return True
    if a1.idx is None or a2.idx is None:
        return False
    if a1.idx is a2.idx:  # one index array (e.g. a data index, theta[group] squared)
        return True
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
                    if _same_element(a, b, K, w.space.sizes) and a.idx is not None:
                        mask = (np.asarray(a.idx) % K) == (np.asarray(b.idx) % K)
                        if not mask.any():
                            return None
                        if not mask.all():
                            consts.append((mask.astype(np.float64), a.labels))
                        del atoms[j]
                        changed = True
                        break
                    continue
                if _same_element(a, b, 1, w.space.sizes):
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
            else:  # a data index (traced): a gather in the data-to-constants program
                arr = jnp.asarray(arr)
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
    const = None
    rest = []
    for t in s.terms:
        if t.atoms:
            rest.append(t)
        else:
            v = T.const_value(t, w.space.sizes)
            const = v if const is None else T.add_views(const, v)
    if const is None:
        const = np.broadcast_to(np.zeros(()), s.shape)  # a view: no pass over the shape
    return const, (T.Sym(s.shape, s.dtype, tuple(rest)) if rest else None)


def simplify_const(w, s):
    """A Sym without atoms becomes a concrete array."""
    if is_sym(s) and all(not t.atoms for t in s.terms):
        c = split_constant(w, s)[0]
        return T.astype_view(c, s.dtype) if isinstance(c, np.ndarray) else c.astype(s.dtype)
    return s


def concat_syms(w, invals, dim, new, dtype):
    """Concatenate constant and symbolic parts along ``dim``."""
    const_parts, terms, offset = [], [], 0
    for v in invals:
        n = jnp.shape(w.point(v))[dim] if not is_sym(v) else v.shape[dim]
        if not is_sym(v):
            h = host_eval.host_array(w.concrete(v))
            const_parts.append(h.astype(dtype) if h is not None else
                               jnp.asarray(w.concrete(v)).astype(dtype))
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
    host = [host_eval.host_array(c) for c in const_parts]
    const = np.concatenate(host, axis=dim) if all(h is not None for h in host) else \
        jnp.concatenate(const_parts, axis=dim)  # host parts: no XLA compile
    return T.Sym(new, dtype, tuple(terms) + (T.const_term(w.space, const, new),))


def _identity_index(shape):
    ia = []
    for i, n in enumerate(shape):
        sh = [1] * len(shape)
        sh[i] = n
        ia.append(np.arange(n).reshape(sh))
    return ia
