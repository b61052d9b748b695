"""Maximize the ELBO by gradient, with any optax optimizer.

The variational family is the one CAVI uses (the compiler's choice per conjugate
latent; a default by support for the others), parameterized without constraints
(``family.to_unconstrained``). Estimators of ``L(q) = E_q[log p(x, z)] + H[q]``:

- ``"exact"``: ``F(mu) + H`` (deterministic; every latent conjugate);
- ``"reparam"``: Monte Carlo with reparameterized samples of the continuous latents;
  discrete latents are summed out exactly through F when the model is linear in their
  one-hot statistic, otherwise handled by a score-function term with a leave-one-out
  baseline;
- ``"auto"``: exact where the compiler allows, else reparam.

``natural_gradient=True`` (exact estimator) optimizes the natural parameters with the
natural gradient ``dF/dmu - eta`` instead: with ``optax.sgd(1.0)`` on a one-block model
a step is exactly the CAVI update.
"""

from __future__ import annotations

import math
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vijax import _compat
from vijax.conjugacy.compile import point_statistics
from vijax.conjugacy.program import program_for
from vijax.errors import (FitDivergedError, ModelSpecError, NonConjugateError,
                          UnsupportedPrimitiveError)
from vijax.inference import checks
from vijax.inference import meanfield as mf
from vijax.inference import stopping
from vijax.inference.fingerprint import Static
from vijax.inference.result import FitResult
from vijax.model import check_data

ESTIMATORS = ("auto", "exact", "reparam")


class GradState(NamedTuple):
    params: Any
    opt_state: Any
    key: Any
    step: Any
    last_good: Any
    bad_step: Any


def _to_natural(infos, params):
    fams = mf.families_of(infos)
    return {n: fams[n].from_unconstrained(params[n]).natural for n in params}


def _latent_value(inf, x):
    """A sample of the q family (its ``batch + (E,)`` layout for a dense Gaussian) in
    the latent's declared value shape."""
    if inf.family == "MultivariateNormal":
        return inf.layout.to_value(x)
    if inf.support.is_discrete:
        return x.astype(jnp.int32)
    return x


