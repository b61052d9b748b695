"""A log joint that is -inf or NaN whatever the latents: detect it, and name its line.

A part of the log joint that does not depend on the latents (a constant of F) can be
non-finite: a density evaluated outside its support (``multinomial.logpmf`` of counts
that do not sum to ``n``, a Gamma with shape 0), a ``log(0)`` of a hyper-parameter. Then
the log joint is non-finite at every value of the latents, which a fit would otherwise
report only as a non-finite ELBO, or as a latent the log joint "does not depend on"
(``-inf + f(z)`` folds to ``-inf``). :func:`nonfinite_constant` finds such a constant
among the walked terms; :func:`locate` follows the non-finite value back through the
jaxpr, evaluated at the supports' canonical point, to the equation that makes it from
finite inputs, and returns that equation's density and the user's ``file:line``.
"""

from __future__ import annotations

import numpy as np

from vijax import _compat
from vijax.conjugacy import terms as T

_UNKNOWN = object()  # an input whose value is not known (abstract data)


def _bad(x):
    """Whether ``x`` is a known (concrete) floating value with a NaN or inf entry."""
    if x is _UNKNOWN or x is None or not T.is_concrete(x):
        return False
    a = np.asarray(x)
    return a.dtype.kind in "fc" and not bool(np.all(np.isfinite(a)))


def nonfinite_constant(value, sizes=None):
    """``(operand, source line or None)``: the first non-finite concrete operand of a
    latent-free term of a walked value (a Sym, the good part of a Poison, or a plain
    constant), with the line of the equation that made the term; None if there is
    none. With ``sizes`` (the labels' sizes), the operand is the term's value when
    every operand is concrete. Terms that hold a
    statistic are not inspected (``where(z == 0, -inf, 0)`` on a discrete ``z`` is a
    constraint, not an error), nor is a Poison's value at the canonical point (a
    non-conjugate part may be singular there only), nor traced constants (data seen as
    abstract values)."""
    from vijax.conjugacy.values import Poison
    from vijax.conjugacy.walker import Lazy
    if isinstance(value, Poison):
        return nonfinite_constant(value.good, sizes) if value.good is not None else None
    if isinstance(value, T.Sym):
        for t in value.terms:
            if t.atoms:
                continue
            for c, _ in t.consts:
                if _bad(c):
                    if sizes is not None and all(T.is_concrete(o) for o, _ in t.consts):
                        return np.asarray(T.const_value(t, sizes)), t.src
                    return np.asarray(c), t.src
        return None
    if isinstance(value, Lazy):
        value = value.base
    return (np.asarray(value), None) if _bad(value) else None


#: primitives through which a non-finite operand makes a non-finite result whatever the
#: other (unknown) operands are finite values: followed back even when the result is
#: unknown (a predicate or select on unknown data is not: it may discard the value)
_ARITH = {"add", "add_any", "sub", "mul", "neg", "div", "reduce_sum", "broadcast_in_dim",
          "reshape", "squeeze", "expand_dims", "transpose", "convert_element_type", "copy",
          "dot_general", "concatenate", "slice", "integer_pow", "square", "exp", "log"}


