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
            out = discrete.evaluate_substituted(
                w, eqn, [discrete.substitute(w, v, z, val) for v in invals])
            if isinstance(out, Poison):
                poisons.append(out)
                continue
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


# ------------------------------------------------------------------ homogeneous chains

def _other_keys(sizes, term, atom):
    """Per position of ``atom``'s label grid, an integer key of every other operand of
    ``term`` there (its coordinates, or the flat entry an indexed atom reads), or None
    when an index is not a constant."""
    union = atom.labels
    grid = [sizes[l] for l in union]
    coords = np.indices(grid)

    def coord_key(labels):
        common = [l for l in labels if l in union]
        if not common:
            return np.zeros(grid, np.int64)
        return np.ravel_multi_index([coords[union.index(l)] for l in common],
                                    [sizes[l] for l in common])

    keys = []
    for c, ls in term.consts:
        if T.is_concrete(c) and np.ndim(c) and set(ls) <= set(union):
            # a constant the log joint closes over (never data: data are abstract here)
            # is keyed by its value
            order = [ls.index(l) for l in union if l in ls]
            v = np.transpose(np.asarray(c, np.float64), order)
            keys.append(np.broadcast_to(v.reshape([sizes[l] if l in ls else 1
                                                   for l in union]), grid).view(np.int64))
        else:
            keys.append(coord_key(ls))
    for x in term.atoms:
        if x is atom:
            continue
        if x.idx is None or not set(x.labels) <= set(union):
            keys.append(coord_key(x.labels))
        elif not T.is_concrete(x.idx):
            return None
        else:
            idx = np.asarray(x.idx)
            order = [x.labels.index(l) for l in union if l in x.labels]
            idx = np.transpose(idx, order) if idx.ndim else idx
            keys.append(np.broadcast_to(
                idx.reshape([sizes[l] if l in x.labels else 1 for l in union]), grid))
    return keys


