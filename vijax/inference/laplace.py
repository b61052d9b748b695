"""The Laplace approximation around the MAP, on the unconstrained space.

Every latent is mapped to unconstrained reals by its support's bijection
(``x = f(u)``: identity, exp, sigmoid, additive log-ratio softmax) and the latents are
flattened into one vector ``u`` (``jax.flatten_util.ravel_pytree`` of the dict of
unconstrained values, i.e. latents in sorted-name order, each in C order). The target is
the log density of ``u``,

.. math:: g(u) = \\log p(x, f(u)) + \\log |\\det \\partial f / \\partial u|,

maximized with optax (L-BFGS by default); the Hessian ``H`` of ``g`` at the mode ``u*``
comes from JAX, and ``q(u) = N(u*, (-H)^{-1})``. Moments in the constrained space use the
**delta method** (first order): ``E[x] ~= f(u*)`` and ``Var[x] ~= diag(J Sigma J^T)``
with ``J = df/du`` at ``u*``. They are exact for real latents (identity ``f``).
``log_evidence`` is the Laplace estimate
``g(u*) + (D/2) log(2 pi) - (1/2) log |-H|`` of ``log p(x)``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from vijax._lazy import optax
from jax.flatten_util import ravel_pytree

from vijax import _compat, _xla
from vijax.results.methods import with_result_methods
from vijax.errors import FitDivergedError, ModelSpecError
from vijax.families import MultivariateNormal
from vijax.inference import checks, driver
from vijax.inference.driver import Algorithm, Info
from vijax.inference.fingerprint import Static, as_optax
from vijax.model import check_data


@with_result_methods
class LaplaceResult(NamedTuple):
    """Result of :func:`laplace` (a pytree).

    Attributes:
        posterior: :class:`~vijax.families.MultivariateNormal` over the flattened
            unconstrained vector ``u`` (latents in sorted-name order).
        map: latent -> the mode, in the constrained space (``f(u*)``; note that this is the
            mode of the density of ``u``, which includes the log-Jacobian).
        map_unconstrained: latent -> ``u*`` for that latent.
        mean: latent -> delta-method mean in the constrained space (``f(u*)``).
        variance: latent -> delta-method elementwise variance in the constrained space.
        log_evidence: Laplace estimate of ``log p(x)``.
        log_density: ``g(u*)``, the log density of ``u`` at the mode.
        num_steps: optimizer steps taken.
        grad_norm: ``|grad g(u*)|`` (small at a true mode).
        ok: the mode is a valid one: ``g(u*)``, its gradient and Hessian are finite,
            ``-H`` is positive definite and the Newton step ``(-H)^{-1} grad g`` is below
            :func:`stationary_tol` posterior standard deviations in every coordinate, and
            the mode lies inside every latent's support (not rounded onto its boundary),
            and one posterior sd away along each coordinate the log density drops by at
            least 0.05 on both sides (a Gaussian's drops by 1/2 or more).
            Eager calls raise :class:`~vijax.errors.FitDivergedError` instead of
            returning ``ok=False``; under ``jit``/``vmap`` a failed fit has ``ok=False``
            and NaN moments, log evidence and posterior.
        newton_sd: ``max_i |((-H)^{-1} grad g)_i| / sd_i``, the distance to the mode
            that the Hessian predicts, in posterior standard deviations.
    """

    posterior: Any
    map: dict
    map_unconstrained: dict
    mean: dict
    variance: dict
    log_evidence: Any
    log_density: Any
    num_steps: Any
    grad_norm: Any
    ok: Any
    newton_sd: Any



def stationary_tol(dtype):
    """Largest Newton step (in posterior standard deviations) accepted at a mode:
    ``max(1e-3, 100 sqrt(eps))``, i.e. 1e-3 in float64 and about 0.035 in float32."""
    return max(1e-3, 100.0 * math.sqrt(float(jnp.finfo(dtype).eps)))


def _nan_like(tree):
    return jax.tree_util.tree_map(lambda x: jnp.full(jnp.shape(x), jnp.nan, jnp.result_type(x)),
                                  tree)


class LaplaceState(NamedTuple):
    """The optimizer's position: ``u``, the flattened unconstrained latents (sorted-name
    order, each in C order), and the optax state."""

    u: Any
    opt_state: Any


def _log_density(model, data, unravel):
    sups = model.supports

    def log_density(flat):
        u = unravel(flat)
        z = {n: sups[n].from_unconstrained(u[n]) for n in u}
        ldj = sum(jnp.sum(sups[n].log_det_jacobian(u[n])) for n in u)
        return model.log_joint(z, data) + ldj
    return log_density


def _tree_norm(t):
    return jnp.sqrt(sum(jnp.sum(a * a) for a in jax.tree_util.tree_leaves(t)))


def algorithm(model, data, optimizer="lbfgs", tol=1e-10) -> Algorithm:
    """Laplace's optimizer as an ``init``/``step`` pair (public as
    ``vj.algorithms.laplace``): ascent on the log density ``g(u)`` of the unconstrained
    latents (module docstring).

    Args:
        model: a :class:`vijax.Model` with continuous latents; data: its data.
        optimizer: ``"lbfgs"`` (``optax.lbfgs()``, whose linesearch's cached value and
            gradient are reused) or any optax ``GradientTransformation`` (it minimizes
            ``-g``).
        tol: the step-size test: ``Info.stop`` once a step is shorter than
            ``tol * (1 + |u|)`` (``tol`` raised to ``4 eps`` of the dtype), or the
            gradient is zero, or the step reached a non-finite point (undone).

    Returns:
        :class:`~vijax.inference.driver.Algorithm`: ``init(u0=None) -> LaplaceState``
        from ``{latent: unconstrained value}`` (default: each support's canonical point),
        and ``step(state) -> (state, Info)``, ``Info.elbo`` the log density ``g`` after the
        step. Run it with ``vj.run(..., tol=0)`` (only ``Info.stop`` ends it).

    Example:
        >>> import jax.numpy as jnp, vijax as vj
        >>> from jax.scipy import stats
        >>> m = vj.Model(lambda z, x: stats.norm.logpdf(z["mu"], 0.0, 1.0)
        ...              + jnp.sum(stats.norm.logpdf(x, z["mu"], 1.0)), {"mu": vj.real()})
        >>> alg = vj.algorithms.laplace(m, jnp.array([1.0, 2.0, 3.0]))
        >>> out = vj.run(alg.step, alg.init(), max_iters=100, tol=0.0)
        >>> round(float(out.state.u[0]), 5), bool(out.converged)
        (1.5, True)
    """
    dtype = jnp.zeros(()).dtype
    template = {n: s.to_unconstrained(s.canonical_point(dtype))
                for n, s in model.supports.items()}
    _, unravel = ravel_pytree(template)
    log_density = _log_density(model, data, unravel)
    opt = as_optax(optimizer)

    def neg(x):
        return -log_density(x)

    def init(u0=None):
        x = ravel_pytree(template if u0 is None else {**template, **u0})[0]
        return LaplaceState(x, opt.init(x))

    cached = optax.tree.get(jax.eval_shape(opt.init, ravel_pytree(template)[0]),
                            "value") is not None
    vg = optax.value_and_grad_from_state(neg) if cached else jax.value_and_grad(neg)

    def step(state):
        x, s = state
        small_tol = jnp.maximum(jnp.asarray(tol, x.dtype), 4 * jnp.finfo(x.dtype).eps)
        v, g = vg(x, state=s) if cached else vg(x)
        upd, s2 = opt.update(g, s, x, value=v, grad=g, value_fn=neg)
        x2 = optax.apply_updates(x, upd)
        finite = jnp.all(jnp.isfinite(x2))
        x2 = jnp.where(finite, x2, x)  # a step to a non-finite point is undone
        stop = (_tree_norm(upd) <= small_tol * (1.0 + _tree_norm(x))) | (_tree_norm(g) == 0)
        e = -optax.tree.get(s2, "value") if cached else log_density(x2)
        e = jnp.where(finite & jnp.isfinite(e), e, -v)
        return LaplaceState(x2, s2), Info(e, True, 0.0, stop | ~finite)

    return Algorithm(init, step)


def _core(model, data, u0, optimizer, num_steps, tol):
    """Everything after initialization, as a pure function of arrays."""
    optimizer = optimizer.value  # a fingerprinted static: a fresh optax object reuses the compile
    sups = model.supports
    flat0, unravel = ravel_pytree(u0)
    log_density = _log_density(model, data, unravel)

    def constrained(flat):
        u = unravel(flat)
        return {n: sups[n].from_unconstrained(u[n]) for n in u}

    alg = algorithm(model, data, optimizer, tol)
    out = driver.run(alg.step, alg.init(u0), max_iters=num_steps, tol=0.0,
                     info0=Info(jnp.zeros((), flat0.dtype), True, 0.0, False))
    u_star, steps = out.state.u, out.num_iters
    g_star = log_density(u_star)
    grad = jax.grad(log_density)(u_star)
    hess = jax.hessian(log_density)(u_star)
    prec = -0.5 * (hess + hess.T)
    # non-finite Hessian entries would poison the factorization: checked separately
    finite_rows = jnp.all(jnp.isfinite(hess), axis=1)
    prec_f = jnp.where(jnp.isfinite(prec), prec, 0.0)
    chol = jnp.linalg.cholesky(prec_f)
    eigval, eigvec = jnp.linalg.eigh(prec_f)
    eigmin = eigval[0]
    scale = jnp.max(jnp.abs(prec_f))
    pd = jnp.all(jnp.isfinite(chol)) & (eigmin > 1e3 * jnp.finfo(prec.dtype).eps * scale)
    eye = jnp.eye(prec.shape[0], dtype=prec.dtype)
    cov = jax.scipy.linalg.cho_solve((chol, True), eye)
    cov = 0.5 * (cov + cov.T)
    # stationarity: the Newton step to the mode, in posterior standard deviations
    newton = jnp.abs(cov @ jnp.where(jnp.isfinite(grad), grad, 0.0)) / jnp.sqrt(
        jnp.abs(jnp.diagonal(cov)))
    newton_sd = jnp.max(newton)
    finite = jnp.isfinite(g_star) & jnp.all(jnp.isfinite(grad)) & jnp.all(finite_rows)
    x_star = constrained(u_star)
    # a mode rounded onto the support's boundary (u* ran off to infinity): not a mode
    inside = {n: jnp.all(sups[n].contains(x_star[n])) for n in x_star}
    # one posterior sd along each coordinate, a Gaussian's log density drops by at least
    # 1/2; at a maximum "at infinity" (the support's boundary) it stays flat on one side
    sd = jnp.sqrt(jnp.abs(jnp.diagonal(cov)))
    probe = jnp.concatenate([u_star + jnp.diag(sd), u_star - jnp.diag(sd)])
    drop = g_star - jax.vmap(log_density)(probe)
    flat = jnp.any((drop < 0.05).reshape(2, -1), axis=0)  # a rise to +inf counts, NaN not
    ok = (finite & pd & (newton_sd <= stationary_tol(prec.dtype)) & ~jnp.any(flat)
          & jnp.all(jnp.asarray(list(inside.values()))))
    jac = jax.jacfwd(lambda f: ravel_pytree(constrained(f))[0])(u_star)
    var_flat = jnp.einsum("ij,jk,ik->i", jac, cov, jac)
    _, unravel_x = ravel_pytree(x_star)
    d = prec.shape[0]
    log_ev = (g_star + 0.5 * d * math.log(2 * math.pi)
              - jnp.sum(jnp.log(jnp.diagonal(chol))))
    post = MultivariateNormal({"x": prec @ u_star, "xxT": -0.5 * prec})
    moments = (post, x_star, unravel(u_star), x_star, unravel_x(var_flat), log_ev)
    # a failed fit has no plausible-looking moments (under vmap: that lane only)
    moments = jax.tree_util.tree_map(lambda m, n: jnp.where(ok, m, n), moments,
                                     _nan_like(moments))
    result = LaplaceResult(*moments, g_star, steps, jnp.sqrt(jnp.sum(grad * grad)), ok,
                           newton_sd)
    # per latent, for the error messages: Newton step, non-finite gradient or Hessian
    # rows, and the weight of the flattest direction
    diag = {"newton": unravel(newton), "grad_bad": unravel(~jnp.isfinite(grad)),
            "hess_bad": unravel(~finite_rows), "flat": unravel(eigvec[:, 0] ** 2),
            "finite": finite, "pd": pd, "eigmin": eigmin, "inside": inside,
            "flat_side": unravel(flat),
            "x_star": x_star}
    return result, diag


_core_jit = _xla.jit(_core, static_argnames=("model", "optimizer", "num_steps", "tol"))


def laplace(model, data, *, init=None, optimizer="lbfgs", num_steps=500, tol=1e-10):
    """Laplace approximation of the posterior of a model with continuous latents.

    Args:
        model: a :class:`vijax.Model` (all latents continuous).
        data: the data pytree.
        init: optional ``{latent: value}`` in the constrained space (default: each
            support's canonical interior point).
        optimizer: ``"lbfgs"`` (``optax.lbfgs()`` with its zoom linesearch) or any optax
            ``GradientTransformation`` (it minimizes ``-g``).
        num_steps: at most this many optimizer steps.
        tol: stop when a step is shorter than ``tol * (1 + |u|)``.

    Returns:
        :class:`LaplaceResult`.

    Raises:
        ModelSpecError: a latent is discrete (no density on reals to expand), or ``init``
            names an undeclared latent or lies outside its support.
        FitDivergedError: the optimizer did not reach a strict mode (names the
            latent): the log density, its gradient or Hessian is not finite there; the
            Hessian is not negative definite (a flat direction, an improper posterior, a
            saddle); or the point is not stationary (a maximum at the support's
            boundary, or too few steps). Under ``jit``/``vmap``: ``ok=False`` and NaN
            moments instead.
        DataError: data outside a density's support (names the leaf).
        DataError: NaN or Inf in the data.

    Example:
        >>> import jax.numpy as jnp
        >>> from jax.scipy import stats
        >>> import vijax as vj
        >>> m = vj.Model(lambda z, x: stats.norm.logpdf(z["mu"], 0.0, 1.0)
        ...              + jnp.sum(stats.norm.logpdf(x, z["mu"], 1.0)), {"mu": vj.real()})
        >>> lap = laplace(m, jnp.array([1.0, 2.0, 3.0]))
        >>> round(float(lap.mean["mu"]), 6), round(float(lap.variance["mu"]), 6)
        (1.5, 0.25)
    """
    check_data(data)
    checks.check_optimizer(optimizer, allowed_strings=("lbfgs",))
    num_steps = checks.check_positive_int("num_steps", num_steps)
    checks.check_tol("tol", tol)
    bad = [n for n, s in model.supports.items() if s.is_discrete]
    if bad:
        raise ModelSpecError(
            f"laplace needs continuous latents; {bad} are discrete "
            f"({', '.join(str(model.supports[n]) for n in bad)}). Marginalize them in the "
            "log joint, or use vj.cavi / vj.fit_gradient.")
    init = {} if init is None else dict(init)
    extra = set(init) - set(model.supports)
    if extra:
        raise ModelSpecError(f"init names latent(s) {sorted(extra)} that the model does not "
                             f"declare (declared: {sorted(model.supports)})")
    dtype = jnp.zeros(()).dtype
    u0 = {}
    for n, sup in model.supports.items():
        v = jnp.asarray(init[n], dtype) if n in init else sup.canonical_point(dtype)
        if jnp.shape(v) != sup.value_shape:
            raise ModelSpecError(f"init['{n}'] has shape {jnp.shape(v)}, expected "
                                 f"{sup.value_shape} for {sup}")
        ok = sup.contains(v)
        if not _compat.is_tracer(ok) and not bool(jnp.all(ok)):
            raise ModelSpecError(f"init['{n}'] lies outside its support {sup}")
        u0[n] = sup.to_unconstrained(v)
    with checks.explained_by_data(model, data):
        result, diag = _core_jit(model, data, u0, Static(optimizer), num_steps, float(tol))
        if not _compat.is_tracer(result.ok) and not bool(result.ok):
            _raise_failure(result, diag)
    return result


def _worst(per_latent, how=jnp.max):
    """The latent with the largest value of ``how`` over its entries."""
    vals = {n: float(how(jnp.asarray(v, float))) for n, v in per_latent.items()}
    return max(vals, key=vals.get)


def _raise_failure(result, diag):
    steps = int(result.num_steps)
    if not bool(diag["finite"]):
        if not bool(jnp.isfinite(result.log_density)):
            name = _worst(diag["grad_bad"]) if any(
                bool(jnp.any(v)) for v in diag["grad_bad"].values()) else None
            raise FitDivergedError(
                f"the log density is {float(result.log_density)} at the optimizer's end point "
                f"(after {steps} steps)" + (f"; its gradient is not finite in latent '{name}'"
                                            if name else "") +
                ". The log joint is NaN or infinite there: check the densities' parameters "
                "and the data, or start elsewhere (init=...).", step=steps, latent=name)
        bad = diag["grad_bad"] if any(bool(jnp.any(v)) for v in diag["grad_bad"].values()) \
            else diag["hess_bad"]
        name = _worst(bad)
        raise FitDivergedError(
            f"the gradient or Hessian of the log density at the mode is not finite for latent "
            f"'{name}' (after {steps} steps): the mode may sit at a singularity of the log "
            "joint; check that latent's densities.", step=steps, latent=name)
    out = [n for n, v in diag["inside"].items() if not bool(v)]
    if out:
        name = out[0]
        raise FitDivergedError(
            f"the maximum of the log density lies on the boundary of the support of latent "
            f"'{name}' (value {diag['x_star'][name]}, after {steps} steps): the log joint "
            "keeps increasing towards the boundary, so there is no interior mode to expand "
            "around. Add a prior that vanishes at the boundary, or use vj.fit_gradient.",
            step=steps, latent=name)
    if not bool(diag["pd"]):
        name = _worst(diag["flat"], jnp.sum)
        raise FitDivergedError(
            "the Hessian of the log density at the optimum is not negative definite "
            f"(smallest eigenvalue of -H: {float(diag['eigmin']):.3g}, mostly along latent "
            f"'{name}'; |grad| {float(result.grad_norm):.3g} after {steps} steps). The "
            "posterior has a flat direction (e.g. an unidentified or improper model) or "
            "the optimizer stopped at a saddle; add a proper prior or start elsewhere "
            "(init=...).", step=steps, latent=name)
    if float(result.newton_sd) > stationary_tol(result.log_density.dtype):
        name = _worst(diag["newton"])
        raise FitDivergedError(
            f"the optimizer stopped {float(result.newton_sd):.3g} posterior standard deviations "
            f"from a stationary point (latent '{name}'; |grad| {float(result.grad_norm):.3g} "
            f"after {steps} steps; tolerance {stationary_tol(result.log_density.dtype):.3g} sd): "
            "not a mode. The maximum may lie at the boundary of the support (the log joint "
            "keeps increasing towards it), or the optimizer needs more steps (num_steps).",
            step=steps, latent=name)
    flat = [n for n, v in diag["flat_side"].items() if bool(jnp.any(v))]
    if flat:
        name = flat[0]
        raise FitDivergedError(
            f"the log density does not decrease away from the optimizer's end point along "
            f"latent '{name}' (value {diag['x_star'][name]}, after {steps} steps): its "
            "maximum lies at the boundary of the support (the log joint keeps increasing "
            "towards it) or the density flattens out, so there is no mode to expand around. "
            "Add a prior that vanishes at the boundary, or use vj.fit_gradient.",
            step=steps, latent=name)


__all__ = ["laplace", "LaplaceResult"]
