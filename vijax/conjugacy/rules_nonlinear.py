"""Rules for powers, quotients, logarithms, predicates and the non-multilinear
primitives (one part of the table that :mod:`vijax.conjugacy.table` assembles)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vijax.conjugacy import intervals
from vijax.conjugacy import terms as T
from vijax.conjugacy.algebra import (_label_shape, _operand, _shape, drop_out, mul_sym,
                                     split_constant)
from vijax.conjugacy.discrete import discrete_latents, nonlinear, tabulate
from vijax.conjugacy.values import is_sym, is_symbolic
from vijax.conjugacy.walker import Lazy, registrar

RULES: dict = {}
register = registrar(RULES)

#: predicates and piecewise-constant functions: resolved only when provably the same at
#: every point of the declared support (vijax.conjugacy.intervals), else non-conjugate
PREDICATES = ("eq", "ne", "lt", "le", "gt", "ge", "is_finite", "and", "or", "not", "xor",
              "sign", "floor", "ceil", "round")


# ----------------------------------------------------------------- predicates

@register(*PREDICATES)
def predicate(w, eqn, invals):
    """Tabulated over a discrete latent; on continuous latents, its value where it is
    the same over the whole support, else poisoned."""
    if discrete_latents(w, invals):
        return tabulate(w, eqn, invals)
    return intervals.resolve_predicate(w, eqn, invals)


# ----------------------------------------------------------------- monomials

def _monomial(w, s):
    """The single term of ``s`` if it is an elementwise product of continuous-latent
    powers and constants (no summed labels), else None."""
    if not is_sym(s) or len(s.terms) != 1:
        return None
    t = s.terms[0]
    outs = set(t.out)
    for _, ls in t.consts:
        if not set(ls) <= outs:
            return None
    for a in t.atoms:
        if a.stat != "x" or not set(a.labels) <= outs:
            return None
        if w.supports[a.latent].is_discrete:
            return None
    return t


def monomial_pow(w, s, p):
    """``s ** p`` for a monomial ``s`` (None when ``s`` is not one)."""
    t = _monomial(w, s)
    if t is None:
        return None
    consts = tuple((T.host(c) ** p, ls) for c, ls in t.consts)
    atoms = tuple(T.Atom(a.latent, a.stat, a.labels, a.idx, a.power * p) for a in t.atoms)
    atoms = tuple(a for a in atoms if a.power != 0)
    return T.Sym(s.shape, s.dtype, (T.Term(consts, atoms, t.out, w.source()),))


def _power_rule(w, eqn, invals, p):
    s = invals[0]
    if float(p).is_integer() and p >= 0:
        out = _operand(w, 1.0, s.shape)
        for _ in range(int(p)):
            out = mul_sym(w, out, s, src=w.source())
        return T.Sym(s.shape, s.dtype, out.terms)
    r = monomial_pow(w, s, p)
    if r is None:
        return nonlinear(w, eqn, invals, f"power {p} of a sum (only monomials of positive "
                                          "latents can be raised to non-integer or negative powers)")
    return r


@register("integer_pow")
def _integer_pow(w, eqn, invals):
    return _power_rule(w, eqn, invals, eqn.params["y"])


@register("square")
def _square(w, eqn, invals):
    return _power_rule(w, eqn, invals, 2)


@register("sqrt")
def _sqrt(w, eqn, invals):
    return _power_rule(w, eqn, invals, 0.5)


@register("rsqrt")
def _rsqrt(w, eqn, invals):
    return _power_rule(w, eqn, invals, -0.5)


@register("pow")
def _pow(w, eqn, invals):
    base, ex = invals
    if is_symbolic(ex):
        return nonlinear(w, eqn, invals, "exponent depends on a latent")
    ex = w.concrete(ex)
    if not T.is_concrete(ex) or np.unique(np.asarray(ex)).size != 1:
        return nonlinear(w, eqn, invals, "power with a non-uniform exponent")
    if not is_sym(base):
        return nonlinear(w, eqn, invals, "power of a latent-dependent value")
    return _power_rule(w, eqn, [base], float(np.asarray(ex).reshape(-1)[0]))


@register("div")
def _div(w, eqn, invals):
    a, b = invals
    shape = _shape(eqn)
    if not is_symbolic(b):
        bc = b
        if isinstance(b, Lazy):
            inv = Lazy(1.0 / T.host(b.base), b.shape, b.dims)
        else:
            inv = 1.0 / T.host(w.concrete(bc))
        return mul_sym(w, _operand(w, a, shape), _operand(w, inv, shape))
    inv = monomial_pow(w, _operand(w, b, shape), -1.0)
    if inv is None:
        return nonlinear(w, eqn, invals, "division by a latent-dependent sum "
                                          "(only monomials of positive latents can divide)")
    return mul_sym(w, _operand(w, a, shape), inv, src=w.source())


# ----------------------------------------------------------------- logarithms

def log_sym(w, s: T.Sym):
    """log of a monomial or of ``1 - p``; None if not expressible."""
    t = _monomial(w, s)
    if t is not None:
        terms = []
        for c, ls in t.consts:
            terms.append(T.Term(((T.xp(c).log(T.host(c)), ls),), (), t.out, t.src))
        for a in t.atoms:
            kind = w.supports[a.latent].kind
            if kind not in ("positive", "simplex", "unit_interval"):
                return None
            terms.append(T.Term(((np.asarray(a.power), ()),),
                                (T.Atom(a.latent, "log", a.labels, a.idx, 1.0),),
                                t.out, w.source()))
        return T.Sym(s.shape, s.dtype, tuple(terms))
    # log(1 - p) for a unit-interval p
    const, rest = split_constant(w, s)
    if rest is None or len(rest.terms) != 1 or not T.is_concrete(const):
        return None
    t = rest.terms[0]
    if len(t.atoms) != 1:
        return None
    a = t.atoms[0]
    if a.stat != "x" or a.power != 1 or w.supports[a.latent].kind != "unit_interval" \
            or not set(a.labels) <= set(t.out):
        return None
    coef = split_constant(w, T.Sym(s.shape, s.dtype, (t.with_(
        atoms=(), consts=t.consts + ((jnp.ones(_label_shape(w, a.labels), w.dtype), a.labels),)),)))[0]
    if not T.is_concrete(coef):
        return None
    if not (np.allclose(np.asarray(const), 1.0) and np.allclose(np.asarray(coef), -1.0)):
        return None
    return T.Sym(s.shape, s.dtype, (T.Term((), (T.Atom(a.latent, "log1m", a.labels, a.idx),),
                                           t.out, w.source()),))


@register("log")
def _log(w, eqn, invals):
    (s,) = invals
    if discrete_latents(w, invals):
        return tabulate(w, eqn, invals)
    r = log_sym(w, s)
    if r is None:
        return nonlinear(w, eqn, invals, "log of a latent-dependent sum, or of a real latent")
    return r


@register("log1p")
def _log1p(w, eqn, invals):
    (s,) = invals
    if discrete_latents(w, invals):
        return tabulate(w, eqn, invals)
    one_plus = T.Sym(s.shape, s.dtype, s.terms + (T.const_term(w.space, 1.0, s.shape),))
    r = log_sym(w, one_plus)
    if r is None:
        return nonlinear(w, eqn, invals, "log1p of a latent-dependent value")
    return r


@register("cumsum")
def _cumsum(w, eqn, invals):
    """Linear: ``out[i] = sum_j [j <= i] in[j]`` along the axis (a triangular constant)."""
    (s,) = invals
    axis = eqn.params["axis"] % len(s.shape)
    n = s.shape[axis]
    tri = np.tril(np.ones((n, n)))
    if eqn.params.get("reverse", False):
        tri = tri.T
    terms = []
    for t in s.terms:
        i = w.space.fresh(n)
        old = t.out[axis]
        out = t.out[:axis] + (i,) + t.out[axis + 1:]
        t2 = T.Term(t.consts + ((tri, (i, old)),), t.atoms, t.out, t.src)
        terms.append(drop_out(w, t2, [old]).with_(out=out))
    return T.Sym(s.shape, s.dtype, tuple(terms))


_NONLINEAR = ("exp", "exp2", "expm1", "lgamma", "digamma", "logistic", "tanh", "sin", "cos",
              "abs", "max", "min", "erf", "erfc", "erf_inv", "atan2", "tan", "asinh",
              "reduce_max", "reduce_min", "argmax", "argmin", "cumlogsumexp",
              "cumprod", "cummax", "reduce_prod", "rem", "cholesky", "custom_linear_solve",
              "lu", "eigh", "polygamma", "igamma", "lgamma", "sort", "clamp", "nextafter",
              "bessel_i0e", "bessel_i1e", "regularized_incomplete_beta", "random_gamma_grad",
              "log_softmax", "sinh", "cosh", "atan", "asin", "acos", "cbrt", "stop_gradient",
              "reduce_and", "reduce_or", "top_k", "scatter-add", "scatter_add", "scatter",
              "dynamic_update_slice", "pad", "split", "iota", "argsort", "logaddexp")


def _nonlinear_rule(w, eqn, invals):
    name = eqn.primitive.name
    if name == "stop_gradient":
        return invals[0]
    if name == "abs" and is_sym(invals[0]):  # |s| = s or -s when s has one sign everywhere
        r = intervals.value_range(w, invals[0])
        if not r.nan and r.lo >= 0:
            return invals[0]
        if not r.nan and r.hi <= 0:
            return T.Sym(invals[0].shape, invals[0].dtype,
                         tuple(T.scale_term(t, -1.0) for t in invals[0].terms))
    if name == "max" or name == "min":
        return nonlinear(w, eqn, invals, f"{name} of a latent-dependent value")
    return nonlinear(w, eqn, invals, f"{name} of a latent-dependent value is not multilinear "
                                      "in any exponential-family statistic")


register(*_NONLINEAR)(_nonlinear_rule)