def _dense_gaussian_factor(u):
    from vijax.families.mvn import scale_from_unconstrained
    raw = u["scale_tril"]
    d = jnp.exp(jnp.diagonal(raw, axis1=-2, axis2=-1))
    scale = scale_from_unconstrained(raw)
    loc = jnp.broadcast_to(u["loc"], scale.shape[:-1])
    mean = {"x": loc, "xxT": scale @ jnp.swapaxes(scale, -1, -2) + loc[..., :, None] * loc[..., None, :]}
    E = raw.shape[-1]
    entropy = jnp.sum(jnp.log(d)) + 0.5 * E * (1.0 + jnp.log(2 * jnp.pi)) * (d.size // E)

    def sample(key, shape):
        eps = jax.random.normal(key, tuple(shape) + loc.shape, loc.dtype)
        return loc + jnp.einsum("...ij,...j->...i", scale, eps)
    return mean, entropy, sample


class Objective:
    """The negative ELBO estimator for one model, data set and estimator choice."""

    def __init__(self, model, data, compiled, infos, estimator, num_samples):
        self.model, self.data, self.compiled, self.infos = model, data, compiled, infos
        self.estimator, self.num_samples = estimator, num_samples
        self.discrete = [n for n, i in infos.items() if i.support.is_discrete]
        self.continuous = [n for n in infos if n not in self.discrete]
        # discrete latents summed out exactly when F exists for every latent
        self.enumerate = compiled is not None and compiled.conjugate

    def factors(self, params):
        """Per latent: (mean parameters, entropy, sampler) from the unconstrained
        parameters. Dense Gaussians are read off their scale factor S directly
        (E[x x^T] = S S^T + m m^T, H = sum log diag S + const, x = m + S eps), with no
        precision matrix and no refactorization; other families go through their
        natural parameters."""
        fams = mf.families_of(self.infos)
        out = {}
        for n, u in params.items():
            if self.infos[n].family == "MultivariateNormal":
                out[n] = _dense_gaussian_factor(u)
            else:
                q = fams[n].from_unconstrained(u)
                out[n] = (fams[n].mean_params(q.natural), jnp.sum(q.entropy()), q.sample)
        return out

    def surrogate(self, params, key):
        """(surrogate objective whose gradient estimates grad ELBO, ELBO estimate)."""
        fac = self.factors(params)
        entropy = sum(f[1] for f in fac.values())
        if self.estimator == "exact":
            e = self.compiled.F({n: f[0] for n, f in fac.items()}) + entropy
            return e, e
        fams = mf.families_of(self.infos)
        S = self.num_samples
        keys = dict(zip(self.infos, jax.random.split(key, len(self.infos))))
        samples = {n: fac[n][2](keys[n], (S,)) for n in self.continuous}
        if self.enumerate:
            mu_disc = {n: fac[n][0] for n in self.discrete}

            def one(i):
                st = {n: point_statistics(self.infos[n], _latent_value(self.infos[n], samples[n][i]))
                      for n in self.continuous}
                return self.compiled.F({**st, **mu_disc})
            logp = jax.vmap(one)(jnp.arange(S))
            e = jnp.mean(logp) + entropy
            return e, e
        qs = {n: fams[n].from_unconstrained(params[n]) for n in self.discrete}
        dsamples = {n: jax.lax.stop_gradient(qs[n].sample(keys[n], (S,))) for n in self.discrete}

        def logp_at(i):
            z = {n: _latent_value(self.infos[n], samples[n][i]) for n in self.continuous}
            z.update({n: _latent_value(self.infos[n], dsamples[n][i]) for n in self.discrete})
            return self.model.log_joint(z, self.data)
        logp = jax.vmap(logp_at)(jnp.arange(S))
        e = jnp.mean(logp) + entropy
        if not self.discrete:
            return e, e
        # score-function term for the discrete latents, leave-one-out baseline
        logq = sum(jnp.sum(jax.vmap(qs[n].log_prob)(dsamples[n]).reshape(S, -1), axis=1)
                   for n in self.discrete)
        f = jax.lax.stop_gradient(logp - logq)
        base = (jnp.sum(f) - f) / max(S - 1, 1)
        score = jnp.mean((f - base) * logq)
        return e + score - jax.lax.stop_gradient(score), e


def _prepare(model, data, estimator):
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
    if estimator == "auto":
        estimator = "exact" if compiled is not None and compiled.conjugate else "reparam"
    infos = mf.variational_infos(model, compiled)
    return compiled, infos, estimator


def fit_gradient(model, data, key, optimizer=None, estimator="auto", num_samples=16,
                 num_steps=2000, tol=None, init=None, natural_gradient=False, chunk=100,
                 progress=False) -> FitResult:
    """Maximize the ELBO with an optax optimizer.

    Args:
        model: a :class:`vijax.Model` (conjugate or not).
        data: data pytree.
        key: PRNG key (initialization and Monte Carlo samples).
        optimizer: any ``optax.GradientTransformation`` (default ``optax.adam(1e-2)``;
            with ``natural_gradient=True`` default ``optax.sgd(0.5)``). Optimizers that
            take extra arguments (``optax.lbfgs``) get ``value``, ``grad`` and
            ``value_fn`` (the negative ELBO estimate at the step's samples).
        estimator: ``"auto"``, ``"exact"`` or ``"reparam"``.
        num_samples: Monte Carlo samples per step (reparam).
        num_steps: at most this many optimizer steps.
        tol: stop when the mean ELBO of a chunk changes by less than
            ``tol * max(|ELBO|, 1)`` from the previous chunk, plus (exact estimator, eager
            calls) the ELBO's rounding bound in its dtype (:mod:`vijax.inference.stopping`),
            or (Monte Carlo estimators) plus two standard errors of the difference of the
            two chunk means: a change that the sampling noise explains is no progress.
            ``tol=0`` runs every step.
            Default (None): ``max(1e-6, 8 eps)`` (1e-6 in float64 and float32).
        init: optional ``{latent: family object}`` starting factors.
        natural_gradient: natural-gradient steps on the natural parameters (exact only).
        chunk: steps per ``lax.scan`` chunk (the convergence test runs between chunks).
        progress: print the ELBO after each chunk (eager calls only).

    Returns:
        A :class:`FitResult`; ``elbo`` is exact when the compiler gives F, else a Monte
        Carlo estimate with 10x ``num_samples``.

    Raises:
        FitDivergedError: the ELBO became non-finite; carries the last finite state.

    Warns:
        ConvergenceWarning: (eager calls) ``num_steps`` ran out before the chunk means
            converged.
    """
    tol = stopping.default_gradient_tol(jnp.zeros(()).dtype) if tol is None else tol
    checks.check_gradient_args(model, data, key, optimizer, num_samples, num_steps, tol, chunk)
    compiled, infos, estimator = _prepare(model, data, estimator)
    if natural_gradient and estimator != "exact":
        raise ModelSpecError("natural_gradient=True needs the exact estimator (every latent "
                             "conjugate)")
    if optimizer is None:
        optimizer = optax.sgd(0.5) if natural_gradient else optax.adam(1e-2)
    dtype = jnp.zeros(()).dtype
    k_init, k_run = jax.random.split(key)
    natural0 = mf.user_init(infos, init, mf.default_init_jit(infos, k_init, dtype))
    fams = mf.families_of(infos)
    if natural_gradient:
        params0 = natural0
    else:
        params0 = {n: fams[n].from_natural(natural0[n]).to_unconstrained() for n in natural0}
    n_chunks = max(1, math.ceil(num_steps / chunk))
    state = GradState(params0, optimizer.init(params0), k_run, jnp.asarray(0), params0,
                      jnp.asarray(-1))
    # the optimizer by fingerprint: a freshly built optax.adam(1e-2) reuses the compile
    cfg = (model, tuple(infos.items()), estimator, num_samples, Static(optimizer), chunk,
           natural_gradient)
    run_chunk = lambda st: _run_chunk(st, compiled, data, cfg)  # noqa: E731
    traced = _compat.is_tracer(key) or any(_compat.is_tracer(l) for l in jax.tree_util.tree_leaves(data))
    prev = jnp.asarray(jnp.nan, dtype)
    traces = []
    if traced:
        state, trace, converged, n_done = _device_loop(run_chunk, state, n_chunks, chunk, tol,
                                                       dtype, stochastic=estimator != "exact")
    else:
        converged = False
        prev_se2 = 0.0
        for c in range(n_chunks):
            state, tr = _run_chunk_jit(state, compiled, data, cfg)
            traces.append(tr)
            if int(state.bad_step) >= 0:
                break
            cur = jnp.mean(tr)
            if progress:
                print(f"[vijax] steps {int(state.step):6d}  ELBO {float(cur):.6g}", file=sys.stderr)
            bound = _exact_bound(compiled, infos, state.params, natural_gradient) \
                if estimator == "exact" else 0.0
            se2 = _chunk_se2(tr) if estimator != "exact" else 0.0
            noise = 2.0 * math.sqrt(se2 + prev_se2) if c > 0 and tol > 0 else 0.0
            if c > 0 and abs(float(cur) - float(prev)) < (
                    tol * max(abs(float(cur)), 1.0) + bound + noise):
                converged = True
                break
            prev, prev_se2 = cur, se2
        trace = jnp.concatenate(traces)
        trace = jnp.concatenate([trace, jnp.full((n_chunks * chunk - trace.shape[0],), trace[-1])])
        converged = jnp.asarray(converged)
    if not traced and int(state.bad_step) >= 0:
        good = state.params if natural_gradient else _to_natural(infos, state.params)
        raise FitDivergedError(
            f"the ELBO became non-finite at step {int(state.bad_step)} of the gradient fit "
            f"(estimator={estimator!r}); lower the learning rate or check the priors. The last "
            "finite state is in .last_state.", step=int(state.bad_step), last_state=good)
    natural = state.params if natural_gradient else _to_natural(infos, state.params)
    if compiled is not None and compiled.conjugate:
        elbo = mf.elbo(compiled, natural)
    else:
        big = Objective(model, data, compiled, infos, "reparam", 10 * num_samples)
        elbo = big.surrogate(state.params if not natural_gradient else state.params,
                             jax.random.fold_in(k_run, 1))[1]
    diag = {"max_decrease": jnp.zeros((), dtype), "nonfinite": state.bad_step >= 0,
            "invalid_latent": jnp.asarray(-1), "invalid_iter": state.bad_step,
            "estimator": estimator}
    posterior = mf.posterior_jit(infos, natural)
    result = FitResult(posterior, elbo, trace, state.step, converged,
                       {k: v for k, v in diag.items() if k != "estimator"}, natural)
    if not traced and not bool(converged):
        stopping.report([f"The gradient fit stopped after {int(state.step)} steps (num_steps) "
                         "before the ELBO's chunk means converged; raise num_steps or tol, or "
                         "use a larger learning rate."], strict=False)
    return result


def _chunk_se2(tr):
    """Squared standard error of a chunk's mean Monte Carlo ELBO (steps taken as
    independent draws)."""
    tr = jnp.asarray(tr)
    return float(jnp.var(tr)) / max(int(tr.shape[0]), 1)


def _exact_bound(compiled, infos, params, natural_gradient):
    """The exact ELBO's rounding bound at ``params`` (a float; see ``stopping``)."""
    return float(_exact_bound_jit(compiled, tuple(infos.items()), params, natural_gradient))


def _exact_bound_impl(compiled, infos, params, natural_gradient):
    natural = params if natural_gradient else _to_natural(dict(infos), params)
    mu = mf.mean_params(dict(infos), natural)
    magnitude = stopping.elbo_magnitude(stopping.abs_terms(compiled), compiled.sizes, mu)
    return stopping.rounding_bound(magnitude, magnitude.dtype)


_exact_bound_jit = jax.jit(_exact_bound_impl, static_argnames=("infos", "natural_gradient"))


def _run_chunk(state, compiled, data, cfg):
    """``chunk`` steps; arrays are arguments and the configuration is static, so a second
    fit of the same model (an optimizer of the same kind and hyper-parameters) with new
    data of the same shapes reuses the compilation."""
    model, infos, estimator, num_samples, optimizer, chunk, natural_gradient = cfg
    optimizer = optimizer.value
    infos = dict(infos)
    obj = Objective(model, data, compiled, infos, estimator, num_samples)
    return _chunk_fn(obj, optimizer, chunk, natural_gradient, mf.families_of(infos))(state)


_run_chunk_jit = jax.jit(_run_chunk, static_argnames=("cfg",))


def _chunk_fn(obj, optimizer, chunk, natural_gradient, fams):
    """``chunk`` optimizer steps under ``lax.scan``; stops updating after a non-finite ELBO."""

    extra_args = isinstance(optimizer, optax.GradientTransformationExtraArgs) and not natural_gradient

    def loss_and_grad(params, key):
        if natural_gradient:
            mu = {n: fams[n].mean_params(params[n]) for n in params}
            e = obj.compiled.F(mu)
            dF = jax.grad(obj.compiled.F)(mu)
            e = e + sum(jnp.sum(fams[n].from_natural(params[n]).entropy()) for n in params)
            grads = {n: {s: -(dF[n][s] - params[n][s]) for s in params[n]} for n in params}
            return e, grads
        (_, e), g = jax.value_and_grad(lambda p: obj.surrogate(p, key), has_aux=True)(params)
        return e, jax.tree_util.tree_map(jnp.negative, g)

    def one(state, _):
        key, sub = jax.random.split(state.key)
        e, grads = loss_and_grad(state.params, sub)
        if extra_args:  # e.g. optax.lbfgs: line search on the same (fixed-key) objective
            updates, opt_state = optimizer.update(
                grads, state.opt_state, state.params, value=-e, grad=grads,
                value_fn=lambda p: -obj.surrogate(p, sub)[1])
        else:
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        e_ok = jnp.isfinite(e) & _all_finite(grads)
        p_ok = _all_finite(params)
        if natural_gradient:
            p_ok = p_ok & jnp.all(jnp.asarray(
                [jnp.all(fams[n].is_valid_natural(params[n])) for n in params]))
        running = state.bad_step < 0
        ok = running & e_ok & p_ok
        # a non-finite ELBO at the current point sends the fit back to the last good one
        back = running & ~e_ok
        pick = lambda a, b: jax.tree_util.tree_map(lambda x, y: jnp.where(ok, x, y), a, b)
        kept = jax.tree_util.tree_map(lambda g, p: jnp.where(back, g, p), state.last_good,
                                      state.params)
        new = GradState(pick(params, kept), pick(opt_state, state.opt_state), key,
                        state.step + jnp.where(ok, 1, 0),
                        jax.tree_util.tree_map(lambda p, g: jnp.where(ok, p, g), state.params,
                                               state.last_good),
                        jnp.where(running & ~(e_ok & p_ok), state.step, state.bad_step))
        return new, jnp.where(jnp.isfinite(e), e, jnp.nan)

    def run_chunk(state):
        return jax.lax.scan(one, state, None, length=chunk)

    return run_chunk


def _all_finite(tree):
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(l)) for l in jax.tree_util.tree_leaves(tree)]))


