"""Merging like terms of the walked log joint (before and after matching families).

Terms of one pattern (same atoms and label structure) are added when they read the same
statistic entries, or stacked along a new summed label; constants are contracted
together when that does not grow them. :func:`simplify_terms` runs before
classification, :func:`merge_terms` on the final terms.
"""

from __future__ import annotations

import math
from collections import defaultdict

import jax.numpy as jnp
import numpy as np

from vijax.conjugacy import terms as T


def _fold_group(space, group, keep_from, memo):
    """Contract ``group``'s constants into one over the labels in ``keep_from``, when
    that does not grow them. Data-derived (traced) groups are memoized on the identity
    of their operands and their label pattern, so equal products of the same data
    (``x * x`` in K tabulated copies of a term) are one array, which merging then
    recognizes as shared rather than stacking it K times."""
    if len(group) <= 1:
        return list(group)
    labs = []
    for _, ls in group:
        for l in ls:
            if l in keep_from and l not in labs:
                labs.append(l)
    size = math.prod(space.sizes[l] for l in labs) if labs else 1
    biggest = max(int(np.prod(jnp.shape(c))) for c, _ in group)
    if size > biggest:
        return list(group)
    key = None
    if not all(T.is_concrete(c) for c, _ in group):
        ren = {}
        for _, ls in group:
            for l in ls:
                ren.setdefault(l, len(ren))
        key = (tuple((id(c), tuple(ren[l] for l in ls)) for c, ls in group),
               tuple(ren[l] for l in labs))
        hit = memo.get(key)
        if hit is not None:
            return [(hit[0], tuple(labs))]
    folded = T._einsum(list(group), tuple(labs), space.sizes)
    if key is not None:
        memo[key] = (folded, [c for c, _ in group])  # operands kept alive: ids stay valid
    return [(folded, tuple(labs))]


def _fold_consts(space, t: T.Term, final=False) -> T.Term:
    """Contract a term's constants together when that does not grow them.

    Constants the log joint closes over (concrete) and data-derived ones (traced) are
    folded separately, so that the data part of like terms stays one shared array;
    ``final=True`` folds everything into one operand (after merging)."""
    if len(t.consts) <= 1:
        return t
    other = set(t.out)
    for a in t.atoms:
        other.update(a.labels)
    memo = space.__dict__.setdefault("fold_memo", {})
    if final:
        return t.with_(consts=tuple(_fold_group(space, list(t.consts), other, memo)))
    conc = [(c, ls) for c, ls in t.consts if T.is_concrete(c)]
    data = [(c, ls) for c, ls in t.consts if not T.is_concrete(c)]
    data_labels = {l for _, ls in data for l in ls}
    conc_labels = {l for _, ls in conc for l in ls}
    conc = _fold_group(space, conc, other | data_labels, memo)
    data = _fold_group(space, data, other | conc_labels, memo)
    return t.with_(consts=tuple(conc) + tuple(data))


def _canonical(t: T.Term):
    """Relabel in order of appearance; return (signature, relabeled term)."""
    atoms = sorted(t.atoms, key=lambda a: (a.latent, a.stat, a.power, len(a.labels)))
    ren = {}
    for l in t.out:
        ren.setdefault(l, len(ren))
    for a in atoms:
        for l in a.labels:
            ren.setdefault(l, len(ren))
    for _, ls in t.consts:
        for l in ls:
            ren.setdefault(l, len(ren))
    sig_atoms = tuple((a.latent, a.stat, a.power, tuple(ren[l] for l in a.labels),
                       None if a.idx is None else tuple(np.shape(a.idx))) for a in atoms)
    sig_consts = tuple((tuple(ren[l] for l in ls), tuple(jnp.shape(c))) for c, ls in t.consts)
    return (sig_atoms, sig_consts), atoms, ren


def _idx_key(a):
    if a.idx is None:
        return None
    if T.is_concrete(a.idx):
        arr = np.asarray(a.idx)
        return (arr.shape, arr.tobytes())
    return ("traced", id(a.idx))


