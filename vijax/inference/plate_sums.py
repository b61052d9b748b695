"""Which constants of ``F`` are sums over the data's plate, read from the jaxpr.

SVI scales a minibatch's per-observation part of ``F`` by ``N / B``. That is valid for a
constant ``c`` of ``F`` (a term's coefficient, or ``F``'s constant) only when, for every
data set of these shapes, ``c = p + sum_n g(x_n)`` with ``p`` and ``g`` fixed by the model:
its **prior part** ``p`` stays, its **plate part** is scaled. Which form a constant has is
read from the program that computes the constants from the data (``Program.materialize``),
traced for minibatches of ``B``, ``2B`` and ``M`` rows (``M = N``, or ``3B`` when
``N <= 2B``) and walked in lockstep. Every value gets a class:

- ``FREE``: the same in all three programs, never reads plate-carrying data (its value is
  computed: literals, the program's constants, data leaves without the plate);
- ``ROW``: has the plate axis (sizes ``B, 2B, M`` at one position) and row ``n`` depends
  only on row ``n`` of the data (elementwise maps, broadcasts of free values, gathers by
  per-row indices, reshapes that keep rows);
- ``SUM``: ``p + sum_n g(x_n)`` (sums of rows over the plate axis, ``X^T X``, and any
  *linear* map of such values with free coefficients); ``p`` (its free part) is computed
  alongside. A literal that differs between the programs is a ``SUM`` only when it is
  affine in the batch size at the three sizes (``1 + B/2``: a count merged with a prior);
- ``OTHER``: anything else (``jnp.mean(x)`` = ``sum / B``, ``(sum_n x_n)^2``, cumulative
  sums or slices along the plate, a row times a plate sum): refused where it reaches ``F``.

Nothing here reads a data value of the plate: classes come from primitives, shapes and the
model's own constants.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np

from vijax import _compat
from vijax.conjugacy import host_eval
from vijax.conjugacy.walker import CALL_PRIMITIVES

FREE, ROW, SUM, OTHER = "free", "row", "sum", "other"

#: elementwise primitives: rows stay rows; anything non-linear on a plate sum is OTHER
ELEMENTWISE = frozenset(host_eval.ELEMENTWISE_NUMPY) | {
    "integer_pow", "pow", "div", "select_n", "lgamma", "digamma", "erf", "erfc", "erf_inv",
    "tanh", "logistic", "sin", "cos", "tan", "atan", "atan2", "asin", "acos", "sinh",
    "cosh", "asinh", "acosh", "atanh", "clamp", "round", "rem", "cbrt", "exp2",
    "polygamma", "igamma", "igammac", "bessel_i0e", "bessel_i1e", "random_gamma_grad",
    "nextafter", "population_count", "shift_left", "shift_right_logical",
    "shift_right_arithmetic", "convert_element_type", "copy", "copy_p", "reduce_precision",
    "real", "imag", "conj", "square", "add_any"}
#: class-preserving maps (linear in each value, one operand)
_UNARY_LINEAR = frozenset({"neg", "convert_element_type", "copy", "copy_p",
                           "reduce_precision", "real", "imag", "conj"})
#: reductions or scans that mix the rows when they run along the plate axis
_MIXING = frozenset({"reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
                     "argmax", "argmin", "cumsum", "cumprod", "cummax", "cummin",
                     "cumlogsumexp", "sort", "top_k", "reduce_xor"})
#: params holding a nested jaxpr (walked, not compared)
_CALL_PARAMS = frozenset({"jaxpr", "call_jaxpr", "fun_jaxpr"})


def _same_param(vals, sizes) -> bool:
    """Whether an equation's param is the same in the three programs, up to the plate's
    size (``(B, 2B, M)`` at the same position of a shape-like tuple)."""
    v1 = vals[0]
    if all(isinstance(v, (tuple, list)) for v in vals):
        return len({len(v) for v in vals}) == 1 and all(
            _same_param(list(x), sizes) for x in zip(*vals))
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
        return len(set(vals)) == 1 or tuple(vals) == tuple(sizes)
    if any(hasattr(v, "eqns") or hasattr(v, "jaxpr") for v in vals):
        return True  # a nested program (scan, cond): the same analysis traced it
    try:
        return all(bool(v == v1) for v in vals[1:])
    except Exception:  # noqa: BLE001 - values without equality: compared by identity
        return all(v is v1 for v in vals[1:])


class Structure(Exception):
    """The programs for two batch sizes are not the same program."""


class Value(NamedTuple):
    cls: str
    val: Any = None  # FREE: the value; SUM: the free part p; else None


def _shapes(vs):
    return [tuple(v.aval.shape) for v in vs]


class _Sizes(NamedTuple):
    b: int
    b2: int
    m: int

    def plate_axis(self, shapes):
        """The plate axis of a value with ``shapes`` in the three programs: an int, None
        (no plate axis), or False (sizes that follow no rule: OTHER)."""
        s1, s2, s3 = shapes
        if not len(s1) == len(s2) == len(s3):
            raise Structure(f"ranks {len(s1)}, {len(s2)}, {len(s3)}")
        axes = []
        for i, (a, b, c) in enumerate(zip(s1, s2, s3)):
            if (a, b, c) == (self.b, self.b2, self.m):
                axes.append(i)
            elif not a == b == c:
                return False
        return axes[0] if len(axes) == 1 else (None if not axes else False)


def _tol(x):
    x = np.asarray(x)
    eps = np.finfo(x.dtype).eps if np.issubdtype(x.dtype, np.floating) else 0.0
    return 64 * eps * (np.max(np.abs(x)) if x.size else 0.0) + 64 * eps


def classify_constant(vals, sizes: _Sizes) -> Value:
    """A literal or model constant seen in the three programs."""
    v1, v2, v3 = (np.asarray(v) for v in vals)
    ax = sizes.plate_axis((v1.shape, v2.shape, v3.shape))
    if ax is False:
        return Value(OTHER)
    if ax is not None:  # a free row broadcast along the plate: equal rows, equal programs
        rows = [np.moveaxis(v, ax, 0) for v in (v1, v2, v3)]
        same = all(np.array_equal(r, r[:1].repeat(len(r), 0)) for r in rows) and \
            np.array_equal(rows[0][:1], rows[1][:1]) and np.array_equal(rows[0][:1], rows[2][:1])
        return Value(ROW) if same else Value(OTHER)
    if np.array_equal(v1, v2) and np.array_equal(v1, v3):
        return Value(FREE, v1)
    if not np.issubdtype(v1.dtype, np.floating):
        return Value(OTHER)
    # affine in the batch size: v(B) = p + s B at B, 2B and M
    p = 2 * v1 - v2
    pred = p + (sizes.m / sizes.b) * (v1 - p)
    if np.all(np.abs(pred - v3) <= _tol(v3)):
        return Value(SUM, p.astype(v1.dtype))
    return Value(OTHER)


def _evaluate(eqn, vals):
    out = host_eval.evaluate(eqn, vals)
    if out is not None:
        return [out]
    res = _compat.bind_eqn(eqn, vals)
    return list(res) if eqn.primitive.multiple_results else [res]


def _zeros(v):
    return np.zeros(tuple(v.aval.shape), np.dtype(v.aval.dtype))


def _join_add(classes):
    """add / sub / concatenate / select cases: rows with rows and free values, sums with
    sums and free values."""
    s = set(classes)
    if OTHER in s or (ROW in s and SUM in s):
        return OTHER
    return ROW if ROW in s else (SUM if SUM in s else FREE)


def _rule(eqn, ins, in_axes, out_axes):
    """The output class of one equation (all outputs share it)."""
    name = eqn.primitive.name
    cls = [v.cls for v in ins]
    s = set(cls)
    if OTHER in s or any(a is False for a in out_axes):
        return OTHER
    if s <= {FREE}:
        # a free value that grows with the batch: a broadcast row, or (iota) positions
        if any(a is not None for a in out_axes):
            return ROW if name == "broadcast_in_dim" else OTHER
        return FREE
    p = eqn.params
    out_ax = out_axes[0] if len(out_axes) == 1 else None
    if name in _UNARY_LINEAR:
        return cls[0]
    if name in ("add", "sub", "add_any"):
        return _join_add(cls)
    if name == "mul":
        if s <= {ROW, FREE}:
            return ROW
        return SUM if sorted(cls) == [FREE, SUM] else OTHER
    if name == "div":
        if s <= {ROW, FREE}:
            return ROW
        return SUM if cls == [SUM, FREE] else OTHER
    if name == "select_n":
        if cls[0] == SUM:
            return OTHER
        return _join_add(cls)
    if name in ELEMENTWISE:
        return ROW if s <= {ROW, FREE} else OTHER
    if name == "broadcast_in_dim":
        if cls[0] == ROW:
            return ROW if p["broadcast_dimensions"][in_axes[0]] == out_ax else OTHER
        return SUM if out_ax is None else OTHER
    if name in ("reshape", "squeeze", "expand_dims"):
        if cls[0] == SUM:
            return SUM if out_ax is None else OTHER
        ins_shape, out_shape = tuple(eqn.invars[0].aval.shape), tuple(eqn.outvars[0].aval.shape)
        if out_ax is None:
            return OTHER
        keeps = (math.prod(ins_shape[:in_axes[0]]) == math.prod(out_shape[:out_ax])
                 and math.prod(ins_shape[in_axes[0] + 1:]) == math.prod(out_shape[out_ax + 1:]))
        return ROW if keeps else OTHER
    if name == "transpose":
        return cls[0]
    if name == "reduce_sum":
        if cls[0] == ROW:
            return SUM if in_axes[0] in p["axes"] else ROW
        return SUM
    if name in _MIXING:
        if cls[0] != ROW:
            return OTHER
        along = p.get("axes", (p.get("axis", p.get("dimension")),))
        return OTHER if in_axes[0] in tuple(np.atleast_1d(along)) else ROW
    if name == "dot_general":
        return _dot_rule(eqn, cls, in_axes)
    if name == "concatenate":
        c = _join_add(cls)
        return OTHER if c == ROW and p["dimension"] == out_ax else c
    if name == "pad":
        if cls[1] != FREE:
            return OTHER
        if cls[0] == ROW:
            return ROW if tuple(p["padding_config"][in_axes[0]]) == (0, 0, 0) else OTHER
        return cls[0]
    if name == "slice":
        if cls[0] != ROW:
            return cls[0]
        ax = in_axes[0]
        strides = p.get("strides") or (1,) * len(eqn.invars[0].aval.shape)
        full = (p["start_indices"][ax] == 0 and strides[ax] == 1
                and p["limit_indices"][ax] == eqn.invars[0].aval.shape[ax])
        return ROW if full and out_ax == ax else OTHER
    if name == "dynamic_slice":
        if any(c != FREE for c in cls[1:]):
            return OTHER
        if cls[0] == ROW:
            return ROW if p["slice_sizes"][in_axes[0]] == eqn.invars[0].aval.shape[in_axes[0]] \
                and out_ax == in_axes[0] else OTHER
        return cls[0]
    if name == "gather":
        operand, idx = cls[0], cls[1]
        if idx == FREE and operand == SUM:
            return SUM
        if operand == FREE and idx == ROW and out_ax is not None:
            return ROW  # each output row picks with its own row's index vector
        return OTHER
    return OTHER


def _dot_rule(eqn, cls, in_axes):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    a, b = cls
    la, ra = in_axes
    if {a, b} == {SUM, FREE}:
        return SUM
    if a == ROW and b == ROW:
        if la in lc and ra in rc and list(lc).index(la) == list(rc).index(ra):
            return SUM
        if la in lb and ra in rb and list(lb).index(la) == list(rb).index(ra):
            return ROW
        return OTHER
    if {a, b} == {ROW, FREE}:
        ax, contract = (la, lc) if a == ROW else (ra, rc)
        return OTHER if ax in contract else ROW
    return OTHER


def _walk(jaxprs: Sequence, consts: Sequence, ins: list, sizes: _Sizes) -> list:
    """Classify the outputs of the lockstep ``jaxprs`` (one per batch size) from their
    inputs' classes ``ins`` (with values from the first program)."""
    j1, j2, j3 = jaxprs
    if not len(j1.eqns) == len(j2.eqns) == len(j3.eqns):
        raise Structure(f"{len(j1.eqns)}, {len(j2.eqns)} and {len(j3.eqns)} equations")
    if not len(j1.constvars) == len(j2.constvars) == len(j3.constvars):
        raise Structure("different numbers of constants")
    env = {}
    for i, v in enumerate(j1.constvars):
        env[v] = classify_constant([c[i] for c in consts], sizes)
    for v, val in zip(j1.invars, ins):
        env[v] = val

    def read(vs):
        if _compat.is_literal(vs[0]):
            if not all(_compat.is_literal(v) for v in vs):
                raise Structure("a literal in one program only")
            return classify_constant([_compat.literal_value(v) for v in vs], sizes)
        return env[vs[0]]

    for eqns in zip(j1.eqns, j2.eqns, j3.eqns):
        e1 = eqns[0]
        if len({e.primitive.name for e in eqns}) != 1 or \
                len({len(e.invars) for e in eqns}) != 1:
            raise Structure(f"{[e.primitive.name for e in eqns]}")
        same = all(_same_param([e.params.get(k) for e in eqns], sizes)
                   for k in set(e1.params) - _CALL_PARAMS)
        ins_e = [read(vs) for vs in zip(*(e.invars for e in eqns))]
        subs = None
        if e1.primitive.name in CALL_PRIMITIVES:
            subs = [_compat.sub_jaxpr(e) for e in eqns]
        if subs is not None and all(len(s[0].invars) == len(ins_e) for s in subs):
            outs = _walk([s[0] for s in subs], [s[1] for s in subs], ins_e, sizes)
        else:
            outs = _equation(eqns, ins_e, sizes) if same else [Value(OTHER)] * len(e1.outvars)
        for v, o in zip(e1.outvars, outs):
            env[v] = o
    return [read(vs) for vs in zip(j1.outvars, j2.outvars, j3.outvars)]


