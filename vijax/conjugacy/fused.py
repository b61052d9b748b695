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

import jax.numpy as jnp

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
    """The term's only constant when it has distinct labels, else None."""
    if len(t.consts) != 1:
        return None
    c, ls = t.consts[0]
    if jnp.ndim(c) < 1 or len(set(ls)) != len(ls):
        return None
    return c, tuple(ls)


def block_gradients(terms, stats, name, sizes):
    """``{stat: d/dmu_name sum_t F_t}`` over the terms that fit the product layout, and
    the list of terms that do not (for the caller's per-term path)."""
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
        c, cl = big
        rows, s_labels = _split(cl, atom.labels)
        others = [a for a in t.atoms if a is not atom]
        if not rows or not s_labels or len(set(atom.labels)) != len(atom.labels) or any(
                l in rows for a in others for l in a.labels):
            rest.append(t)
            continue
        cols = [l for l in atom.labels if l not in cl]
        key = (atom.stat, tuple(atom.labels.index(l) for l in rows),
               tuple(atom.labels.index(l) for l in cols))
        groups[key].append((t, atom, c, cl, rows, s_labels, cols, others))
    grads = {}
    for (stat, _, _), members in groups.items():
        cm, wm = [], []
        for t, atom, c, cl, rows, s_labels, cols, others in members:
            cm.append(_matrix(c, list(cl), rows, s_labels, sizes))
            ops = [(T.atom_operand(a, stats), a.labels) for a in others]
            w = T._einsum(ops, tuple(s_labels + cols), sizes)
            wm.append(jnp.reshape(jnp.asarray(w), (cm[-1].shape[1], -1)))
        prod = jnp.concatenate(cm, 1) @ jnp.concatenate(wm, 0)
        t, atom, _, _, rows, _, cols, _ = members[0]
        g = jnp.reshape(prod, [sizes[l] for l in rows + cols])
        order = rows + cols
        g = jnp.transpose(g, [order.index(l) for l in atom.labels])
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
