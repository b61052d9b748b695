"""Data sharded along its leading (plate) axis over a :class:`jax.sharding.Mesh`.

vijax has no distributed engine of its own: a fit is one jitted program, and when its
data arrive as ``jax.Array`` s split over several devices along their leading axis
(``NamedSharding(mesh, P(axis))``), XLA's SPMD partitioner (GSPMD) splits every
per-observation array of the program the same way (the data-to-constants program of
:meth:`vijax.Program.materialize`, the local latents' parameters such as a mixture's
responsibilities, the driver's loop) and turns the sums over observations, the
sufficient statistics, into all-reduces across the devices. Global parameters stay
replicated. The result is that of one device up to the order of floating-point
summation.

``vj.cavi(..., mesh=mesh)`` and ``vj.fit_gradient(..., mesh=mesh)`` place the data with
:func:`shard_data` first; data already sharded may also be passed as they are (with
``mesh=None``).

Several processes (``jax.distributed``): nothing here reads an array's values on the
host. The analysis and its cache key read shapes and dtypes only (``x.aval``, the global
shape); the NaN/Inf check of split data is a jitted reduction
(:func:`vijax.model.check_data`); the fit's scalars and global latents come back
replicated. Data of which each process holds only its rows are built with
:func:`vijax.inference.distributed.shard_local`; :func:`shard_data` with a mesh over
several processes expects every process to pass the same whole data (each process
places its own rows).

Example:
    >>> import jax, numpy as np
    >>> from jax.sharding import Mesh
    >>> mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> x = shard_data(np.zeros((8, 2)), mesh)
    >>> x.sharding.spec
    P('data',)
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vijax import _compat
from vijax.errors import DataError, ModelSpecError


def _shape(x):
    aval = getattr(x, "aval", None)
    return tuple(aval.shape) if aval is not None else tuple(np.shape(x))


def plate_size(data):
    """The plate size: the largest leading dimension among the data's array leaves
    (None when no leaf has a dimension)."""
    dims = [_shape(l)[0] for l in jax.tree_util.tree_leaves(data) if len(_shape(l)) >= 1]
    return max(dims) if dims else None


def is_sharded(x) -> bool:
    """Whether ``x`` is a concrete ``jax.Array`` placed on more than one device, or on a
    device of another process."""
    if _compat.is_tracer(x) or not isinstance(x, jax.Array):
        return False
    return len(x.sharding.device_set) > 1 or not x.is_fully_addressable


def _check_mesh(mesh):
    if not isinstance(mesh, Mesh):
        raise ModelSpecError(f"mesh must be a jax.sharding.Mesh or None, got {type(mesh).__name__}")


def shard_data(data, mesh):
    """Place ``data`` on ``mesh``: split along the leading axis, or replicated.

    The rule: a leaf whose leading dimension equals the plate size ``N`` (the largest
    leading dimension among the data's array leaves, :func:`plate_size`) is split along
    that axis over all of the mesh's axes (``NamedSharding(mesh, P(mesh.axis_names))``);
    every other array leaf (hyper-parameters, a design's column count) is replicated on
    the mesh; Python scalars are left as they are (jit replicates them). Leaves that
    already live on more than one device are kept as they are. Inside ``jit`` (traced
    leaves) the same placement is a sharding constraint.

    Args:
        data: the data pytree.
        mesh: a :class:`jax.sharding.Mesh` (typically one axis over the devices).

    Returns:
        The data pytree with ``jax.Array`` leaves placed on ``mesh``.

    With a mesh over several processes, every process must pass the same values (each
    keeps its devices' rows); to pass only each process's rows, use
    :func:`vijax.inference.distributed.shard_local`.

    Raises:
        DataError: ``N`` is not divisible by the number of devices in the mesh (XLA
            splits an axis into equal blocks; drop or add observations, or use a mesh
            over a divisor of ``N`` devices).
    """
    _check_mesh(mesh)
    n = plate_size(data)
    split = NamedSharding(mesh, P(tuple(mesh.axis_names)))
    whole = NamedSharding(mesh, P())
    if n is not None and n % mesh.size:
        raise DataError(f"the data's leading (plate) axis has {n} entries, which do not "
                        f"split evenly over the mesh's {mesh.size} devices; use a mesh over a "
                        f"number of devices that divides {n}, or drop or add observations")

    def place(x):
        if x is None or is_sharded(x):
            return x
        shape = _shape(x)
        if not isinstance(x, (jax.Array, np.ndarray)) and not _compat.is_tracer(x):
            return x  # a Python scalar: replicated by jit
        where = split if shape and shape[0] == n else whole
        if _compat.is_tracer(x):
            return jax.lax.with_sharding_constraint(x, where)
        return jax.device_put(x, where)

    return jax.tree_util.tree_map(place, data)


def maybe_shard(data, mesh):
    """:func:`shard_data` when ``mesh`` is given, else ``data`` unchanged (the fitters'
    ``mesh=`` option)."""
    return data if mesh is None else shard_data(data, mesh)
