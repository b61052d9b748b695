"""Many CAVI fits of one model in one call: :func:`batch_cavi`.

The model is analysed once for one data set's shapes; the fits are the lanes of the
batched driver (:mod:`vijax.inference.batch_driver`): one loop with a counter shared by
the lanes, the CAVI sweep vmapped over them, a lane frozen from the step it stopped
(converged, failed or at ``max_iters``), so each lane reports its own ``num_iters``,
``converged`` and diagnostics and equals the single fit of its data set. The loop runs
in segments of at most ``SEGMENT`` sweeps (one host check between segments), so the
ELBO trace costs what the lanes ran, not ``max_iters`` columns. A batch larger than
``chunk_size`` runs as consecutive chunks through the same compiled functions (the last
chunk padded and the padding dropped).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax.conjugacy import joint_blocks
from vijax.conjugacy.program import data_spec, program_for
from vijax.conjugacy.program import generation as program_generation
from vijax.errors import DataError, ModelSpecError
from vijax.families.registry import FAMILIES
from vijax.inference import batch_driver as bd
from vijax.inference import checks, stopping
from vijax.inference import meanfield as mf
from vijax.inference.cavi import CaviResult, _checked_options
from vijax.inference.cavi import magnitude_bound
from vijax.inference.cavi import sweep as cavi_sweep
from vijax.inference.driver import Info
from vijax.model import _checked_in_place, all_finite
from vijax.supports import default_float

#: sweeps per segment of the batched loop (the trace buffer is ``[lanes, SEGMENT]``)
SEGMENT = 16

#: compiled batched fitters, by (model, static options); a second call compiles nothing
_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()
_CACHE_SIZE = 32


def batch_cavi(model, datasets, *, key=None, chunk_size=None, strict=False, init=None,
               tol=None, max_iters=500, order=None, damping=None) -> CaviResult:
    """Fit ``model`` to every data set of a batch, in one batched CAVI loop.

    Args:
        model: a :class:`vijax.Model` whose latents are all conjugate.
        datasets: the data pytree with a leading batch axis on every leaf (lane ``b`` is
            ``tree_map(lambda x: x[b], datasets)``).
        key: PRNG key of the default initialization: one key (every lane starts as
            ``vj.cavi(model, data_b, key=key)`` would) or a batch of keys, one per lane.
            Default: ``jax.random.key(0)``, as :func:`vijax.cavi`.
        chunk_size: fit at most this many lanes at a time (memory); the chunks run one
            after the other through the same compiled functions. Default: the whole batch.
        strict: raise :class:`~vijax.errors.FitDivergedError` instead of warning when a
            lane failed or did not converge.
        init, tol, max_iters, order, damping: as in :func:`vijax.cavi`, the same for
            every lane (``tol=None``: the dtype's default, :func:`stopping.default_tol`).

    Returns:
        A :class:`~vijax.FitResult` whose leaves have the leading batch axis: per-lane
        ``elbo``, ``num_iters``, ``converged``, ``diagnostics``, posterior factors. A lane
        whose fit failed has NaN natural parameters and posterior (its flags are in
        ``diagnostics``). ``elbo_trace`` (a NumPy array, as ``analysis_s``) has
        ``T = max(num_iters)`` columns (the sweeps the batch ran): ``elbo_trace[b]`` is
        ``vj.cavi(model, data_b).elbo_trace[:T]`` (past a lane's own ``num_iters`` it
        holds that lane's last ELBO).

    Warns:
        ConvergenceWarning: how many lanes failed (an update left its family's domain or
            the ELBO became non-finite) or stopped at ``max_iters`` without converging,
            with the first of their indices.

    Raises:
        DataError: leaves without a common leading batch axis, or NaN/Inf in a data set
            (its lanes are named).

    Example:
        >>> import jax, jax.numpy as jnp, vijax as vj
        >>> zm = vj.models.ZOO["normal_gamma"]()
        >>> xs = jax.vmap(lambda k: zm.make_data(k, 20))(jax.random.split(jax.random.key(0), 8))
        >>> fits = vj.batch_cavi(zm.model, xs)
        >>> fits.elbo.shape, bool(fits.converged.all())
        ((8,), True)
    """
    n, prog, fitters = _program(model, datasets)
    if not (type(max_iters) is int and max_iters > 0):  # the common case: no call
        checks.check_positive_int("max_iters", max_iters)
    if tol is not None:
        checks.check_tol("tol", tol)
        tol = float(tol)
    if order is not None:
        order = checks.check_order(order, model.supports)
    if chunk_size is not None and int(chunk_size) < 1:
        raise ModelSpecError(f"chunk_size must be a positive integer, got {chunk_size}")
    chunk = n if chunk_size is None else min(int(chunk_size), n)
    key_batched = key is not None and jnp.ndim(key) >= 1
    if key is not None:  # None: jax.random.key(0), made inside the compiled fit
        checks.check_key(key[0] if key_batched else key)
    if key_batched and key.shape[0] != n:
        raise DataError(f"key holds {key.shape[0]} keys for {n} data sets")
    max_iters = int(max_iters)
    # the fitters of this entry by their options (one small look-up on a repeated call)
    fk = (max_iters, order, damping, key_batched, tol)
    hit = fitters.get(fk)
    if hit is None:
        if len(fitters) >= _CACHE_SIZE:  # e.g. a sweep over tolerances
            fitters.clear()
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
        t = stopping.default_tol(dtype) if tol is None else float(tol)
        hit = fitters[fk] = (_fitter(model, prog, max_iters, order, damping, key_batched),
                             t, jnp.asarray(t, dtype))
    fns, tol, tol_device = hit
    # the NaN/Inf check of the data runs on the host while the first chunk's fit runs on
    # the device (dispatch is asynchronous); bad data raise before any result is read
    check = lambda: _check_finite(datasets, fns.bad_lanes)  # noqa: E731

    outs, flags = [], 0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        take = lambda x: _padded(x, start, stop, chunk)  # noqa: E731
        whole = chunk == n  # one chunk: the arrays as they are (no copy)
        data_c = datasets if whole else jax.tree_util.tree_map(take, datasets)
        key_c = take(key) if key_batched and not whole else key
        # a constant of the analysis: made on the host (as vj.cavi's), not an output
        # array; one chunk: while the fit runs, else after the chunks are joined
        times = np.full(n, prog.analysis_s, fns.dtype) if whole else None
        res, cnt = _fit_chunk(fns, data_c, key_c, init, tol_device, check, times)
        check = None
        if stop - start < chunk:  # drop the padding lanes (and recount: they are copies)
            res = jax.tree_util.tree_map(lambda x: x[:stop - start], res)
            cnt = None
        outs.append(res)
        flags = None if cnt is None or flags is None else flags | cnt
    if len(outs) == 1:
        result = outs[0]
    else:
        result = _concatenate(outs)
        result = result._replace(diagnostics=dict(
            result.diagnostics, analysis_s=np.full(n, prog.analysis_s, fns.dtype)))
    _report(result, n, tol, strict, flags)
    return result


#: (model, data structure) -> (model, batch size, program, fitters): the checks, the
#: analysis and the compiled fitters of a repeated call cost two dictionary look-ups
_PROGRAMS: "OrderedDict[tuple, tuple]" = OrderedDict()


def _program(model, datasets):
    """``(n, program, fitters)``: the batch size of ``datasets`` (checked: one leading
    axis on every leaf) and the analysis of ``model`` for one lane's shapes (conjugate, no
    declared blocks). Cached by the data's structure, shapes and dtypes, the default
    float and the family registry (as :func:`vijax.conjugacy.program.program_for`).
    ``fitters``: a dict kept with the entry, options -> (:func:`_fitter`'s functions,
    the tolerance, the tolerance as a device scalar: a Python float argument costs a
    host-to-device transfer on every call)."""
    leaves, treedef = jax.tree_util.tree_flatten(datasets)
    k = (id(model), treedef, tuple(map(_shape_dtype, leaves)), default_float(),
         tuple(map(id, FAMILIES.values())), program_generation())
    hit = _PROGRAMS.get(k)
    if hit is not None and hit[0] is model:
        _PROGRAMS.move_to_end(k)
        return hit[1], hit[2], hit[3]
    if not leaves:
        raise DataError("batch_cavi needs a data pytree with at least one array leaf")
    sizes = {int(np.shape(x)[0]) if np.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise DataError("every leaf of datasets needs the same leading batch axis; got "
                        f"leading sizes {sorted(map(str, sizes))}")
    (n,) = sizes
    if n == 0:
        raise DataError("datasets has an empty batch axis")
    # shapes only: no device op (the analysis never reads data values)
    one = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype),
                                 data_spec(datasets))
    joint_blocks.refuse_blocks(model, "vj.batch_cavi")
    prog = program_for(model, one)  # analysed once, errors raised here
    prog.require_conjugate()
    _PROGRAMS[k] = (model, n, prog, {})  # the model is held: its id is not reused
    if len(_PROGRAMS) > _CACHE_SIZE:
        _PROGRAMS.popitem(last=False)
    return n, prog, _PROGRAMS[k][3]


def _shape_dtype(x):
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    return np.shape(x), np.dtype(dtype)


def _check_finite(datasets, bad_lanes):
    """Raise :class:`DataError` naming the lanes with NaN/Inf data. A leaf in host
    memory (a NumPy array, a jax array on the CPU) is checked on the host, as by
    :func:`vijax.model.check_data` (one vectorized pass, no device op); a leaf on an
    accelerator or split over devices by the jitted ``bad_lanes`` (where it lives: no
    copy to the host)."""
    bad, spread = None, False
    for x in jax.tree_util.tree_leaves(datasets):
        dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
        if not jnp.issubdtype(dtype, jnp.inexact):
            continue
        if _checked_in_place(x):
            spread = True
            continue
        arr = np.asarray(x)
        if not all_finite(arr):
            rows = ~np.all(np.isfinite(arr.reshape(arr.shape[0], -1)), axis=1)
            bad = rows if bad is None else bad | rows
    if spread:
        rows = np.asarray(bad_lanes(datasets))
        bad = rows if bad is None else bad | rows
    if bad is not None and bad.any():
        raise DataError(f"datasets has NaN/Inf values in lanes {_lanes(bad)}; remove or "
                        "impute them before fitting")


def _fit_chunk(fns, data, key, init, tol, during=None, analysis_s=None):
    """One chunk through the segments: the first one builds the result as well (most
    batches stop within it); otherwise the loop restarts with its carry as an output and
    goes on segment by segment (compiled on first use). ``during()`` (optional) runs on
    the host once the first segment is dispatched; the result's host-side parts
    (``natural``, ``analysis_s`` if given) are attached while the device works. Returns
    the result and its flags (:func:`_report`)."""
    first, restart, more, finish = fns[:4]

    def dress(result):
        # the natural parameters are the posterior factors' (one output buffer for both)
        natural = {name: dict(q.natural) for name, q in result.posterior.items()}
        diag = result.diagnostics if analysis_s is None else dict(
            result.diagnostics, analysis_s=analysis_s)
        return result._replace(natural=natural, diagnostics=diag)

    leaves = first(data, key, init, tol)
    if during is not None:
        during()
    trace, result, status = fns.unflatten_first(leaves)
    result = dress(result)
    steps, bits = (int(v) for v in np.asarray(status))  # one host read
    traces = [trace]
    if bits & 1:
        packed, trace, status = restart(data, key, init, tol)
        traces = [trace]
        steps, bits = (int(v) for v in np.asarray(status))
        while bits & 1:
            packed, trace, status = more(data, packed, tol)
            steps, bits = (int(v) for v in np.asarray(status))
            traces.append(trace)
        result, bits = finish(data, packed)
        result, bits = dress(result), int(bits)
    # step-major segments, rows past the last step unwritten: the steps run, per lane
    # (a NumPy view of the device buffer: no device op, no copy)
    trace = (np.asarray(traces[0]) if len(traces) == 1
             else np.concatenate([np.asarray(tr) for tr in traces]))[:steps].T
    return result._replace(elbo_trace=trace), bits >> 1


def _concatenate(outs):
    """Concatenate chunk results; traces are padded to the longest with their last value."""
    width = max(o.elbo_trace.shape[1] for o in outs)

    def pad(tr):  # NumPy, as the traces
        return np.concatenate([tr, np.repeat(tr[:, -1:], width - tr.shape[1], axis=1)],
                              axis=1)
    trace = np.concatenate([pad(o.elbo_trace) for o in outs])
    out = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs),
                                 *[o._replace(elbo_trace=None) for o in outs])
    return out._replace(elbo_trace=trace)


def _padded(x, start, stop, chunk):
    """Lanes ``start:stop`` of ``x``, padded to ``chunk`` lanes by repeating the last one
    (a valid data set: the padding fits like a real lane and is dropped)."""
    part = x[start:stop]
    if stop - start == chunk:
        return part
    reps = jnp.repeat(part[-1:], chunk - (stop - start), axis=0)
    return jnp.concatenate([part, reps])


class Fitter(NamedTuple):
    """:func:`_fitter`'s functions, the floating dtype of their results, and the output
    structures recorded when they were traced (``layout``)."""

    first: Any
    restart: Any
    more: Any
    finish: Any
    bad_lanes: Any
    dtype: Any
    layout: dict

    def unflatten_first(self, leaves):
        """``(trace, result, status)`` from :attr:`first`'s leaves."""
        return jax.tree_util.tree_unflatten(self.layout["first"], leaves)


def _fitter(model, prog, max_iters, order, damping, key_batched):
    """A :class:`Fitter`: jitted functions of one batch's arrays (cached).

    ``first(data, key, init, tol) -> leaves`` of ``(trace, result, status)``
    (:meth:`Fitter.unflatten_first`) runs the first segment
    and builds the result (most batches end within it: the loop's carry is not an
    output, which would cost more than the result); when lanes are still running,
    ``restart(data, key, init, tol) -> (packed, trace, status)`` runs the same segment
    again (compiled on first use) and returns the carry, packed (``bd.pack``: one array
    per dtype); ``more(data, packed, tol) -> (packed, trace, status)`` runs one more
    segment; ``finish(data, packed) -> (result, flags)``. ``status`` is ``[t, bits]``
    (one host read): bit 0 some lane still runs, bits 1-3 :func:`_result`'s flags
    (zeros from ``restart``/``more``); ``bad_lanes(data)`` flags the lanes with NaN/Inf
    data (for leaves split over devices: :func:`_check_finite`)."""
    k = (id(model), max_iters, order, damping, key_batched,
         str(jax.dtypes.canonicalize_dtype(jnp.float64)))
    hit = _CACHE.get(k)
    if hit is not None and hit[0] is model:
        _CACHE.move_to_end(k)
        return hit[1]
    rows = min(max_iters, SEGMENT)
    layout = {}  # the structures of first's outputs and of the carry, recorded when traced
    span = _span(model, max_iters)

    # constants that do not depend on the data (the prior's, the model's) stay one
    # value for every lane: no per-lane copy made, carried, or read by the loop
    # (F as its list of leaves: :meth:`Program.from_leaves` rebuilds it per lane)
    axes = list(prog.batch_axes())
    build = prog.from_leaves

    def materialize(data):
        return jax.vmap(lambda d: jax.tree_util.tree_leaves(prog.materialize(d)),
                        out_axes=axes)(data)

    def step(leaves, state, elbo_prev, bound_prev):
        # CAVI's sweep (vijax.inference.cavi.sweep_step); its rounding bound is left to
        # the loop (``bound``), which evaluates it only when an ELBO did not increase
        natural, mu = state
        compiled = build(leaves)
        natural, mu, e, invalid = cavi_sweep(
            lambda m: (compiled, m), mf.families_of(compiled), natural, mu,
            _checked_options(compiled, order, damping), damping)
        return (natural, mu), Info(e, invalid < 0, 0.0, False, invalid)

    def bound(leaves, state):
        return magnitude_bound(build(leaves), state[1], jnp.zeros(()).dtype)

    def advance(compiled, carry, tol, peel=False):
        carry, trace = bd.lean_advance(step, compiled, carry, max_iters=max_iters,
                                       tol=tol, rows=rows, span=span, bound=bound,
                                       peel=peel, args_axes=axes, replay=replay)
        return carry, trace, bd.lean_running(carry, max_iters)

    # replay (undamped sweeps): the loop keeps a stopped lane's state from before its
    # last sweep, which ``decode`` takes again once (every lane has stopped when a result
    # is kept). The old natural parameters enter a plain sweep only where an update is
    # refused (a failed lane, NaN-ed in the result), so the replay is given NaNs for
    # them: the loop's natural parameters then feed nothing after it, and XLA neither
    # carries nor computes them per sweep (only the mean parameters the next sweep
    # reads), measured ~0.2 ms of 10000 normal-gamma fits' ~1 ms on a CPU
    replay = damping is None

    def decode(compiled, carry):
        if replay:
            natural, mu = carry.state
            nan = jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.nan), natural)
            last, _ = jax.vmap(step, in_axes=(axes, 0, 0, 0))(
                compiled, (nan, mu), carry.elbo, carry.bound)
            carry = carry._replace(state=last)
        return bd.lean_decode(carry, span)

    def status(carry, bits):
        # ``[t, bits]``: bit 0 some lane runs, bits 1-3 :func:`_result`'s flags
        return jnp.stack([jnp.asarray(carry.t, jnp.int32), bits])

    def bad_lanes(data):
        bad = False
        for x in jax.tree_util.tree_leaves(data):
            if jnp.issubdtype(x.dtype, jnp.inexact):
                bad = bad | ~jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)
        return bad

    def segment0(data, key, init, tol):
        compiled = materialize(data)
        dtype = jnp.zeros(()).dtype
        key = jax.random.key(0) if key is None else key

        def init_one(leaves, k):
            c = build(leaves)
            natural0 = mf.user_init(c, init, mf.default_init(c, k, dtype))
            return (natural0, mf.mean_params(c, natural0)), mf.elbo(c, natural0)
        states, elbo0 = jax.vmap(init_one, in_axes=(axes, 0 if key_batched else None))(
            compiled, key)
        carry = bd.lean_start(states, elbo0, jnp.zeros_like(elbo0))
        carry, trace, active = advance(compiled, carry, tol, peel=True)
        return compiled, carry, trace, active

    def first(data, key, init, tol):
        compiled, carry, trace, active = segment0(data, key, init, tol)
        result, bits = _result(compiled, decode(compiled, carry), axes, build, active)
        return trace, result, status(carry, bits)

    def restart(data, key, init, tol):
        _, carry, trace, active = segment0(data, key, init, tol)
        packed, layout["carry"] = bd.pack(carry)
        return packed, trace, status(carry, bd.or_all(active.astype(jnp.int32)))

    def more(data, packed, tol):
        carry = bd.unpack(packed, layout["carry"])
        carry, trace, active = advance(materialize(data), carry, tol)
        running = bd.or_all(active.astype(jnp.int32))
        return bd.pack(carry)[0], trace, status(carry, running)

    def finish(data, packed):
        compiled = materialize(data)
        run = decode(compiled, bd.unpack(packed, layout["carry"]))
        return _result(compiled, run, axes, build)

    # XLA's default CPU emitters, not vijax._xla.jit's classic ones: the batched loop of
    # 10000 lanes ran 2x slower with those (float32 first segment 1.27 vs 0.62 ms, float64
    # 1.59 vs 1.40 ms, side by side in one process)
    def first_flat(data, key, init, tol):
        # the outputs as a flat list (their structure recorded when traced): the host
        # rebuilds the result's pytree while the device runs, not inside the dispatch
        leaves, layout["first"] = jax.tree_util.tree_flatten(first(data, key, init, tol))
        return leaves

    fns = Fitter(jax.jit(first_flat), jax.jit(restart), jax.jit(more), jax.jit(finish),
                 jax.jit(bad_lanes), np.dtype(jax.dtypes.canonicalize_dtype(jnp.float64)),
                 layout)
    _CACHE[k] = (model, fns)  # the model is held: its id is not reused while cached
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return fns


