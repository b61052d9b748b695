"""Coordinate-ascent variational inference derived from the compiled form F.

The update of block j is a gradient (DESIGN section 1):

    eta_j <- dF/dmu_j (mu_1, ..., mu_M),     mu_j <- grad A_j(eta_j),

so no model-specific update code exists anywhere. ``init``/``sweep`` are the low-level
pure functions; :func:`cavi` runs them in a ``lax.while_loop`` until the relative ELBO
change falls below ``tol`` and returns a :class:`CaviResult`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vijax import _compat
from vijax.conjugacy import fused
from vijax.conjugacy import terms as T
from vijax.conjugacy.compile import compile_model
from vijax.errors import FitDivergedError
from vijax.inference import meanfield as mf
from vijax.inference.result import FitResult
from vijax.model import check_data


CaviResult = FitResult


class CaviState(NamedTuple):
    natural: dict
    mu: dict
    elbo: Any
    it: Any
    trace: Any
    converged: Any
    max_decrease: Any
    invalid_latent: Any
    invalid_iter: Any


def init(compiled, natural0, max_iters):
    """The starting state (ELBO of the initial factors)."""
    mu = mf.mean_params(compiled, natural0)
    e = mf.elbo(compiled, natural0)
    return CaviState(natural0, mu, e, jnp.asarray(0), jnp.full((max_iters,), e),
                     jnp.asarray(False), jnp.zeros((), e.dtype), jnp.asarray(-1),
                     jnp.asarray(-1))


#: blocks with at least this many natural parameters are guarded by a branch (lax.cond)
_BRANCH_MIN_SIZE = 1 << 16


def _inner(a, b):
    return sum(jnp.sum(a[s] * b[s]) for s in a)


def rest_and_grad_block(compiled, stats, name):
    """``F = F_rest + <dF/dmu_name, mu_name>``: F is affine in each block, so only the
    terms holding the block are differentiated (one contraction each); the others are
    summed into ``F_rest``. Returns ``(F_rest, dF/dmu_name)``."""
    sizes = compiled.sizes
    rest = jnp.asarray(compiled.const)
    grad = jax.tree_util.tree_map(jnp.zeros_like, stats[name])
    holding = []
    for t in compiled.terms:
        if any(a.latent == name for a in t.atoms):
            holding.append(t)
        else:
            rest = rest + jnp.sum(T.eval_term(t, stats, sizes))
    # terms with one data constant: stacked into one matrix product per layout
    fused_grads, holding = fused.block_gradients(holding, stats, name, sizes)
    for s, g in fused_grads.items():
        grad[s] = grad[s] + g.astype(grad[s].dtype)
    for t in holding:
        g = jax.grad(lambda m, t=t: jnp.sum(
            T.eval_term(t, {**stats, name: m}, sizes)))(stats[name])
        grad = jax.tree_util.tree_map(jnp.add, grad, g)
    return rest, grad


def sweep(form, fams, natural, mu, order, damping=None):
    """One pass of coordinate updates over ``order``.

    ``form(mu) -> (compiled, stats)`` gives the multilinear form at the current mean
    parameters (CAVI: always the same; EM: with the parameters' statistics added).
    Returns ``(natural, mu, elbo, invalid)`` with ``invalid`` the index in ``order`` of
    the first update that left its family's domain (-1 if none).

    The ELBO needs no extra pass over F. With ``F = F_rest + <g, mu_j>`` for the last
    block ``j`` and its new natural parameters ``e`` (``e = g`` for a plain update),

        F(mu(e)) + H(e) = F_rest + A(e) - E_e[log h] + <g - e, mu(e)>,

    (the last term vanishes unless the update was damped or refused), plus the entropies
    of the other blocks, taken when they were updated.
    """
    natural, mu = dict(natural), dict(mu)
    invalid = jnp.asarray(-1)
    entropy = {}
    for j, name in enumerate(order):
        compiled, stats = form(mu)
        rest, grad = rest_and_grad_block(compiled, stats, name)
        eta = {s: grad[s] for s in natural[name]}
        if damping is not None:
            eta = {s: (1 - damping) * natural[name][s] + damping * eta[s] for s in eta}
        fam = fams[name]
        # a sum is finite iff every entry is (one fused reduction, no extra pass)
        ok = jnp.all(jnp.asarray([jnp.isfinite(jnp.sum(eta[s])) for s in eta]))
        if not fam.natural_domain_is_real:
            ok = ok & jnp.all(fam.is_valid_natural(eta))
        invalid = jnp.where((invalid < 0) & ~ok, j, invalid)
        # large blocks: a branch rather than a select (no pass over the block when the
        # update is valid); small ones: a select (no branch, which costs a sync on GPUs)
        big = sum(jnp.size(v) for v in eta.values()) >= _BRANCH_MIN_SIZE
        if big:
            new = jax.lax.cond(ok, lambda a, b: a, lambda a, b: b, eta, natural[name])
        else:
            new = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), eta, natural[name])
        natural[name] = new
        if j == len(order) - 1:
            new_mu, log_norm = fam.mean_and_log_normalizer(new)
            f_and_h = rest + jnp.sum(log_norm) - jnp.sum(fam(new).expected_log_base_measure())
            if damping is None and big:  # the gap is zero unless the update was refused
                f_and_h = f_and_h + jax.lax.cond(
                    ok, lambda *_: jnp.zeros((), f_and_h.dtype),
                    lambda g, e, m: _inner({s: g[s] - e[s] for s in e}, m), grad, new, new_mu)
            else:
                f_and_h = f_and_h + _inner({s: grad[s] - new[s] for s in new}, new_mu)
        else:
            new_mu = fam.mean_params(new)
            entropy[name] = jnp.sum(fam(new).entropy())
        mu[name] = new_mu
    for n in natural:
        if n not in entropy and n != order[-1]:
            entropy[n] = jnp.sum(fams[n](natural[n]).entropy())
    elbo = f_and_h + sum(entropy.values())
    return natural, mu, elbo, invalid


def step(compiled, state: CaviState, order, tol, damping=None):
    """A sweep plus the ELBO and convergence bookkeeping."""
    natural, mu, e, invalid = sweep(lambda m: (compiled, m), mf.families_of(compiled),
                                    state.natural, state.mu, order, damping)
    rel = jnp.abs(e - state.elbo) / jnp.maximum(jnp.abs(e), 1.0)
    drop = state.elbo - e
    it = state.it + 1
    return CaviState(
        natural, mu, e, it, state.trace.at[state.it].set(e),
        (rel < tol) & jnp.isfinite(e),
        jnp.maximum(state.max_decrease, jnp.where(jnp.isfinite(drop), drop, 0.0)),
        jnp.where(state.invalid_latent >= 0, state.invalid_latent, invalid),
        jnp.where((state.invalid_iter < 0) & (invalid >= 0), it, state.invalid_iter))


def _loop(compiled, natural0, tol, order, max_iters, damping):
    state = init(compiled, natural0, max_iters)

    def cond(s):
        return (s.it < max_iters) & ~s.converged & (s.invalid_latent < 0) & jnp.isfinite(s.elbo)

    state = jax.lax.while_loop(cond, lambda s: step(compiled, s, order, tol, damping), state)
    trace = jnp.where(jnp.arange(max_iters) < state.it, state.trace, state.elbo)
    return state._replace(trace=trace)


_loop_jit = jax.jit(_loop, static_argnames=("order", "max_iters", "damping"))


def default_order(compiled):
    """Global (continuous) latents first, then discrete ones (responsibilities last)."""
    names = list(compiled.infos)
    cont = [n for n in names if not compiled.infos[n].support.is_discrete]
    disc = [n for n in names if compiled.infos[n].support.is_discrete]
    return tuple(cont + disc)


def cavi(model, data, key=None, init=None, tol=1e-8, max_iters=500, order=None,
         damping=None, strict=False) -> CaviResult:
    """Fit the mean-field posterior by coordinate ascent with closed-form updates.

    Args:
        model: a :class:`vijax.Model` whose latents are all conjugate.
        data: the data pytree passed to the log joint.
        key: PRNG key for the random parts of the default initialization.
        init: optional ``{latent: family object}`` (or probabilities for discrete latents).
        tol: stop when ``|L_t - L_{t-1}| / max(|L_t|, 1) < tol``.
        max_iters: at most this many sweeps.
        order: update order (latent names); default continuous latents, then discrete.
        damping: optional step size in (0, 1]: ``eta <- (1-d) eta + d eta*``.
        strict: raise :class:`FitDivergedError` if the ELBO decreased beyond rounding.

    Raises:
        NonConjugateError: a latent has no closed-form update (names it and the line).
        DataError: NaN or Inf in the data.
        FitDivergedError: an update left its family's domain (e.g. an improper prior),
            or the ELBO became non-finite (only when called outside ``jit``/``vmap``).
    """
    check_data(data)
    compiled = compile_model(model, data)
    compiled.require_conjugate()
    dtype = jnp.zeros(()).dtype
    key = jax.random.key(0) if key is None else key
    natural0 = mf.user_init(compiled, init, mf.default_init(compiled, key, dtype))
    order = tuple(order) if order is not None else default_order(compiled)
    missing = set(compiled.infos) - set(order)
    if missing or set(order) - set(compiled.infos):
        from vijax.errors import ModelSpecError
        raise ModelSpecError(f"order must list every latent once; missing {sorted(missing)}")
    if damping is not None and not 0 < damping <= 1:
        from vijax.errors import ModelSpecError
        raise ModelSpecError(f"damping must be in (0, 1], got {damping}")
    state = _loop_jit(compiled, natural0, tol, order, int(max_iters), damping)
    diag = {"max_decrease": state.max_decrease, "nonfinite": ~jnp.isfinite(state.elbo),
            "invalid_latent": state.invalid_latent, "invalid_iter": state.invalid_iter}
    result = CaviResult(mf.posterior(compiled, state.natural), state.elbo, state.trace,
                        state.it, state.converged, diag, state.natural)
    if not _compat.is_tracer(state.elbo):
        _raise_if_failed(result, order, strict)
    return result


def _raise_if_failed(result, order, strict):
    d = result.diagnostics
    bad = int(d["invalid_latent"])
    if bad >= 0:
        name = order[bad]
        raise FitDivergedError(
            f"CAVI update of latent '{name}' at iteration {int(d['invalid_iter'])} left its "
            "family's valid region (e.g. a non-positive precision or concentration). Check "
            "that its prior is proper and its hyper-parameters are valid.",
            step=int(d["invalid_iter"]), latent=name, last_state=result.natural)
    if bool(d["nonfinite"]):
        raise FitDivergedError("the ELBO became non-finite during CAVI",
                               step=int(result.num_iters), last_state=result.natural)
    drop = float(d["max_decrease"])
    if strict and drop > 1e-9 * max(1.0, abs(float(result.elbo))):
        raise FitDivergedError(f"the ELBO decreased by {drop:.3g} during CAVI (strict=True)",
                               step=int(result.num_iters), last_state=result.natural)
