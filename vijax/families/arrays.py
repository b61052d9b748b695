"""Array helpers the families share: dtype promotion, parameter checks that raise
:class:`~vijax.errors.InvalidParameterError` with the offending entries, and the
one-line array format of the families' ``repr``."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vijax.errors import InvalidParameterError

Array = jax.Array
Natural = dict[str, Array]


def is_tracer(x: Any) -> bool:
    """True when ``x`` is an abstract value under a JAX transformation."""
    return isinstance(x, jax.core.Tracer)


def float_dtype(*xs: Any) -> Any:
    """The floating dtype the arrays promote to (default float for ints/bools)."""
    dtype = jnp.result_type(*xs)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(dtype, float)
    return dtype


def as_float_arrays(*xs: Any) -> tuple[Array, ...]:
    """Convert to arrays of one common floating dtype (inputs decide the precision)."""
    dtype = float_dtype(*xs)
    return tuple(jnp.asarray(x, dtype) for x in xs)


def check_param(where: str, name: str, value: Any, ok: Any, requirement: str,
                hint: str | None = None) -> None:
    """Raise :class:`InvalidParameterError` if a concrete check fails.

    Does nothing when ``value`` or ``ok`` is a tracer (inside ``jit``/``vmap``/``grad``
    the values are unknown; :meth:`ExponentialFamily.is_valid` is the traced check).

    Args:
        where: the constructor, e.g. ``"Normal.from_loc_scale"``.
        name: the offending parameter's name.
        value: its value (an array, or a dict of arrays), reported in the message.
        ok: boolean array, False where ``value`` is invalid.
        requirement: what a valid value is, e.g. ``"positive and finite"``.
        hint: what the user can do next (default: pass a valid value).
    """
    if is_tracer(ok) or any(is_tracer(v) for v in jax.tree_util.tree_leaves(value)):
        return
    ok = np.asarray(ok)
    if ok.all():
        return
    raise InvalidParameterError(
        f"{where}: {name} must be {requirement}; got {_show(name, value, ok)}. "
        + (hint or f"Pass a valid {name}."))


def _show(name: str, value: Any, ok: np.ndarray) -> str:
    """The offending entries (with their indices) or, failing that, the whole value."""
    if isinstance(value, Mapping):
        return ", ".join(_show(f"{name}[{k!r}]", v, np.ones((), bool))
                         for k, v in value.items())
    value = np.asarray(value)
    if value.shape == ok.shape and value.ndim > 0 and not ok.all():
        bad = np.argwhere(~ok)
        shown = ", ".join(f"{name}[{','.join(map(str, i))}]={value[tuple(i)].item()!r}"
                          for i in bad[:5])
        return shown + (" ..." if len(bad) > 5 else "")
    if value.ndim == 0:
        return f"{name}={value.item()!r}"
    return f"{name}={np.array2string(value, threshold=20, separator=', ')}"


def format_array(x: Any) -> str:
    """One line for an array: numbers to 4 significant digits, large arrays abbreviated
    (first and last entries, then the shape); tracers as ``dtype[shape]``."""
    if is_tracer(x) or isinstance(x, jax.ShapeDtypeStruct):
        return f"{jnp.dtype(x.dtype).name}{list(jnp.shape(x))}"
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        # split across processes (a local latent of a multi-process fit): not readable
        # here without a collective (vijax.inference.distributed.gather)
        procs = len({d.process_index for d in x.sharding.device_set})
        return f"{jnp.dtype(x.dtype).name}{list(x.shape)} (split over {procs} processes)"
    a = np.asarray(x)
    if a.ndim == 0:
        return _number(a.item()) if np.issubdtype(a.dtype, np.floating) else repr(a.item())
    text = np.array2string(a, separator=", ", threshold=8, edgeitems=2,
                           max_line_width=10**6, formatter={"float_kind": _number})
    text = " ".join(text.split())
    return text + (f" (shape {a.shape})" if a.size > 8 else "")


def _number(v: float) -> str:
    """``v`` to 4 significant digits, always readable as a float (``1.0``, ``2.5e-07``)."""
    text = f"{v:.4g}"
    return text if any(c in text for c in ".enia") else text + ".0"