def _result(leaves, run, axes, build, active=None):
    """The batched :class:`FitResult` of a batched :class:`~vijax.inference.driver.Run`
    (``elbo_trace`` attached by the caller, ``analysis_s`` by :func:`batch_cavi`), as
    :func:`vijax.cavi` builds it per lane: failed lanes get NaN parameters. ``leaves``:
    F's leaves with batch ``axes``, ``build`` rebuilds one lane's F from them. Also
    the OR over lanes of ``active`` (bit 0, ``[B]`` bool, optional) and of the flags
    failed, unconverged, excess (bits 1-3): whether any lane has one says whether
    :func:`_report` has lanes to name (it reads nothing when none has)."""
    failed = run.failed_at >= 0
    invalid = jnp.where(failed, run.info.extra, -1)
    elbo = run.info.elbo
    nonfinite = ~jnp.isfinite(elbo)
    diag = {"max_decrease": run.max_decrease, "nonfinite": nonfinite,
            "invalid_latent": invalid,
            "invalid_iter": jnp.where(invalid >= 0, run.failed_at + 1, -1),
            "excess_decrease": run.excess_decrease, "rounding_bound": run.info.bound}
    bad = nonfinite | (invalid >= 0)
    flags = jnp.stack([bad, ~run.converged & ~bad, (run.excess_decrease > 0) & ~bad],
                      axis=1)
    bits = bd.any_bits(flags) * 2
    if active is not None:
        bits = bits | active.astype(jnp.int32)
    bits = bd.or_all(bits)  # one reduction: the status and the branch below read it
    # (a branch: a batch without failed lanes makes no pass over the parameters)
    natural = jax.lax.cond((bits & 2) != 0, lambda nat: jax.tree_util.tree_map(
        lambda x: jnp.where(bad.reshape(bad.shape + (1,) * (x.ndim - 1)), jnp.nan, x),
        nat), lambda nat: nat, run.state[0])
    posterior = jax.vmap(lambda c, nat: mf.posterior(build(c), nat), in_axes=(axes, 0))(
        leaves, natural)
    # ``natural`` is filled on the host from the posterior factors (same arrays)
    return CaviResult(posterior, elbo, None, run.num_iters, run.converged, diag,
                      None), bits


