"""Chains of a discrete latent: terms that couple neighbouring elements.

A categorical latent ``z`` of shape ``S = batch + (T,)`` whose log joint holds
``one_hot(z[..., t]) one_hot(z[..., t+1])^T`` products (a transition term
``log A[z[t-1], z[t]]``) besides single-element terms has a complete conditional that is a
first-order Markov chain along its last axis, not a product over elements. Its factor is
the :class:`~vijax.families.MarkovChain` family (forward-backward), with statistics

    unary[..., t, k] = [z_t = k],   pair[..., t, k, l] = [z_t = k][z_{t+1} = l].

Two places of the compiler meet such terms:

- the walk (:func:`tabulate_pairs`): a non-multilinear operation whose output positions
  each depend on two elements of ``z`` (``jnp.log(A)[z[:-1], z[1:]]``, a gather indexed
  by both) is evaluated exactly over the ``K^2`` values of the pair,
  ``f(z_a, z_b) = sum_{k,l} [z_a = k][z_b = l] f(k, l)``. The elements are split into two
  colours such that every coupled pair has one of each (a bipartite coupling graph), and
  each colour is substituted by one value, so one evaluation serves every position;
- the matching (:func:`classify_pair`, :func:`decide`, :func:`final_atom`): a term with
  the one-hot statistics of two different elements is a chain pair; the latent gets the
  chain family when every pair is ``(t, t+1)`` along its last axis, else a reason.
"""

from __future__ import annotations

import numpy as np

from vijax.conjugacy import terms as T

#: the structure names :mod:`~vijax.conjugacy.matching` records per latent
FACTORIZED, CHAIN, DENSE = "factorized", "chain", "dense"


# ------------------------------------------------------------------ walk: pairs

def _single_atom_maps(w, s, z, shape):
    """One element map over ``shape`` per (term, atom of ``z``) of ``s`` (-1: no
    dependence), or None when an atom spans several elements at one position."""
    from vijax.conjugacy import discrete
    maps = []
    for t in s.terms:
        for a in t.atoms:
            if a.latent != z:
                continue
            one = T.Sym(s.shape, s.dtype, (t.with_(atoms=(a,)),))
            try:
                maps.append(discrete.element_map(w, one, z, shape))
            except discrete._Mixed:
                return None
    return maps


def _two_elements(maps):
    """``(lo, hi)``: the two distinct elements every position depends on, or None when a
    position depends on fewer or more than two."""
    m = np.stack([np.asarray(x) for x in maps])
    big = np.iinfo(np.int64).max
    lo = np.where(m < 0, big, m).min(0)
    hi = m.max(0)
    if np.any(hi < 0) or np.any(lo == hi) or not np.all((m < 0) | (m == lo) | (m == hi)):
        return None
    return lo, hi


def _pair_maps(w, eqn, invals, z, shape):
    """Per output position, the two elements of ``z`` it depends on (or None)."""
    from vijax.conjugacy.values import is_sym
    if eqn.primitive.name == "gather" and is_sym(invals[1]):
        if is_sym(invals[0]) and z in invals[0].latents():
            return None
        ind = invals[1]
        ishape = tuple(ind.shape)
        maps = _single_atom_maps(w, ind, z, ishape)
        if not maps or not ishape:
            return None
        maps = [np.moveaxis(mp, -1, 0) for mp in maps]  # the index vector: its last axis
        found = _two_elements([row for mp in maps for row in mp])
        if found is None:
            return None
        offset = set(eqn.params["dimension_numbers"].offset_dims)
        sh = [1 if d in offset else None for d in range(len(shape))]
        it = iter(found[0].shape)
        sh = [next(it) if s is None else 1 for s in sh]
        return tuple(np.broadcast_to(e.reshape(sh), shape) for e in found)
    maps = []
    for v in invals:
        if is_sym(v) and z in v.latents():
            if len(v.shape) > len(shape) or np.prod(v.shape) > np.prod(shape):
                return None
            got = _single_atom_maps(w, v, z, shape)
            if got is None:
                return None
            maps.extend(got)
    return _two_elements(maps) if maps else None