def _device_loop(run_chunk, state, n_chunks, chunk, tol, dtype, stochastic=False):
    """All chunks inside ``lax.while_loop`` (used under jit/vmap); the same stopping rule
    as the eager loop (Monte Carlo estimators: plus two standard errors)."""
    trace0 = jnp.full((n_chunks * chunk,), jnp.nan, dtype)

    def cond(c):
        i, st, tr, prev, se2_prev, conv = c
        return (i < n_chunks) & ~conv & (st.bad_step < 0)

    def body(c):
        i, st, tr, prev, se2_prev, conv = c
        st, t = run_chunk(st)
        tr = jax.lax.dynamic_update_slice(tr, t.astype(dtype), (i * chunk,))
        cur = jnp.mean(t)
        se2 = jnp.var(t) / chunk if stochastic and tol > 0 else jnp.zeros((), dtype)
        allow = tol * jnp.maximum(jnp.abs(cur), 1.0) + 2.0 * jnp.sqrt(se2 + se2_prev)
        conv = (i > 0) & (jnp.abs(cur - prev) < allow)
        return i + 1, st, tr, cur, se2.astype(dtype), conv

    zero = jnp.zeros((), dtype)
    i, state, trace, _, _, conv = jax.lax.while_loop(
        cond, body, (jnp.asarray(0), state, trace0, jnp.asarray(jnp.nan, dtype), zero,
                     jnp.asarray(False)))
    last = trace[jnp.maximum(i * chunk - 1, 0)]
    trace = jnp.where(jnp.arange(n_chunks * chunk) < i * chunk, trace, last)
    return state, trace, conv, i
