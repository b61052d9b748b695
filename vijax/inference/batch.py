"""Many CAVI fits of one model in one call: :func:`batch_cavi`.

The fits are the lanes of ``jax.jit(jax.vmap(vj.cavi))``: the model is analysed once for
one data set's shapes, and the vmapped loop runs until every lane has stopped; a lane
that stopped (converged, failed or at ``max_iters``) is frozen from then on, so each lane
reports its own ``num_iters``, ``converged`` and diagnostics and equals the single fit of
its data set. A batch larger than ``chunk_size`` runs as consecutive chunks through the
same compiled function (the last chunk padded and the padding dropped).
"""

from __future__ import annotations

from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np

from vijax.conjugacy.program import program_for
from vijax.errors import DataError, ModelSpecError
from vijax.inference import stopping
from vijax.inference.cavi import CaviResult, cavi
from vijax.model import check_data

#: jitted batched fitters, by (model, static options); a second call compiles nothing
_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()
_CACHE_SIZE = 32


def batch_cavi(model, datasets, *, key=None, chunk_size=None, strict=False, init=None,
               tol=None, max_iters=500, order=None, damping=None) -> CaviResult:
    """Fit ``model`` to every data set of a batch, in one vmapped CAVI call.

    Args:
        model: a :class:`vijax.Model` whose latents are all conjugate.
        datasets: the data pytree with a leading batch axis on every leaf (lane ``b`` is
            ``tree_map(lambda x: x[b], datasets)``).
        key: PRNG key of the default initialization: one key (every lane starts as
            ``vj.cavi(model, data_b, key=key)`` would) or a batch of keys, one per lane.
            Default: ``jax.random.key(0)``, as :func:`vijax.cavi`.
        chunk_size: fit at most this many lanes at a time (memory); the chunks run one
            after the other through one compiled function. Default: the whole batch.
        strict: raise :class:`~vijax.errors.FitDivergedError` instead of warning when a
            lane failed or did not converge.
        init, tol, max_iters, order, damping: as in :func:`vijax.cavi`, the same for
            every lane (``tol=None``: the dtype's default).

    Returns:
        A :class:`~vijax.FitResult` whose leaves have the leading batch axis: per-lane
        ``elbo``, ``num_iters``, ``converged``, ``diagnostics``, posterior factors. A lane
        whose fit failed has NaN natural parameters and posterior (its flags are in
        ``diagnostics``).

    Warns:
        ConvergenceWarning: how many lanes failed (an update left its family's domain or
            the ELBO became non-finite) or stopped at ``max_iters`` without converging,
            with the first of their indices.

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
    check_data(datasets)
    one = jax.tree_util.tree_map(lambda x: x[0], datasets)
    program_for(model, one).require_conjugate()  # analysed once, errors raised here
    if chunk_size is not None and int(chunk_size) < 1:
        raise ModelSpecError(f"chunk_size must be a positive integer, got {chunk_size}")
    chunk = n if chunk_size is None else min(int(chunk_size), n)
    dtype = jnp.zeros(()).dtype
    tol = stopping.default_tol(dtype) if tol is None else float(tol)
    key = jax.random.key(0) if key is None else key
    key_batched = jnp.ndim(key) >= 1
    if key_batched and key.shape[0] != n:
        raise DataError(f"key holds {key.shape[0]} keys for {n} data sets")
    order = None if order is None else tuple(order)
    fit = _fitter(model, int(max_iters), order, damping, key_batched)

    outs = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        take = lambda x: _padded(x, start, stop, chunk)  # noqa: E731
        data_c = jax.tree_util.tree_map(take, datasets)
        key_c = take(key) if key_batched else key
        out = fit(data_c, key_c, init, tol)
        if stop - start < chunk:  # drop the padding lanes
            out = jax.tree_util.tree_map(lambda x: x[:stop - start], out)
        outs.append(out)
    result = outs[0] if len(outs) == 1 else jax.tree_util.tree_map(
        lambda *xs: jnp.concatenate(xs), *outs)
    _report(result, n, tol, strict)
    return result


def _padded(x, start, stop, chunk):
    """Lanes ``start:stop`` of ``x``, padded to ``chunk`` lanes by repeating the last one
    (a valid data set: the padding fits like a real lane and is dropped)."""
    part = x[start:stop]
    if stop - start == chunk:
        return part
    reps = jnp.repeat(part[-1:], chunk - (stop - start), axis=0)
    return jnp.concatenate([part, reps])


def _fitter(model, max_iters, order, damping, key_batched):
    k = (id(model), max_iters, order, damping, key_batched, str(jnp.zeros(()).dtype))
    hit = _CACHE.get(k)
    if hit is not None and hit[0] is model:
        _CACHE.move_to_end(k)
        return hit[1]

    def one(data, key, init, tol):
        return cavi(model, data, key=key, init=init, tol=tol, max_iters=max_iters,
                    order=order, damping=damping, progress=False)

    fn = jax.jit(jax.vmap(one, in_axes=(0, 0 if key_batched else None, None, None)))
    _CACHE[k] = (model, fn)  # the model is held: its id is not reused while cached
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return fn


def _lanes(mask, limit=10):
    idx = np.flatnonzero(mask)
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
