"""Several terms as one matrix product (the data-sized part of a CAVI or EM step).

Terms of ``F`` that hold one large constant ``C`` (data: ``x``, ``x^2``, a design
matrix) and one statistic of a block differ only in their small factors. For the block's
gradient each such term is a product ``C[R, S] W_t[S, A]`` with ``R`` the labels ``C``
shares with the block's statistic, ``S`` the others and ``W_t`` the contraction of the
small factors; terms with the same layout are computed together as

    [C_1 | C_2 | ...] @ [W_1; W_2; ...],

one pass over the data instead of one per term (the hand-written mixture updates stack
``[x, x^2]`` the same way). The same stacking serves the contraction of the data with the
mean parameters of a block (``C^T M``, EM's expected sufficient statistics).
"""

from __future__ import annotations

import math
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from vijax.conjugacy import terms as T


def _split(c_labels, other_labels):
    shared = [l for l in other_labels if l in c_labels]
    return shared, [l for l in c_labels if l not in other_labels]


def _matrix(arr, labels, rows, cols, sizes):
    """``arr`` with axes ``rows + cols`` as a 2-D matrix."""
    perm = [labels.index(l) for l in rows + cols]
    nrow = math.prod(sizes[l] for l in rows)
    return jnp.reshape(jnp.transpose(jnp.asarray(arr), perm), (nrow, -1))


def _big_const(t: T.Term):
    """``(C, labels, extras)``: the term's one data-sized constant (distinct labels) and
    its other constants, when those are closed-over arrays smaller than ``C`` (scalars,
    the 0/1 spreading matrix of a packed ``x x^T``); else None."""
    if not t.consts:
        return None
    sized = sorted(range(len(t.consts)), key=lambda i: -int(np.size(t.consts[i][0])))
    c, ls = t.consts[sized[0]]
    if jnp.ndim(c) < 1 or len(set(ls)) != len(ls):
        return None
    extras = tuple(t.consts[i] for i in sized[1:])
    if any(not T.is_concrete(e) or int(np.size(e)) >= int(np.size(c)) for e, _ in extras):
        return None
    return c, tuple(ls), extras


def _orient(cl, rows, s_labels):
    """How ``C`` (labels ``cl``) reads as a matrix without moving data: "rs" when its
    row labels all come first, "sr" when they all come last, else None (transposed)."""
    kinds = [0 if l in rows else 1 for l in cl]
    if kinds == sorted(kinds):
        return "rs"
    if kinds == sorted(kinds, reverse=True):
        return "sr"
    return None


#: constants of one product layout whose contracted width (``S``) is at most this are
#: stacked (``[x | x^2] @ [W_1; W_2]``: one product of a better shape than two thin ones);
#: wider ones (``x_n x_n^T``, ``D^2`` columns) are multiplied where they are stored, as
#: stacking copies them on every evaluation
STACK_WIDTH = 32


def _products(members, orient, stats, sizes):
    """``(C, W)`` matrix pairs whose products sum to the group's gradient: members that
    share one constant add their ``W``; thin distinct constants are stacked."""
    by_const = {}
    for t, atom, c, cl, rows, s_labels, cols, others, extras, _ in members:
        nrow = math.prod(sizes[l] for l in rows)
        ops = [(T.atom_operand(a, stats), a.labels) for a in others] + list(extras)
        w = T._einsum(ops, tuple(s_labels + cols), sizes)
        w = jnp.reshape(jnp.asarray(w), (math.prod(sizes[l] for l in s_labels), -1))
        key = id(c)  # one constant: its rows and columns in one order (the group's)
        if key in by_const:
            by_const[key] = (by_const[key][0], by_const[key][1] + w)
            continue
        if orient == "sr":
            cmat = jnp.reshape(jnp.asarray(c), (-1, nrow))
        elif orient == "rs":
            cmat = jnp.reshape(jnp.asarray(c), (nrow, -1))
        else:
            cmat = _matrix(c, list(cl), rows, s_labels, sizes)
        by_const[key] = (cmat, w)
    axis = 0 if orient == "sr" else 1
    thin = [(c, w) for c, w in by_const.values() if c.shape[axis] <= STACK_WIDTH]
    wide = [(c, w) for c, w in by_const.values() if c.shape[axis] > STACK_WIDTH]
    if len(thin) > 1:
        thin = [(jnp.concatenate([c for c, _ in thin], axis),
                 jnp.concatenate([w for _, w in thin], 0))]
    return thin + wide



