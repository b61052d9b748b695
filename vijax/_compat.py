"""The one place that touches JAX internals (jaxpr-level APIs move between releases).

Tested with jax 0.10.x (CPU, Python 3.11) and 0.11.x (CUDA, Python 3.12).
"""

from __future__ import annotations

import contextlib

import jax
from jax import core as _core

try:  # the jaxpr types where jax defines them (jax.extend.core re-exports these objects;
    # importing jax.extend costs ~25 ms of every import, for its Pallas module)
    from jax._src import core as _ext_core
except ImportError:  # pragma: no cover
    try:  # jax >= 0.4.30 exposes the jaxpr types here
        from jax.extend import core as _ext_core
    except ImportError:
        _ext_core = None

Tracer = _core.Tracer


def is_tracer(x) -> bool:
    """True if ``x`` is an abstract value being traced (no concrete data)."""
    return isinstance(x, Tracer)


def is_batched(tree) -> bool:
    """True if a leaf of ``tree`` is being vmapped (a batching tracer)."""
    try:
        from jax._src.interpreters.batching import BatchTracer
    except ImportError:  # pragma: no cover - moved in a later release
        return False
    return any(isinstance(l, BatchTracer) for l in jax.tree_util.tree_leaves(tree))


def _ext(name):
    if _ext_core is not None and hasattr(_ext_core, name):
        return getattr(_ext_core, name)
    return getattr(_core, name)


Literal = _ext("Literal")
ClosedJaxpr = _ext("ClosedJaxpr")
Jaxpr = _ext("Jaxpr")


def is_literal(v) -> bool:
    return isinstance(v, Literal)


def literal_value(v):
    return v.val


def make_jaxpr(fun, *args):
    """``jax.make_jaxpr`` returning the closed jaxpr and the output tree.

    Operations on constants are staged, not evaluated, even inside
    ``jax.ensure_compile_time_eval`` (whose eager constant folding would compile one XLA
    executable per operation and shape): the walkers fold them on the host."""
    with staged_constants():
        closed, out_shape = jax.make_jaxpr(fun, return_shape=True)(*args)
    return closed, out_shape


def staged_constants():
    """A context in which tracing stages operations on constants (jax's
    ``eager_constant_folding`` off); a no-op where the option does not exist."""
    try:
        from jax._src import config as _config
        return _config.eager_constant_folding(False)
    except (ImportError, AttributeError):  # pragma: no cover - other jax versions
        return _nullcontext()


def open_jaxpr(j):
    """(jaxpr, consts) for a ClosedJaxpr or an open Jaxpr."""
    if hasattr(j, "jaxpr") and hasattr(j, "consts"):
        return j.jaxpr, list(j.consts)
    return j, []


def source_line(eqn) -> str | None:
    """The user's ``file:line`` (first frame outside jax) for an equation, or None."""
    try:
        from jax._src import source_info_util
        frame = source_info_util.user_frame(eqn.source_info.traceback)
        if frame is None:
            return None
        return f"{frame.file_name}:{frame.start_line}"
    except Exception:  # pragma: no cover - best effort across versions
        return None


def user_frames(eqn):
    """All frames of the equation's traceback as (file, line) pairs, innermost last."""
    try:
        tb = eqn.source_info.traceback
        if tb is None:
            return []
        return [(f.file_name, getattr(f, "start_line", getattr(f, "line_num", None)))
                for f in tb.frames]
    except Exception:  # pragma: no cover
        return []


def bind_eqn(eqn, vals):
    """Evaluate one equation on concrete (or outer-traced) values, as eval_jaxpr does."""
    res = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(res, tuple) and len(res) == 2 and isinstance(res[1], dict):
        subfuns, params = res  # jax < 0.7: (subfuns, params)
    else:
        subfuns, params = [], res
    with eqn.ctx.manager if hasattr(eqn, "ctx") else _nullcontext():
        return eqn.primitive.bind(*subfuns, *vals, **params)


def sub_jaxpr(eqn):
    """(jaxpr, consts) of a call-like equation (jit, custom_jvp/vjp, closed_call, remat)."""
    p = eqn.params
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in p:
            return open_jaxpr(p[key])
    raise KeyError(f"no sub-jaxpr in {eqn.primitive.name}")


def _nullcontext():
    return contextlib.nullcontext()


def scan_counts(params) -> tuple[int, int]:
    """``(num_consts, num_carry)`` of a ``scan`` equation: named params up to jax 0.10;
    from jax 0.11 the flat trees ``ft_in = (consts, carry, xs)``, whose parts
    (``.elts``) each have ``len`` = their number of leaves."""
    if "num_consts" in params:
        return int(params["num_consts"]), int(params["num_carry"])
    consts, carry = params["ft_in"].elts[:2]
    return len(consts), len(carry)


def while_counts(params, cond_jaxpr, body_jaxpr) -> tuple[int, int]:
    """``(cond_nconsts, body_nconsts)`` of a ``while`` equation (read off the jaxprs
    when the named params are absent: the body returns the carry)."""
    if "cond_nconsts" in params:
        return int(params["cond_nconsts"]), int(params["body_nconsts"])
    ncarry = len(body_jaxpr.outvars)
    return len(cond_jaxpr.invars) - ncarry, len(body_jaxpr.invars) - ncarry


def eval_jaxpr(jaxpr, consts, *args):
    """Evaluate an open jaxpr on ``consts`` and ``args`` (as ``jax.core.eval_jaxpr``)."""
    fn = getattr(_core, "eval_jaxpr", None)
    if fn is None:  # pragma: no cover - moved in a later release
        from jax._src.core import eval_jaxpr as fn
    return fn(jaxpr, consts, *args)


def trace_state_clean() -> bool | None:
    """True outside any JAX trace (``jit``, ``vmap``, ``grad``): where a ``jax.jit`` call
    is top level (compile options may only be given there); None where this JAX does not
    say (the caller must then assume a trace)."""
    try:
        from jax._src.core import trace_state_clean as clean
    except ImportError:  # pragma: no cover - moved in a later release
        return None
    return bool(clean())