def _span(model, max_iters):
    """The lean loop's code span (:class:`~vijax.inference.batch_driver.LeanCarry`):
    4 per value of ``Info.extra`` (the refused block's index in the order, or -1)."""
    span = 4 * (len(model.supports) + 1)
    if (int(max_iters) + 1) * span >= 2 ** 31:
        raise ModelSpecError(f"max_iters={max_iters} is too large for vj.batch_cavi with "
                             f"{len(model.supports)} latents (at most "
                             f"{2 ** 31 // span - 2})")
    return span


def _lanes(mask, limit=10):
    idx = np.flatnonzero(mask)
    more = ", ..." if idx.size > limit else ""
    return "[" + ", ".join(str(i) for i in idx[:limit]) + more + "]"


def _report(result, n, tol, strict, flags=None):
    """Warn (or raise when ``strict``) about failed, unconverged and excess-decrease
    lanes, naming them. ``flags`` (from the fit, or None: bit 0 some lane failed, bit 1
    some lane did not converge, bit 2 some lane's ELBO decreased beyond its bound) lets a
    clean batch skip reading the per-lane arrays."""
    if flags is not None and not (flags & 0b101 or (flags & 0b10 and tol != 0)):
        return
    d = result.diagnostics
    failed = np.asarray(d["nonfinite"]) | (np.asarray(d["invalid_latent"]) >= 0)
    unconverged = ~np.asarray(result.converged) & ~failed
    excess = (np.asarray(d["excess_decrease"]) > 0) & ~failed
    problems = []
    if failed.any():
        problems.append(
            f"{int(failed.sum())} of {n} lanes failed (an update left its family's valid "
            f"region or the ELBO became non-finite; their posteriors are NaN): lanes "
            f"{_lanes(failed)}; diagnostics['invalid_latent'] and ['invalid_iter'] say "
            "where.")
    if unconverged.any() and tol != 0:
        problems.append(
            f"{int(unconverged.sum())} of {n} lanes stopped at max_iters without "
            f"converging: lanes {_lanes(unconverged)}. Raise max_iters or tol.")
    if excess.any():
        problems.append(
            f"In {int(excess.sum())} of {n} lanes the ELBO decreased by more than its "
            f"rounding bound: lanes {_lanes(excess)} (see diagnostics['max_decrease']).")
    stopping.report(problems, strict, stacklevel=4)
