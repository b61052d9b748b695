"""Constant folding on the host: jaxpr equations on numpy constants evaluated with numpy.

The walkers fold every equation none of whose inputs depends on a latent. Binding such an
equation's primitive eagerly compiles one XLA executable per primitive and shape (10-25 ms
each on a CPU, paid in every fresh process); for the primitives below the same values
come from numpy instead: IEEE arithmetic is the same, transcendental functions (``exp``,
``log``, ``lgamma``, ``digamma``) may differ from XLA's in the last bit. :func:`evaluate`
returns None for anything else (the caller binds the primitive as JAX would).
"""

from __future__ import annotations

import math

import jax
import numpy as np

from vijax import _compat

#: numpy equivalents of elementwise primitives
ELEMENTWISE_NUMPY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "neg": np.negative,
    "max": np.maximum, "min": np.minimum, "abs": np.abs, "sign": np.sign,
    "floor": np.floor, "ceil": np.ceil, "exp": np.exp, "log": np.log,
    "log1p": np.log1p, "expm1": np.expm1, "sqrt": np.sqrt, "square": np.square,
    "rsqrt": lambda x: 1.0 / np.sqrt(x), "is_finite": np.isfinite,
    "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
    "eq": np.equal, "ne": np.not_equal, "and": np.bitwise_and, "or": np.bitwise_or,
    "xor": np.bitwise_xor, "not": np.invert}

#: reductions: primitive -> numpy reduction over the equation's ``axes``
REDUCTIONS = {"reduce_sum": np.sum, "reduce_max": np.max, "reduce_min": np.min,
              "reduce_prod": np.prod, "reduce_and": np.all, "reduce_or": np.any}

#: special functions are evaluated element by element in Python: only for small arrays
_SPECIAL_MAX_SIZE = 1 << 16

_OTHER = {"select_n", "convert_element_type", "integer_pow", "div", "lgamma", "digamma",
          "broadcast_in_dim", "reshape", "squeeze", "expand_dims", "transpose"}


def host_array(v):
    """``v`` as a numpy array if it is a host value or a concrete jax array, else None."""
    if isinstance(v, (np.ndarray, np.generic, int, float, bool)):
        return np.asarray(v)
    if isinstance(v, jax.Array) and not _compat.is_tracer(v):
        try:
            return np.asarray(v)  # a constant the log joint closes over
        except Exception:  # noqa: BLE001 - e.g. not fully addressable: leave it to XLA
            return None
    return None


def broadcast_in_dim(base, shape, dims):
    """numpy ``lax.broadcast_in_dim``: a read-only broadcast view (strides 0)."""
    base = np.asarray(base)
    expanded = [1] * len(shape)
    for j, d in enumerate(dims):
        expanded[d] = base.shape[j]
    return np.broadcast_to(base.reshape(expanded), tuple(shape))


def _lgamma(x):
    return np.asarray(np.frompyfunc(_lgamma_scalar, 1, 1)(x), np.float64)


def _lgamma_scalar(v):
    v = float(v)
    if math.isnan(v):
        return math.nan
    if v <= 0 and v == math.floor(v):
        return math.inf  # poles, as lax.lgamma
    try:
        return math.lgamma(v)
    except (OverflowError, ValueError):
        return math.inf