def two_colours(n, lo, hi):
    """Colour (0/1) per element of ``n`` such that every pair ``(lo[i], hi[i])`` has one
    of each, or None when the coupling graph is not bipartite.

    A graph is bipartite iff, in its double cover (nodes ``(e, c)``, edges
    ``(a, c) - (b, 1 - c)``), ``(e, 0)`` and ``(e, 1)`` are never connected; the component
    labels then give the colours."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    lo, hi = np.ravel(lo), np.ravel(hi)
    rows = np.concatenate([2 * lo, 2 * lo + 1])
    cols = np.concatenate([2 * hi + 1, 2 * hi])
    g = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(2 * n, 2 * n))
    _, lab = connected_components(g, directed=False)
    l0, l1 = lab[0::2], lab[1::2]
    if np.any(l0 == l1):
        return None
    return (l0 > l1).astype(np.int64)


def tabulate_pairs(w, eqn, invals, z):
    """The output of ``eqn`` when each output position depends on two elements of the
    discrete latent ``z``: ``sum_{k,l} [z_a = k][z_b = l] f(k, l)`` (exact), with the
    elements in two colours substituted by ``k`` and ``l``. None when the positions do
    not each depend on exactly two elements, or the coupling is not bipartite (the caller
    then reports the operation as non-conjugate)."""
    from vijax.conjugacy import discrete
    from vijax.conjugacy.algebra import _operand, mul_sym
    from vijax.conjugacy.values import Poison
    sup = w.supports[z]
    if eqn.primitive.multiple_results or sup.kind != "categorical":
        return None
    shape = tuple(eqn.outvars[0].aval.shape)
    found = _pair_maps(w, eqn, invals, z, shape)
    if found is None:
        return None
    lo, hi = found
    colour = two_colours(sup.size, lo, hi)
    if colour is None:
        return None
    first = np.where(colour[lo] == 0, lo, hi)  # the element of colour 0 at each position
    second = np.where(colour[lo] == 0, hi, lo)
    K = sup.num_categories
    dtype = eqn.outvars[0].aval.dtype
    terms, poisons = [], []
    for k in range(K):
        ind_k = discrete.indicator(w, z, k, first)
        for l in range(K):
            val = np.where(colour == 0, k, l)
            out = w.eval_eqn(eqn, [discrete.substitute(w, v, z, val) for v in invals])
            if isinstance(out, Poison):
                poisons.append(out)
                continue
            if not isinstance(out, T.Sym):
                out = T.host(w.concrete(out))
                out = T.astype_view(np.asarray(out), np.float64) if T.is_concrete(out) \
                    else out.astype(w.dtype)
            ind = mul_sym(w, ind_k, discrete.indicator(w, z, l, second))
            terms.extend(mul_sym(w, ind, _operand(w, out, shape)).terms)
    if poisons:
        pts = [w.point(p) for p in poisons]
        return w.poison(eqn.primitive.name, poisons, pts[0], "non-conjugate after expanding "
                        f"pairs of elements of the discrete latent '{z}'")
    src = w.source()  # the user's line, for a reason about this coupling
    return T.Sym(shape, dtype, tuple(t if t.src else t.with_(src=src) for t in terms))


# ------------------------------------------------------------------ matching

def _elements_over(sizes, a, shape, union):
    """The atom's flat statistic index broadcast over the ``union`` labels."""
    idx = np.asarray(T.explicit_idx(a, shape))
    order = [a.labels.index(l) for l in union if l in a.labels]
    idx = np.transpose(idx, order) if idx.ndim else idx
    sh = [sizes[l] if l in a.labels else 1 for l in union]
    return np.broadcast_to(idx.reshape(sh), [sizes[l] for l in union])


