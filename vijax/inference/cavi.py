"""Coordinate-ascent variational inference derived from the compiled form F.

The update of block j is a gradient (DESIGN section 1):

    eta_j <- dF/dmu_j (mu_1, ..., mu_M),     mu_j <- grad A_j(eta_j),

so no model-specific update code exists anywhere. :func:`algorithm` is the pair
``init(natural0) -> CaviState``, ``step(state) -> (state, Info)`` (one sweep per step;
public as ``vj.algorithms.cavi``); :func:`cavi` runs it with :func:`vijax.run` until the
relative ELBO change falls below ``tol`` and returns a :class:`CaviResult` whose ``elbo``
is differentiable with respect to the data (:mod:`vijax.inference.envelope`).
"""

from __future__ import annotations

import functools
import operator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _compat, _xla
from vijax.conjugacy import fused, joint_blocks
from vijax.conjugacy import terms as T
from vijax.conjugacy.program import program_for
from vijax.errors import ModelSpecError
from vijax.inference import checks, driver, envelope, sharding
from vijax.inference import meanfield as mf
from vijax.inference import stopping
from vijax.inference.driver import Algorithm, Info
from vijax.inference.result import FitResult
from vijax.model import check_data


CaviResult = FitResult


class CaviState(NamedTuple):
    """What the next sweep needs.

    Attributes:
        natural: ``{latent: {stat: array}}``, the factors' natural parameters.
        mu: their mean parameters.
        elbo: the ELBO of these factors.
        bound: the ELBO's rounding bound at the last sweep whose ELBO did not increase
            (:mod:`vijax.inference.stopping`; 0 before any).
    """

    natural: dict
    mu: dict
    elbo: Any
    bound: Any


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
        # a sum is finite iff every entry is (one fused reduction, no extra pass); the
        # parameters' verdicts joined by & (stacking them for jnp.all made XLA emit a
        # pad and a reduce over a size-2 axis inside a batched loop's fusion: 30 us a
        # sweep at 10000 lanes on a CPU, unvectorized)
        ok = functools.reduce(operator.and_, [jnp.isfinite(jnp.sum(eta[s])) for s in eta])
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
        # small blocks: moments from eta, not from the selected ``new``. They are equal
        # when the update is valid, and a refused update ends the fit (its ELBO is then not
        # used); so the parts of eta that no other block changes (e.g. a Gamma shape) keep
        # loop-invariant moments, which XLA computes once instead of every sweep
        # (lgamma/digamma). Large blocks: from ``new`` (eta dies at the branch; reading it
        # afterwards would keep a second block-sized buffer live: 60% slower GMM sweeps)
        src = new if big else eta
        if j == len(order) - 1:
            new_mu, log_norm = fam.mean_and_log_normalizer(src)
            f_and_h = rest + jnp.sum(log_norm) - jnp.sum(fam(src).expected_log_base_measure())
            if damping is None and big:  # the gap is zero unless the update was refused
                f_and_h = f_and_h + jax.lax.cond(
                    ok, lambda *_: jnp.zeros((), f_and_h.dtype),
                    lambda g, e, m: _inner({s: g[s] - e[s] for s in e}, m), grad, src, new_mu)
            elif damping is not None:  # undamped small blocks: src is eta is grad, gap 0
                f_and_h = f_and_h + _inner({s: grad[s] - src[s] for s in src}, new_mu)
        else:
            new_mu = fam.mean_params(src)
            entropy[name] = jnp.sum(fam(src).entropy())
        mu[name] = new_mu
    for n in natural:
        if n not in entropy and n != order[-1]:
            entropy[n] = jnp.sum(fams[n](natural[n]).entropy())
    elbo = f_and_h + sum(entropy.values())
    return natural, mu, elbo, invalid


def _checked_options(compiled, order, damping):
    """The update order (default :func:`default_order`), after checking that it lists
    every latent once and that ``damping`` is None or in (0, 1]."""
    order = default_order(compiled) if order is None else tuple(order)
    missing = set(compiled.infos) - set(order)
    if missing or set(order) - set(compiled.infos) or len(set(order)) != len(order):
        raise ModelSpecError(f"order must list every latent once: {sorted(compiled.infos)}; "
                             f"got {list(order)}")
    if damping is not None and not 0 < damping <= 1:
        raise ModelSpecError(f"damping must be in (0, 1], got {damping}")
    return order