def _add_same_index(members):
    """Members reading the same statistic entries and sharing every constant but one
    (same object, or equal closed-over constants): add them at that one position."""
    parts = defaultdict(list)
    for m in members:
        parts[tuple(_idx_key(a) for a in m[1])].append(m)
    out = []
    for part in parts.values():
        if len(part) == 1:
            out.extend(part)
            continue
        t0 = part[0][0]
        n = len(t0.consts)
        if n == 0 or any(len(m[0].consts) != n for m in part):
            out.extend(part)
            continue
        differ = [ci for ci in range(n) if not _shared([m[0].consts[ci][0] for m in part])]
        if len(differ) > 1:
            out.extend(part)
            continue
        consts = list(t0.consts)
        if not differ:  # identical members: scale a closed-over constant (or add one)
            conc = [ci for ci in range(n) if T.is_concrete(t0.consts[ci][0])]
            if conc:
                c, ls = consts[conc[0]]
                consts[conc[0]] = (T.host(c) * len(part), ls)
            else:
                consts.append((np.asarray(float(len(part))), ()))
        else:
            ci = differ[0]
            total = None
            for t, _, _ in part:
                c = T.host(t.consts[ci][0])
                total = c if total is None else total + c
            consts[ci] = (total, t0.consts[ci][1])
        out.append((t0.with_(consts=tuple(consts)), part[0][1], part[0][2]))
    return out


def simplify_terms(space, terms):
    """Before classification: fold constants, drop zero terms, fix delta-restricted
    labels, and cancel terms of one pattern whose constants sum to zero."""
    out = []
    for t in terms:
        t = _fold_consts(space, t)
        t = T.restrict_deltas(t, space.sizes)
        if t is not None:
            out.append(T.compress(t, space.sizes))
    groups = defaultdict(list)
    for t in out:
        if not t.atoms:
            groups[("const", id(t))].append((t, None, None))
            continue
        sig, atoms, ren = _canonical(t)
        groups[sig].append((t, atoms, ren))
    result = []
    for sig, members in groups.items():
        if members[0][1] is None:
            result.append(members[0][0])
            continue
        for t, _, _ in _add_same_index(members):
            if t.consts and len(t.consts) == 1 and T.is_concrete(t.consts[0][0]) \
                    and not np.any(np.asarray(t.consts[0][0])):
                continue
            result.append(t)
    return result


def _shared(arrs):
    """Whether ``arrs`` are one value: the same object, or equal closed-over constants
    (concrete arrays are never data: the analysis sees data only as abstract values)."""
    first = arrs[0]
    if all(a is first for a in arrs):
        return True
    if all(T.is_concrete(a) for a in arrs):
        a0 = np.asarray(first)
        return all(np.shape(a) == a0.shape and np.array_equal(np.asarray(a), a0)
                   for a in arrs[1:])
    return False


def merge_terms(space, terms):
    """Merge terms of one pattern: add constants (same indices) or stack along a new label."""
    groups = defaultdict(list)
    for t in terms:
        t = _fold_consts(space, t)
        sig, atoms, ren = _canonical(t)
        groups[sig].append((t, atoms, ren))
    out = []
    for sig, members in groups.items():
        members = _add_same_index(members)
        if len(members) == 1:
            out.append(members[0][0])
            continue
        t0, atoms0, ren0 = members[0]
        # stack along a new summed label s
        s = space.fresh(len(members))
        consts = []
        for ci, (c0, ls0) in enumerate(t0.consts):
            arrs = [T.host(m[0].consts[ci][0]) for m in members]
            if _shared(arrs):  # one array for every member: no stacked copies
                consts.append((c0, ls0))
                continue
            stacked = T.xp(*arrs).stack(arrs)
            consts.append((stacked, (s,) + ls0))
        atoms = []
        for ai, a0 in enumerate(atoms0):
            if all(m[1][ai].idx is None for m in members):
                atoms.append(a0)
                continue
            idxs = [m[1][ai].idx for m in members]
            if any(i is None for i in idxs):
                # mixed: fall back to keeping the group unmerged
                atoms = None
                break
            if all(T.is_concrete(i) for i in idxs):
                stacked = np.stack([np.asarray(i) for i in idxs])
            else:
                stacked = jnp.stack([jnp.asarray(i) for i in idxs])
            atoms.append(T.Atom(a0.latent, a0.stat, (s,) + a0.labels, stacked, a0.power))
        if atoms is None:
            out.extend(m[0] for m in members)
            continue
        out.append(T.Term(tuple(consts), tuple(atoms), t0.out, t0.src))
    return out
