"""The jaxpr walker: environment, constant folding, recursion, dispatch to rules.

Values in the environment are one of

- a concrete array (data, hyper-parameters; may be a tracer of an outer transform),
- :class:`Lazy`, a constant ``broadcast_in_dim`` kept unmaterialized,
- :class:`~vijax.conjugacy.terms.Sym`, a latent-dependent sum of einsum terms,
- :class:`Poison`, a latent-dependent value with no multilinear form (the reason is
  kept, with its value at the canonical point, carried along but never used to decide:
  a predicate on a Poison is refused, see :mod:`vijax.conjugacy.intervals`).

Equations whose inputs are all constant are evaluated as JAX would (constant folding).
Equations with a latent input go to the rule registered for their primitive in
:mod:`vijax.conjugacy.rules`; a missing rule raises :class:`UnsupportedPrimitiveError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _compat
from vijax.conjugacy import terms as T
from vijax.errors import UnsupportedPrimitiveError

RULES: Dict[str, Callable] = {}
# predicates and piecewise-constant functions: resolved only when provably the same at
# every point of the declared support (vijax.conjugacy.intervals), else non-conjugate
PREDICATES = {"eq", "ne", "lt", "le", "gt", "ge", "is_finite", "and", "or", "not", "xor",
              "sign", "floor", "ceil", "round"}
# linear in their (single symbolic) operand, applied to a Poison's parts separately
PASS_THROUGH = {"neg", "reduce_sum", "convert_element_type", "reshape", "squeeze",
                "broadcast_in_dim", "transpose", "copy", "copy_p", "expand_dims"}


def register(*names):
    def deco(fn):
        for n in names:
            RULES[n] = fn
        return fn
    return deco


@dataclasses.dataclass(frozen=True)
class Lazy:
    """A constant ``broadcast_in_dim(base, shape, dims)`` not yet materialized."""

    base: Any
    shape: tuple
    dims: tuple

    def materialize(self):
        return jax.lax.broadcast_in_dim(self.base, self.shape, self.dims)


@dataclasses.dataclass(frozen=True)
class Reason:
    """Why a latent-dependent value has no multilinear form."""

    latents: frozenset
    primitive: str
    source: str | None
    detail: str


@dataclasses.dataclass(frozen=True)
class Poison:
    """Non-multilinear value: ``good`` (Sym or None) + a part known only at the point."""

    shape: tuple
    dtype: Any
    good: Any
    point: Any
    reasons: tuple


def is_sym(v):
    return isinstance(v, T.Sym)


def is_symbolic(v):
    return isinstance(v, (T.Sym, Poison))


class Walker:
    """Walks a jaxpr symbolically for one model (one set of latent supports)."""

    def __init__(self, supports, space: T.Space, dtype):
        self.supports = supports
        self.space = space
        self.dtype = dtype
        self.point_stats = {name: _base_stats(s, s.canonical_point(
            None if s.is_discrete else dtype)) for name, s in supports.items()}
        self.eqn = None  # the equation being processed (for source lines)
        self.stack = []  # enclosing equations (nested jaxprs)

    # ------------------------------------------------------------------ helpers
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
        if isinstance(v, Lazy):
            return v.materialize()
        return v

    def point(self, v):
        """Value at the canonical point of every latent (concrete array)."""
        if isinstance(v, T.Sym):
            return T.eval_sym(v, self.point_stats, self.space.sizes).astype(v.dtype)
        if isinstance(v, Poison):
            val = v.point
            if v.good is not None:
                val = val + self.point(v.good)
            return val.astype(v.dtype)
        return self.concrete(v)

    def to_sym(self, v, shape=None):
        """Any non-poison value as a Sym of ``shape`` (constants become one term)."""
        if isinstance(v, T.Sym):
            return v
        if isinstance(v, Lazy):
            out = self.space.fresh_many(v.shape)
            base = T.host(v.base) if T.is_concrete(v.base) else v.base
            base = np.asarray(base) if isinstance(base, (int, float, bool)) else base
            labels, keep = [], []
            for i, d in enumerate(v.dims):
                if base.shape[i] == v.shape[d]:
                    keep.append(i)
                    labels.append(out[d])
            squeeze = tuple(i for i in range(base.ndim) if i not in keep)
            base = T.xp(base).squeeze(base, squeeze) if squeeze else base
            return T.Sym(tuple(v.shape), base.dtype, (T.Term(((base, tuple(labels)),), (), out),))
        v = T.host(v) if T.is_concrete(v) else jnp.asarray(v)
        v = np.asarray(v) if isinstance(v, (int, float, bool)) else v
        shape = tuple(np.shape(v)) if shape is None else tuple(shape)
        return T.Sym(shape, v.dtype, (T.const_term(self.space, v, shape),))

    def poison(self, prim, invals, outval_point, detail):
        lats = set()
        reasons = []
        for v in invals:
            if isinstance(v, T.Sym):
                lats |= v.latents()
            if isinstance(v, Poison):
                reasons.extend(v.reasons)
                if v.good is not None:
                    lats |= v.good.latents()
        if lats:
            ctx = self.context()
            if ctx:
                detail = f"{detail} (inside {' > '.join(ctx)})"
            reasons.append(Reason(frozenset(lats), prim, self.source(), detail))
        pt = jnp.asarray(outval_point)
        return Poison(tuple(pt.shape), pt.dtype, None, pt, tuple(reasons))

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
            for var, val in zip(eqn.outvars, outs):
                env[var] = val
        return [read(v) for v in jaxpr.outvars]

    def eval_eqn(self, eqn, invals):
        prev, self.eqn = self.eqn, eqn
        self.stack.append(eqn)
        try:
            return self._eval_eqn(eqn, invals)
        finally:
            self.eqn = prev
            self.stack.pop()

    def _eval_eqn(self, eqn, invals):
        name = eqn.primitive.name
        symbolic = [is_symbolic(v) for v in invals]
        if not any(symbolic):
            if name == "broadcast_in_dim" and len(invals) == 1:
                dims = tuple(eqn.params["broadcast_dimensions"])
                v = invals[0]
                if isinstance(v, Lazy):  # compose: base axis j -> dims[v.dims[j]]
                    return Lazy(v.base, tuple(eqn.params["shape"]), tuple(dims[d] for d in v.dims))
                return Lazy(v, tuple(eqn.params["shape"]), dims)
            vals = [self.concrete(v) for v in invals]
            if name in ELEMENTWISE:
                out = _on_broadcast_bases(eqn, vals)
                if out is not None:
                    return out
            out = _on_host(eqn, vals)
            return out if out is not None else _compat.bind_eqn(eqn, vals)
        if any(isinstance(v, Poison) for v in invals):
            return self.eval_poisoned(eqn, invals)
        rule = RULES.get(name)
        if rule is None:
            if name in PREDICATES:
                return self.eval_predicate(eqn, invals)
            raise UnsupportedPrimitiveError(
                f"the compiler has no rule for primitive '{name}', applied to a value that "
                f"depends on latent(s) {sorted(_latents_of(invals))}"
                + (f" at {self.source()}" if self.source() else "")
                + ". Rewrite that step with supported jax.numpy operations, or fit this "
                "model with vj.fit_gradient(..., estimator='reparam').",
                primitive=name, source=self.source(),
                latent=",".join(sorted(_latents_of(invals))))
        return rule(self, eqn, invals)

    def eval_predicate(self, eqn, invals):
        from vijax.conjugacy import discrete
        from vijax.conjugacy import intervals
        if discrete.discrete_latents(self, invals):
            return discrete.tabulate(self, eqn, invals)
        return intervals.resolve_predicate(self, eqn, invals)

    def eval_poisoned(self, eqn, invals):
        name = eqn.primitive.name
        if name in PREDICATES or (name == "convert_element_type" and _rounds(eqn, invals[0])):
            from vijax.conjugacy import intervals
            return intervals.resolve_predicate(self, eqn, invals)
        if name in ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call",
                    "custom_vjp_call", "custom_vjp_call_jaxpr", "remat", "checkpoint"):
            return RULES[name](self, eqn, invals)
        n_sym = sum(is_symbolic(v) for v in invals)
        if name in ("add", "sub", "add_any") or (name in PASS_THROUGH and n_sym == 1):
            goods, points, reasons = [], [], []
            for v in invals:
                if isinstance(v, Poison):
                    goods.append(v.good)
                    points.append(v.point)
                    reasons.extend(v.reasons)
                elif isinstance(v, T.Sym):
                    goods.append(v)
                    points.append(jnp.zeros(v.shape, v.dtype))
                else:
                    goods.append(None)
                    points.append(self.concrete(v))
            if name in ("add", "sub", "add_any"):
                # constants go to the good part so that the bad part stays centred
                goods = [g if g is not None or isinstance(v, Poison) else self.to_sym(v)
                         for g, v in zip(goods, invals)]
                points = [p if isinstance(v, Poison) else jnp.zeros(jnp.shape(p), jnp.result_type(p))
                          for p, v in zip(points, invals)]
                present = [g for g in goods if g is not None]
                if len(present) == 2:
                    good = RULES[name](self, eqn, goods)
                elif len(present) == 1:
                    g = present[0]
                    if name == "sub" and goods[1] is not None:
                        g = RULES["neg"](self, eqn, [g])
                    good = _broadcast_to(self, g, _out_shape(eqn))
                else:
                    good = None
            else:
                good = RULES[name](self, eqn, [g for g in goods]) if goods[0] is not None else None
            pt = _compat.bind_eqn(eqn, points)
            return Poison(tuple(jnp.shape(pt)), jnp.result_type(pt), good, pt, tuple(reasons))
        point_out = _compat.bind_eqn(eqn, [self.point(v) for v in invals])
        if eqn.primitive.multiple_results:
            return [self.poison(name, invals, p, "non-multilinear") for p in point_out]
        return self.poison(name, invals, point_out, "value depends on a non-conjugate term")


def _rounds(eqn, v):
    """A conversion to bool, or from a float to an integer (not linear in its operand)."""
    new = eqn.params["new_dtype"]
    return bool(jnp.issubdtype(new, jnp.bool_) or (
        jnp.issubdtype(new, jnp.integer) and not jnp.issubdtype(v.dtype, jnp.integer)))


#: primitives applied element by element (same-shape operands, or scalars)
ELEMENTWISE = {"add", "sub", "mul", "div", "neg", "max", "min", "pow", "integer_pow",
               "square", "sqrt", "rsqrt", "exp", "log", "log1p", "expm1", "abs", "sign",
               "floor", "ceil", "round", "eq", "ne", "lt", "le", "gt", "ge", "and", "or",
               "not", "xor", "select_n", "convert_element_type", "is_finite", "rem",
               "clamp", "lgamma", "digamma"}


#: numpy equivalents of elementwise primitives, for folding host constants without an
#: XLA compile per operation and shape (same IEEE arithmetic; transcendental functions
#: may differ from XLA's in the last bit)
_NUMPY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "neg": np.negative,
          "max": np.maximum, "min": np.minimum, "abs": np.abs, "sign": np.sign,
          "floor": np.floor, "ceil": np.ceil, "exp": np.exp, "log": np.log,
          "log1p": np.log1p, "expm1": np.expm1, "sqrt": np.sqrt, "square": np.square,
          "rsqrt": lambda x: 1.0 / np.sqrt(x), "is_finite": np.isfinite,
          "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
          "eq": np.equal, "ne": np.not_equal, "and": np.bitwise_and, "or": np.bitwise_or,
          "xor": np.bitwise_xor, "not": np.invert}


def _host_array(v):
    if isinstance(v, (np.ndarray, np.generic, int, float, bool)):
        return np.asarray(v)
    if isinstance(v, jax.Array) and not _compat.is_tracer(v):
        return np.asarray(v)  # a constant the log joint closes over
    return None


def _on_host(eqn, vals, shape=None):
    """An elementwise equation on host constants evaluated with numpy (None: not one
    of the table's, or an operand that is not a host array). ``shape``: the output
    shape when the operands are slices of the equation's."""
    name = eqn.primitive.name
    if len(eqn.outvars) != 1 or name not in _NUMPY and name not in (
            "select_n", "convert_element_type", "integer_pow", "div"):
        return None
    arrs = [_host_array(v) for v in vals]
    if any(a is None for a in arrs):
        return None
    aval = eqn.outvars[0].aval
    dtype = np.dtype(aval.dtype)
    if name == "div":
        if not np.issubdtype(dtype, np.floating):
            return None  # integer division rounds towards zero in lax
        out = np.true_divide(*arrs)
    elif name == "select_n":
        pred, *cases = arrs
        out = np.where(pred, cases[1], cases[0]) if pred.dtype == np.bool_ and len(cases) == 2 \
            else np.choose(pred.astype(np.int64), cases)
    elif name == "convert_element_type":
        if np.issubdtype(dtype, np.integer) and np.issubdtype(arrs[0].dtype, np.floating):
            return None  # leave float -> int conversions to XLA
        out = arrs[0]
    elif name == "integer_pow":
        out = np.power(arrs[0], eqn.params["y"]) if eqn.params["y"] >= 0 or \
            np.issubdtype(dtype, np.floating) else None
        if out is None:
            return None
    else:
        with np.errstate(all="ignore"):
            out = _NUMPY[name](*arrs)
    out = np.asarray(out).astype(dtype, copy=False)
    shape = tuple(aval.shape) if shape is None else shape
    return out if out.shape == shape else np.broadcast_to(out, shape)


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
    out = _on_host(eqn, small, shape=tuple(1 if ax in flat else n for ax, n in enumerate(shape)))
    out = _compat.bind_eqn(eqn, small) if out is None else out
    return np.broadcast_to(np.asarray(out), shape)


def _out_shape(eqn):
    return tuple(eqn.outvars[0].aval.shape)


def _broadcast_to(w, s, shape):
    if s.shape == tuple(shape):
        return s
    from vijax.conjugacy.algebra import broadcast_sym
    lead = len(shape) - len(s.shape)
    return broadcast_sym(w, s, tuple(shape), tuple(range(lead, len(shape))))


def _latents_of(invals):
    out = set()
    for v in invals:
        if isinstance(v, T.Sym):
            out |= v.latents()
        elif isinstance(v, Poison):
            for r in v.reasons:
                out |= set(r.latents)
            if v.good is not None:
                out |= v.good.latents()
    return out


def _base_stats(support, point):
    """Walk-time base statistics of a latent at a value."""
    k = support.kind
    point = np.asarray(point)
    if k == "categorical":
        return {"onehot": np.eye(support.num_categories)[point], "x": point}
    if k in ("binary", "count"):
        return {"x": point.astype(np.float64)}
    out = {"x": point}
    if k in ("positive", "unit_interval", "simplex"):
        out["log"] = np.log(point)
    if k == "unit_interval":
        out["log1m"] = np.log1p(-point)
    return out


base_stats = _base_stats
