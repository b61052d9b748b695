"""One blocked Gibbs sweep from the compiled form F (the low tier of :func:`vijax.gibbs`).

F is multilinear in the blocks' statistics, and ``F(T_1(z_1), ..., T_M(z_M)) =
log p(x, z)`` at any point. As a function of block j alone,

    log p(z_j | z_-j, x) = <eta_j, T_j(z_j)> + log h_j(z_j) - A_j(eta_j),
    eta_j = dF/dmu_j  evaluated at  mu_i = T_i(z_i)  (i != j),

so the complete conditional is the block's own family with the natural parameters CAVI
would compute from point statistics instead of mean parameters. A sweep draws every
block in turn from it (:func:`sweep`); :func:`algorithm` is the ``init``/``step`` pair.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vijax.conjugacy.compile import point_statistics
from vijax.inference import meanfield as mf
from vijax.inference.cavi import rest_and_grad_block


class GibbsState(NamedTuple):
    """What the next sweep needs (one chain).

    Attributes:
        z: ``{latent: value}`` in the declared shapes (integers for discrete supports).
        stats: the statistics ``T(z)`` of every block (kept up to date block by block).
        sweep: sweeps done so far.
        failed: index in the update order of the first block whose conditional was
            invalid or whose draw was not finite (-1: none); that draw was refused and the
            block kept its old value.
        failed_at: the sweep (1-based) where that happened (-1: none).
    """

    z: dict
    stats: dict
    sweep: Any
    failed: Any
    failed_at: Any


def _all_finite(tree):
    """One fused reduction per leaf: a sum is finite iff every entry is."""
    leaves = [jnp.isfinite(jnp.sum(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.asarray(leaves)) if leaves else jnp.asarray(True)


def conditional(compiled, stats, name):
    """The complete conditional ``p(z_name | z_-name, x)`` at the point whose statistics
    are ``stats``, as the family object of the latent (family layout, unvalidated), and a
    flag that its natural parameters are finite and in the family's domain."""
    inf = compiled.infos[name]
    cls = inf.family_class
    _, eta = rest_and_grad_block(compiled, stats, name)  # F_rest is dead code under jit
    ok = _all_finite(eta)
    if not cls.natural_domain_is_real:
        ok = ok & jnp.all(cls.is_valid_natural(eta))
    return cls(dict(eta)), ok


def sweep(compiled, state: GibbsState, key, order) -> GibbsState:
    """Draw every block of ``order`` from its complete conditional given the current
    values of the others (a refused draw keeps the old value and is flagged)."""
    z, stats = dict(state.z), dict(state.stats)
    failed, failed_at = state.failed, state.failed_at
    count = state.sweep + 1
    keys = jax.random.split(key, len(order))
    for j, name in enumerate(order):
        inf = compiled.infos[name]
        q, ok = conditional(compiled, stats, name)
        new = inf.value_of_sample(q.sample(keys[j])).astype(z[name].dtype)
        ok = ok & _all_finite(new)
        z[name] = jnp.where(ok, new, z[name])
        stats[name] = point_statistics(inf, z[name])
        first = (failed < 0) & ~ok
        failed = jnp.where(first, j, failed)
        failed_at = jnp.where(first, count, failed_at)
    return GibbsState(z, stats, count, failed, failed_at)


def start_values(compiled, key, dtype):
    """A random start per latent from each family's default starting member
    (:meth:`~vijax.families.base.ExponentialFamily.default_start`, CAVI's default start):
    its mean for a continuous latent (small random means for Gaussians, 1 for Gamma,
    uniform Beta and Dirichlet), a draw for a discrete one (random probabilities). Means,
    not draws, for the continuous families: their samplers (rejection loops for Gamma and
    Dirichlet) would be compiled once more just for the start."""
    natural = mf.default_init(compiled, key, dtype)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(natural))
    out = {}
    for k, (n, nat) in zip(keys, sorted(natural.items())):
        inf = compiled.infos[n]
        q = mf.factor(inf, nat, validate=False)
        x = q.sample(k) if inf.support.is_discrete else q.mean()
        out[n] = value_dtype(inf, x, dtype)
    return out


def value_dtype(inf, x, dtype):
    """``x`` in the latent's value dtype: int32 for discrete supports, else ``dtype``."""
    return jnp.asarray(x, jnp.int32 if inf.support.is_discrete else dtype)


def init(compiled, z0) -> GibbsState:
    """The state at the values ``z0`` (``{latent: value}`` of every latent)."""
    stats = {n: point_statistics(compiled.infos[n], z0[n]) for n in z0}
    return GibbsState(dict(z0), stats, jnp.zeros((), jnp.int32), jnp.asarray(-1, jnp.int32),
                      jnp.asarray(-1, jnp.int32))


class Algorithm(NamedTuple):
    """``init(z0) -> GibbsState`` and ``step(state, key) -> state`` (one sweep)."""

    init: Any
    step: Any


def algorithm(compiled, order) -> Algorithm:
    """Blocked Gibbs as an ``init``/``step`` pair for a conjugate compiled form (pure
    functions of arrays: scan, vmap over chains and jit apply)."""
    compiled.require_conjugate()
    order = tuple(order)
    return Algorithm(lambda z0: init(compiled, z0),
                     lambda state, key: sweep(compiled, state, key, order))
