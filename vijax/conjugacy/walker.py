"""The jaxpr walker: a generic interpreter that takes its rule table as an argument.

The walker holds no knowledge of what it computes. It keeps the environment, recurses
into nested jaxprs (the call primitives of :data:`CALL_PRIMITIVES`), folds constants and
hands every other equation to a :class:`RuleTable`:

- an equation none of whose inputs the table calls symbolic is evaluated as JAX would
  (constant folding; a constant ``broadcast_in_dim`` is kept unmaterialized as a
  :class:`Lazy`, and operations on host arrays run in numpy, :mod:`host_eval`, without
  an XLA compile per operation and shape; a call on constants is walked into, so its
  equations fold the same way);
- an equation with a symbolic input goes to the table's rule for its primitive;
- a symbolic input and no rule raise :class:`~vijax.errors.UnsupportedPrimitiveError`
  naming the primitive, the latents and the user's source line (no silent fallback).

The conjugacy compiler's table is assembled in :mod:`vijax.conjugacy.table`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import jax
import numpy as np

from vijax import _compat
import vijax.conjugacy.host_eval as host_eval
from vijax.errors import UnsupportedPrimitiveError

#: primitives whose equation calls a nested jaxpr with the same inputs and outputs:
#: walked through (the one list; extra leading operands of custom_vjp are skipped)
CALL_PRIMITIVES = frozenset({
    "pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
    "custom_vjp_call_jaxpr", "remat", "remat2", "checkpoint"})

Rule = Callable[["Walker", Any, list], Any]


def registrar(rules: dict):
    """A decorator ``register(*names)`` that enters a rule into ``rules`` under each name."""
    def register(*names):
        def deco(fn):
            for n in names:
                rules[n] = fn
            return fn
        return deco
    return register


@dataclasses.dataclass(frozen=True)
class RuleTable:
    """What a walk computes.

    Attributes:
        rules: primitive name -> ``rule(walker, eqn, invals)``, which returns the output
            value (a list for a primitive with several results).
        is_symbolic: whether a value is one the rules act on; an equation with no such
            input is evaluated as JAX would.
        latents: the names the symbolic values among ``invals`` depend on (reported by
            the missing-rule error).
        route: optional ``(eqn, invals) -> rule or None``, asked before ``rules`` (for
            kinds of input that every primitive treats alike); None: look up ``rules``.
        provenance: primitives whose results the walker remembers with their inputs
            (:meth:`Walker.origin`), for rules that read how an operand was built; only
            results that are not host arrays are kept (recording everything would keep
            every intermediate constant of a data-sized model alive).
    """

    rules: Mapping[str, Rule]
    is_symbolic: Callable[[Any], bool]
    latents: Callable[[Sequence[Any]], Iterable[str]] = lambda invals: ()
    route: Optional[Callable[[Any, list], Optional[Rule]]] = None
    provenance: frozenset = frozenset()

    def rule_for(self, eqn, invals) -> Optional[Rule]:
        if self.route is not None:
            rule = self.route(eqn, invals)
            if rule is not None:
                return rule
        return self.rules.get(eqn.primitive.name)


@dataclasses.dataclass(frozen=True)
class Lazy:
    """A constant ``broadcast_in_dim(base, shape, dims)`` not yet materialized."""

    base: Any
    shape: tuple
    dims: tuple

    def materialize(self):
        base = host_eval.host_array(self.base)
        if base is not None:  # a read-only numpy view (no XLA compile)
            return host_eval.broadcast_in_dim(base, self.shape, self.dims)
        return jax.lax.broadcast_in_dim(self.base, self.shape, self.dims)


def concrete(v):
    """A constant as an array (a :class:`Lazy` materialized)."""
    return v.materialize() if isinstance(v, Lazy) else v


class Walker:
    """Walks jaxprs with one rule table; rules receive the walker as first argument."""

    def __init__(self, table: RuleTable):
        self.table = table
        self.eqn = None  # the equation being processed (for source lines)
        self.stack = []  # enclosing equations (nested jaxprs)
        # provenance: id(value) -> (value, eqn, invals) of the equation that produced it
        # (across nested jaxprs, since values pass into them unchanged); rules may read
        # it through :meth:`origin` to see how an operand was built
        self._origin = {}

    # ------------------------------------------------------------------ context
    def source(self, eqn=None):
        """The user's file:line of the equation, or of the nearest enclosing one."""
        for e in ([eqn] if eqn is not None else []) + [self.eqn] + self.stack[::-1]:
            if e is not None:
                line = _compat.source_line(e)
                if line is not None:
                    return line
        return None

    def context(self):
        """Names of the enclosing named calls (jit / custom_jvp functions), outermost first."""
        names = []
        for e in self.stack[:-1]:
            n = e.params.get("name") if hasattr(e, "params") else None
            if isinstance(n, str) and n not in ("_where", "where") and n not in names:
                names.append(n)
        return names

    def concrete(self, v):
        return concrete(v)

    # ------------------------------------------------------------------ walking
    def run(self, closed_jaxpr, args):
        jaxpr, consts = _compat.open_jaxpr(closed_jaxpr)
        return self.walk(jaxpr, consts, args)

    def walk(self, jaxpr, consts, args):
        env = {}

        def read(v):
            if _compat.is_literal(v):
                return _compat.literal_value(v)
            return env[v]

        for var, val in zip(jaxpr.constvars, consts):
            env[var] = val
        for var, val in zip(jaxpr.invars, args):
            env[var] = val
        for eqn in jaxpr.eqns:
            invals = [read(v) for v in eqn.invars]
            outs = self.eval_eqn(eqn, invals)
            if not eqn.primitive.multiple_results:
                outs = [outs]
            keep = eqn.primitive.name in self.table.provenance
            for var, val in zip(eqn.outvars, outs):
                env[var] = val
                if keep and not isinstance(val, (np.ndarray, np.generic, Lazy)):
                    self._origin[id(val)] = (val, eqn, invals)
        return [read(v) for v in jaxpr.outvars]

    def origin(self, value):
        """``(primitive name, invals)`` of the equation that produced ``value`` in this
        walk, or None (an input, a literal, or a value made by a rule)."""
        rec = self._origin.get(id(value))
        if rec is None or rec[0] is not value:
            return None
        return rec[1].primitive.name, rec[2]

    def eval_eqn(self, eqn, invals):
        prev, self.eqn = self.eqn, eqn
        self.stack.append(eqn)
        try:
            return self._eval_eqn(eqn, invals)
        finally:
            self.eqn = prev
            self.stack.pop()

    def _eval_eqn(self, eqn, invals):
        symbolic = any(self.table.is_symbolic(v) for v in invals)
        if not symbolic and eqn.primitive.name not in CALL_PRIMITIVES:
            return fold(eqn, invals)
        if eqn.primitive.name in CALL_PRIMITIVES:
            jaxpr, consts = _compat.sub_jaxpr(eqn)
            n_extra = len(invals) - len(jaxpr.invars)
            outs = self.walk(jaxpr, consts, invals[n_extra:] if n_extra > 0 else invals)
            return outs if eqn.primitive.multiple_results else outs[0]
        rule = self.table.rule_for(eqn, invals)
        if rule is None:
            raise self.missing_rule(eqn, invals)
        return rule(self, eqn, invals)

    def missing_rule(self, eqn, invals):
        name = eqn.primitive.name
        lats = sorted(self.table.latents(invals))
        src = self.source()
        return UnsupportedPrimitiveError(
            f"the compiler has no rule for primitive '{name}', applied to a value that "
            f"depends on latent(s) {lats}" + (f" at {src}" if src else "")
            + ". Rewrite that step with supported jax.numpy operations, or fit this "
            "model with vj.fit_gradient(..., estimator='reparam').",
            primitive=name, source=src, latent=",".join(lats))


