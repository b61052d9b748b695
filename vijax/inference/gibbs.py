"""Blocked Gibbs sampling from the complete conditionals the compiler derives.

At a point ``z``, block j's complete conditional is its own exponential family with
natural parameters

    eta_j = dF/dmu_j (T_1(z_1), ..., T_M(z_M)),

the CAVI update evaluated at point statistics instead of mean parameters
(:mod:`vijax.inference.gibbs_sweep`). A sweep draws every block in turn; the sweeps run in
a jitted ``lax.scan``, chains under ``vmap``. Same blocks and families as CAVI (a dense
Gaussian block is drawn jointly). Non-conjugate latents are refused by name.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _xla
from vijax.conjugacy.program import program_for
from vijax.errors import FitDivergedError
from vijax.inference import checks
from vijax.inference import gibbs_init
from vijax.inference import gibbs_sweep as gs
from vijax.inference.cavi import default_order
from vijax.inference.gibbs_result import GibbsResult
from vijax.model import check_data


def _run(compiled, data, user, keys, log_joint, order, num_warmup, num_samples, thin):
    """All chains: ``(draws, log joint, failed, failed_at)`` with leading chain axes.

    One loop over ``num_warmup + num_samples`` outer steps; step ``i`` runs one sweep
    (warmup, ``i < num_warmup``) or ``thin`` sweeps and writes the draw and its log joint
    at row ``i - num_warmup``. The sweep appears once in the program (its samplers, e.g.
    the Gamma's rejection loop, are compiled once).
    """
    alg = gs.algorithm(compiled, order)
    dtype = jnp.zeros(()).dtype

    def chain(user_z, key):
        k_start, k_run = jax.random.split(key)
        z0 = gs.start_values(compiled, k_start, dtype)
        z0.update(user_z)
        state = alg.init(z0)
        lj0 = jnp.zeros((), jnp.result_type(log_joint(z0, data)))
        buf = (jax.tree_util.tree_map(
            lambda v: jnp.zeros((num_samples,) + v.shape, v.dtype), z0),
            jnp.zeros((num_samples,), lj0.dtype))

        def outer(i, carry):
            state, buf = carry
            k = jax.random.fold_in(k_run, i)
            n = jnp.where(i < num_warmup, 1, thin)
            state = jax.lax.fori_loop(
                0, n, lambda t, s: alg.step(s, jax.random.fold_in(k, t)), state)

            def write(buf):
                row = i - num_warmup
                draws, lj = buf
                draws = jax.tree_util.tree_map(lambda b, v: b.at[row].set(v), draws,
                                               state.z)
                return draws, lj.at[row].set(log_joint(state.z, data).astype(lj.dtype))

            buf = jax.lax.cond(i >= num_warmup, write, lambda b: b, buf)
            return state, buf

        state, (draws, lj) = jax.lax.fori_loop(0, num_warmup + num_samples, outer,
                                               (state, buf))
        return draws, lj, state.failed, state.failed_at

    return jax.vmap(chain)(user, keys)


# cached per (compiled structure, log joint, order, num_samples, chains): a second run on
# new data of the same shapes, or with other num_warmup / thin, compiles nothing
_run_jit = _xla.jit(_run, static_argnames=("log_joint", "order", "num_samples"))


def gibbs(model, data, key, num_samples=1000, num_warmup=500, thin=1, num_chains=1,
          init=None, order=None) -> GibbsResult:
    """Draw from the posterior by blocked Gibbs sampling with closed-form conditionals.

    Each sweep draws every latent (block) in ``order`` from ``p(z_j | z_-j, x)``, the
    family CAVI uses for it with ``eta_j = dF/dmu_j`` at the current draws' statistics.
    ``num_warmup`` sweeps are discarded, then every ``thin``-th sweep is kept until
    ``num_samples`` draws per chain.

    Args:
        model: a :class:`vijax.Model` (or compiled program) whose latents are all conjugate.
        data: the data pytree passed to the log joint.
        key: PRNG key (``jax.random.key``); chains use independent keys split from it.
        num_samples: kept draws per chain (>= 1).
        num_warmup: sweeps discarded first (>= 0).
        thin: sweeps per kept draw (>= 1).
        num_chains: independent chains, run together under ``vmap`` (>= 1).
        init: optional start: ``{latent: value}`` (one value for all chains, or one per
            chain on a leading axis; latents left out start at random values), or a fit
            result (``vj.cavi``, ``vj.fit_gradient``) to start every chain at its
            posterior means (modes for discrete latents). Default: each latent drawn from
            its family's default starting member (as CAVI's default start).
        order: update order (latent names); default continuous latents, then discrete.

    Returns:
        :class:`~vijax.inference.gibbs_result.GibbsResult`: ``draws[latent]`` of shape
        ``[num_chains, num_samples] + value shape``, ``log_joint`` ``[num_chains,
        num_samples]``, ``mean()``, ``variance()``, ``ess()``, ``rhat()``,
        ``to_arviz()``.

    Raises:
        NonConjugateError: a latent has no closed-form conditional (names it and the line).
        ModelSpecError, ArgumentTypeError: a bad argument (named).
        DataError: NaN or Inf in the data.
        FitDivergedError: a conditional left its family's domain or a draw was not finite
            (names the latent, the sweep and the chain).

    Example:
        >>> import jax, jax.numpy as jnp, vijax as vj
        >>> from jax.scipy import stats
        >>> from vijax.inference.gibbs import gibbs
        >>> m = vj.Model(lambda z, x: stats.norm.logpdf(z["mu"]) +
        ...              stats.norm.logpdf(x, z["mu"]).sum(), {"mu": vj.real()})
        >>> res = gibbs(m, jnp.array([1.0, 2.0, 3.0]), jax.random.key(0), num_samples=2000,
        ...             num_warmup=0)
        >>> res.draws["mu"].shape
        (1, 2000)
        >>> abs(float(res.mean()["mu"]) - 1.5) < 0.05  # exact posterior N(1.5, 1/4)
        True
    """
    checks.check_key(key)
    num_samples = checks.check_positive_int("num_samples", num_samples, 1)
    num_warmup = checks.check_positive_int("num_warmup", num_warmup, 0)
    thin = checks.check_positive_int("thin", thin, 1)
    num_chains = checks.check_positive_int("num_chains", num_chains, 1)
    check_data(data)
    prog = program_for(model, data)
    prog.require_conjugate()
    compiled = prog.materialize(data)
    order = default_order(compiled) if order is None else \
        checks.check_order(order, compiled.infos)
    dtype = jnp.zeros(()).dtype
    user = gibbs_init.user_values(compiled.infos, init, num_chains, dtype)
    if key.dtype == jnp.uint32:  # a legacy raw key
        key = jax.random.wrap_key_data(key)
    keys = jax.random.split(key, num_chains)
    t0 = time.perf_counter()
    draws, lj, failed, failed_at = jax.block_until_ready(_run_jit(
        compiled, data, user, keys, prog.log_joint, tuple(order), jnp.int32(num_warmup),
        num_samples, jnp.int32(thin)))
    seconds = time.perf_counter() - t0
    failed, failed_at = np.asarray(failed), np.asarray(failed_at)
    if np.any(failed >= 0):
        c = int(np.argmax(failed >= 0))
        name = order[int(failed[c])]
        raise FitDivergedError(
            f"Gibbs draw of latent '{name}' at sweep {int(failed_at[c])} (chain {c}) was "
            "not finite or its complete conditional left its family's valid region (e.g. "
            "a non-positive precision): check that its prior is proper and its "
            "hyper-parameters are valid.", step=int(failed_at[c]), latent=name)
    fams = {n: compiled.infos[n].family for n in order}
    return GibbsResult(dict(draws), lj, fams, tuple(order), num_warmup, thin, seconds)