def digamma(x):
    """psi(x) = d/dx log Gamma(x) in float64: the recurrence psi(x) = psi(x+1) - 1/x up to
    x >= 10, then the asymptotic series (error < 1e-15); the reflection formula for x < 0.
    NaN at the poles (x = 0, -1, -2, ...), as ``lax.digamma``."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    flat, res = x.ravel(), out.ravel()
    for i, v in enumerate(flat):
        res[i] = _digamma_scalar(float(v))
    return out


def _digamma_scalar(v):
    if math.isnan(v) or (v <= 0 and v == math.floor(v)):
        return math.nan
    if math.isinf(v):
        return math.inf if v > 0 else math.nan
    shift = 0.0
    if v < 0:  # psi(x) = psi(1 - x) - pi / tan(pi x)
        shift = -math.pi / math.tan(math.pi * v)
        v = 1.0 - v
    acc = 0.0
    while v < 10.0:
        acc -= 1.0 / v
        v += 1.0
    y = 1.0 / (v * v)  # sum_k B_2k / (2k x^2k), k = 1..7 (next term < 1e-16 at x >= 10)
    series = y * (1.0 / 12 - y * (1.0 / 120 - y * (1.0 / 252 - y * (1.0 / 240 - y * (
        1.0 / 132 - y * (691.0 / 32760 - y * (1.0 / 12)))))))
    return shift + acc + math.log(v) - 0.5 / v - series


def evaluate(eqn, vals, shape=None):
    """The equation's output from numpy, or None when it is not one of this module's
    primitives or an operand is not a host array. ``shape``: the output shape when the
    operands are slices of the equation's (default: the equation's)."""
    name = eqn.primitive.name
    if len(eqn.outvars) != 1 or (name not in ELEMENTWISE_NUMPY and name not in REDUCTIONS
                                 and name not in _OTHER):
        return None
    arrs = [host_array(v) for v in vals]
    if any(a is None for a in arrs):
        return None
    aval = eqn.outvars[0].aval
    dtype = np.dtype(aval.dtype)
    out_shape = tuple(aval.shape) if shape is None else tuple(shape)
    p = eqn.params
    with np.errstate(all="ignore"):
        if name in REDUCTIONS:
            out = REDUCTIONS[name](arrs[0], axis=tuple(p["axes"]))
        elif name == "broadcast_in_dim":
            if shape is not None or len(arrs) != 1:
                return None
            return broadcast_in_dim(arrs[0], tuple(p["shape"]),
                                    tuple(p["broadcast_dimensions"])).astype(dtype, copy=False)
        elif name in ("reshape", "squeeze", "expand_dims"):
            if shape is not None or len(arrs) != 1:
                return None
            out = arrs[0].reshape(out_shape)
        elif name == "transpose":
            if shape is not None:
                return None
            out = np.transpose(arrs[0], tuple(p["permutation"]))
        elif name == "div":
            if not np.issubdtype(dtype, np.floating):
                return None  # integer division rounds towards zero in lax
            out = np.true_divide(*arrs)
        elif name == "select_n":
            pred, *cases = arrs
            out = np.where(pred, cases[1], cases[0]) \
                if pred.dtype == np.bool_ and len(cases) == 2 \
                else np.choose(pred.astype(np.int64), cases)
        elif name == "convert_element_type":
            if np.issubdtype(dtype, np.integer) and np.issubdtype(arrs[0].dtype, np.floating):
                return None  # leave float -> int conversions to XLA
            out = arrs[0]
        elif name == "integer_pow":
            if p["y"] < 0 and not np.issubdtype(dtype, np.floating):
                return None
            out = np.power(arrs[0], p["y"])
        elif name in ("lgamma", "digamma"):
            if arrs[0].size > _SPECIAL_MAX_SIZE:
                return None
            out = _lgamma(arrs[0]) if name == "lgamma" else digamma(arrs[0])
        else:
            out = ELEMENTWISE_NUMPY[name](*arrs)
    out = np.asarray(out).astype(dtype, copy=False)
    return out if out.shape == out_shape else np.broadcast_to(out, out_shape)


def gather(operand, indices, dimension_numbers, slice_sizes):
    """numpy ``lax.gather`` in CLIP mode (the index vector on the last axis):
    ``out[b, o] = operand[clip(start(b)) + window(o)]``, each start clamped to
    ``[0, dim - slice_size]``; operand batching axes read the matching batch position."""
    op, ind = np.asarray(operand), np.asarray(indices)
    dn = dimension_numbers
    offset_dims = tuple(dn.offset_dims)
    obd = tuple(getattr(dn, "operand_batching_dims", ()) or ())
    sibd = tuple(getattr(dn, "start_indices_batching_dims", ()) or ())
    window = [d for d in range(op.ndim) if d not in dn.collapsed_slice_dims and d not in obd]
    batch_shape = ind.shape[:-1]
    rank = len(batch_shape) + len(offset_dims)
    batch_out = [d for d in range(rank) if d not in offset_dims]
    out_shape = [1] * rank
    for d, n in zip(batch_out, batch_shape):
        out_shape[d] = n
    for d, od in zip(offset_dims, window):
        out_shape[d] = slice_sizes[od]
    b_shape = [out_shape[d] if d in batch_out else 1 for d in range(rank)]

    def along(d, n):  # 0..n-1 along output axis d
        sh = [1] * rank
        sh[d] = n
        return np.arange(n, dtype=np.intp).reshape(sh)

    idx = [np.zeros((1,) * rank, np.intp) for _ in range(op.ndim)]
    for k, od in enumerate(dn.start_index_map):
        s = ind[..., k].astype(np.intp).reshape(b_shape)
        idx[od] = np.clip(s, 0, op.shape[od] - slice_sizes[od])
    for od, bd in zip(obd, sibd):
        idx[od] = along(batch_out[bd], batch_shape[bd])
    for d, od in zip(offset_dims, window):
        idx[od] = idx[od] + along(d, slice_sizes[od])
    out = op[tuple(idx)] if op.ndim else op
    return np.broadcast_to(out, tuple(out_shape)).copy()
