"""Maximize the ELBO by gradient, with any optax optimizer.

The variational family is the one CAVI uses (the compiler's choice per conjugate
latent; a default by support for the others). Estimators of
``L(q) = E_q[log p(x, z)] + H[q]`` (:mod:`vijax.inference.gradient_estimators`):

- ``"exact"``: ``F(mu) + H`` (deterministic; every latent conjugate);
- ``"reparam"``: Monte Carlo with reparameterized samples of the continuous latents;
  discrete latents are summed out exactly through F when the model is linear in their
  one-hot statistic, otherwise handled by a score-function term with a leave-one-out
  baseline;
- ``"auto"``: exact where the compiler allows, else reparam.

Declared blocks (``vj.Model(..., blocks=[["mu", "tau"]])``) are one joint factor each,
as in CAVI (Normal-Gamma, Normal-Wishart; keyed ``"mu+tau"`` in the natural
parameters): the exact estimator reads F in the block's joint statistics, the reparam
estimator draws the precision (Gamma, or Wishart by Bartlett's construction, both
reparameterized) and then the mean given it, hands the draws to the log joint under the
members' names and adds the block's exact entropy; ``posterior`` holds each member's
exact marginal.

Two parameterizations: the optimizer acts on the unconstrained parameters
(``family.to_unconstrained``), or, with ``natural_gradient=True`` (exact estimator), on
the natural parameters along the natural gradient ``dF/dmu - eta``: a step of size
``rho`` is ``eta <- (1 - rho) eta + rho dF/dmu``, so a step of 1 on a one-block model is
exactly its CAVI update, and every step of size ``rho <= 1`` stays inside the families'
(convex) natural domains.

:func:`algorithm` is the ``init``/``step`` pair (:class:`vijax.Algorithm`);
:func:`fit_gradient` runs it with :func:`vijax.run` in one compiled program.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from vijax._lazy import optax

from vijax import _compat, _xla
from vijax.conjugacy import joint_blocks
from vijax.conjugacy.program import program_for
from vijax.errors import (FitDivergedError, ModelSpecError, NonConjugateError,
                          UnsupportedPrimitiveError)
from vijax.inference import checks, driver, sharding
from vijax.inference import meanfield as mf
from vijax.inference import stopping
from vijax.inference.driver import Algorithm, Info
from vijax.inference.fingerprint import Static
from vijax.inference.gradient_estimators import Objective, exact_elbo, natural_parts
from vijax.inference.result import FitResult
from vijax.model import check_data

ESTIMATORS = ("auto", "exact", "reparam")


class GradState(NamedTuple):
    """The carry of a gradient fit.

    Attributes:
        params: per latent, unconstrained parameters (``{latent: {name: array}}``), or
            natural parameters with the natural gradient.
        opt_state: the optax optimizer's state.
        key: PRNG key of the Monte Carlo draws (split at every step).
        previous: the parameters before the last step (the last point whose ELBO was
            finite; what a failed step hands back).
        elbo: the ELBO evaluated by the last step (at ``previous``; NaN before any).
    """

    params: Any
    opt_state: Any
    key: Any
    previous: Any
    elbo: Any


class _Label(str):
    """A string in a result pytree that is structure, not data (no leaves), so that the
    result can be returned from ``jit`` and ``vmap``."""


jax.tree_util.register_pytree_node(_Label, lambda s: ((), str(s)), lambda aux, _: _Label(aux))


def default_optimizer(natural_gradient: bool):
    """The optimizer used when none is given.

    Natural gradient: ``sgd(1.0)`` under an Armijo backtracking line search
    (``optax.scale_by_backtracking_linesearch``, steps ``rho <= 1`` halved until the ELBO
    rises by ``1e-4 rho`` times its slope, the next search starting from ``2 rho``). A
    full step is a simultaneous CAVI update of every block (exact for one block); on
    coupled blocks the search shortens it, so the ELBO increases at every step and the
    iterates converge to a fixed point of CAVI (a monotone ascent bounded by
    ``log p(x)``). Otherwise ``adam(1e-2)`` on the unconstrained parameters.
    """
    if natural_gradient:
        return optax.chain(optax.sgd(1.0), optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=30, decrease_factor=0.5, increase_factor=2.0,
            max_learning_rate=1.0))
    return optax.adam(1e-2)


def prepare(model, data, estimator):
    """``(compiled form or None, q family per factor, estimator)`` with ``"auto"``
    resolved: ``"exact"`` when every latent is conjugate, else ``"reparam"``. Declared
    blocks of several latents are joint factors (:func:`vijax.conjugacy.joint_blocks.apply`:
    the compiled form and the natural parameters key them by block name)."""
    if estimator not in ESTIMATORS:
        raise ModelSpecError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    check_data(data)
    try:
        prog = program_for(model, data)  # analysed once per model and data shapes
    except (UnsupportedPrimitiveError, NonConjugateError):
        # the Monte Carlo path needs only a differentiable log joint, whatever the
        # compiler makes of it
        if estimator == "exact":
            raise
        prog = None
    if estimator == "exact":
        prog.require_conjugate()
    compiled = prog.materialize(data) if prog is not None else None
    if compiled is not None:  # declared blocks become joint factors, as for CAVI
        compiled = joint_blocks.apply(compiled, prog.blocks)
    if estimator == "auto":
        estimator = "exact" if compiled is not None and compiled.conjugate else "reparam"
    return compiled, mf.variational_infos(model, compiled), estimator


def _resolve_natural(natural_gradient, estimator, optimizer):
    if natural_gradient is None:  # the default: natural steps where F gives them
        return estimator == "exact" and optimizer is None
    if natural_gradient and estimator != "exact":
        raise ModelSpecError("natural_gradient=True needs the exact estimator (every latent "
                             "conjugate)")
    return bool(natural_gradient)


def algorithm(model, data, *, optimizer=None, estimator="auto", num_samples=16,
              natural_gradient=None, tol=None) -> Algorithm:
    """One optimizer step on the ELBO as an ``init``/``step`` pair.

    ``init(key, natural0=None) -> GradState``: the factors ``natural0`` (natural
    parameters ``{latent: {stat: array}}``, e.g. a fit's ``.natural``) or, by default,
    those ``vj.cavi(..., key=key)`` starts from; the Monte Carlo draws use
    ``fold_in(key, 1)``. ``step(state) -> (state, Info)``: ``Info.elbo`` is the ELBO (or
    its Monte Carlo estimate) at the state's parameters before the step, ``Info.ok``
    that it and the step are finite, ``Info.bound`` the exact ELBO's rounding bound
    (computed when it did not increase; 0 otherwise and for Monte Carlo estimators),
    ``Info.extra`` ``{"grad_norm", "slope"}`` (the ELBO's directional derivative along
    the raw step). With the natural gradient ``Info.stop`` is its own fixed-point test:
    ``slope <= tol * max(|L|, 1)`` (the full natural step can gain about ``slope / 2``),
    or a decrease within the rounding bound (:mod:`vijax.inference.stopping`).

    Arguments are those of :func:`fit_gradient`; ``natural_gradient=None`` means natural
    steps when the estimator is exact and no optimizer is given.
    """
    compiled, infos, estimator = prepare(model, data, estimator)
    natural_gradient = _resolve_natural(natural_gradient, estimator, optimizer)
    if optimizer is None:
        optimizer = default_optimizer(natural_gradient)
    tol = stopping.default_tol(jnp.zeros(()).dtype) if tol is None else tol
    return _build(model, data, compiled, infos, estimator, num_samples, optimizer,
                  natural_gradient, tol)


def _to_natural(fams, params):
    return {n: fams[n].from_unconstrained(params[n]).natural for n in params}


def _all_finite(tree):
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(l)) for l in jax.tree_util.tree_leaves(tree)]))


def _vdot(a, b):
    return sum(jnp.sum(x * y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                              jax.tree_util.tree_leaves(b)))


def _build(model, data, compiled, infos, estimator, num_samples, optimizer, natural_gradient,
           tol):
    """The Algorithm for resolved choices (``compiled`` and ``data`` may be traced)."""
    fams = mf.families_of(infos)
    obj = Objective(model, data, compiled, infos, estimator, num_samples)
    extra_args = isinstance(optimizer, optax.GradientTransformationExtraArgs)
    dtype = jnp.zeros(()).dtype

    def init(key, natural0=None):
        if natural0 is None:
            natural0 = mf.default_init_jit(infos, key, dtype)
        params = natural0 if natural_gradient else {
            n: fams[n].from_natural(natural0[n]).to_unconstrained() for n in natural0}
        return GradState(params, optimizer.init(params), jax.random.fold_in(key, 1), params,
                         jnp.asarray(jnp.nan, dtype))

    def evaluate(params, key):
        """(ELBO, descent direction of -L, Armijo's gradient, value_fn, slope)."""
        if natural_gradient:
            e, natgrad, euclid = natural_parts(compiled, fams, params)
            neg = lambda t: jax.tree_util.tree_map(jnp.negative, t)  # noqa: E731
            return (e, neg(natgrad), neg(euclid),
                    lambda p: -exact_elbo(compiled, fams, p), _vdot(natgrad, euclid))
        (_, e), g = jax.value_and_grad(lambda p: obj.surrogate(p, key), has_aux=True)(params)
        g = jax.tree_util.tree_map(jnp.negative, g)
        return e, g, g, lambda p: -obj.surrogate(p, key)[1], _vdot(g, g)

    def mean_params(params):
        if natural_gradient:
            return {n: fams[n].mean_params(params[n]) for n in params}
        return {n: f[0] for n, f in obj.factors(params).items()}

    def rounding_bound(params, e, previous_elbo):
        if estimator != "exact":
            return jnp.zeros((), e.dtype)

        def bound(p):  # a pass over |F|: only when the ELBO did not increase
            magnitude = stopping.elbo_magnitude(stopping.abs_terms(compiled), compiled.sizes,
                                                mean_params(p))
            return stopping.rounding_bound(magnitude, e.dtype)
        return jax.lax.cond(e <= previous_elbo, bound, lambda p: jnp.zeros((), e.dtype), params)

    def step(state):
        key, sub = jax.random.split(state.key)
        e, grads, slope_grad, value_fn, slope = evaluate(state.params, sub)
        if extra_args:  # e.g. a line search, or optax.lbfgs, on the same (fixed-key) objective
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params,
                                                  value=-e, grad=slope_grad, value_fn=value_fn)
        else:
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        e_ok = jnp.isfinite(e) & _all_finite(grads)
        p_ok = _all_finite(params)
        if natural_gradient:
            p_ok = p_ok & jnp.all(jnp.asarray(
                [jnp.all(fams[n].is_valid_natural(params[n])) for n in params]))
        ok = e_ok & p_ok
        # a failed step hands back the last point whose ELBO was finite
        keep = jax.tree_util.tree_map(lambda p, q: jnp.where(e_ok, p, q), state.params,
                                      state.previous)
        pick = lambda a, b: jax.tree_util.tree_map(lambda x, y: jnp.where(ok, x, y), a, b)  # noqa: E731
        new = GradState(pick(params, keep), pick(opt_state, state.opt_state), key, keep,
                        jnp.where(e_ok, e, state.elbo))
        bound = rounding_bound(state.params, e, state.elbo)
        stop = jnp.asarray(False)
        if natural_gradient:
            change = e - state.elbo
            stop = (tol > 0) & ((slope <= tol * jnp.maximum(jnp.abs(e), 1.0))
                                | ((change <= 0) & (change >= -bound)))
        extra = {"grad_norm": optax.tree.norm(grads), "slope": slope}
        return new, Info(e, ok, bound, stop, extra)

    return Algorithm(init, step)


def fit_gradient(model, data, key, optimizer=None, estimator="auto", num_samples=16,
                 num_steps=2000, tol=None, init=None, natural_gradient=None, chunk=250,
                 progress=None, mesh=None) -> FitResult:
    """Maximize the ELBO with an optax optimizer (:func:`algorithm` run by
    :func:`vijax.run`, in one compiled program).

    Args:
        model: a :class:`vijax.Model` (conjugate or not).
        data: data pytree.
        key: PRNG key (initialization and Monte Carlo samples); the default initial
            factors are those of ``vj.cavi`` with the same key.
        optimizer: any ``optax.GradientTransformation``. Optimizers that take extra
            arguments (``optax.lbfgs``, a line search) get ``value``, ``grad`` and
            ``value_fn`` (the negative ELBO estimate at the step's samples). Default:
            natural-gradient steps under a backtracking line search when the estimator
            is exact (see :func:`default_optimizer`), else ``optax.adam(1e-2)``.
        estimator: ``"auto"``, ``"exact"`` or ``"reparam"``.
        num_samples: Monte Carlo samples per step (reparam).
        num_steps: at most this many optimizer steps.
        tol: the stopping rule's relative tolerance; ``tol=0`` runs every step.
            Natural gradient: stop when the ELBO's slope along the full natural step is
            at most ``tol * max(|L|, 1)`` or the ELBO decreased within its rounding
            bound; default ``max(1e-8, eps)`` (as CAVI). Other optimizers: the means of
            consecutive windows of ``chunk`` steps differ by at most
            ``tol * max(|mean|, 1)`` plus the rounding bound (exact) or two standard
            errors of the difference (Monte Carlo: a change that the sampling noise
            explains is no progress); default ``max(1e-6, 8 eps)``.
        init: optional ``{latent: family object}`` starting factors (what ``vj.cavi``
            takes: a declared block's joint factor under its block name,
            ``{"mu+tau": NormalGamma(...)}``).
        natural_gradient: natural-gradient steps on the natural parameters (exact only);
            default (None): when the estimator is exact and ``optimizer`` is None.
        chunk: steps per window of the windowed stopping rule, and between progress
            reports. Windows of 250 steps see a slow drift of the ELBO through the
            Monte Carlo noise (shorter windows stop while a variance is still shrinking).
        progress: report the ELBO every ``chunk`` steps: ``True`` for a tqdm bar when
            tqdm is installed (else lines on stderr), or a callable ``progress(step,
            elbo)``; default (None) on for fits of 2000 steps or more run from a
            terminal; always off under ``jit``/``vmap``.
        mesh: optional :class:`jax.sharding.Mesh`: the data are split along their leading
            (plate) axis over its devices (:func:`vijax.inference.sharding.shard_data`)
            and the sufficient statistics are summed across devices inside the jitted
            loop; the result is that of one device up to summation order. Data already
            sharded may be passed with ``mesh=None``.

    Returns:
        A :class:`FitResult`; ``elbo`` is exact when the compiler gives F, else a Monte
        Carlo estimate with 10x ``num_samples``. ``diagnostics["estimator"]`` is the
        estimator used (``"exact"`` or ``"reparam"``, ``"auto"`` resolved; a string that
        is structure, not data, in the pytree), ``diagnostics["natural_gradient"]``
        whether natural steps were taken. With declared blocks, ``natural`` is keyed by
        factor (``"mu+tau"``) and ``posterior`` by latent (each member's exact
        marginal: Student-t / multivariate t for the mean, Gamma / Wishart for the
        precision), as ``vj.cavi``'s.

    Raises:
        FitDivergedError: the ELBO became non-finite; carries the last finite state.

    Warns:
        ConvergenceWarning: (eager calls, ``tol > 0``) ``num_steps`` ran out before the
            stopping rule was met.
    """
    dtype = jnp.zeros(()).dtype
    data = sharding.maybe_shard(data, mesh)
    checks.check_gradient_args(model, data, key, optimizer, num_samples, num_steps,
                               0.0 if tol is None else tol, chunk)
    with checks.explained_by_data(model, data):
        compiled, infos, estimator = prepare(model, data, estimator)
        natural_gradient = _resolve_natural(natural_gradient, estimator, optimizer)
        if tol is None:
            tol = (stopping.default_tol if natural_gradient
                   else stopping.default_gradient_tol)(dtype)
        if optimizer is None:
            optimizer = default_optimizer(natural_gradient)
        natural0 = (mf.user_init(infos, init, mf.default_init_jit(infos, key, dtype))
                    if init else None)
        leaves = jax.tree_util.tree_leaves((key, data, natural0, tol))
        traced = any(_compat.is_tracer(l) for l in leaves)
        show = driver.wants_progress(progress, traced, num_steps)
        # the optimizer by fingerprint: a freshly built optax.adam(1e-2) reuses the compile
        cfg = (model, tuple(infos.items()), estimator, int(num_samples), Static(optimizer),
               natural_gradient, int(num_steps), int(chunk), show)
        if show:
            sink = progress if callable(progress) else driver.progress_printer(
                num_steps, "vijax fit_gradient")
            with driver.reporting(sink):
                result = jax.block_until_ready(
                    _fit_jit(compiled, data, key, natural0, tol, cfg))
        else:
            result = _fit_jit(compiled, data, key, natural0, tol, cfg)
        if traced:  # a failed lane under jit/vmap: NaN posterior (flags in diagnostics)
            return checks.nan_if_failed(result, lambda nat: mf.posterior(infos, nat))
        bad = int(result.diagnostics["invalid_iter"])
        if bad >= 0:
            raise FitDivergedError(
                f"the ELBO became non-finite at step {bad} of the gradient fit "
                f"(estimator={estimator!r}); lower the learning rate or check the priors. The "
                "last finite state is in .last_state.", step=bad, last_state=result.natural)
    if not bool(result.converged) and float(tol) > 0:
        stopping.report([f"The gradient fit stopped after {int(result.num_iters)} steps "
                         "(num_steps) before its stopping rule was met; raise num_steps or "
                         "tol, or use a larger learning rate."], strict=False)
    return result


def _fit(compiled, data, key, natural0, tol, cfg):
    """The whole fit (init, the driver's loop, result); arrays are arguments and the
    configuration is static, so a second fit of the same model (an optimizer of the same
    kind and hyper-parameters) with new data of the same shapes reuses the compile."""
    model, infos, estimator, num_samples, optimizer, natural_gradient, num_steps, chunk, \
        show = cfg
    infos = dict(infos)
    fams = mf.families_of(infos)
    alg = _build(model, data, compiled, infos, estimator, num_samples, optimizer.value,
                 natural_gradient, tol)
    state = alg.init(key, natural0)
    # natural gradient: its own fixed-point test (Info.stop); otherwise windowed means
    # the Info's structure, given (the driver would otherwise trace the step once more)
    zero = jnp.zeros((), jnp.result_type(state.elbo))
    info0 = Info(zero, jnp.asarray(True), zero, jnp.asarray(False),
                 {"grad_norm": zero, "slope": zero})
    run = driver.run(alg.step, state, max_iters=num_steps, tol=0.0 if natural_gradient else tol,
                     window=1 if natural_gradient else chunk,
                     stochastic=estimator != "exact", progress=show, every=chunk, info0=info0)
    params = run.state.params
    natural = params if natural_gradient else _to_natural(fams, params)
    if compiled is not None and compiled.conjugate:
        elbo = mf.elbo(compiled, natural)
    else:
        big = Objective(model, data, compiled, infos, "reparam", 10 * num_samples)
        elbo = big.surrogate(params, jax.random.fold_in(key, 2))[1]
    diag = {"max_decrease": run.max_decrease, "nonfinite": run.failed_at >= 0,
            "invalid_latent": jnp.asarray(-1), "invalid_iter": run.failed_at,
            "estimator": _Label(estimator), "natural_gradient": jnp.asarray(natural_gradient)}
    return FitResult(mf.posterior(infos, natural), elbo, run.trace, run.num_iters,
                     run.converged, diag, natural)


_fit_jit = _xla.jit(_fit, static_argnames=("cfg",))
