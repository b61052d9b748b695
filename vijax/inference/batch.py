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

import jax
import jax.numpy as jnp
import numpy as np

from vijax.conjugacy.program import program_for
from vijax.errors import DataError, ModelSpecError
from vijax.inference import batch_driver as bd
from vijax.inference import checks, stopping
from vijax.inference import meanfield as mf
from vijax.inference.cavi import CaviResult, algorithm

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
        ``diagnostics``). ``elbo_trace`` has ``T = max(num_iters)`` columns (the sweeps
        the batch ran): ``elbo_trace[b]`` is ``vj.cavi(model, data_b).elbo_trace[:T]``
        (past a lane's own ``num_iters`` it holds that lane's last ELBO).

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
    leaves = jax.tree_util.tree_leaves(datasets)
    if not leaves:
        raise DataError("batch_cavi needs a data pytree with at least one array leaf")
    sizes = {int(np.shape(x)[0]) if np.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise DataError("every leaf of datasets needs the same leading batch axis; got "
                        f"leading sizes {sorted(map(str, sizes))}")
    (n,) = sizes
    if n == 0:
        raise DataError("datasets has an empty batch axis")
    checks.check_positive_int("max_iters", max_iters)
    if tol is not None:
        checks.check_tol("tol", tol)
    if order is not None:
        checks.check_order(order, model.supports)
    one = jax.tree_util.tree_map(lambda x: x[0], datasets)
    prog = program_for(model, one)  # analysed once, errors raised here
    prog.require_conjugate()
    if chunk_size is not None and int(chunk_size) < 1:
        raise ModelSpecError(f"chunk_size must be a positive integer, got {chunk_size}")
    chunk = n if chunk_size is None else min(int(chunk_size), n)
    dtype = jnp.zeros(()).dtype
    tol = stopping.default_tol(dtype) if tol is None else float(tol)
    key = jax.random.key(0) if key is None else key
    checks.check_key(key if jnp.ndim(key) == 0 else key[0])
    key_batched = jnp.ndim(key) >= 1
    if key_batched and key.shape[0] != n:
        raise DataError(f"key holds {key.shape[0]} keys for {n} data sets")
    order = None if order is None else tuple(order)
    max_iters = int(max_iters)
    fns = _fitter(model, prog, max_iters, order, damping, key_batched)

    outs = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        take = lambda x: _padded(x, start, stop, chunk)  # noqa: E731
        data_c = jax.tree_util.tree_map(take, datasets)
        key_c = take(key) if key_batched else key
        res = _fit_chunk(fns, data_c, key_c, init, tol, max_iters, start)
        if stop - start < chunk:  # drop the padding lanes
            res = jax.tree_util.tree_map(lambda x: x[:stop - start], res)
        outs.append(res)
    result = outs[0] if len(outs) == 1 else _concatenate(outs)
    _report(result, n, tol, strict)
    return result


def _fit_chunk(fns, data, key, init, tol, max_iters, offset):
    """One chunk through the segments: the first one builds the result as well (most
    batches stop within it); later ones (compiled on first use) continue the loop."""
    first, more, finish = fns
    carry, trace, result, running, bad = first(data, key, init, tol)
    bad = np.asarray(bad)
    if bad.any():
        raise DataError(f"datasets has NaN/Inf values in lanes {_lanes(bad, offset=offset)}; "
                        "remove or impute them before fitting")
    traces = [trace]
    if bool(running):
        while bool(running):
            carry, trace, running = more(data, carry, tol)
            traces.append(trace)
        result = finish(data, carry)
    steps = int(carry.t)  # the columns run; later ones only repeat the last value
    trace = traces[0] if len(traces) == 1 else jnp.concatenate(traces, axis=1)
    return result._replace(elbo_trace=trace[:, :steps] if steps < trace.shape[1] else trace)


def _concatenate(outs):
    """Concatenate chunk results; traces are padded to the longest with their last value."""
    width = max(o.elbo_trace.shape[1] for o in outs)

    def pad(tr):
        extra = width - tr.shape[1]
        return tr if extra == 0 else jnp.concatenate(
            [tr, jnp.repeat(tr[:, -1:], extra, axis=1)], axis=1)
    outs = [o._replace(elbo_trace=pad(o.elbo_trace)) for o in outs]
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *outs)


