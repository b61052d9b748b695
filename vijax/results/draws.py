"""Joint draws from a fitted posterior, and the posterior predictive.

Works on any result whose ``posterior`` is either

- a dict ``latent -> family`` (:func:`vijax.cavi`, :func:`vijax.fit_gradient`,
  :func:`vijax.em`): ``q`` is the product of the factors, so a joint draw samples each
  factor with its own key (``jax.random.split`` of ``key`` over the latents in sorted
  order). A declared joint block (``natural`` keyed ``"mu+tau"``, ``posterior`` holding
  its members' marginals) is drawn from its joint factor, ``tau ~ q(tau)`` then
  ``mu ~ q(mu | tau)``, with the key of its first member; or
- one :class:`~vijax.families.MultivariateNormal` over the flattened unconstrained vector
  ``u`` (:func:`vijax.laplace`): a draw of ``u`` is unflattened like the result's
  ``map_unconstrained`` and mapped through each latent's bijection ``x = f(u)``. The
  bijections come from the model's supports, which the result does not store: pass
  ``supports=model`` (or ``model.supports``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from vijax.families import Normal
    >>> from vijax.inference.result import FitResult
    >>> q = {"mu": Normal.from_loc_scale(jnp.zeros(3), jnp.ones(3))}
    >>> fit = FitResult(q, 0.0, jnp.zeros(1), 1, True, {}, {})
    >>> sample(fit, jax.random.PRNGKey(0), 5)["mu"].shape
    (5, 3)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


def is_laplace(result: Any) -> bool:
    """True for a result whose posterior is one Gaussian over the unconstrained vector
    (the :class:`~vijax.LaplaceResult` layout) rather than a dict of factors."""
    return not isinstance(result.posterior, Mapping) and hasattr(result, "map_unconstrained")


def supports_of(supports: Any) -> dict | None:
    """``latent -> Support`` from a :class:`~vijax.Model`, a dict, or None."""
    if supports is None:
        return None
    if hasattr(supports, "supports"):
        supports = supports.supports
    if not isinstance(supports, Mapping):
        raise TypeError("supports must be a vijax.Model or a dict latent -> support "
                        f"(vj.real(), vj.positive(), ...), got {type(supports).__name__}")
    return dict(supports)


def _check_num(num_draws: Any) -> int:
    try:
        n = int(num_draws)
    except TypeError as e:
        raise TypeError("num_draws must be a Python int (it is a shape; under jit mark "
                        "it static)") from e
    if n != num_draws or n < 1:
        raise ValueError(f"num_draws must be a positive integer, got {num_draws!r}")
    return n


def sample(result: Any, key: jax.Array, num_draws: int, *,
           supports: Any = None) -> dict[str, jax.Array]:
    """Joint draws from the fitted ``q``.

    Args:
        result: a fit result (see the module docstring).
        key: a PRNG key.
        num_draws: number of draws ``n`` (a Python int).
        supports: a :class:`~vijax.Model` or ``{latent: Support}``; needed only for a
            Laplace result (to map ``u`` back to each latent's space).

    Returns:
        ``{latent: array}`` with shape ``(n,) + value shape`` per latent (a batched,
        vmapped result keeps its batch axes after the draw axis). Categorical latents
        are integer labels, as in the model.

    Raises:
        ValueError: a Laplace result without ``supports``, or supports that do not match
            its latents.
    """
    n = _check_num(num_draws)
    if is_laplace(result):
        return _laplace_draws(result, key, n, supports_of(supports))
    posterior = result.posterior
    if not isinstance(posterior, Mapping):
        raise TypeError(f"{type(result).__name__}.posterior must be a dict latent -> family, "
                        f"got {type(posterior).__name__}")
    names = sorted(posterior)
    keys = dict(zip(names, jax.random.split(key, len(names))))
    out = {}
    for q, roles in joint_factors(result).values():
        draw = q.sample(keys[min(roles)], (n,))
        out.update({m: draw[r] for m, r in roles.items()})
    out.update({name: posterior[name].sample(keys[name], (n,)) for name in names
                if name not in out})
    return {name: out[name] for name in names}


def joint_factors(result: Any) -> dict:
    """``{block name: (joint family, {member: role})}`` for the declared joint blocks of
    a fit: the entries of ``result.natural`` keyed ``"a+b"`` whose members are in the
    posterior (as their marginals); each member's role is the one whose marginal has the
    member's class (e.g. StudentT for the mean, Gamma for the precision)."""
    from vijax.families import registry
    natural = getattr(result, "natural", None)
    posterior = getattr(result, "posterior", None)
    if not isinstance(natural, Mapping) or not isinstance(posterior, Mapping):
        return {}
    out = {}
    for name, nat in natural.items():
        members = name.split("+")
        if name in posterior or len(members) < 2 or not all(m in posterior for m in members):
            continue
        classes = [c for c in registry.joint_families()
                   if isinstance(nat, Mapping) and set(c.stat_event_ndims) == set(nat)]
        if len(classes) != 1:
            raise ValueError(f"joint factor '{name}': its statistics {sorted(nat)} match "
                             f"{len(classes)} joint families")
        q = classes[0](nat)
        by_role = q.marginals()
        roles = {}
        for m in members:
            found = [r for r, d in by_role.items() if type(d) is type(posterior[m])]
            if len(found) != 1:
                raise ValueError(f"joint factor '{name}': cannot tell the role of '{m}' "
                                 f"(a {type(posterior[m]).__name__})")
            roles[m] = found[0]
        out[name] = (q, roles)
    return out


def _laplace_draws(result, key, n, supports):
    names = sorted(result.map_unconstrained)
    if supports is None:
        raise ValueError(
            f"draws from a {type(result).__name__} need the model's supports to map the "
            "unconstrained Gaussian back to each latent: pass supports=model (or "
            "model.supports)")
    missing = [k for k in names if k not in supports]
    if missing:
        raise ValueError(f"supports lacks the latents {missing} of this Laplace fit "
                         f"(given: {sorted(supports)})")
    flat, unravel = ravel_pytree(result.map_unconstrained)
    dim = result.posterior.natural["x"].shape[-1]
    if jnp.ndim(flat) != 1 or flat.shape[0] != dim or result.posterior.natural["x"].ndim != 1:
        raise ValueError("draws from a batched (vmapped) Laplace result are not supported: "
                         "index one fit out of the batch first (jax.tree_util.tree_map("
                         "lambda a: a[i], result))")
    u = result.posterior.sample(key, (n,))
    tree = jax.vmap(unravel)(u)
    return {k: supports[k].from_unconstrained(tree[k]) for k in names}


def posterior_predictive(result: Any, simulator: Callable, key: jax.Array, num_draws: int, *,
                         supports: Any = None, draws: Mapping[str, jax.Array] | None = None):
    """Simulate replicated data under the fitted posterior.

    Draws ``n`` latent values ``z_i ~ q`` (:func:`sample`) and returns
    ``simulator(key_i, z_i)`` for each, vmapped over the draws, with independent keys.

    Args:
        result: a fit result.
        simulator: ``simulator(key, latents) -> pytree`` where ``latents`` is one draw
            ``{latent: value}`` (no leading axis); it must be traceable by ``vmap``.
        key: a PRNG key (split into one key for the latents and ``n`` for the simulator).
        num_draws: number of replicates ``n``.
        supports: as in :func:`sample` (Laplace results only).
        draws: latent draws to reuse (leading axis ``n``) instead of drawing new ones.

    Returns:
        the simulator's pytree with a leading axis of size ``n`` on every leaf.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from vijax.families import Normal
        >>> from vijax.inference.result import FitResult
        >>> fit = FitResult({"mu": Normal.from_loc_scale(0.0, 1.0)}, 0.0, jnp.zeros(1), 1,
        ...                 True, {}, {})
        >>> sim = lambda k, z: z["mu"] + jax.random.normal(k, (4,))
        >>> posterior_predictive(fit, sim, jax.random.PRNGKey(0), 100).shape
        (100, 4)
    """
    n = _check_num(num_draws)
    key_z, key_sim = jax.random.split(key)
    if draws is None:
        draws = sample(result, key_z, n, supports=supports)
    else:
        sizes = {k: jnp.shape(v)[0] if jnp.ndim(v) else None for k, v in draws.items()}
        if any(s != n for s in sizes.values()):
            raise ValueError(f"draws must have a leading axis of num_draws={n}; got {sizes}")
    keys = jax.random.split(key_sim, n)
    return jax.vmap(simulator)(keys, dict(draws))