def algorithm(compiled, order=None, damping=None) -> Algorithm:
    """CAVI as an ``init``/``step`` pair (public as ``vj.algorithms.cavi``).

    Args:
        compiled: the compiled form ``F`` of a conjugate model for one data set
            (``vj.compile(model, data).materialize(data)``); captured by closure.
        order: update order (latent names); default :func:`default_order`.
        damping: optional step size in (0, 1]: ``eta <- (1-d) eta + d eta*``.

    Returns:
        :class:`~vijax.inference.driver.Algorithm` with

        - ``init(natural0=None, key=None) -> CaviState``: the given natural parameters
          (``{latent: {stat: array}}``), or the default start drawn with ``key``;
        - ``step(state) -> (state, Info)``: one sweep over ``order``. ``Info.elbo`` is
          the ELBO after the sweep, ``Info.ok`` that every update stayed in its family's
          domain (a refused update keeps the block's old parameters), ``Info.bound`` the
          ELBO's rounding bound (computed only when the ELBO did not increase: a pass
          over ``|F|``), ``Info.extra`` the index in ``order`` of the first refused
          update (-1: none).

    Example:
        >>> import jax, jax.numpy as jnp, vijax as vj
        >>> from jax.scipy import stats
        >>> m = vj.Model(lambda z, x: stats.norm.logpdf(z["mu"]) +
        ...              stats.norm.logpdf(x, z["mu"]).sum(), {"mu": vj.real()})
        >>> x = jnp.array([1.0, 2.0, 3.0])
        >>> alg = vj.algorithms.cavi(vj.compile(m, x).materialize(x))
        >>> state, info = jax.jit(alg.step)(alg.init())
        >>> round(float(state.natural["mu"]["x"]), 4)  # sum(x): the exact posterior
        6.0
        >>> out = vj.run(alg.step, alg.init(), max_iters=50, tol=1e-6)
        >>> bool(out.converged), int(out.num_iters)
        (True, 2)
    """
    compiled.require_conjugate()
    order = _checked_options(compiled, order, damping)
    sweep_fn = sweep_step(compiled, order, damping)

    def init(natural0=None, key=None):
        if natural0 is None:
            key = jax.random.key(0) if key is None else key
            natural0 = mf.default_init_jit(compiled, key, jnp.zeros(()).dtype)
        e = mf.elbo(compiled, natural0)
        return CaviState(natural0, mf.mean_params(compiled, natural0), e,
                         jnp.zeros((), e.dtype))

    def step(state):
        natural, mu, e, bound, invalid = sweep_fn(state.natural, state.mu, state.elbo,
                                                  state.bound)
        return CaviState(natural, mu, e, bound), Info(e, invalid < 0, bound, False, invalid)

    return Algorithm(init, step)


def sweep_step(compiled, order, damping=None):
    """One sweep as a function of the arrays it needs:
    ``(natural, mu, elbo_prev, bound_prev) -> (natural, mu, elbo, bound, invalid)``
    (``order`` checked by the caller). ``bound`` is the ELBO's rounding bound ``R_t`` when
    the ELBO did not increase (``elbo_prev - elbo >= 0``: a pass over ``|F|``, in a
    branch), else ``bound_prev``; ``invalid`` as in :func:`sweep`. The step of
    :func:`algorithm`; the batched loop (:mod:`vijax.inference.batch`) calls
    :func:`sweep` and :func:`magnitude_bound` apart (under vmap its bound is a select)."""
    fams = mf.families_of(compiled)

    def step(natural, mu, elbo_prev, bound_prev):
        natural, mu, e, invalid = sweep(lambda m: (compiled, m), fams, natural, mu, order,
                                        damping)
        bound = jax.lax.cond(elbo_prev - e >= 0, lambda m: magnitude_bound(compiled, m,
                                                                           e.dtype),
                             lambda m: jnp.asarray(bound_prev, e.dtype), mu)
        return natural, mu, e, bound, invalid

    return step


def magnitude_bound(compiled, mu, dtype):
    """The ELBO's rounding bound ``R`` at mean parameters ``mu``
    (:func:`vijax.inference.stopping.rounding_bound`: a pass over ``|F|``)."""
    # |constants| are taken here, when it runs (inside a branch: no second copy of the
    # data-sized constants on the device)
    return stopping.rounding_bound(
        stopping.elbo_magnitude(stopping.abs_terms(compiled), compiled.sizes, mu), dtype)