def _padded(x, start, stop, chunk):
    """Lanes ``start:stop`` of ``x``, padded to ``chunk`` lanes by repeating the last one
    (a valid data set: the padding fits like a real lane and is dropped)."""
    part = x[start:stop]
    if stop - start == chunk:
        return part
    reps = jnp.repeat(part[-1:], chunk - (stop - start), axis=0)
    return jnp.concatenate([part, reps])


def _fitter(model, prog, max_iters, order, damping, key_batched):
    """``(first, more, finish)``: jitted functions of one batch's arrays (cached)."""
    k = (id(model), max_iters, order, damping, key_batched, str(jnp.zeros(()).dtype))
    hit = _CACHE.get(k)
    if hit is not None and hit[0] is model:
        _CACHE.move_to_end(k)
        return hit[1]
    rows = min(max_iters, SEGMENT)
    analysis_s = float(prog.analysis_s)

    def materialize(data):
        return jax.vmap(prog.materialize)(data)

    def step(compiled, state):
        return algorithm(compiled, order, damping).step(state)

    def advance(compiled, carry, tol):
        carry, trace = bd.advance(_arrays(step), compiled, carry, max_iters=max_iters,
                                  tol=tol, rows=rows)
        return carry, trace, jnp.any(bd.active(carry, max_iters))

    def first(data, key, init, tol):
        compiled = materialize(data)
        dtype = jnp.zeros(()).dtype

        def init_one(c, k):
            natural0 = mf.user_init(c, init, mf.default_init(c, k, dtype))
            return algorithm(c, order, damping).init(natural0)
        states = jax.vmap(init_one, in_axes=(0, 0 if key_batched else None))(compiled, key)
        info0 = jax.vmap(_info0)(states)
        carry = bd.start(_arrays(step), compiled, states, info0=info0, elbo0=states.elbo)
        carry, trace, running = advance(compiled, carry, tol)
        bad = jnp.zeros(states.elbo.shape, bool)
        for x in jax.tree_util.tree_leaves(data):
            if jnp.issubdtype(x.dtype, jnp.inexact):
                bad = bad | ~jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)
        return carry, trace, _result(compiled, carry, analysis_s), running, bad

    def more(data, carry, tol):
        return advance(materialize(data), carry, tol)

    def finish(data, carry):
        return _result(materialize(data), carry, analysis_s)

    fns = (jax.jit(first), jax.jit(more), jax.jit(finish))
    _CACHE[k] = (model, fns)  # the model is held: its id is not reused while cached
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return fns


def _arrays(step):
    """``step`` with every Info leaf an array (Python constants cannot be vmapped out)."""
    def wrapped(compiled, state):
        new, info = step(compiled, state)
        return new, jax.tree_util.tree_map(jnp.asarray, info)
    return wrapped


def _info0(state):
    from vijax.inference.driver import Info
    return Info(state.elbo, jnp.asarray(True), state.bound, jnp.asarray(False),
                jnp.asarray(-1))


def _result(compiled, carry, analysis_s):
    """The batched :class:`FitResult` of a carry (``elbo_trace`` attached by the caller),
    as :func:`vijax.cavi` builds it per lane: failed lanes get NaN parameters."""
    lane = carry.lane
    failed = lane.failed_at >= 0
    invalid = jnp.where(failed, lane.info.extra, -1)
    elbo = lane.info.elbo
    nonfinite = ~jnp.isfinite(elbo)
    diag = {"max_decrease": lane.max_decrease, "nonfinite": nonfinite,
            "invalid_latent": invalid,
            "invalid_iter": jnp.where(invalid >= 0, lane.failed_at + 1, -1),
            "excess_decrease": lane.excess, "rounding_bound": lane.info.bound,
            "analysis_s": jnp.full(elbo.shape, analysis_s, elbo.dtype)}
    bad = nonfinite | (invalid >= 0)
    natural = jax.tree_util.tree_map(
        lambda x: jnp.where(bad.reshape(bad.shape + (1,) * (x.ndim - 1)), jnp.nan, x),
        carry.state.natural)
    posterior = jax.vmap(mf.posterior)(compiled, natural)
    return CaviResult(posterior, elbo, None, lane.i, lane.converged, diag, natural)


def _lanes(mask, limit=10, offset=0):
    idx = np.flatnonzero(mask) + offset
    more = ", ..." if idx.size > limit else ""
    return "[" + ", ".join(str(i) for i in idx[:limit]) + more + "]"


def _report(result, n, tol, strict):
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
