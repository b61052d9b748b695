"""The batched driver of ``vj.batch_cavi``: many fits of one algorithm in one loop with a
shared step counter.

``jax.vmap`` of :func:`vijax.inference.driver.run` vmaps the ``lax.while_loop``: JAX
turns it into one loop whose body selects every carry leaf per lane, including each
lane's trace of ``max_iters`` values. Here the *step* is vmapped, not the loop
(:func:`lean_advance`):

- one counter ``t`` shared by the lanes; a running lane's code is -1, and a lane that
  stopped is frozen (its State and records kept by ``jnp.where``), so it reports its own
  ``num_iters``, ``converged``, ``failed_at``, ...;
- the per-step rule is :func:`vijax.inference.driver.step_verdict` and
  :func:`~vijax.inference.driver.decreases`, the ones ``run`` uses (window 1);
- the step's per-lane floats pass through :func:`~vijax.inference.driver.materialized`
  (each computed once, not once in every fusion of the bookkeeping that reads it);
- the trace is a ``[rows, B]`` buffer written one row per step; the loop ends when every
  lane has stopped, ``t`` reaches ``max_iters``, or ``rows`` steps were taken, and can
  be called again on its output (a host loop of short segments keeps the buffer small).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from vijax.inference import driver
from vijax.inference.driver import Run


def _select(mask, new, old):
    """``new`` where ``mask`` (shape ``[B]``) else ``old``, leaf by leaf."""
    def pick(a, b):
        m = mask.reshape(mask.shape + (1,) * (jnp.ndim(a) - 1))
        return jnp.where(m, a, b)
    return jax.tree_util.tree_map(pick, new, old)


# ---- the lean loop: deterministic steps (window 1), the fewest per-lane carries ----
#
# Per step XLA runs one fusion per carried per-lane array (a select of the new value or
# the old one), ~3 us each at 10000 lanes on a CPU: a carry of the State with its
# objective plus driver.Lane's 14 fields cost ~28 fusions a step. Here the objective and
# its rounding bound are carried once, and num_iters / converged / failed_at / the failed
# step's ``extra`` are one int32 code per lane.

#: ``code`` kinds (lowest 2 bits); a running lane's code is -1
CONVERGED, FAILED = 1, 2


class LeanCarry(NamedTuple):
    """The lean loop's state between segments (a pytree).

    Attributes:
        t: steps taken by the loop (shared).
        state: the lanes' states (without their objective).
        code: ``[B]`` int32: -1 while running, else
            ``num_iters * span + (extra + 1) * 4 + kind`` (``extra``: the failed step's
            ``Info.extra``, an int in ``[-1, span // 4 - 1)``, else -1).
        elbo, bound: ``[B]``: the objective now and the last step's rounding bound.
        max_decrease, excess: ``[B]``: as in :class:`~vijax.inference.driver.Run`.
    """

    t: Any
    state: Any
    code: Any
    elbo: Any
    bound: Any
    max_decrease: Any
    excess: Any


def lean_start(states, elbo0, bound0) -> LeanCarry:
    """The carry before any step (``elbo0``, ``bound0``: ``[B]``)."""
    nb = elbo0.shape[0]
    dtype = elbo0.dtype
    return LeanCarry(jnp.asarray(0, jnp.int32), states, jnp.full((nb,), -1, jnp.int32),
                     elbo0, jnp.asarray(bound0, dtype), jnp.zeros((nb,), dtype),
                     jnp.full((nb,), -jnp.inf, dtype))


def lean_advance(step: Callable, args, carry: LeanCarry, *, max_iters, tol, rows: int,
                 span: int, bound: Callable | None = None, peel: bool = False,
                 args_axes: Any = 0, replay: bool = False):
    """At most ``rows`` more steps (static) of ``step(args_b, state_b, elbo_prev,
    bound_prev) -> (state_b, Info)`` (``Info.extra`` an int32 scalar), each lane by the
    per-step rule of :func:`~vijax.inference.driver.step_verdict`, until every
    lane stopped or ``t`` reaches ``max_iters``.

    ``bound(args_b, state_b) -> R`` (optional): the rounding bound is ``R`` of the new
    state after a step whose objective did not increase and the previous bound otherwise
    (CAVI's rule, :func:`vijax.inference.cavi.sweep_step`), and ``Info.bound`` is not
    read. ``replay``: a lane keeps its state from *before* the step at which it stopped
    or reached ``max_iters`` (the objective, code and records of that step are kept), and
    the caller takes that step again once after the loop (:mod:`vijax.inference.batch`):
    the loop's output states then feed nothing but the loop, and XLA carries (and
    computes per step) only the parts of the state the next step reads. ``args_axes``:
    ``args``' batch axes (``in_axes`` of a pytree prefix: ``None`` for leaves shared by
    the lanes). ``peel``: the carry is a fresh :func:`lean_start` (every lane running,
    ``t`` 0): the first step is taken before the loop, where the start's constants fold
    into it (no per-lane buffer of each initial constant).

    Returns ``(carry, trace)``: ``trace[k, b]`` is lane ``b``'s objective after step
    ``t0 + k`` (its last value after it stopped); rows from ``carry.t - t0`` on are
    unwritten."""
    rows = max(int(rows), 1)
    dtype = jnp.result_type(carry.elbo)
    tol = jnp.asarray(tol, dtype)
    t0 = carry.t
    nb = carry.code.shape[0]
    trace = jnp.zeros((rows, nb), dtype)  # row k: every lane after step t0 + k
    vstep = jax.vmap(step, in_axes=(args_axes, 0, 0, 0))

    def cond(c):
        return ((c[0] - t0 < rows) & (c[0] < max_iters)) & jnp.any(c[1].code < 0)

    def body(c):
        t, carry, trace = c
        e_prev, b_prev, code = carry.elbo, carry.bound, carry.code
        new, info = vstep(args, carry.state, e_prev, b_prev)
        on = code < 0
        one = code >= -1  # always true, traced (driver.materialized)
        # computed once (not in every fusion that reads it; materializing the step's
        # verdict as well measured slower)
        e = driver.materialized(jnp.asarray(info.elbo, dtype), one)
        if bound is None:
            r = driver.materialized(jnp.asarray(info.bound, dtype), one)
        else:
            # (a select, not a branch: some lane's ELBO falls at nearly every step, and
            # XLA splits a branch's |F| into several loops)
            r = jnp.where(e_prev - e >= 0, jnp.asarray(
                jax.vmap(bound, in_axes=(args_axes, 0))(args, new), dtype),
                          b_prev)
            r = driver.materialized(r, one)
        ok, conv = driver.step_verdict(e_prev, e, r, tol, info.ok, info.stop)
        stop = (t + 1) * span + jnp.where(
            ok, CONVERGED, FAILED + 4 * (jnp.asarray(info.extra, jnp.int32) + 1))
        max_decrease, excess = driver.decreases(carry.max_decrease, carry.excess, e_prev, e, r)
        elbo = jnp.where(on, e, e_prev)
        code = jnp.where(on & (conv | ~ok), stop, code)
        carry = LeanCarry(
            t + 1, _select(((code < 0) & (t + 1 < max_iters)) if replay else on, new,
                           carry.state), code,
            elbo, jnp.where(on, r, b_prev), jnp.where(on, max_decrease, carry.max_decrease),
            jnp.where(on, excess, carry.excess))
        trace = jax.lax.dynamic_update_index_in_dim(trace, elbo, t - t0, 0)
        return t + 1, carry, trace

    c = (t0, carry, trace)
    if peel:
        # every row starts as the first step's (rows not reached are "unwritten"): a
        # broadcast, where zeros with the row written in made XLA emit a pad fusion
        # (~0.2 ms at 10000 lanes on a CPU, unvectorized)
        t, carry, first = body(c)
        c = (t, carry, jnp.broadcast_to(first[0], trace.shape))
    _, carry, trace = jax.lax.while_loop(cond, body, c)
    return carry, trace


def lean_running(carry: LeanCarry, max_iters):
    """``[B]`` bool: the lanes still running."""
    return (carry.code < 0) & (carry.t < max_iters)


def lean_decode(carry: LeanCarry, span: int) -> Run:
    """The batched :class:`~vijax.inference.driver.Run` of a lean carry (``trace`` None;
    ``info`` with the objective, the bound and ``extra``: the failed step's, else -1)."""
    code = carry.code
    running = code < 0
    tag = code % span
    kind = jnp.where(running, 0, tag % 4)
    i = jnp.where(running, carry.t, code // span)
    failed = kind == FAILED
    extra = jnp.where(failed, tag // 4 - 1, -1)
    info = driver.Info(carry.elbo, ~failed, carry.bound, jnp.zeros_like(failed), extra)
    return Run(carry.state, info, None, i, kind == CONVERGED, jnp.where(failed, i - 1, -1),
               carry.max_decrease, carry.excess)


# ---- between segments and to the host

def pack(tree):
    """The leaves of ``tree`` (each ``[B, ...]``, or a scalar) as one ``[B, k]`` array per
    dtype (scalars broadcast over ``B``), and the layout :func:`unpack` needs. The
    layout does not depend on ``B`` (one per fitter)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    nb = max(jnp.shape(x)[0] for x in leaves if jnp.ndim(x))
    groups, where = {}, []
    for x in leaves:
        x = jnp.asarray(x)
        flat = jnp.broadcast_to(x, (nb,)) if x.ndim == 0 else x
        flat = flat.reshape(nb, -1)
        cols = groups.setdefault(x.dtype.name, [])
        start = sum(c.shape[1] for c in cols)
        cols.append(flat)
        where.append((x.dtype.name, start, flat.shape[1], x.shape[1:], x.ndim == 0))
    packed = {d: jnp.concatenate(cols, axis=1) for d, cols in groups.items()}
    return packed, (treedef, tuple(where))


def unpack(packed, layout):
    """Inverse of :func:`pack`."""
    treedef, where = layout
    leaves = []
    for dname, start, width, shape, scalar in where:
        block = packed[dname][:, start:start + width]
        nb = block.shape[0]
        leaves.append(block[0, 0] if scalar else block.reshape((nb,) + tuple(shape)))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def any_bits(flags):
    """``[B, k]`` booleans as ``[B]`` int32 bit masks (bit ``j``: column ``j``)."""
    return sum(flags[:, j].astype(jnp.int32) << j for j in range(flags.shape[1]))


def or_all(bits):
    """Bitwise OR over lanes: bit ``j`` is set when some lane has it (one reduction)."""
    return jax.lax.reduce(bits, jnp.int32(0), jax.lax.bitwise_or, (0,))