def _fit(compiled, natural0, tol, key, order, max_iters, damping, progress, batched=False):
    """The whole loop as one function of arrays (jitted below; ``tol`` traced).
    ``natural0=None``: the default start from ``key``, computed inside the same compiled
    program (no compile of its own)."""
    if natural0 is None:
        natural0 = mf.default_init(compiled, key, jnp.result_type(tol))
    alg = algorithm(compiled, order, damping)
    state = alg.init(natural0)
    info0 = Info(state.elbo, jnp.asarray(True), state.bound, jnp.asarray(False),
                 jnp.asarray(-1))
    out = driver.run(alg.step, state, max_iters=max_iters, tol=tol, elbo0=state.elbo,
                     progress=progress, every=max(1, max_iters // 100), info0=info0,
                     split_trace=batched)
    # the result's diagnostics and posterior inside the one compiled call (no eager
    # operation, and so no XLA compile per operation, after the loop)
    invalid = jnp.where(out.failed_at >= 0, out.info.extra, -1)
    diag = {"max_decrease": out.max_decrease, "nonfinite": ~jnp.isfinite(out.info.elbo),
            "invalid_latent": invalid,
            "invalid_iter": jnp.where(invalid >= 0, out.failed_at + 1, -1),
            "excess_decrease": out.excess_decrease, "rounding_bound": out.info.bound}
    return out, diag, mf.posterior(compiled, out.state.natural)


# cached by (compiled structure, order, max_iters, damping, progress): a second fit on new
# data of the same shapes compiles nothing. XLA's classic CPU emitters (vijax._xla):
# compile 0.9-1.1 -> 0.56-0.6 s (GMM N=2e4) and 1.9 -> 1.45 s (HMM T=2e4), same run time;
# under the user's vmap/jit it is a nested jit and the outer program's options apply
# (batched loops ran 2x slower with the classic emitters: see vijax.inference.batch)
_fit_jit = _xla.jit(_fit, static_argnames=("order", "max_iters", "damping", "progress",
                                           "batched"))


def default_order(compiled):
    """Global (continuous) latents first, then discrete ones (responsibilities last).
    ``compiled`` is a compiled form or its ``infos`` dict (EM's E-step passes its own)."""
    infos = getattr(compiled, "infos", compiled)
    cont = [n for n in infos if not infos[n].support.is_discrete]
    disc = [n for n in infos if infos[n].support.is_discrete]
    return tuple(cont + disc)


def cavi(model, data, key=None, init=None, tol=None, max_iters=500, order=None,
         damping=None, strict=False, progress=None, mesh=None) -> CaviResult:
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
        progress: report the ELBO while the loop runs: ``True`` (a tqdm bar when tqdm is
            installed, else lines on stderr), a callable ``progress(sweep, elbo)``, or
            ``False``. Default (None): on for ``max_iters >= 2000`` when stderr is a
            terminal. Always off under ``jit``/``vmap``/``grad``.
        mesh: optional :class:`jax.sharding.Mesh`: the data are split along their leading
            (plate) axis over its devices (:func:`vijax.inference.sharding.shard_data`)
            and the sufficient statistics are summed across devices inside the jitted
            loop; the result is that of one device up to summation order. Data already
            sharded may be passed with ``mesh=None``.

    Differentiation:
        ``elbo`` is differentiable with respect to the data pytree (data and
        hyper-parameters passed in it), in reverse and forward mode: at the optimum the
        ELBO's total derivative equals its partial derivative with q held fixed (envelope
        theorem, :mod:`vijax.inference.envelope`), exact up to the convergence
        tolerance. ``posterior``, ``natural`` and ``elbo_trace`` are constants under
        differentiation (``stop_gradient``): their derivatives are not computed.

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
    data = sharding.maybe_shard(data, mesh)
    check_data(data)
    tol = stopping.default_tol(jnp.zeros(()).dtype) if tol is None else tol
    checks.check_cavi_args(model, data, key, tol, max_iters, order)
    with checks.explained_by_data(model, data):
        prog = program_for(model, data)  # analysed once per model and data shapes
        prog.require_conjugate()
        # declared blocks of several latents become joint factors (Normal-Gamma, ...)
        compiled = joint_blocks.apply(prog.materialize(data), prog.blocks)
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 unless x64 is on
        key = jax.random.key(0) if key is None else key
        natural0 = (mf.user_init(compiled, init, mf.default_init_jit(compiled, key, dtype))
                    if init else None)
        order = _checked_options(compiled, order, damping)
        max_iters = int(max_iters)
        traced = any(_compat.is_tracer(x) for x in jax.tree_util.tree_leaves(
            (compiled, natural0, tol, key)))
        show = driver.wants_progress(progress, traced, max_iters)
        # the loop sees no tangents: its result is a constant under differentiation, and
        # the ELBO's derivative comes from the envelope theorem below
        tol = tol if _compat.is_tracer(tol) else np.asarray(tol, dtype)  # no eager op
        args = (*jax.lax.stop_gradient((compiled, natural0, tol)), key)
        if show:
            sink = (progress if callable(progress)
                    else driver.progress_printer(max_iters, "cavi"))
            with driver.reporting(sink):
                out, diag, post = jax.block_until_ready(
                    _fit_jit(*args, order, max_iters, damping, True))
        else:
            out, diag, post = _fit_jit(*args, order, max_iters, damping, False,
                                       _compat.is_batched(args))
        diag["analysis_s"] = np.asarray(prog.analysis_s, dtype)
        result = CaviResult(post, out.info.elbo, out.trace, out.num_iters, out.converged,
                            diag, out.state.natural)
        if not _compat.is_tracer(out.info.elbo):
            _raise_if_failed(result, order, strict, tol)
        else:  # a failed lane under jit/vmap: NaN posterior (the flags are in diagnostics)
            result = checks.nan_if_failed(result, lambda nat: mf.posterior(compiled, nat))
    return result._replace(elbo=envelope.value(mf.elbo, (compiled, result.natural),
                                               result.elbo))


def _raise_if_failed(result, order, strict, tol=None):
    checks.raise_failed_update(
        result, order, "CAVI", "iteration",
        "(e.g. a non-positive precision or concentration). Check that its prior is proper "
        "and its hyper-parameters are valid.")
    d = result.diagnostics
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
