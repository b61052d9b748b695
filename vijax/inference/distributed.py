"""Multi-process fits: every process holds its slice of the data.

Under :func:`jax.distributed.initialize` (one process per host, or several processes on
one machine; on CPU they talk through JAX's CPU collectives, gloo), a vijax fit is the
same jitted program on every process. The data are **one global** ``jax.Array`` per
leaf, split along the leading (plate) axis over every process's devices; each process
passes only its own rows. :func:`shard_local` builds that array from each process's
slice (``jax.make_array_from_process_local_data``) after checking that the processes
agree on everything but the number of rows. Then every process calls the fitter with
the same arguments::

    jax.distributed.initialize(coordinator, num_processes=P, process_id=i)
    data = vj.distributed.shard_local(my_rows)       # global (N, ...) arrays
    fit = vj.cavi(model, data, key=jax.random.key(0))  # on every process

The sufficient statistics are summed across devices and processes inside the jitted
loop (XLA all-reduces); nothing is gathered on a host. What each process gets back:

- global latents (the mixture's means and weights, the regression's weights), the
  ELBO, its trace, ``num_iters`` and the diagnostics: **replicated** on every device,
  readable on every process (``float(fit.elbo)``, ``np.asarray(fit.natural[...])``);
- local (per-datum) latents (a mixture's responsibilities): **sharded** like the data,
  rows ``i*N/P ... (i+1)*N/P - 1`` on process ``i``. Read this process's rows with
  ``x.addressable_shards``, or all rows on every process with :func:`gather` (a
  collective: every process must call it). ``print(fit)`` shows such a latent by its
  shape; ``gather(fit).summary()`` tabulates all of it.
"""

from __future__ import annotations

import zlib

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vijax.errors import DataError, ModelSpecError


def global_mesh(axis_name: str = "data") -> Mesh:
    """A one-axis mesh over every process's devices, process 0's first: process ``i``
    then holds the ``i``-th block of rows."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (axis_name,))


def _leading(x):
    return np.shape(x)[0] if np.ndim(x) >= 1 else None


def _fingerprint(leaves, treedef, split):
    """A 31-bit digest of what every process must agree on: the pytree structure, each
    leaf's dtype, whether it is split, its trailing shape (split leaves) or its whole
    shape and value (replicated leaves)."""
    parts = [str(treedef)]
    for x, s in zip(leaves, split):
        shape = tuple(np.shape(x))
        parts.append(f"{np.dtype(x.dtype).str}|{s}|{shape[1:] if s else shape}")
        if not s:  # small (hyper-parameters): read on the host; the rows never are
            parts.append(zlib.crc32(np.ascontiguousarray(np.asarray(x)).tobytes()))
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


def _check_processes(leaves, treedef, split, rows, mesh):
    """Raise the same :class:`DataError` on every process when the processes disagree
    (one small all-gather of a digest and a row count per process)."""
    local = np.array([_fingerprint(leaves, treedef, split), rows], np.int64)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        table = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, 2)
    else:
        table = local[None]
    if (table[:, 0] != table[0, 0]).any():
        who = [int(i) for i in np.flatnonzero(table[:, 0] != table[0, 0])]
        raise DataError(
            f"the local data of process(es) {who} differ from process 0's in structure, "
            "dtype, trailing shape, or the value of a replicated (not row-split) leaf; "
            "every process must pass the same pytree with the same shapes except the "
            "number of rows, and the same hyper-parameters")
    if (table[:, 1] != table[0, 1]).any():
        raise DataError(
            f"the processes hold different numbers of rows ({[int(r) for r in table[:, 1]]} "
            "by process); the plate axis is split into equal blocks, so every process must "
            "hold N / num_processes rows (drop or add observations)")
    per_process = mesh.size // jax.process_count()
    if rows % max(per_process, 1):
        raise DataError(
            f"each process holds {rows} rows, which do not split evenly over its "
            f"{per_process} devices; hold a multiple of {per_process} rows per process")


def shard_local(local_data, mesh: Mesh | None = None):
    """The global data from each process's slice, split along the plate axis.

    Every process calls this with its own rows. A leaf whose leading dimension equals the
    local plate size ``n`` (the largest leading dimension among the local leaves, the
    rule of :func:`vijax.inference.sharding.shard_data`) is this process's block of a
    global ``(P * n, ...)`` array split over the mesh (``NamedSharding(mesh,
    P(mesh.axis_names))``); process ``i``'s rows come ``i``-th when the mesh orders the
    devices by process (:func:`global_mesh`, the default). Every other array leaf is
    replicated and must be equal on every process; Python scalars are left as they are.
    With one process this is :func:`~vijax.inference.sharding.shard_data` of the data.

    Args:
        local_data: this process's data pytree (numpy or ``jax`` arrays).
        mesh: a :class:`jax.sharding.Mesh` over all processes' devices; default
            :func:`global_mesh`.

    Returns:
        The data pytree with global ``jax.Array`` leaves (``x.shape[0] == P * n`` for
        the split leaves).

    Example:
        >>> import numpy as np
        >>> x = shard_local(np.zeros((8, 2)))  # one process: all the rows are local
        >>> x.shape, x.sharding.spec == P("data")
        ((8, 2), True)

    Raises:
        DataError: the processes disagree on the pytree's structure, a leaf's dtype or
            trailing shape, or a replicated leaf's value; they hold different numbers of
            rows; or a process's rows do not split evenly over its devices. Raised on
            every process (the check is one collective), so no process waits forever.
    """
    mesh = global_mesh() if mesh is None else mesh
    if not isinstance(mesh, Mesh):
        raise ModelSpecError(f"mesh must be a jax.sharding.Mesh or None, got "
                             f"{type(mesh).__name__}")
    leaves, treedef = jax.tree_util.tree_flatten(local_data)
    arrays = [isinstance(l, (np.ndarray, jax.Array)) for l in leaves]
    dims = [_leading(l) for l, a in zip(leaves, arrays) if a and _leading(l) is not None]
    rows = max(dims) if dims else 0
    split = [bool(a) and dims != [] and _leading(l) == rows for l, a in zip(leaves, arrays)]
    _check_processes([l for l, a in zip(leaves, arrays) if a], treedef,
                     [s for s, a in zip(split, arrays) if a], rows, mesh)
    rows_sharding = NamedSharding(mesh, P(tuple(mesh.axis_names)))
    whole = NamedSharding(mesh, P())
    out = [jax.make_array_from_process_local_data(rows_sharding if s else whole, l)
           if a else l for l, a, s in zip(leaves, arrays, split)]
    return jax.tree_util.tree_unflatten(treedef, out)


def _to_host(x):
    if not isinstance(x, jax.Array):
        return x
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_to_host(jax.random.key_data(x)),
                                        impl=jax.random.key_impl(x))
    if x.is_fully_addressable or x.is_fully_replicated:
        return jax.numpy.asarray(np.asarray(x))
    from jax.experimental import multihost_utils
    return jax.numpy.asarray(np.asarray(multihost_utils.process_allgather(x, tiled=True)))


def gather(tree):
    """``tree`` (a fit result, the data, any pytree) with every ``jax.Array`` leaf as one
    array on this process's default device holding the **whole** global value.

    Leaves split across processes (local latents, the data) are all-gathered, so every
    process must call this at the same point; replicated leaves are read locally. Use it
    for what needs the whole value on one host: ``gather(fit).summary()``,
    ``gather(fit).save(path)`` (on one process), plots. The result holds ``P`` times a
    process's share of the local latents: for data that fill a process's memory, read
    ``x.addressable_shards`` instead.
    """
    return jax.tree_util.tree_map(_to_host, tree)
