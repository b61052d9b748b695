"""Starting values of :func:`vijax.gibbs` chains: user values, or a fit's posterior."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from vijax.errors import ArgumentTypeError, ModelSpecError
from vijax.families import ExponentialFamily


def _point_of_factor(inf, q):
    """A representative value of a fitted factor: its mean for a continuous latent, the
    most probable value per element for a binary or categorical one, the rounded mean
    for a count."""
    sup = inf.support
    if not sup.is_discrete:
        return jnp.asarray(q.mean())
    if sup.kind == "count":
        return jnp.round(jnp.asarray(q.mean()))
    vals = list(sup.support_values())
    logp = jnp.stack([q.log_prob(jnp.full(sup.shape, v)) for v in vals])
    return jnp.asarray(vals)[jnp.argmax(logp, axis=0)]


def user_values(infos, init, num_chains, dtype):
    """``{latent: array [num_chains, ...value shape]}`` from ``init``: a dict of values
    (one value for every chain, or one per chain on a leading axis), or a fit result
    whose ``posterior`` is a dict of factors (each chain starts at its means / modes).
    Latents ``init`` does not name are absent (they start at random values).

    Raises:
        ModelSpecError: an unknown latent, a value of the wrong shape or outside the
            latent's support.
        ArgumentTypeError: ``init`` is neither a dict nor a fit result.
    """
    if init is None:
        return {}
    post = getattr(init, "posterior", None)
    if isinstance(post, Mapping):
        init = {n: _point_of_factor(infos[n], q) for n, q in post.items()
                if n in infos and isinstance(q, ExponentialFamily)}
    elif not isinstance(init, Mapping):
        raise ArgumentTypeError(
            "init must be a dict latent -> value, or a fit result (vj.cavi, "
            f"vj.fit_gradient) to start every chain at its posterior means; got "
            f"{type(init).__name__}")
    out = {}
    for n, v in init.items():
        if n not in infos:
            raise ModelSpecError(f"init names latent {n!r}, which the model does not declare "
                                 f"(latents: {sorted(infos)})")
        sup = infos[n].support
        shape = tuple(sup.value_shape)
        x = jnp.asarray(v, jnp.int32 if sup.is_discrete else dtype)
        if x.shape == shape:
            x = jnp.broadcast_to(x, (num_chains,) + shape)
        elif x.shape != (num_chains,) + shape:
            raise ModelSpecError(
                f"init for latent {n!r} has shape {x.shape}; expected {shape} (every chain) "
                f"or {(num_chains,) + shape} (one value per chain)")
        if sup.is_discrete and not np.all(np.asarray(v) == np.asarray(x)):
            raise ModelSpecError(f"init for discrete latent {n!r} must hold integers")
        inside = np.asarray(sup.contains(x))
        if not np.all(inside):
            raise ModelSpecError(
                f"init for latent {n!r} has {int(np.sum(~inside))} value(s) outside its "
                f"support {sup}")
        out[n] = x
    return out
