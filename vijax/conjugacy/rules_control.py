"""Rules for control flow: cond, scan and while (plain calls such as jit, custom_jvp
and remat are walked through by :mod:`vijax.conjugacy.walker` itself)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vijax import _compat
from vijax.conjugacy import intervals
from vijax.conjugacy import terms as T
from vijax.conjugacy.algebra import (_dtype, _identity_index, _operand, _shape,
                                     broadcast_sym, reindex_sym)
from vijax.conjugacy.discrete import discrete_latents, nonlinear, tabulate
from vijax.conjugacy.values import Poison, is_sym, is_symbolic
from vijax.conjugacy.walker import registrar
from vijax.errors import UnsupportedPrimitiveError

RULES: dict = {}
register = registrar(RULES)


@register("cond")
def _cond(w, eqn, invals):
    index, *ops = invals
    if is_symbolic(index):
        if discrete_latents(w, [index]):
            return tabulate(w, eqn, invals)
        const = intervals.constant_index(w, index)
        if const is None:  # the branch taken varies over the support: not conjugate
            return nonlinear(w, eqn, invals, "the branch of a cond depends on the value of "
                              "a latent; a branch on a continuous latent has no conjugate form")
        index = const
    index = w.concrete(index)
    if not T.is_concrete(index):
        raise _compat_error(eqn, "a cond whose branch depends on traced data")
    branch = eqn.params["branches"][int(np.asarray(index))]
    jaxpr, consts = _compat.open_jaxpr(branch)
    return w.walk(jaxpr, consts, ops)


def _compat_error(eqn, what):
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
    nc, ncar = _compat.scan_counts(p)
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
    cn, bn = _compat.while_counts(p, cj, bj)
    cvals, bvals, carry = invals[:cn], invals[cn:cn + bn], list(invals[cn + bn:])
    for _ in range(100000):
        (keep,) = w.walk(cj, cconsts, list(cvals) + carry)
        if is_symbolic(keep):
            const = intervals.constant_index(w, keep)
            if const is None:  # the trip count varies over the support: not conjugate
                detail = ("the condition of a while loop depends on the value of a latent; "
                          "a data-dependent trip count has no conjugate form")
                return [w.poison("while", list(invals) + [keep], w.point(c), detail)
                        for c in carry]
            keep = const
        keep = w.concrete(keep)
        if not T.is_concrete(keep):
            raise _compat_error(eqn, "a while loop whose trip count depends on traced data")
        if not bool(keep):
            return carry
        carry = list(w.walk(bj, bconsts, list(bvals) + carry))
    raise _compat_error(eqn, "a while loop of more than 100000 iterations")
