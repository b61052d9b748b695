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
from vijax.conjugacy.program import program_for
from vijax.errors import FitDivergedError
from vijax.inference import checks
from vijax.inference import meanfield as mf
from vijax.inference import stopping
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
    excess: Any  # largest ELBO decrease beyond the rounding bound (<= 0: none)
    bound: Any  # the rounding bound R of the last sweep (vijax.inference.stopping)


def init(compiled, natural0, max_iters):
    """The starting state (ELBO of the initial factors)."""
    mu = mf.mean_params(compiled, natural0)
    e = mf.elbo(compiled, natural0)
    return CaviState(natural0, mu, e, jnp.asarray(0), jnp.full((max_iters,), e),
                     jnp.asarray(False), jnp.zeros((), e.dtype), jnp.asarray(-1),
                     jnp.asarray(-1), jnp.full((), -jnp.inf, e.dtype), jnp.zeros((), e.dtype))


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


def step(compiled, state: CaviState, order, tol, damping=None, absolute=None):
    """A sweep plus the ELBO and convergence bookkeeping.

    Converged when ``|L_t - L_{t-1}| <= tol * max(|L_t|, 1) + R_t`` with ``R_t`` the
    ELBO's rounding bound (:mod:`vijax.inference.stopping`; ``absolute`` holds the
    absolute values of F's constants, :func:`stopping.abs_terms`). ``tol = 0`` never
    converges (runs every sweep)."""
    natural, mu, e, invalid = sweep(lambda m: (compiled, m), mf.families_of(compiled),
                                    state.natural, state.mu, order, damping)
    drop = state.elbo - e

    def magnitude_bound(m):
        absolute_ = stopping.abs_terms(compiled) if absolute is None else absolute
        return stopping.rounding_bound(
            stopping.elbo_magnitude(absolute_, compiled.sizes, m), e.dtype)

    # R_t is needed only when the ELBO did not increase (a pass over |F|): a branch
    bound = jax.lax.cond(drop >= 0, magnitude_bound,
                         lambda m: jnp.asarray(state.bound, e.dtype), mu)
    it = state.it + 1
    return CaviState(
        natural, mu, e, it, state.trace.at[state.it].set(e),
        stopping.converged(e - state.elbo, e, tol, bound) & (tol > 0),
        jnp.maximum(state.max_decrease, jnp.where(jnp.isfinite(drop), drop, 0.0)),
        jnp.where(state.invalid_latent >= 0, state.invalid_latent, invalid),
        jnp.where((state.invalid_iter < 0) & (invalid >= 0), it, state.invalid_iter),
        jnp.maximum(state.excess, jnp.where(jnp.isfinite(drop), drop - bound, -jnp.inf)),
        bound)


def _loop(compiled, natural0, tol, order, max_iters, damping):
    state = init(compiled, natural0, max_iters)

    def cond(s):
        return (s.it < max_iters) & ~s.converged & (s.invalid_latent < 0) & jnp.isfinite(s.elbo)

    # |constants| are taken inside the rounding-bound branch, when it runs (no second
    # copy of the data-sized constants on the device)
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


def cavi(model, data, key=None, init=None, tol=None, max_iters=500, order=None,
         damping=None, strict=False) -> CaviResult:
    """Fit the mean-field posterior by coordinate ascent with closed-form updates.

    Args:
        model: a :class:`vijax.Model` whose latents are all conjugate.
        data: the data pytree passed to the log joint.
        key: PRNG key for the random parts of the default initialization.
        init: optional ``{latent: family object}`` (or probabilities for discrete latents).
        tol: stop when ``|L_t - L_{t-1}| <= tol * max(|L_t|, 1)``, or when the ELBO
            decreased by no more than its rounding bound ``R_t`` (``16 eps`` times the
            summed magnitude of the ELBO's terms in its dtype; see
            :mod:`vijax.inference.stopping`). Default (None): ``max(1e-8, eps)``, i.e.
            1e-8 in float64 and 1.2e-7 in float32. ``tol=0`` runs all ``max_iters`` sweeps.
        max_iters: at most this many sweeps.
        order: update order (latent names); default continuous latents, then discrete.
        damping: optional step size in (0, 1]: ``eta <- (1-d) eta + d eta*``.
        strict: raise :class:`FitDivergedError` instead of warning.

    Warns:
        ConvergenceWarning: (outside ``jit``/``vmap``) the fit reached ``max_iters``
            before converging, its ELBO decreased by more than the rounding bound, or a
            dense Gaussian factor's precision is too ill-conditioned for the dtype
            (``cond * eps > 1e-3``: its mean is not resolvable).

    Raises:
        NonConjugateError: a latent has no closed-form update (names it and the line).
        DataError: NaN or Inf in the data.
        FitDivergedError: an update left its family's domain (e.g. an improper prior),
            or the ELBO became non-finite (only when called outside ``jit``/``vmap``).
    """
    check_data(data)
    tol = stopping.default_tol(jnp.zeros(()).dtype) if tol is None else tol
    checks.check_cavi_args(model, data, key, tol, max_iters, order)
    prog = program_for(model, data)  # analysed once per model and data shapes
    prog.require_conjugate()
    compiled = prog.materialize(data)
    dtype = jnp.zeros(()).dtype
    key = jax.random.key(0) if key is None else key
    natural0 = mf.user_init(compiled, init, mf.default_init_jit(compiled, key, dtype))
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
            "invalid_latent": state.invalid_latent, "invalid_iter": state.invalid_iter,
            "excess_decrease": state.excess, "rounding_bound": state.bound,
            "analysis_s": jnp.asarray(prog.analysis_s, dtype)}
    result = CaviResult(mf.posterior_jit(compiled, state.natural), state.elbo, state.trace,
                        state.it, state.converged, diag, state.natural)
    if not _compat.is_tracer(state.elbo):
        _raise_if_failed(result, order, strict, tol)
    else:  # a failed lane under jit/vmap: NaN posterior (the flags are in diagnostics)
        result = checks.nan_if_failed(result, lambda nat: mf.posterior(compiled, nat))
    return result


def _raise_if_failed(result, order, strict, tol=None):
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
    problems = []
    if float(d["excess_decrease"]) > 0:
        problems.append(
            f"The ELBO decreased by {float(d['max_decrease']):.3g} during CAVI, more than its "
            f"rounding bound ({float(d['rounding_bound']):.3g} at the last sweep), which "
            "exact coordinate ascent cannot do: the updates or the ELBO are inaccurate in "
            f"{result.elbo.dtype.name}.")
    if not bool(result.converged) and not (tol is not None and float(tol) == 0):
        problems.append(
            f"CAVI stopped after {int(result.num_iters)} sweeps (max_iters) without "
            f"converging{_last_change(result)}. Raise max_iters or tol.")
    problems += stopping.condition_problems(result.posterior, result.elbo.dtype)
    stopping.report(problems, strict, step=int(result.num_iters), last_state=result.natural,
                    stacklevel=4)


def _last_change(result):
    n = int(result.num_iters)
    tr = result.elbo_trace
    return f"; the last ELBO change was {float(tr[n - 1] - tr[n - 2]):.3g}" if n >= 2 else ""