def classify_pair(sizes, sup, atoms):
    """``("chain", a, b, union, ea, eb)`` for a term holding the one-hot statistics of
    two different elements of a categorical latent (``ea``, ``eb``: their flat one-hot
    entries over the ``union`` labels), when a chain family is registered; else None."""
    from vijax.families import registry
    if len(atoms) != 2 or registry.chain_family(sup.kind) is None:
        return None
    if not all(a.stat == "onehot" and a.power == 1.0
               and (a.idx is None or T.is_concrete(a.idx)) for a in atoms):
        return None
    a, b = atoms
    K = sup.num_categories
    shape = tuple(sup.value_shape) + (K,)
    union = tuple(dict.fromkeys(a.labels + b.labels))
    ea, eb = (_elements_over(sizes, x, shape, union) for x in (a, b))
    if np.any(ea // K == eb // K):
        return None
    return ("chain", a, b, union, ea, eb)


def _coords(e, shape):
    return np.unravel_index(np.ravel(e), shape) if shape else ()


def _pair_reason(name, shape, ea, eb, K):
    """Why the pairs ``(ea, eb)`` of one term are not ``(t, t+1)`` along the last axis
    (None when they are)."""
    ca, cb = _coords(ea // K, shape), _coords(eb // K, shape)
    axes = [d for d in range(len(shape)) if np.any(ca[d] != cb[d])]
    last = len(shape) - 1
    if axes != [last]:
        return (f"'{name}' (shape {tuple(shape)}) is coupled across axis "
                f"{[d for d in axes if d != last]}: a Markov-chain factor couples "
                f"neighbouring elements along the LAST axis only (declare the time axis "
                "last, e.g. shape (N, T))")
    gap = np.abs(cb[last] - ca[last])
    if np.any(gap != 1):
        d = int(gap[gap != 1].max())
        return (f"'{name}' couples elements {d} steps apart ({name}[t] with "
                f"{name}[t+{d}]): only neighbouring elements ({name}[t-1] with {name}[t]) "
                "give a Markov-chain factor (forward-backward); a longer-range coupling "
                "has no closed-form update. Fit it by vj.fit_gradient, or write the model "
                "as a first-order chain")
    return None


def decide(inf, pairs):
    """Give the latent ``inf`` the chain family (every coupled pair is ``(t, t+1)``
    along its last axis), or the reason it has none. ``pairs``: ``(ea, eb, source)`` per
    term coupling two of its elements."""
    from vijax.families import registry
    name, sup = inf.name, inf.support
    K = sup.num_categories
    shape = tuple(sup.shape)
    for ea, eb, src in pairs:
        why = _pair_reason(name, shape, ea, eb, K)
        if why is not None:
            inf.reason = why + (f" (at {src})" if src else "")
            inf.source, inf.primitive = src, "mul"
            inf.structure_note = (f"factorized over elements (no chain: {why})")
            return
    cls = registry.chain_family(sup.kind)
    inf.family, inf.stats = cls.__name__, tuple(cls.stat_names)
    inf.structure = CHAIN
    src = pairs[0][2]
    inf.structure_note = (
        f"Markov chain along axis {len(shape) - 1} (T={shape[-1]}): terms couple "
        f"{name}[t-1] and {name}[t] only" + (f" (transitions at {src})" if src else "")
        + "; forward-backward")


def final_atom(sizes, inf, entry):
    """The walk atom on the chain family's statistics: ``unary`` (the one-hot entries,
    same layout) or ``pair[..., t, k, l]`` for ``[z_t = k][z_{t+1} = l]``."""
    cls = inf.family_class
    if entry[0] == "single":
        a = entry[1]
        return T.Atom(inf.name, cls.walk_stats[(a.stat, a.power)], a.labels, a.idx)
    _, a, b, union, ea, eb = entry
    K = inf.support.num_categories
    steps = inf.support.shape[-1]
    ela, elb = ea // K, eb // K
    ta, tb = ela % steps, elb % steps
    batch = ela // steps
    fwd = ta < tb
    t0 = np.minimum(ta, tb)
    k0 = np.where(fwd, ea % K, eb % K)
    k1 = np.where(fwd, eb % K, ea % K)
    idx = ((batch * (steps - 1) + t0) * K + k0) * K + k1
    return T.Atom(inf.name, cls.chain_pair_stat, union, np.array(idx))
