"""Export draws from a fitted ``q`` to ArviZ (optional extra: ``pip install vijax[arviz]``).

The draws are independent samples of the variational (or Laplace) posterior, arranged
as ``chains x draws`` so that ArviZ's summaries and plots apply; split-R-hat and ESS of
independent draws are ~1 and ~``chains * draws`` (they say nothing about the quality of
the approximation itself).

Example (needs arviz)::

    idata = vj.to_arviz(fit, jax.random.PRNGKey(0), 1000, chains=4)
    az.summary(idata)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from vijax.results import draws as _draws


def _import_arviz():
    try:
        import arviz
    except ImportError as e:
        raise ImportError("vj.to_arviz needs the optional dependency arviz: "
                          "pip install vijax[arviz]  (or: pip install arviz)") from e
    return arviz


def _chains(tree, chains: int, per_chain: int):
    """Leading axis ``chains * per_chain`` -> ``(chains, per_chain)`` as NumPy arrays."""
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x).reshape((chains, per_chain) + np.shape(x)[1:]), tree)


def to_arviz(result: Any, key: jax.Array, num_draws: int, *, chains: int = 1,
             supports: Any = None, simulator: Callable | None = None,
             observed_data: dict | None = None):
    """An ``arviz.InferenceData`` whose posterior group holds draws from ``q``.

    Args:
        result: a fit result (see :func:`vijax.results.draws.sample`).
        key: a PRNG key.
        num_draws: draws per chain.
        chains: number of chains (independent draws, reshaped).
        supports: a :class:`~vijax.Model` or ``{latent: Support}``; Laplace results only.
        simulator: optional ``simulator(key, latents) -> dict name -> array``; its
            outputs on the same draws form the ``posterior_predictive`` group
            (:func:`vijax.posterior_predictive`).
        observed_data: optional ``{name: array}`` for the ``observed_data`` group.

    Returns:
        ``arviz.InferenceData`` with a ``posterior`` group of dims
        ``(chain, draw, <latent>_dim_0, ...)``.

    Raises:
        ImportError: arviz is not installed (``pip install vijax[arviz]``).
    """
    az = _import_arviz()
    chains = int(chains)
    if chains < 1:
        raise ValueError(f"chains must be a positive integer, got {chains}")
    per_chain = int(num_draws)
    total = chains * per_chain
    key_z, key_sim = jax.random.split(key)
    z = _draws.sample(result, key_z, total, supports=supports)
    groups = {"posterior": _chains(z, chains, per_chain)}
    if simulator is not None:
        pred = _draws.posterior_predictive(result, simulator, key_sim, total, draws=z)
        if not isinstance(pred, dict):
            pred = {"y": pred}
        groups["posterior_predictive"] = _chains(pred, chains, per_chain)
    if observed_data is not None:
        groups["observed_data"] = {k: np.asarray(v) for k, v in observed_data.items()}
    try:
        return az.from_dict(**groups)
    except TypeError:  # arviz >= 1.0 takes one dict of groups
        return az.from_dict(groups)