def block_gradients(terms, stats, name, sizes):
    """``{stat: d/dmu_name sum_t F_t}`` over the terms that fit the product layout, and
    the list of terms that do not (for the caller's per-term path).

    The large constant is read in its stored layout (a transposed copy of an ``N x D^2``
    constant costs more than the product): ``C[R, S] W[S, A]`` when its row labels come
    first, ``W^T C[S, R]`` when they come last."""
    groups = defaultdict(list)
    rest = []
    for t in terms:
        mine = [a for a in t.atoms if a.latent == name]
        big = _big_const(t)
        if any(l not in t.labels() for l in t.out):  # a broadcast output label scales F
            rest.append(t)
            continue
        if len(mine) != 1 or big is None or mine[0].idx is not None or mine[0].power != 1.0:
            rest.append(t)
            continue
        atom = mine[0]
        c, cl, extras = big
        rows, s_labels = _split(cl, atom.labels)
        post = ()
        if not rows and extras:  # rows: the labels C shares with its small constants
            ext = set().union(*(ls for _, ls in extras))
            rows = [l for l in cl if l in ext]
            s_labels = [l for l in cl if l not in ext]
            post, extras = extras, ()
        others = [a for a in t.atoms if a is not atom]
        beside = [ls for _, ls in extras] + [a.labels for a in others]
        if not rows or not s_labels or len(set(atom.labels)) != len(atom.labels) or any(
                l in rows for ls in beside for l in ls):
            rest.append(t)
            continue
        orient = _orient(cl, rows, s_labels)
        if orient is not None:  # rows and s in the constant's own order
            rows = [l for l in cl if l in rows]
            s_labels = [l for l in cl if l in s_labels]
        need = set(atom.labels).union(*(ls for _, ls in post))
        cols = [l for l in dict.fromkeys(l for ls in beside for l in ls)
                if l in need and l not in cl] if post else \
            [l for l in atom.labels if l not in cl]
        key = (atom.stat, orient, tuple(atom.labels.index(l) for l in rows),
               tuple(atom.labels.index(l) for l in cols)) if not post else ("post", id(t))
        groups[key].append((t, atom, c, cl, rows, s_labels, cols, others, extras, post))
    grads = {}
    for key, members in groups.items():
        t, atom, _, _, rows, _, cols, _, _, post = members[0]
        orient = key[1] if not post else _orient(members[0][3], rows, members[0][5])
        order = cols + rows if orient == "sr" else rows + cols
        prod = None
        for cmat, w in _products(members, orient, stats, sizes):
            if orient == "sr":  # W^T C: contract the leading axes, C never transposed
                p = jax.lax.dot_general(w, cmat, (((0,), (0,)), ((), ())))
            else:
                p = cmat @ w
            prod = p if prod is None else prod + p
        g = jnp.reshape(prod, [sizes[l] for l in order])
        if post:
            g = T._einsum([(g, tuple(order))] + list(post), atom.labels, sizes)
        else:
            g = jnp.transpose(g, [order.index(l) for l in atom.labels])
        stat = atom.stat
        grads[stat] = grads[stat] + g if stat in grads else g
    return grads, rest


def contract_with_block(items, sizes):
    """Contract each ``(C, c_labels, M, m_labels, keep)`` over the labels ``C`` and ``M``
    share and are not kept; items with the same ``M`` layout share one ``C^T M`` product.
    Returns the results (labels ``keep``) in order, None where an item does not fit (the
    caller contracts those itself)."""
    out = [None] * len(items)
    groups = defaultdict(list)
    for i, (c, cl, m, ml, keep) in enumerate(items):
        cl, ml = list(cl), list(ml)
        if len(set(cl)) != len(cl) or len(set(ml)) != len(ml):
            continue
        rows = [l for l in ml if l in cl and l not in keep]
        c_keep = [l for l in cl if l not in rows]
        m_keep = [l for l in ml if l not in rows]
        if not rows or not c_keep or any(l not in keep for l in c_keep + m_keep) \
                or set(c_keep) & set(m_keep) or sorted(keep) != sorted(c_keep + m_keep):
            continue
        groups[(id(m), tuple(rows), tuple(m_keep))].append((i, c, cl, rows, c_keep, m_keep, m, ml))
    for (_, rows, m_keep), members in groups.items():
        rows, m_keep = list(rows), list(m_keep)
        mm = _matrix(members[0][6], members[0][7], rows, m_keep, sizes)
        cms = [_matrix(c, cl, rows, c_keep, sizes) for _, c, cl, _, c_keep, _, _, _ in members]
        prod = jnp.concatenate(cms, 1).T @ mm
        start = 0
        for (i, _, _, _, c_keep, _, _, _), cm_i in zip(members, cms):
            width = cm_i.shape[1]
            block = jnp.reshape(prod[start:start + width],
                                [sizes[l] for l in c_keep + m_keep])
            start += width
            keep = items[i][4]
            order = c_keep + m_keep
            out[i] = jnp.transpose(block, [order.index(l) for l in keep])
    return out