class _Eval:
    """One jaxpr evaluated where its inputs are known: values, producers, taint (a
    known non-finite value, or an unknown one computed from a tainted operand by an
    arithmetic step), and the evaluations of nested calls (for the backtrace)."""

    def __init__(self, jaxpr, consts, args):
        self.jaxpr, self.env, self.producer, self.taint, self.sub = jaxpr, {}, {}, set(), {}
        for v, c in zip(jaxpr.constvars, consts):
            self._set(v, c, None, False)
        for v, a in zip(jaxpr.invars, args):
            self._set(v, a, None, False)
        for eqn in jaxpr.eqns:
            self._eqn(eqn)

    def read(self, v):
        return _compat.literal_value(v) if _compat.is_literal(v) else self.env[v]

    def tainted(self, v):
        return not _compat.is_literal(v) and v in self.taint

    def _set(self, v, val, eqn, taint):
        self.env[v], self.producer[v] = val, eqn
        if _bad(val) or taint:
            self.taint.add(v)

    def _eqn(self, eqn):
        vals = [self.read(v) for v in eqn.invars]
        try:
            inner = _compat.sub_jaxpr(eqn)
        except KeyError:
            inner = None
        if inner is not None and len(inner[0].invars) == len(vals):
            sub = _Eval(inner[0], inner[1], vals)
            self.sub[id(eqn)] = sub
            for v, o in zip(eqn.outvars, sub.jaxpr.outvars):
                self._set(v, sub.read(o), eqn, sub.tainted(o))
            return
        outs = None
        if not any(v is _UNKNOWN or not T.is_concrete(v) for v in vals):
            try:
                outs = _compat.bind_eqn(eqn, vals)
                outs = outs if eqn.primitive.multiple_results else [outs]
            except Exception:  # noqa: BLE001 - a locator: an unevaluable step is unknown
                outs = None
        arith = eqn.primitive.name in _ARITH and any(self.tainted(v) for v in eqn.invars)
        for i, v in enumerate(eqn.outvars):
            self._set(v, _UNKNOWN if outs is None else outs[i], eqn, outs is None and arith)

    def origin(self, outvar):
        """(eqn making the tainted ``outvar`` from untainted inputs, or consuming a
        non-finite closed-over constant; this evaluation) or (None, index of the jaxpr
        input it comes from)."""
        todo, seen = [(outvar, None)], set()
        while todo:
            v, user = todo.pop()
            if _compat.is_literal(v):
                continue
            eqn = self.producer.get(v)
            if eqn is None:
                if v in self.jaxpr.invars:
                    return None, self.jaxpr.invars.index(v)
                if user is not None:  # a closed-over constant (e.g. -inf) read by ``user``
                    return user, self
                continue
            if id(eqn) in seen:
                continue
            seen.add(id(eqn))
            sub = self.sub.get(id(eqn))
            if sub is not None:
                found, where = sub.origin(sub.jaxpr.outvars[eqn.outvars.index(v)])
                if found is not None:
                    return found, where
                if where is not None:
                    if _compat.is_literal(eqn.invars[where]):  # a literal -inf passed in
                        return eqn, self
                    todo.append((eqn.invars[where], eqn))
                continue
            ins = [u for u in eqn.invars if self.tainted(u)]
            if ins:
                todo.extend((u, eqn) for u in ins)
                continue
            return eqn, self
        return None, None


def locate(jaxpr, consts, args):
    """(density, user's file:line, value) of the equation where a non-finite output of
    ``jaxpr`` arises from finite inputs, entering nested calls. ``args`` may be traced
    (abstract data): what is computed from them is unknown, and followed back only
    through arithmetic steps. Literal inputs (the ``-inf`` of a support guard) do not
    count as non-finite inputs. ``(None, None, None)`` when the value cannot be traced
    back."""
    ev = _Eval(jaxpr, consts, args)
    for v in jaxpr.outvars:
        if ev.tainted(v):
            eqn, where = ev.origin(v)
            if eqn is not None:
                vals = [where.env.get(o) for o in eqn.outvars]
                bad = next((np.asarray(x) for x in vals if _bad(x)), None)
                return _describe(eqn) + (bad,)
    return None, None, None


def _describe(eqn):
    from vijax.inference.checks import _describe as describe
    return describe(eqn)


def message(value, density, line, data_dependent):
    """The error text for a log joint that is ``value`` (-inf or NaN) at every point."""
    what = "-inf" if np.all(np.isneginf(value) | np.isfinite(value)) else "NaN"
    where = " ".join(p for p in (density, f"at {line}" if line else None) if p)
    cause = ("these data values" if data_dependent else
             "the constants the log joint closes over (hyper-parameters, fixed arrays)")
    text = (f"the log joint is {what} at every value of the latents (already at the "
            "supports' canonical interior point): a part of it that does not depend on the "
            f"latents is {what}" + (f", made by {where}" if where else "") +
            f". A density is evaluated outside its support or valid parameters for {cause}; "
            "fix the data or the hyper-parameters that line reads.")
    if density == "jax.scipy.stats.multinomial":
        text += (" jax.scipy.stats.multinomial.logpmf checks that x sums to n over *all* its "
                 "axes: for a batch of count vectors, call it per row "
                 "(jax.vmap(logpmf, (0, None, None))) instead of on the whole array.")
    return text
