"""Ranges of latent-dependent values over the declared supports (support guards).

A predicate on a continuous latent (``tau >= 0``, ``p != p``, ``floor(p)``) may be
resolved only when it takes the same value at **every** point of the support. This
module proves that by interval reasoning: the range of a symbolic value (a sum of
einsum terms of statistics) is bounded term by term from the ranges of its constant
operands and of its statistics (``tau`` in ``(0, inf)``, ``log p`` in ``(-inf, 0)``,
an element of a simplex in ``(0, 1)``, a simplex summed over its event axis is 1).

A :class:`Range` is a superset of the values, with open or closed ends (``tau > 0``
needs the open end at 0) and a flag for a possible NaN. Open infinite ends mean finite
values. Everything not understood is :data:`UNKNOWN` (any value, NaN included), so a
proof can only fail, never hold wrongly. Data are abstract (tracers): their range is
:data:`DATA`, any value but NaN, so a comparison of a latent with data is never proven
constant, while a NaN check of ``tau * x`` still is.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from vijax.conjugacy import host_eval
from vijax.conjugacy import terms as T

INF = math.inf


@dataclasses.dataclass(frozen=True)
class Range:
    """Values in ``lo .. hi`` (ends included when ``lo_in`` / ``hi_in``), or NaN if
    ``nan``. ``lo > hi`` means no non-NaN value."""

    lo: float
    hi: float
    lo_in: bool = True
    hi_in: bool = True
    nan: bool = False

    @property
    def empty(self):
        return self.lo > self.hi or (self.lo == self.hi and not (self.lo_in and self.hi_in))

    def point(self):
        """The single value if the range is one closed point without NaN, else None."""
        if not self.nan and self.lo == self.hi and self.lo_in and self.hi_in:
            return self.lo
        return None

    def finite(self):
        """True when every value is finite (no NaN, no attainable infinity)."""
        if self.nan:
            return False
        if self.empty:
            return True
        return (self.lo > -INF or not self.lo_in) and (self.hi < INF or not self.hi_in)


UNKNOWN = Range(-INF, INF, True, True, True)
# a value computed from the data, seen as an abstract (traced) array: any value, infinities
# included, but not NaN (float data are checked finite before every fit, ``check_data``;
# a NaN computed from valid data makes the log joint NaN whatever the latents)
DATA = Range(-INF, INF, True, True, False)
EMPTY = Range(INF, -INF, False, False, False)


def point_range(c):
    return Range(float(c), float(c))


def add(a: Range, b: Range) -> Range:
    nan = a.nan or b.nan or (a.hi == INF and a.hi_in and b.lo == -INF and b.lo_in) or \
        (b.hi == INF and b.hi_in and a.lo == -INF and a.lo_in)
    if a.empty or b.empty:
        return Range(INF, -INF, False, False, nan)
    lo, hi = a.lo + b.lo, a.hi + b.hi
    if math.isnan(lo) or math.isnan(hi):  # cannot happen for non-empty ranges
        return UNKNOWN
    # an attained infinite end plus any (finite) value of the other stays attained
    lo_in = (a.lo_in and b.lo_in) or (lo == -INF and ((a.lo == -INF and a.lo_in) or
                                                      (b.lo == -INF and b.lo_in)))
    hi_in = (a.hi_in and b.hi_in) or (hi == INF and ((a.hi == INF and a.hi_in) or
                                                     (b.hi == INF and b.hi_in)))
    return Range(lo, hi, lo_in, hi_in, nan)


def repeat_sum(a: Range, n: int) -> Range:
    """Range of a sum of ``n`` values each in ``a``."""
    if n == 0:
        return point_range(0.0)
    if n == 1 or a.empty:
        return a
    nan = a.nan or (a.hi == INF and a.hi_in and a.lo == -INF and a.lo_in)
    return Range(a.lo * n, a.hi * n, a.lo_in, a.hi_in, nan)


def mul(a: Range, b: Range) -> Range:
    nan = a.nan or b.nan
    if a.empty or b.empty:
        return Range(INF, -INF, False, False, nan)
    corners = []
    for x, x_in in ((a.lo, a.lo_in), (a.hi, a.hi_in)):
        for y, y_in in ((b.lo, b.lo_in), (b.hi, b.hi_in)):
            if (x == 0 and math.isinf(y)) or (y == 0 and math.isinf(x)):
                # limit of (near 0) * (large): the hull of the other corners and 0
                # covers it; 0 itself is reached when the zero end is reached
                zero_in = x_in if x == 0 else y_in
                inf_in = y_in if x == 0 else x_in
                nan = nan or (zero_in and inf_in)
                corners.append((0.0, zero_in))
                continue
            # an attained infinite end times any non-zero value of the other factor
            reached = (x_in and y_in) or (x == 0 and x_in) or (y == 0 and y_in) or \
                (math.isinf(y) and y_in and x != 0) or (math.isinf(x) and x_in and y != 0)
            corners.append((x * y, reached))
    lo = min(v for v, _ in corners)
    hi = max(v for v, _ in corners)
    lo_in = any(r for v, r in corners if v == lo)
    hi_in = any(r for v, r in corners if v == hi)
    return Range(lo, hi, lo_in, hi_in, nan)


def hull(a: Range, b: Range) -> Range:
    if a.empty:
        return Range(b.lo, b.hi, b.lo_in, b.hi_in, a.nan or b.nan)
    if b.empty:
        return Range(a.lo, a.hi, a.lo_in, a.hi_in, a.nan or b.nan)
    lo = min(a.lo, b.lo)
    hi = max(a.hi, b.hi)
    lo_in = (a.lo == lo and a.lo_in) or (b.lo == lo and b.lo_in)
    hi_in = (a.hi == hi and a.hi_in) or (b.hi == hi and b.hi_in)
    return Range(lo, hi, lo_in, hi_in, a.nan or b.nan)


# ----------------------------------------------------------------- values

def const_range(c) -> Range:
    """Range of a constant array; :data:`DATA` for a traced one (data are abstract)."""
    if c is None:
        return UNKNOWN
    if not T.is_concrete(c):
        return DATA
    arr = np.asarray(c)
    if arr.dtype.kind not in "biuf":
        return UNKNOWN
    if arr.size == 0:
        return EMPTY
    arr = arr.astype(np.float64)
    isnan = np.isnan(arr)
    if isnan.all():
        return Range(INF, -INF, False, False, True)
    return Range(float(np.nanmin(arr)), float(np.nanmax(arr)), True, True, bool(isnan.any()))


def atom_range(support, atom: T.Atom) -> Range:
    """Range of one statistic atom over the latent's declared support, from the
    interval the support class declares for one entry (``support.interval``)."""
    stat, p = atom.stat, float(atom.power)
    if p == 0:
        return point_range(1.0)
    if stat == "onehot":
        return Range(0.0, 1.0)
    if support.interval is None:
        return UNKNOWN
    lo, hi, lo_in, hi_in = support.interval
    if stat in ("log", "log1m"):
        if p != 1 or support.is_discrete:
            return UNKNOWN
        if stat == "log1m":  # the log of 1 - x
            lo, hi, lo_in, hi_in = 1.0 - hi, 1.0 - lo, hi_in, lo_in
        if lo != 0 or lo_in:  # values at or below 0: the log is -inf or NaN there
            return UNKNOWN
        return Range(-INF, math.log(hi) if hi < INF else INF, False, hi_in and hi < INF)
    if stat != "x":
        return UNKNOWN
    if lo < 0:  # the real line
        if float(p).is_integer() and p > 0:
            return Range(-INF, INF, False, False) if int(p) % 2 else Range(0.0, INF, True, False)
        return UNKNOWN  # 1/mu, sqrt(mu): infinite or NaN somewhere on the real line
    if p > 0:  # increasing on [0, inf)
        return Range(lo ** p, hi ** p, lo_in, hi_in)
    if lo == 0 and lo_in:  # 1/0 is attained
        return UNKNOWN
    return Range(hi ** p if hi < INF else 0.0, lo ** p if lo > 0 else INF,
                 hi_in and hi < INF, lo_in and lo > 0)


def _simplex_sums(w, t: T.Term):
    """Atoms of ``t`` that are a whole simplex summed over its event axis (value 1)."""
    out = set()
    for i, a in enumerate(t.atoms):
        sup = w.supports[a.latent]
        if not sup.unit_sum_event or a.stat != "x" or a.power != 1 or a.idx is not None:
            continue
        k = a.labels[-1]
        if k in t.out or k in a.labels[:-1]:
            continue
        elsewhere = any(k in ls for _, ls in t.consts) or any(
            k in b.labels for j, b in enumerate(t.atoms) if j != i)
        if not elsewhere:
            out.add(i)
    return out


def term_range(w, t: T.Term) -> Range:
    ones = _simplex_sums(w, t)
    r = point_range(1.0)
    present = set()
    for c, ls in t.consts:
        r = mul(r, const_range(c))
        present.update(ls)
    for i, a in enumerate(t.atoms):
        if i in ones:  # sum_k pi_k = 1 over the event label, which leaves the term
            present.update(a.labels[:-1])
            continue
        r = mul(r, atom_range(w.supports[a.latent], a))
        present.update(a.labels)
    n = 1
    for l in present - set(t.out):
        n *= w.space.sizes[l]
    return repeat_sum(r, n)


def value_range(w, v) -> Range:
    """Range over the supports of any walker value (Sym, constant, Lazy; Poison: UNKNOWN)."""
    from vijax.conjugacy.values import Poison
    from vijax.conjugacy.walker import Lazy
    if isinstance(v, Poison):
        return UNKNOWN
    if isinstance(v, Lazy):
        return const_range(v.base) if math.prod(v.shape) else EMPTY
    if isinstance(v, T.Sym):
        if math.prod(v.shape) == 0:
            return EMPTY
        r = point_range(0.0)
        consts = [t for t in v.terms if not t.atoms]
        if consts:  # atom-free terms together, densely: tighter than term by term
            dense = 0.0
            for t in consts:
                dense = dense + T.const_value(t, w.space.sizes)
            r = const_range(dense)
        for t in v.terms:
            if t.atoms:
                r = add(r, term_range(w, t))
        return r
    if isinstance(v, (bool, int, float)):
        return point_range(v) if not (isinstance(v, float) and math.isnan(v)) else \
            Range(INF, -INF, False, False, True)
    return const_range(v)


# ----------------------------------------------------------------- predicates

def _lt_always(a: Range, b: Range) -> bool:
    return a.hi < b.lo or (a.hi == b.lo and not (a.hi_in and b.lo_in))


def _le_always(a: Range, b: Range) -> bool:
    return a.hi <= b.lo


def _single(r: Range):
    return r.lo == r.hi and r.lo_in and r.hi_in


def _compare(name, a: Range, b: Range, same: bool) -> bool:
    """Whether ``a <name> b`` has one value at every point (NaN compares False, and
    True for ``ne``)."""
    nan_value = name == "ne"
    if same:  # x op x: only NaN can change the answer
        nonnan_value = name in ("eq", "le", "ge")
        return not a.nan or a.empty or nonnan_value == nan_value
    if a.empty or b.empty:  # no pair of non-NaN values: every position compares a NaN
        return True
    if name in ("gt", "ge"):
        name, a, b = {"gt": "lt", "ge": "le"}[name], b, a
    if name == "lt":
        value = True if _lt_always(a, b) else False if _le_always(b, a) else None
    elif name == "le":
        value = True if _le_always(a, b) else False if _lt_always(b, a) else None
    else:
        equal = True if (_single(a) and _single(b) and a.lo == b.lo) else \
            False if (_lt_always(a, b) or _lt_always(b, a)) else None
        value = None if equal is None else (equal if name == "eq" else not equal)
    if value is None:
        return False
    return not (a.nan or b.nan) or value == nan_value


def _floor_constant(r: Range) -> bool:
    if r.nan or r.empty:
        return not r.nan
    if math.isinf(r.lo) or math.isinf(r.hi):
        return False
    n = math.floor(r.lo)
    return r.hi < n + 1 or (r.hi == n + 1 and not r.hi_in)


def _ceil_constant(r: Range) -> bool:
    return _floor_constant(Range(-r.hi, -r.lo, r.hi_in, r.lo_in, r.nan))


def _round_constant(r: Range) -> bool:
    """Inside one open cell ``(n - 1/2, n + 1/2)`` (ties, either rounding mode, refused)."""
    if r.nan or r.empty:
        return not r.nan
    if math.isinf(r.lo) or math.isinf(r.hi):
        return False
    n = math.floor(r.lo + 0.5)
    if r.lo == n - 0.5 and r.lo_in:
        return False
    return r.hi < n + 0.5 or (r.hi == n + 0.5 and not r.hi_in)


def _sign_constant(r: Range) -> bool:
    if r.nan:
        return False
    zero = point_range(0.0)
    return r.empty or _lt_always(zero, r) or _lt_always(r, zero) or (_single(r) and r.lo == 0)


def _convert_constant(r: Range, new_dtype) -> bool:
    kind = np.dtype(new_dtype).kind
    zero = point_range(0.0)
    if kind == "b":  # x != 0 (NaN -> True)
        if _lt_always(zero, r) or _lt_always(r, zero):
            return True
        return not r.nan and _single(r) and r.lo == 0
    if kind in "iu":  # truncation toward zero
        if r.nan:
            return False
        if r.empty:
            return True
        if r.lo >= 0:
            return _floor_constant(r)
        if r.hi <= 0:
            return _ceil_constant(r)
        return (r.lo > -1 or (r.lo == -1 and not r.lo_in)) and \
            (r.hi < 1 or (r.hi == 1 and not r.hi_in))
    return r.point() is not None


def provably_constant(w, eqn, invals) -> bool:
    """Whether the (predicate or piecewise-constant) equation has one value at every
    point of the declared supports of the latents its inputs depend on."""
    name = eqn.primitive.name
    rs = [value_range(w, v) for v in invals]
    if all(r.point() is not None for r in rs):
        return True  # every input is one value (e.g. tau - tau, sum of a simplex)
    if name in ("eq", "ne", "lt", "le", "gt", "ge"):
        same = invals[0] is invals[1] or (eqn.invars[0] is eqn.invars[1]
                                          and not _is_literal(eqn.invars[0]))
        return _compare(name, rs[0], rs[1], same)
    if name == "is_finite":
        r = rs[0]
        return r.finite() or r.empty or (_single(r) and math.isinf(r.lo))
    if name == "sign":
        return _sign_constant(rs[0])
    if name == "floor":
        return _floor_constant(rs[0])
    if name == "ceil":
        return _ceil_constant(rs[0])
    if name == "round":
        return _round_constant(rs[0])
    if name == "convert_element_type":
        return _convert_constant(rs[0], eqn.params["new_dtype"])
    return False


def _integer_valued(w, v) -> bool:
    """A Sym that is an integer at every point: integer constants times positive integer
    powers of integer-valued latents (binary, count, categorical one-hots)."""
    if not isinstance(v, T.Sym):
        return False
    for t in v.terms:
        for c, _ in t.consts:
            if not T.is_concrete(c) or not np.all(np.mod(np.asarray(c), 1) == 0):
                return False
        for a in t.atoms:
            if not w.supports[a.latent].integer_valued or a.stat not in ("x", "onehot") \
                    or not float(a.power).is_integer() or a.power < 0:
                return False
    return True


def _is_literal(v):
    from vijax import _compat
    return _compat.is_literal(v)


def constant_index(w, v):
    """A latent-dependent index or predicate value that is one value over the support
    (evaluated at the canonical point, which lies in the support), else None."""
    if value_range(w, v).point() is None:
        return None
    return w.point(v)


def refusal_detail(w, eqn, invals) -> str:
    """Why a predicate on latents is refused (for the Poison's reason)."""
    from vijax.conjugacy.values import Poison
    name = eqn.primitive.name
    if any(isinstance(v, Poison) for v in invals):
        return (f"'{name}' tests a value that is already non-conjugate; its result is not "
                "known to be the same over the whole support")
    lats = sorted({n for v in invals if isinstance(v, T.Sym) for n in v.latents()})
    sups = ", ".join(f"{n} in {w.supports[n]}" for n in lats)
    what = "rounds" if name in ("sign", "floor", "ceil", "round", "convert_element_type") \
        else "branches on"
    return (f"the model {what} the value of latent(s) {lats} ('{name}' is not the same at every "
            f"point of the declared support: {sups}); a branch or rounding on a latent's "
            "value has no conjugate form. Fit this latent with vj.fit_gradient, or remove "
            "the branch")


def resolve_predicate(w, eqn, invals):
    """A predicate (or rounding) on continuous latents: its value when it is the same at
    every point of the support (evaluated at the canonical point, inside the support),
    else a Poison naming the primitive, the latents and the source line."""
    from vijax import _compat
    if eqn.primitive.name in ("round", "floor", "ceil") and _integer_valued(w, invals[0]):
        return invals[0]  # the identity on integers (a count latent, say)
    pts = [w.point(v) for v in invals]
    out = host_eval.evaluate(eqn, pts)
    out = _compat.bind_eqn(eqn, pts) if out is None else out
    if provably_constant(w, eqn, invals):
        return out
    return w.poison(eqn.primitive.name, invals, out, refusal_detail(w, eqn, invals))