# --------------------------------------------------------------------------- merging
# A term's constants that share a label (``x[n, i] x[n, j]`` in ``sum_n r_nk x_n^T L_k x_n``)
# are contracted every time the term is (K copies of ``x_n x_n^T`` per sweep, inside a
# 3-operand einsum). Their product is a constant of F: formed once, by the data program.

def _size(labels, sizes):
    return math.prod(sizes[l] for l in labels)


def contraction_cost(ops, out, sizes):
    """``(flops, largest intermediate)`` of the cheapest pairwise order contracting the
    operands' label sets ``ops`` onto the labels ``out`` (a step costs the product of the
    sizes of the labels it touches; exhaustive search, fine for the few operands of a
    term)."""
    out = frozenset(out)
    memo = {}

    def best(state):
        if len(state) == 1:
            (only,) = state
            return (0 if only == out else _size(only, sizes)), 0
        if state in memo:
            return memo[state]
        items = list(state)
        result = None
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                rest = items[:i] + items[i + 1:j] + items[j + 1:]
                union = items[i] | items[j]
                needed = set(out).union(*rest) if rest else out
                keep = frozenset(l for l in union if l in needed)
                f, m = best(tuple(sorted(rest + [keep], key=sorted)))
                inter = _size(keep, sizes) if rest else 0
                cand = (_size(union, sizes) + f, max(m, inter))
                if result is None or cand < result:
                    result = cand
        memo[state] = result
        return result

    return best(tuple(sorted((frozenset(o) for o in ops), key=sorted)))


def _components(consts):
    """Indices of the non-scalar constants grouped by shared labels."""
    idx = [i for i, (c, ls) in enumerate(consts) if ls]
    groups = []
    for i in idx:
        labs = set(consts[i][1])
        hit = [g for g in groups if labs & g[1]]
        merged = ([i], labs)
        for g in hit:
            groups.remove(g)
            merged = (merged[0] + g[0], merged[1] | g[1])
        groups.append(merged)
    return [sorted(g[0]) for g in groups if len(g[0]) > 1]


#: a merged constant is kept when each of its entries serves at least this many
#: multiply-adds per use (``K`` in ``sum_n r_nk x_n^T L_k x_n``: one GEMM over ``x_n x_n^T``;
#: ``w_n x_n^T L x_n`` has 1 and stays ``x`` read twice, cheaper to stream) ...
MIN_REUSE = 2.0
#: ... and it is at most this many times the constants it replaces (or no larger than an
#: intermediate the unmerged contraction builds anyway)
MAX_GROWTH = 32


def _merge_pays(t: T.Term, group, keep, sizes):
    """Whether the product of the constants ``group`` (labels ``keep``) makes every use of
    the term (its value and each atom's gradient) no costlier in flops, and either is no
    larger than an intermediate that the unmerged contraction builds anyway or is reused
    enough (:data:`MIN_REUSE`) without growing past :data:`MAX_GROWTH`."""
    consts = [ls for _, ls in t.consts]
    merged = [ls for i, ls in enumerate(consts) if i not in group] + [keep]
    atoms = [a.labels for a in t.atoms]
    targets = [(atoms, t.out)] + [(atoms[:i] + atoms[i + 1:], atoms[i])
                                  for i, a in enumerate(t.atoms) if a.idx is None]
    size = _size(keep, sizes)
    biggest, reuse = 0, math.inf
    for others, out in targets:
        f0, m0 = contraction_cost(consts + others, out, sizes)
        f1, _ = contraction_cost(merged + others, out, sizes)
        if f1 > f0:
            return False
        biggest, reuse = max(biggest, m0), min(reuse, f1 / max(size, 1))
    inputs = sum(_size(consts[i], sizes) for i in group)
    return size <= biggest or (reuse >= MIN_REUSE and size <= MAX_GROWTH * inputs)


