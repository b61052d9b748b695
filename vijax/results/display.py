"""A one-screen ``repr`` of a fit result.

The header names the result class and its scalar outcomes (ELBO or log evidence,
iterations, convergence, the gradient estimator when recorded); then one line per latent:
its value shape and its family in the usual parameters, arrays abbreviated. A batched
(``vmap``-ed) result shows its batch shape, value ranges over the batch and each
family's shape instead of values; a result holding tracers shows shapes only.

Example:
    >>> import jax.numpy as jnp
    >>> from vijax.families import Normal
    >>> from vijax.inference.result import FitResult
    >>> fit = FitResult({"mu": Normal.from_loc_scale(1.0, 0.5)}, jnp.array(-3.25),
    ...                 jnp.zeros(500), jnp.array(7), jnp.array(True), {}, {})
    >>> print(result_repr(fit))  # doctest: +ELLIPSIS
    FitResult  ELBO -3.25  iterations 7  converged True
      mu  ()  Normal(...)
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np

WIDTH = 100
#: (field, label) of the header, in order; fields a result lacks are skipped
HEADER = (("elbo", "ELBO"), ("log_evidence", "log evidence"), ("num_iters", "iterations"),
          ("num_steps", "steps"), ("converged", "converged"), ("exact", "exact"),
          ("ok", "ok"))


def _is_traced(tree: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def abbreviate(x: Any, precision: int = 4) -> str:
    """An array on one line, at most a few elements per axis: ``[0.1 0.2 ... 0.9]``."""
    a = np.asarray(x)
    if a.ndim == 0:
        v = a.item()
        return f"{v:.{precision}g}" if isinstance(v, float) else str(v)
    text = np.array2string(a, precision=precision, threshold=6, edgeitems=2,
                           max_line_width=10_000)
    return re.sub(r"\s+", " ", text)


def _one_line(text: str, width: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= width else text[:width - 3] + "..."


def _batch_shape(result) -> tuple:
    for field, _ in HEADER:
        if hasattr(result, field):
            value = getattr(result, field)
            if value is not None:
                return tuple(np.shape(value))
    return ()


def _header_value(value, batched: bool) -> str:
    a = np.asarray(value)
    if not batched or a.ndim == 0:
        return abbreviate(a, precision=7)
    if a.dtype == bool:
        return f"{int(a.sum())}/{a.size}"
    return f"[{abbreviate(a.min(), 7)} .. {abbreviate(a.max(), 7)}]"


def family_line(fam: Any, batched: bool = False, width: int = WIDTH) -> str:
    """One line for a family: its own ``repr`` (usual parameters) collapsed onto a line,
    or, for a batched result, its class name and batch shape."""
    name = type(fam).__name__
    if batched:
        return f"{name}(batch_shape={tuple(getattr(fam, 'batch_shape', ()))})"
    text = repr(fam)
    if "natural=" in text:  # the dataclass default: show moments instead
        sd = np.sqrt(np.asarray(fam.variance()))
        text = f"{name}(mean={abbreviate(fam.mean())}, sd={abbreviate(sd)})"
    return _one_line(text, width)


def _value_shape(fam, batch_ndim: int) -> tuple:
    """The shape of one draw (without the result's batch axes)."""
    try:
        shape = jax.eval_shape(lambda k: fam.sample(k), jax.random.PRNGKey(0)).shape
    except Exception:  # a family-like object without sample(key)
        shape = np.shape(fam.mean())
    return tuple(shape)[batch_ndim:]


def result_repr(result: Any, width: int = WIDTH) -> str:
    """The one-screen ``repr`` of a result (see the module docstring)."""
    cls = type(result).__name__
    if _is_traced(result):
        post = result.posterior
        names = (", ".join(f"{n}: {type(post[n]).__name__}" for n in sorted(post))
                 if isinstance(post, Mapping) else type(post).__name__)
        return f"{cls}(<traced>; posterior {names})"
    batch = _batch_shape(result)
    batched = bool(batch)
    parts = [cls]
    if batched:
        parts.append(f"batch {batch}")
    for field, label in HEADER:
        if hasattr(result, field) and getattr(result, field) is not None:
            parts.append(f"{label} {_header_value(getattr(result, field), batched)}")
    diagnostics = getattr(result, "diagnostics", None)
    if isinstance(diagnostics, Mapping) and diagnostics.get("estimator") is not None:
        parts.append(f"estimator {diagnostics['estimator']}")
    lines = ["  ".join(parts)]

    posterior = result.posterior
    if isinstance(posterior, Mapping):
        shapes = {n: str(_value_shape(posterior[n], len(batch))) for n in posterior}
        wn = max((len(n) for n in posterior), default=0)
        ws = max((len(s) for s in shapes.values()), default=0)
        for n in sorted(posterior):
            head = f"  {n.ljust(wn)}  {shapes[n].ljust(ws)}  "
            lines.append(head + family_line(posterior[n], batched, max(20, width - len(head))))
    elif hasattr(result, "mean") and isinstance(getattr(result, "mean"), Mapping):
        dim = np.shape(posterior.natural["x"])[-1]
        lines.append(f"  q(u): {type(posterior).__name__} over {dim} unconstrained "
                     "coordinates; delta-method moments:")
        wn = max((len(n) for n in result.mean), default=0)
        for n in sorted(result.mean):
            m = np.asarray(result.mean[n])
            shape = m.shape[len(batch):]
            if batched:
                body = f"shape {shape}"
            else:
                sd = np.sqrt(np.asarray(result.variance[n]))
                body = f"{shape}  mean={abbreviate(m)}, sd={abbreviate(sd)}"
            lines.append(f"  {n.ljust(wn)}  " + _one_line(body, width - wn - 4))
    else:
        lines.append(f"  posterior: {_one_line(repr(posterior), width - 13)}")
    return "\n".join(lines)
