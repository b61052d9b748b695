"""SVI on an iterator of minibatches: a Python loop over one jitted step.

The data need not fit on the device: each batch (a pytree of ``B`` rows) is moved there
when it is used, and every batch runs the same compiled step (same shapes: one XLA
compile). The stopping rule is the windowed rule of :func:`vijax.run` (``window`` steps
per window, means compared with the allowance ``tol * max(|m|, 1) + 2 sqrt(se_c^2 +
se_{c-1}^2)``), evaluated on the host after each step (one device-to-host read per step:
the price of a Python loop). The result holds the global latents only, and its ``elbo`` is
the last window's mean estimate (no full-data pass).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _xla
from vijax.errors import DataError, ModelSpecError
from vijax.inference import plates
from vijax.inference import svi_setup as S
from vijax.inference.driver import Run
from vijax.model import check_data


class _Window:
    """The driver's windowed stopping rule (``stochastic=True``) on the host."""

    def __init__(self, window, tol):
        self.w, self.tol = window, tol
        self.sum = self.sq = 0.0
        self.prev_mean, self.prev_se2 = math.nan, 0.0

    def update(self, i, e):
        self.sum += e
        self.sq += e * e
        if (i + 1) % self.w:
            return False
        mean = self.sum / self.w
        se2 = max(self.sq / self.w - mean * mean, 0.0) / self.w
        allow = self.tol * max(abs(mean), 1.0) + 2.0 * math.sqrt(se2 + self.prev_se2)
        conv = abs(mean - self.prev_mean) <= allow and self.tol > 0
        self.prev_mean, self.prev_se2, self.sum, self.sq = mean, se2, 0.0, 0.0
        return conv


def fit_iterator(model, batches, key, batch_size, n, schedule, max_iters, tol, window,
                 local_iters, local_tol, strict, dtype):
    """:func:`vijax.inference.svi.svi` for an iterator of minibatches (see there)."""
    from vijax.inference.svi import _result, default_window
    try:
        first = next(batches)
    except StopIteration:
        raise DataError("svi: the batch iterator is empty") from None
    check_data(first)
    b = S.check_batch_size(batch_size, n)
    lead = plates.find_plate(model, first)
    if lead.n != b:
        raise DataError(f"svi: the first batch has {lead.n} rows, batch_size is {b}")
    # the plate as the full data would have it: leaves of b rows carry it
    leaves = jax.tree_util.tree_leaves(first)
    carries = tuple(bool(np.ndim(l)) and np.shape(l)[0] == b for l in leaves)
    local = tuple(k for k, s in model.supports.items() if s.shape and s.shape[0] == n)
    plate = plates.Plate(n, carries, local, tuple(k for k in model.supports if k not in local))
    st = S.setup(model, plate, first, b, key, schedule, local_iters, local_tol, dtype)
    full_spec = plates.batch_spec(first, plate, n)
    prog = plates.program_for(model, full_spec)  # shapes only: the factors' layouts
    window = default_window(n, b) if window is None else max(1, int(window))
    step = _xla.jit(st.core)
    spec = jax.tree_util.tree_structure(first), [np.shape(l) for l in leaves]
    natural, rule = st.natural0, _Window(window, tol)
    trace, info, failed_at, converged, i = [], None, -1, False, 0
    batch = first
    while i < max_iters:
        if i > 0:
            try:
                batch = next(batches)
            except StopIteration:
                break
            check_data(batch)
            _check_shape(batch, spec, i)
        natural, out = step(natural, jnp.asarray(i), batch, st.local0, st.priors)
        info = out.info
        e = float(info.elbo)
        trace.append(e)
        i += 1
        if not (bool(info.ok) and math.isfinite(e)):
            failed_at = i - 1
            break
        if rule.update(i - 1, e):
            converged = True
            break
    if info is None:
        raise ModelSpecError("svi: max_iters must be >= 1")
    tr = np.asarray(trace + [trace[-1]] * (max_iters - len(trace)), dtype)
    run = Run(None, info, tr, np.asarray(i), np.asarray(converged), np.asarray(failed_at),
              None, None)
    return _result(st, run, natural, None, "iterator", window, tol, strict, prog,
                   in_memory=False)


def _check_shape(batch, spec, i):
    treedef, shapes = spec
    leaves, td = jax.tree_util.tree_flatten(batch)
    if td != treedef or [np.shape(l) for l in leaves] != shapes:
        raise DataError(f"svi: batch {i} has shapes {[np.shape(l) for l in leaves]}, the "
                        f"first had {shapes}; every batch must have batch_size rows (drop or "
                        "pad the last one)")