def _first_step(sizes, term, atom, steps, K):
    """``{label: coordinate}`` reading the term at its first step, when its coefficient
    of the pair statistic ``pair[b, t, k, l]`` (``atom``'s entries) is the same at every
    step ``t``; else None.

    Over ``atom``'s label grid the step ``t`` must be a one-to-one function of some labels
    (the time labels), and the term at each step must carry the same multiset of ``(b, k,
    l, keys of every other operand)`` over the other labels (keys: coordinates, or the
    entry an indexed atom reads): decided from labels and index maps, never from values.
    The term is then its first step times the pair statistic summed over steps."""
    if atom.idx is None or not T.is_concrete(atom.idx) or np.ndim(atom.idx) == 0:
        return None
    flat = np.asarray(atom.idx)
    t0 = flat // (K * K) % (steps - 1)
    tl = [i for i in range(t0.ndim) if t0.shape[i] > 1 and np.any(np.diff(t0, axis=i))]
    keys = _other_keys(sizes, term, atom)
    if keys is None or not tl or any(atom.labels[i] in term.out for i in tl):
        return None
    rest = [i for i in range(t0.ndim) if i not in tl]
    n_t = int(np.prod([t0.shape[i] for i in tl]))

    def by_step(a):  # [time-label positions, other positions]
        a = np.broadcast_to(a, t0.shape)
        return np.transpose(a, tl + rest).reshape(n_t, -1)

    step = by_step(t0)
    if n_t != steps - 1 or np.any(step != step[:, :1]):
        return None
    order = np.argsort(step[:, 0], kind="stable")
    if not np.array_equal(step[order, 0], np.arange(steps - 1)):
        return None  # not every step exactly once
    cols = [by_step(c)[order] for c in [flat // (K * K) // (steps - 1), flat % (K * K)] + keys]
    # one integer per position: the id of its row of columns
    rows = np.stack([np.asarray(c).reshape(-1) for c in cols], -1)
    code = np.unique(rows, axis=0, return_inverse=True)[1].reshape(cols[0].shape)
    if not np.all(np.sort(code, 1) == np.sort(code[:1], 1)):
        return None
    first = np.unravel_index(int(order[0]), [t0.shape[i] for i in tl])
    return {atom.labels[i]: int(c) for i, c in zip(tl, first)}


def sum_over_steps(sizes, infos, terms):
    """Give each Markov-chain latent whose terms are the same at every step (an HMM
    with one transition matrix: see :func:`_first_step`) the pair statistic summed over
    time, ``sum_t one_hot(z_t) one_hot(z_{t+1})^T`` ``[..., K, K]`` (its factor's pair
    potential then has no time axis, and forward-backward forms no ``[T, K, K]``
    array): its terms are read at their first step, their pair atom on the summed
    statistic. Sets ``time_homogeneous`` on those latents; returns the terms."""
    for name, inf in infos.items():
        cls = inf.family_class
        if (inf.structure != CHAIN or inf.chain_axes or cls is None
                or getattr(cls, "chain_pair_stat", None) is None):
            continue
        stat, K, steps = cls.chain_pair_stat, inf.support.num_categories, inf.support.shape[-1]
        found, ok = {}, steps >= 3
        for i, t in enumerate(terms):
            pair = [a for a in t.atoms if a.latent == name and a.stat == stat]
            if not ok or not pair:
                continue
            fix = _first_step(sizes, t, pair[0], steps, K) if len(pair) == 1 else None
            ok = fix is not None
            found[i] = fix
        if not ok or not found:
            continue
        terms = list(terms)
        for i, fix in found.items():
            t = terms[i]
            for label, j in fix.items():
                t = T._fix_label(t, label, j, sizes)
            atoms = []
            for a in t.atoms:
                if a.latent == name and a.stat == stat:
                    flat = np.asarray(a.idx)
                    b = flat // (K * K) // (steps - 1)
                    a = a.__class__(a.latent, a.stat, a.labels, b * K * K + flat % (K * K),
                                    a.power)
                atoms.append(a)
            terms[i] = T.compress(t.with_(atoms=tuple(atoms)), sizes)
        inf.time_homogeneous = True
        inf.structure_note = (inf.structure_note or "") + (
            "; the same transition potential at every step (pair statistic summed over t)")
    return terms


# ------------------------------------------------------------------ Gaussian chains

def _gaps(shape, pairs):
    """Per axis, the largest ``|coordinate difference|`` over every coupled pair."""
    gap = np.zeros(len(shape), np.int64)
    for ea, eb in pairs:
        ca, cb = _coords(ea, shape), _coords(eb, shape)
        for d in range(len(shape)):
            if np.size(ca[d]):
                gap[d] = max(gap[d], int(np.abs(ca[d] - cb[d]).max()))
    return gap


def gauss_decide(inf, pairs, event_axes) -> bool:
    """Give the real latent ``inf`` the Gauss-Markov chain family when every coupled pair
    ``(ea, eb)`` joins two elements at most one step apart along one event axis (time, of
    at least 3 steps; the other event axes are the state of a step): True. Else record in
    ``inf.structure_note`` why the factor stays dense, and return False."""
    from vijax.families import registry
    name, shape = inf.name, tuple(inf.support.shape)
    cls = registry.chain_family(inf.support.kind)
    if cls is None or not pairs:
        return False
    gap = _gaps(shape, pairs)
    cands = [a for a in event_axes if gap[a] <= 1 and shape[a] >= 3]
    size = int(np.prod([shape[a] for a in event_axes]))
    if not cands:
        far = [a for a in event_axes if gap[a] > 1]
        why = (f"terms couple {name}[t] with {name}[t+{int(gap[far[0]])}] along axis {far[0]}"
               if far else f"the coupled axes {tuple(event_axes)} are shorter than 3 steps")
        inf.structure_note = (f"one dense event of {size} elements over axes "
                              f"{tuple(event_axes)} (no Gauss-Markov chain: {why}; a chain "
                              f"needs {name}[t-1]-{name}[t] couplings only, along one axis)")
        return False
    time = max(cands, key=lambda a: (shape[a], -a))
    state = tuple(a for a in event_axes if a != time)
    inf.family, inf.stats = cls.__name__, tuple(cls.stat_names)
    inf.structure, inf.chain_axes = CHAIN, (time,) + state
    inf.event_axes = tuple(sorted(inf.chain_axes))
    lay = inf.layout
    inf.structure_note = (
        f"Gauss-Markov chain along axis {time} (T={lay.num_steps}, state D={lay.state_dim}"
        + (f" over axes {state}" if state else "") + f"): terms couple {name}[t-1] and "
        f"{name}[t] only; block-tridiagonal precision, O(T D^3) smoother instead of a dense "
        f"{size}x{size} Gaussian")
    return True


def gauss_final_atoms(inf, entry):
    """The walk atom of a Gauss-Markov latent on the chain's statistics, as
    ``[(atom, mask)]``: ``x`` for ``z``, ``xxT[b, t, d, d']`` for a product within step
    ``t``, ``pair[b, t, d, d']`` for ``z[t, d] z[t+1, d']``. A term mixing both kinds of
    products is split in two, each with a 0/1 ``mask`` over its labels (None: all)."""
    lay = inf.layout
    steps, D = lay.num_steps, lay.state_dim
    name, shape = inf.name, tuple(inf.support.shape)
    if entry[0] == "single":
        a = entry[1]
        b, t, d = lay.element_position(T.host(T.explicit_idx(a, shape)))
        flat = (b * steps + t) * D + d
        if a.power == 1.0:
            return [(T.Atom(name, "x", a.labels, np.asarray(flat)), None)]
        return [(T.Atom(name, "xxT", a.labels, np.asarray(flat * D + d)), None)]
    _, a, b_, union, ea, eb = entry
    ba, ta, da = lay.element_position(ea)
    _, tb, db = lay.element_position(eb)
    same = ta == tb
    out = []
    if np.any(same):
        idx = ((ba * steps + ta) * D + da) * D + db
        out.append((T.Atom(name, "xxT", union, np.asarray(idx)), same))
    if not np.all(same):
        fwd = tb > ta
        t0 = np.minimum(np.minimum(ta, tb), steps - 2)
        d0, d1 = np.where(fwd, da, db), np.where(fwd, db, da)
        idx = ((ba * (steps - 1) + t0) * D + d0) * D + d1
        out.append((T.Atom(name, "pair", union, np.asarray(idx)), ~same))
    if len(out) == 1:
        return [(out[0][0], None)]
    return [(atom, mask.astype(np.float64)) for atom, mask in out]