def _equation(eqns, ins, sizes: _Sizes):
    e1 = eqns[0]
    in_axes = []
    for vs in zip(*(e.invars for e in eqns)):
        in_axes.append(sizes.plate_axis([tuple(np.shape(_compat.literal_value(v)))
                                         if _compat.is_literal(v) else tuple(v.aval.shape)
                                         for v in vs]))
    out_axes = [sizes.plate_axis(s) for s in zip(*(_shapes(e.outvars) for e in eqns))]
    cls = _rule(e1, ins, in_axes, out_axes)
    if cls == FREE:
        return [Value(FREE, o) for o in _evaluate(e1, [v.val for v in ins])]
    if cls == SUM:
        if all(v.cls != SUM for v in ins):  # a plate sum of rows: no free part
            return [Value(SUM, _zeros(v)) for v in e1.outvars]
        vals = [v.val if v.cls in (FREE, SUM) else None for v in ins]
        return [Value(SUM, np.asarray(o)) for o in _evaluate(e1, vals)]
    return [Value(cls) for _ in e1.outvars]


def classify(fns, specs, carries, values, sizes) -> list:
    """Per output of ``fns[k](*specs[k])`` (one function per batch size ``sizes[k]``,
    traced on the data's shapes ``specs[k]``): its :class:`Value`. ``carries``: which data
    leaves have the plate; the others are free, with their values from ``values`` (a
    minibatch's leaves; its plate-carrying leaves are not read).

    Raises :class:`Structure` when the three traces are not one program."""
    opened = [_compat.open_jaxpr(_compat.make_jaxpr(f, *ls)[0]) for f, ls in zip(fns, specs)]
    ins = []
    for leaf, c in zip(values, carries):
        if c:
            ins.append(Value(ROW))
        else:
            host = host_eval.host_array(leaf)
            ins.append(Value(FREE, leaf if host is None else host))
    return _walk([o[0] for o in opened], [o[1] for o in opened], ins, _Sizes(*sizes))
