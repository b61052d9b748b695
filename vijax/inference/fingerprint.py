"""Static configuration compared by what it computes, not by object identity.

``jax.jit`` caches on static arguments by equality. An optax optimizer is a pair of
closures, so ``optax.adam(1e-2)`` built twice gives two unequal objects and a second
compile. :class:`Static` wraps such a value with a structural fingerprint: functions
compare by code, defaults and closure contents (recursively), numbers and strings by
value, small concrete arrays by their bytes; anything else by identity (a new object
of an unknown kind costs a compile, never a wrong cache hit).
"""

from __future__ import annotations

import functools
import types

import numpy as np

from vijax import _compat

_MAX_DEPTH = 24
_MAX_ARRAY = 1 << 16


def fingerprint(obj, _depth=0):
    """A hashable value equal for objects that compute the same thing."""
    if _depth > _MAX_DEPTH:
        return ("id", id(obj))
    fp = functools.partial(fingerprint, _depth=_depth + 1)
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return (type(obj).__name__, obj)
    if isinstance(obj, (tuple, list)):
        return (type(obj).__qualname__, tuple(fp(o) for o in obj))
    if isinstance(obj, dict):
        return ("dict", tuple((fp(k), fp(v)) for k, v in obj.items()))
    if isinstance(obj, functools.partial):
        return ("partial", fp(obj.func), fp(obj.args), fp(obj.keywords))
    if isinstance(obj, types.FunctionType):
        cells = tuple(fp(_cell(c)) for c in (obj.__closure__ or ()))
        return ("fn", obj.__module__, obj.__qualname__, obj.__code__,
                fp(obj.__defaults__), fp(obj.__kwdefaults__), cells)
    if isinstance(obj, types.MethodType):
        return ("method", fp(obj.__func__), fp(obj.__self__))
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and not _compat.is_tracer(obj):
        arr = np.asarray(obj)
        if arr.size <= _MAX_ARRAY:
            return ("array", arr.shape, arr.dtype.str, arr.tobytes())
    return ("id", id(obj))


def _cell(cell):
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


class Static:
    """``value`` as a jit static argument, equal to any Static of the same fingerprint.

    The wrapped object is kept alive, so identity-compared parts cannot be reused by
    another object while a cache entry refers to them."""

    __slots__ = ("value", "_fp", "_hash")

    def __init__(self, value):
        self.value = value
        self._fp = fingerprint(value)
        try:
            self._hash = hash(self._fp)
        except TypeError:  # an unhashable part: fall back to identity
            self._fp = ("id", id(value))
            self._hash = hash(self._fp)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return isinstance(other, Static) and self._fp == other._fp

    def __repr__(self):
        return f"Static({self.value!r})"


def as_optax(optimizer):
    """An optimizer argument as an optax transformation that takes extra arguments:
    ``"lbfgs"`` is ``optax.lbfgs()`` (zoom line search), anything else is wrapped by
    ``optax.with_extra_args_support`` (EM's M-step and Laplace's mode search)."""
    import optax

    from vijax.errors import ModelSpecError
    if isinstance(optimizer, str):
        if optimizer != "lbfgs":
            raise ModelSpecError(f"optimizer must be 'lbfgs' or an optax "
                                 f"GradientTransformation, got {optimizer!r}")
        return optax.lbfgs()
    return optax.with_extra_args_support(optimizer)
