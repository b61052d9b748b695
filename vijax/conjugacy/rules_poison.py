"""Rules for equations with an already non-conjugate input (a :class:`Poison`).

A Poison is ``good + bad``: a Sym part and a part known only at the canonical point.
Operations that act on each summand separately keep the split (sums, and the ops that
are linear in their single symbolic operand); predicates on a Poison are refused by
:mod:`vijax.conjugacy.intervals`; anything else poisons its output whole.
:func:`route` sends every equation with a Poison input here, whatever its primitive.
"""

from __future__ import annotations

import jax.numpy as jnp

from vijax import _compat
from vijax.conjugacy import intervals
from vijax.conjugacy.rules import add, rounds
from vijax.conjugacy.rules_nonlinear import PREDICATES
from vijax.conjugacy.values import Poison, is_sym, is_symbolic

#: sums: constants join the good part, so that the bad part stays centred
SUMS = ("add", "sub", "add_any")
#: linear in their single symbolic operand: applied to the good and bad parts separately
PASS_THROUGH = ("neg", "reduce_sum", "convert_element_type", "reshape", "squeeze",
                "broadcast_in_dim", "transpose", "copy", "copy_p")


def route(eqn, invals):
    """The rule for an equation with a Poison input (None when it has none)."""
    if not any(isinstance(v, Poison) for v in invals):
        return None
    name = eqn.primitive.name
    if name in PREDICATES or (name == "convert_element_type" and rounds(eqn, invals[0])):
        return intervals.resolve_predicate
    if name in SUMS:
        return _sum
    if name in PASS_THROUGH and sum(is_symbolic(v) for v in invals) == 1:
        return _pass_through
    return _poison_all


def _parts(w, invals):
    """(good parts, bad parts at the point, reasons) of every input."""
    goods, points, reasons = [], [], []
    for v in invals:
        if isinstance(v, Poison):
            goods.append(v.good)
            points.append(v.point)
            reasons.extend(v.reasons)
        elif is_sym(v):
            goods.append(v)
            points.append(jnp.zeros(v.shape, v.dtype))
        else:
            goods.append(None)
            points.append(w.concrete(v))
    return goods, points, reasons


def _split(eqn, good, points, reasons):
    pt = _compat.bind_eqn(eqn, points)
    return Poison(tuple(jnp.shape(pt)), jnp.result_type(pt), good, pt, tuple(reasons))


def _sum(w, eqn, invals):
    goods, points, reasons = _parts(w, invals)
    goods = [g if g is not None or isinstance(v, Poison) else w.to_sym(v)
             for g, v in zip(goods, invals)]
    points = [p if isinstance(v, Poison) else jnp.zeros(jnp.shape(p), jnp.result_type(p))
              for p, v in zip(points, invals)]
    good = add(w, eqn, goods) if any(g is not None for g in goods) else None
    return _split(eqn, good, points, reasons)


def _pass_through(w, eqn, invals):
    goods, points, reasons = _parts(w, invals)
    good = w.table.rules[eqn.primitive.name](w, eqn, goods) if goods[0] is not None else None
    return _split(eqn, good, points, reasons)


def _poison_all(w, eqn, invals):
    name = eqn.primitive.name
    point_out = _compat.bind_eqn(eqn, [w.point(v) for v in invals])
    if eqn.primitive.multiple_results:
        return [w.poison(name, invals, p, "non-multilinear") for p in point_out]
    return w.poison(name, invals, point_out, "value depends on a non-conjugate term")
