"""The walker run with a toy rule table defined here, apart from the real rules.

The toy interpretation tracks, for each latent-dependent value, which latents it
depends on and its polynomial degree in them (``Dep``). Rules: add/sub (union, max
degree), mul (union, sum of degrees), and structural ops that keep the operand's
dependence. Everything else the walker does itself: environment, constant folding,
recursion into nested jaxprs, and the missing-rule error.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vijax.conjugacy import walker as W
from vijax.errors import UnsupportedPrimitiveError


@dataclasses.dataclass(frozen=True)
class Dep:
    latents: frozenset
    degree: int


def _deps(invals):
    return [v for v in invals if isinstance(v, Dep)]


TOY_RULES: dict = {}
register = W.registrar(TOY_RULES)


@register("add", "sub")
def _sum(w, eqn, invals):
    ds = _deps(invals)
    return Dep(frozenset().union(*(d.latents for d in ds)), max(d.degree for d in ds))


@register("mul")
def _mul(w, eqn, invals):
    ds = _deps(invals)
    return Dep(frozenset().union(*(d.latents for d in ds)), sum(d.degree for d in ds))


@register("reshape", "broadcast_in_dim", "reduce_sum", "transpose", "convert_element_type",
          "squeeze", "neg")
def _structural(w, eqn, invals):
    (d,) = _deps(invals)
    return d


TOY = W.RuleTable(rules=TOY_RULES, is_symbolic=lambda v: isinstance(v, Dep),
                  latents=lambda invals: set().union(*(d.latents for d in _deps(invals))))


def walk(f, *specs, args):
    closed = jax.make_jaxpr(f)(*specs)
    return W.Walker(TOY).run(closed, list(args))


X = jax.ShapeDtypeStruct((3,), jnp.float32)
A = Dep(frozenset({"a"}), 1)
B = Dep(frozenset({"b"}), 1)


def test_products_and_sums():
    (out,) = walk(lambda a, b: (a * b + a).sum(), X, X, args=[A, B])
    assert out == Dep(frozenset({"a", "b"}), 2)


def test_structural_ops_keep_dependence():
    (out,) = walk(lambda a: -jnp.reshape(a, (3, 1)).T.sum(), X, args=[A])
    assert out == A


def test_constants_fold_without_rules():
    # exp and sin have no toy rule: on constants they are evaluated, not dispatched
    c = np.arange(3.0, dtype=np.float32)
    (out, const) = walk(lambda a: (a * jnp.exp(jnp.sin(c)), jnp.exp(c).sum()), X, args=[A])
    assert out == A
    np.testing.assert_allclose(np.asarray(const), np.exp(c).sum(), rtol=1e-6)


def test_data_inputs_are_constants():
    x = np.ones(3, np.float32)
    (out,) = walk(lambda a, x: (a * a * x).sum(), X, X, args=[A, x])
    assert out == Dep(frozenset({"a"}), 2)


def test_nested_jit_is_walked_through():
    inner = jax.jit(lambda u, v: u * v)
    (out,) = walk(lambda a, b: inner(a, inner(a, b)).sum(), X, X, args=[A, B])
    assert out == Dep(frozenset({"a", "b"}), 3)


def test_custom_jvp_is_walked_through():
    @jax.custom_jvp
    def square(u):
        return u * u

    square.defjvp(lambda p, t: (square(p[0]), 2 * p[0] * t[0]))
    (out,) = walk(lambda a: square(a).sum(), X, args=[A])
    assert out == Dep(frozenset({"a"}), 2)


def test_missing_rule_names_primitive_latent_and_line():
    def f(a, b):
        return jnp.sin(a * b).sum()  # the line the error must name

    line = inspect.getsourcelines(f)[1] + 1
    with pytest.raises(UnsupportedPrimitiveError) as e:
        walk(f, X, X, args=[A, B])
    assert e.value.primitive == "sin"
    assert e.value.latent == "a,b"
    assert e.value.source.endswith(f"test_walker_toy.py:{line}")
    assert "'sin'" in str(e.value) and f"test_walker_toy.py:{line}" in str(e.value)


def test_missing_rule_inside_jit_names_the_inner_line():
    @jax.jit
    def inner(u):
        return jnp.cos(u)

    line = inspect.getsourcelines(inner)[1] + 2
    with pytest.raises(UnsupportedPrimitiveError) as e:
        walk(lambda a: inner(a).sum(), X, args=[A])
    assert e.value.primitive == "cos"
    assert e.value.source.endswith(f"test_walker_toy.py:{line}")


def test_route_takes_precedence():
    seen = []

    def route(eqn, invals):
        seen.append(eqn.primitive.name)
        return _structural if eqn.primitive.name == "sin" else None

    table = dataclasses.replace(TOY, route=route)
    closed = jax.make_jaxpr(lambda a: jnp.sin(a) * 2.0)(X)
    (out,) = W.Walker(table).run(closed, [A])
    assert out == A and seen == ["sin", "mul"]


# ----------------------------------------------------------------- module structure

RULE_MODULES = {"rules", "rules_control", "rules_nonlinear", "rules_poison", "table",
                "discrete", "algebra", "intervals", "matching", "terms"}


def _imports(module):
    tree = ast.parse(inspect.getsource(module))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


def test_walker_imports_no_rules():
    mods = _imports(W)
    bad = {m for m in mods for r in RULE_MODULES
           if m == f"vijax.conjugacy.{r}" or m.startswith(f"vijax.conjugacy.{r}.")}
    assert not bad, bad
    assert "vijax.conjugacy" not in mods  # no `from vijax.conjugacy import <rules>`


def test_no_function_level_imports_in_the_compiler_core():
    from vijax.conjugacy import algebra, discrete, rules, rules_control, rules_nonlinear
    from vijax.conjugacy import rules_poison, table, values
    for mod in (W, algebra, discrete, rules, rules_control, rules_nonlinear, rules_poison,
                table, values):
        tree = ast.parse(inspect.getsource(mod))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
                assert not inner, f"{mod.__name__}.{fn.name} imports inside a function"
