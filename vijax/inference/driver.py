"""One driver for every algorithm: ``init(...) -> State``, ``step(State) -> (State, Info)``.

An algorithm (CAVI, a gradient ELBO, EM, Laplace's optimizer) is a pair of pure functions
(:class:`Algorithm`). Its configuration and its data are captured by closure; the State is
a NamedTuple of the arrays the next step needs. :func:`run` iterates ``step`` inside one
``lax.while_loop`` and owns what every fit shares:

- the **trace** of the objective (``Info.elbo`` after each step; fixed length
  ``max_iters``, padded with the last value);
- the **stopping rule** (one implementation, dtype-aware through ``Info.bound``):

  * ``window == 1`` (deterministic steps): converged when
    ``|L_t - L_{t-1}| <= tol * max(|L_t|, 1)``, or when the objective decreased by no
    more than its rounding bound ``R_t = Info.bound`` (``-R_t <= L_t - L_{t-1} <= 0``;
    :mod:`vijax.inference.stopping`);
  * ``window = w > 1`` (noisy steps: Monte Carlo ELBOs): every ``w`` steps the mean of the
    last ``w`` values ``m_c`` is compared with the previous window's mean:
    ``|m_c - m_{c-1}| <= tol * max(|m_c|, 1) + R + 2 sqrt(se_c^2 + se_{c-1}^2)``, with
    ``se_c^2 = var(window) / w`` when ``stochastic`` (a change that the sampling noise
    explains is no progress);
  * ``Info.stop`` (the algorithm's own fixed-point test, e.g. a step shorter than its
    tolerance) ends the run as converged; ``tol = 0`` never converges by the rule;
- the **failure report**: the first step whose ``Info.ok`` is false ends the run;
  ``Run.failed_at`` is its index (-1: none). The step decides what State to hand back
  (CAVI keeps the refused block's old parameters, the gradient path its last finite point);
- **monotonicity bookkeeping**: the largest decrease of the objective, and the largest
  decrease beyond the rounding bound (``> 0`` is a bug for an exact ascent algorithm);
- **progress** between chunks of ``every`` steps: ``progress(step, elbo)`` is called on
  the host (``jax.debug.callback``); :func:`progress_printer` gives a tqdm bar when tqdm is
  installed, else lines on stderr.

Under ``jax.vmap`` the loop runs until every lane has stopped, and a lane that stopped is
frozen (JAX's batched while loop keeps a finished lane's carry), so each lane reports its
own ``num_iters`` and ``converged``.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from vijax.inference import stopping


class Info(NamedTuple):
    """What every step reports.

    Attributes:
        elbo: the objective after the step (ELBO; EM's log likelihood or ELBO; a log
            density for an optimizer).
        ok: the step is valid (False ends the run as failed).
        bound: the objective's absolute resolution (rounding bound), 0 if unknown.
        stop: the algorithm's own convergence test passed (ends the run as converged).
        extra: algorithm-specific diagnostics (a pytree; the last step's is returned).
    """

    elbo: Any
    ok: Any = True
    bound: Any = 0.0
    stop: Any = False
    extra: Any = ()


class Algorithm(NamedTuple):
    """``init(*args) -> State`` and ``step(State) -> (State, Info)``, both pure and jittable
    (configuration and data captured by closure)."""

    init: Callable[..., Any]
    step: Callable[[Any], tuple]


class Run(NamedTuple):
    """The outcome of :func:`run` (a pytree).

    Attributes:
        state: the final State.
        info: the Info of the last step taken (the initial one if none was).
        trace: ``Info.elbo`` after each step, length ``max_iters``, padded with the last.
        num_iters: steps taken.
        converged: the stopping rule (or ``Info.stop``) ended the run.
        failed_at: index of the first step with ``Info.ok`` false, -1 if none.
        max_decrease: the largest decrease of the objective between two steps (>= 0).
        excess_decrease: the largest decrease beyond the step's rounding bound
            (``<= 0``: none; -inf before any step).
    """

    state: Any
    info: Any
    trace: Any
    num_iters: Any
    converged: Any
    failed_at: Any
    max_decrease: Any
    excess_decrease: Any


class Lane(NamedTuple):
    """The stopping rule's bookkeeping for one fit (one lane of a batch): everything
    :func:`run` carries besides the State and the trace.

    Attributes:
        i: steps taken.
        info: the Info of the last step (``info.elbo``: the objective now).
        converged, failed_at, max_decrease, excess: as in :class:`Run`.
        win_sum, win_sq, prev_mean, prev_se2: the windowed rule's running sums and the
            previous window's mean and squared standard error (unused when ``window == 1``).
    """

    i: Any
    info: Any
    converged: Any
    failed_at: Any
    max_decrease: Any
    excess: Any
    win_sum: Any
    win_sq: Any
    prev_mean: Any
    prev_se2: Any


def initial_info(step, state, info0=None, elbo0=None) -> Info:
    """The Info of the initial state (``info0``, default zeros shaped like the first step's
    Info) with ``elbo = elbo0`` (NaN when None: the first step cannot converge)."""
    if info0 is None:
        info0 = jax.tree_util.tree_map(
            lambda s: jnp.zeros(s.shape, s.dtype),
            jax.eval_shape(lambda s: _as_info(step(s)[1]), state))
    info0 = _as_info(info0)
    dtype = jnp.result_type(info0.elbo)
    return info0._replace(elbo=jnp.asarray(jnp.nan if elbo0 is None else elbo0, dtype))


def lane_start(info0: Info) -> Lane:
    """The bookkeeping before any step (``info0`` from :func:`initial_info`)."""
    dtype = jnp.result_type(info0.elbo)
    zero = jnp.zeros((), dtype)
    return Lane(jnp.asarray(0), info0, jnp.asarray(False), jnp.asarray(-1), zero,
                jnp.full((), -jnp.inf, dtype), zero, zero, jnp.asarray(jnp.nan, dtype), zero)


def lane_active(lane: Lane, max_iters):
    """The fit goes on: fewer than ``max_iters`` steps, not converged, not failed."""
    return (lane.i < max_iters) & ~lane.converged & (lane.failed_at < 0)


def lane_update(lane: Lane, info, tol, window: int = 1, stochastic: bool = False):
    """Apply the stopping rule (module docstring) to one step's ``info``.

    ``tol`` must have the objective's dtype. Returns ``(lane, ok, converged)``: the
    bookkeeping after the step, whether the step was valid, whether it ended the fit as
    converged. The rule's per-step parts (:func:`step_verdict`, :func:`decreases`) are
    shared with the lean batched loop
    (:func:`vijax.inference.batch_driver.lean_advance`)."""
    info = _as_info(info)
    dtype = jnp.result_type(lane.info.elbo)
    zero = jnp.zeros((), dtype)
    e = jnp.asarray(info.elbo, dtype)
    bound = jnp.asarray(info.bound, dtype)
    win_sum, win_sq = lane.win_sum, lane.win_sq
    prev_mean, prev_se2 = lane.prev_mean, lane.prev_se2
    if window == 1:
        ok, conv = step_verdict(lane.info.elbo, e, bound, tol, info.ok, info.stop)
    else:
        ok = jnp.asarray(info.ok, bool) & jnp.isfinite(e)
        win_sum, win_sq = win_sum + e, win_sq + e * e
        end = (lane.i + 1) % window == 0
        mean = win_sum / window
        se2 = (jnp.maximum(win_sq / window - mean * mean, 0.0) / window
               if stochastic else zero)
        allow = (tol * jnp.maximum(jnp.abs(mean), 1.0) + bound
                 + 2.0 * jnp.sqrt(se2 + lane.prev_se2))
        conv = end & (jnp.abs(mean - lane.prev_mean) <= allow) & (tol > 0)
        prev_mean = jnp.where(end, mean, lane.prev_mean)
        prev_se2 = jnp.where(end, se2, lane.prev_se2)
        win_sum, win_sq = jnp.where(end, zero, win_sum), jnp.where(end, zero, win_sq)
        conv = (conv | jnp.asarray(info.stop, bool)) & ok
    max_decrease, excess = decreases(lane.max_decrease, lane.excess, lane.info.elbo, e, bound)
    new = Lane(lane.i + 1, info._replace(elbo=e, bound=bound), conv,
               jnp.where(ok, lane.failed_at, lane.i), max_decrease, excess,
               win_sum, win_sq, prev_mean, prev_se2)
    return new, ok, conv


def step_verdict(e_prev, e, bound, tol, info_ok, info_stop):
    """``(ok, converged)`` of one step by the per-step rule: valid and finite, and
    :func:`vijax.inference.stopping.converged` (``tol > 0``) or the step's own stop."""
    ok = jnp.asarray(info_ok, bool) & jnp.isfinite(e)
    conv = ((stopping.converged(e - e_prev, e, tol, bound) & (tol > 0))
            | jnp.asarray(info_stop, bool)) & ok
    return ok, conv


def decreases(max_decrease, excess, e_prev, e, bound):
    """The monotonicity records after a step from ``e_prev`` to ``e``: the largest
    decrease, and the largest decrease beyond the step's rounding bound."""
    drop = e_prev - e
    fin = jnp.isfinite(drop)
    return (jnp.maximum(max_decrease, jnp.where(fin, drop, 0.0)),
            jnp.maximum(excess, jnp.where(fin, drop - bound, -jnp.inf)))


#: steps of :func:`run`'s first loop (whose trace buffer has this many entries)
TRACE_CHUNK = 16


class _Carry(NamedTuple):
    state: Any
    lane: Lane
    trace: Any


def run(step: Callable, state, *, max_iters: int, tol, elbo0=None, window: int = 1,
        stochastic: bool = False, progress: bool | Callable = False, every: int = 100,
        info0: Info | None = None, length: int | None = None,
        split_trace: bool = False) -> Run:
    """Iterate ``step`` from ``state`` in ``lax.while_loop`` (see the module docstring).
    With ``split_trace`` (for a loop that will be vmapped): the first
    :data:`TRACE_CHUNK` steps in one loop whose trace buffer has that many entries, the
    others in a second loop over the whole trace (under ``vmap`` a loop's carry is
    selected per lane at every step: fits that stop early never carry the
    ``max_iters``-long trace through a loop). Without it one loop: the step is compiled
    once (two loops compile it twice, ~15% of a first fit's one-time cost).

    Args:
        step: ``State -> (State, Info)``.
        state: the initial State.
        max_iters: at most this many steps (static).
        tol: relative tolerance of the stopping rule (may be traced); 0 runs every step.
        elbo0: the objective at the initial state (the first step's change is measured
            from it; NaN or None: the first step cannot converge).
        window: 1 for the per-step rule, ``w > 1`` for the windowed means (static).
        stochastic: add the windows' sampling noise to the allowance (static).
        progress: optional host callback ``progress(step, elbo)``, every ``every`` steps;
            ``True`` reports to the innermost :func:`reporting` context (so that a jitted
            fitter needs no recompile per callback object).
        info0: an Info for the initial state (its ``extra`` fixes the structure returned
            when no step runs); default: the structure of the first step's Info.
        length: a static bound on ``max_iters``, which may then be traced (one compiled
            loop for every ``max_iters <= length``); the trace then has ``length``
            entries (padded with the last value). Default: ``max_iters`` is static.
        split_trace: the two-loop form (static; see above).
    """
    if length is None:
        max_iters = int(max_iters)
        n = max(max_iters, 1)
    else:
        n = max(int(length), 1)
        max_iters = jnp.minimum(jnp.asarray(max_iters), int(length))
    window = max(1, int(window))
    info0 = initial_info(step, state, info0, elbo0)
    dtype = jnp.result_type(info0.elbo)
    tol = jnp.asarray(tol, dtype)
    k = min(TRACE_CHUNK, n) if split_trace else n

    def body(c):
        state, lane0, trace = c
        # per-lane scalars (the ELBO, the bound) computed once per step under vmap
        new, info = materialized(step(state), lane0.i >= 0)
        lane, ok, conv = lane_update(lane0, info, tol, window, stochastic)
        e = lane.info.elbo
        if progress:
            sink = _dispatch if progress is True else progress
            i = lane0.i
            jax.lax.cond(((i + 1) % every == 0) | (i + 1 == max_iters) | conv | ~ok,
                         lambda: jax.debug.callback(sink, i + 1, e),
                         lambda: None)
        return _Carry(new, lane, trace.at[lane0.i].set(e))

    c = _Carry(state, lane_start(info0), jnp.zeros((k,), dtype))
    if (length is not None or max_iters > 0) and not split_trace:
        c = jax.lax.while_loop(lambda c: lane_active(c.lane, max_iters), body, c)
    elif length is not None or max_iters > 0:
        # the first k steps write a k-entry trace, the others the whole one: under vmap
        # JAX's batched while loop selects every carry leaf per lane at every step, so
        # a [lanes, max_iters] trace in the carry was copied at every step; fits that
        # end within k steps now never run the second loop (two plain loops, not
        # nested ones: XLA still drops the carries whose outputs are unused)
        c = jax.lax.while_loop(lambda c: lane_active(c.lane, max_iters) & (c.lane.i < k),
                               body, c)
        c = c._replace(trace=jax.lax.dynamic_update_slice(jnp.zeros((n,), dtype),
                                                          c.trace, (0,)))
        c = jax.lax.while_loop(lambda c: lane_active(c.lane, max_iters), body, c)
    else:
        c = c._replace(trace=jnp.zeros((n,), dtype))
    lane = c.lane
    trace = jnp.where(jnp.arange(n) < lane.i, c.trace, lane.info.elbo)
    trace = trace if length is not None else trace[:max_iters]
    return Run(c.state, lane.info, trace, lane.i, lane.converged, lane.failed_at,
               lane.max_decrease, lane.excess)


def materialized(tree, true):
    """``tree`` unchanged in value, each float leaf shaped like ``true`` computed once.

    XLA fuses an elementwise value into every fusion that reads it: in a batched loop
    the step's ELBO (a sum over the model's terms, ~20 operands per lane) was evaluated
    again in each fusion of the bookkeeping (the stopping rule, the monotonicity checks,
    the trace, the per-lane selects: ~7 times per step). A division is an expensive op
    that XLA does not duplicate, so ``x / 1`` (exact: ``x / 1 == x`` for every float,
    NaN and infinities included) makes such a leaf one buffer. ``true`` must be a traced
    boolean array that is always true (e.g. ``steps >= 0``), so that XLA cannot fold the
    division, and shaped like the leaves it applies to (one value per lane: a divisor
    broadcast from a smaller shape becomes a multiplication by its reciprocal, which XLA
    duplicates again); other leaves are returned as they are.
    """
    true = jnp.asarray(true)

    def one(x):
        dtype = jnp.result_type(x)
        if jnp.shape(x) != true.shape:
            return x
        if jnp.issubdtype(dtype, jnp.floating):
            return x / true.astype(dtype)
        return x
    return jax.tree_util.tree_map(one, tree)


def _as_info(info) -> Info:
    if isinstance(info, Info):
        return info
    raise TypeError(f"an algorithm's step must return (State, vijax.Info), got {type(info)}")


_SINKS: list = []


def _dispatch(i, elbo):
    if _SINKS:
        _SINKS[-1](i, elbo)


class reporting:
    """``with reporting(callback): ...`` routes ``run(..., progress=True)`` reports to
    ``callback`` (block on the result inside the block: the reports arrive while the
    computation runs)."""

    def __init__(self, callback: Callable):
        self.callback = callback

    def __enter__(self):
        _SINKS.append(self.callback)
        return self.callback

    def __exit__(self, *exc):
        _SINKS.remove(self.callback)
        close = getattr(self.callback, "close", None)
        if close is not None:
            close()
        return False


def progress_printer(total: int, label: str = "vijax") -> Callable:
    """A host callback for :func:`run`: a tqdm bar when tqdm is installed, else one line
    per report on stderr. ``close()`` (an attribute of the returned callable) ends the
    bar."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    state = {"bar": None, "last": 0}

    def report(i, elbo):
        i, elbo = int(i), float(elbo)
        if tqdm is None:
            print(f"[{label}] step {i:6d}  ELBO {elbo:.6g}", file=sys.stderr)
            return
        if state["bar"] is None:
            state["bar"] = tqdm(total=total, desc=label, leave=False)
        state["bar"].update(i - state["last"])
        state["last"] = i
        state["bar"].set_postfix(elbo=f"{elbo:.6g}")

    def close():
        if state["bar"] is not None:
            state["bar"].close()

    report.close = close
    return report


def wants_progress(progress, traced: bool, max_iters: int, threshold: int = 2000) -> bool:
    """Resolve a fitter's ``progress`` option: ``True``/``False`` as given, ``None``
    (the default) on for long fits (``max_iters >= threshold``) run interactively (stderr
    is a terminal), and always off when the call is traced (``jit``/``vmap``)."""
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        from vijax.errors import ModelSpecError
        raise ModelSpecError(f"progress must be True, False, None or a callable "
                             f"progress(step, elbo), got {progress!r}")
    if traced:
        return False
    if progress is None:
        return max_iters >= threshold and sys.stderr.isatty()
    return bool(progress)