# ---------------------------------------------------------------------- constant folding

def fold(eqn, invals):
    """An equation on constants, evaluated (a constant broadcast stays :class:`Lazy`)."""
    if eqn.primitive.name == "broadcast_in_dim" and len(invals) == 1:
        dims = tuple(eqn.params["broadcast_dimensions"])
        v = invals[0]
        if isinstance(v, Lazy):  # compose: base axis j -> dims[v.dims[j]]
            return Lazy(v.base, tuple(eqn.params["shape"]), tuple(dims[d] for d in v.dims))
        return Lazy(v, tuple(eqn.params["shape"]), dims)
    vals = [concrete(v) for v in invals]
    if eqn.primitive.name in ELEMENTWISE:
        out = _on_broadcast_bases(eqn, vals)
        if out is not None:
            return out
    out = host_eval.evaluate(eqn, vals)
    return out if out is not None else _compat.bind_eqn(eqn, vals)


#: primitives applied element by element (same-shape operands, or scalars)
ELEMENTWISE = {"add", "sub", "mul", "div", "neg", "max", "min", "pow", "integer_pow",
               "square", "sqrt", "rsqrt", "exp", "log", "log1p", "expm1", "abs", "sign",
               "floor", "ceil", "round", "eq", "ne", "lt", "le", "gt", "ge", "and", "or",
               "not", "xor", "select_n", "convert_element_type", "is_finite", "rem",
               "clamp", "lgamma", "digamma"}


def _on_broadcast_bases(eqn, vals):
    """An elementwise equation on host arrays that are all broadcast views along some
    axes: evaluated on one slice along those axes and broadcast back (a view), so a
    value that is constant along a data axis never costs a pass over that axis.
    None when no axis qualifies (the caller evaluates as usual)."""
    shape = tuple(eqn.outvars[0].aval.shape)
    if not shape or len(eqn.outvars) != 1:
        return None
    arrays = [v for v in vals if np.ndim(v) > 0]
    if not arrays or any(not isinstance(v, np.ndarray) or v.shape != shape for v in arrays):
        return None
    flat = [ax for ax in range(len(shape)) if shape[ax] > 1
            and all(v.strides[ax] == 0 for v in arrays)]
    if not flat:
        return None
    sl = tuple(slice(0, 1) if ax in flat else slice(None) for ax in range(len(shape)))
    small = [v[sl] if np.ndim(v) > 0 else v for v in vals]
    out = host_eval.evaluate(eqn, small,
                             shape=tuple(1 if ax in flat else n for ax, n in enumerate(shape)))
    out = _compat.bind_eqn(eqn, small) if out is None else out
    return np.broadcast_to(np.asarray(out), shape)