def _symmetric_pair(t: T.Term, group, keep):
    """``(array, labels, i, j)`` when ``group`` is one array read twice, ``x[.., i]`` and
    ``x[.., j]`` (the same other labels, both kept): its product is symmetric in i, j."""
    if len(group) != 2:
        return None
    (c1, l1), (c2, l2) = (t.consts[g] for g in group)
    if c1 is not c2 or len(l1) != len(l2) or len(set(l1)) != len(l1):
        return None
    diff = [k for k in range(len(l1)) if l1[k] != l2[k]]
    if len(diff) != 1 or l1[diff[0]] in l2 or l2[diff[0]] in l1:
        return None
    i, j = l1[diff[0]], l2[diff[0]]
    if i not in keep or j not in keep or set(keep) != set(l1) | {j}:
        return None
    return c1, l1, i, j


def _packed(t, group, scalars, sym, sizes, fresh):
    """The term with ``x[.., i] x[.., j]`` stored once per unordered pair: ``P[.., p]`` over
    the D(D+1)/2 pairs ``i <= j``, and the 0/1 constant ``U[p, i, j]`` (1 at (i_p, j_p) and
    (j_p, i_p)) that spreads it back, so ``sum_p P U = x x^T`` exactly, for any statistic
    (the products over the pairs halve)."""
    c, ls, i, j = sym
    d = sizes[i]
    iu, ju = np.triu_indices(d)
    p = fresh(len(iu))
    ax = ls.index(i)
    arr = jnp.asarray(c) if not T.is_concrete(c) else np.asarray(c)
    lib = T.xp(arr)
    prod = lib.take(arr, iu, axis=ax) * lib.take(arr, ju, axis=ax)
    for k in scalars:
        prod = prod * t.consts[k][0]
    spread = np.zeros((len(iu), d, d))
    spread[np.arange(len(iu)), iu, ju] = 1.0
    spread[np.arange(len(iu)), ju, iu] = 1.0
    plabels = ls[:ax] + (p,) + ls[ax + 1:]
    rest = tuple(x for k, x in enumerate(t.consts) if k not in group and k not in scalars)
    return t.with_(consts=rest + ((prod, plabels), (spread.astype(prod.dtype), (p, i, j))))


def merge_constants(t: T.Term, sizes, fresh=None) -> T.Term:
    """``t`` with each group of constants that share labels replaced by their product
    (contracted over the labels no other operand or the output carries; scalars folded
    in), where :func:`_merge_pays`. Exact: the same sum of products, associated
    differently. With ``fresh(size) -> label``, a symmetric product ``x_i x_j`` is stored
    packed (:func:`_packed`)."""
    if len(t.consts) < 2 or len(t.consts) + len(t.atoms) > 6:
        return t
    for group in _components(t.consts):
        other = set(t.out).union(*(a.labels for a in t.atoms))
        other.update(l for i, (_, ls) in enumerate(t.consts) if i not in group for l in ls)
        keep = tuple(dict.fromkeys(l for i in group for l in t.consts[i][1] if l in other))
        if not _merge_pays(t, group, keep, sizes):
            continue
        scalars = [i for i, (_, ls) in enumerate(t.consts) if not ls]
        sym = _symmetric_pair(t, group, keep) if fresh is not None else None
        if sym is not None and sizes[sym[2]] > 1:
            return _packed(t, group, scalars, sym, sizes, fresh)
        use = group + scalars
        prod = T._einsum([t.consts[i] for i in use], keep, sizes)
        rest = tuple(c for i, c in enumerate(t.consts) if i not in use)
        return merge_constants(t.with_(consts=rest + ((prod, keep),)), sizes, fresh)
    return t


def merge_data_constants(compiled):
    """The compiled form with :func:`merge_constants` applied to every term (run in the
    data -> constants program, so the products are computed once per data set)."""
    import dataclasses
    sizes = dict(compiled.sizes)

    def fresh(size):
        label = max(sizes) + 1
        sizes[label] = int(size)
        return label

    terms = [merge_constants(t, sizes, fresh) for t in compiled.terms]
    return dataclasses.replace(compiled, terms=terms, sizes=sizes)
