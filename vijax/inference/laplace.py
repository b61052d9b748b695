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
from jax.flatten_util import ravel_pytree

from vijax import _compat
from vijax.errors import FitDivergedError, ModelSpecError
from vijax.families import MultivariateNormal
from vijax.inference.em import maximize
from vijax.model import check_data


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


def _core(model, data, u0, optimizer, num_steps, tol):
    """Everything after initialization, as a pure function of arrays."""
    flat0, unravel = ravel_pytree(u0)
    sups = model.supports

    def constrained(flat):
        u = unravel(flat)
        return {n: sups[n].from_unconstrained(u[n]) for n in u}

    def log_density(flat):
        u = unravel(flat)
        z = {n: sups[n].from_unconstrained(u[n]) for n in u}
        ldj = sum(jnp.sum(sups[n].log_det_jacobian(u[n])) for n in u)
        return model.log_joint(z, data) + ldj

    u_star, g_star, steps = maximize(log_density, flat0, optimizer, num_steps, tol)
    grad = jax.grad(log_density)(u_star)
    hess = jax.hessian(log_density)(u_star)
    prec = -0.5 * (hess + hess.T)
    chol = jnp.linalg.cholesky(prec)
    eigmin = jnp.min(jnp.linalg.eigvalsh(prec))
    scale = jnp.max(jnp.abs(prec))
    ok = jnp.all(jnp.isfinite(chol)) & (eigmin > 1e3 * jnp.finfo(prec.dtype).eps * scale)
    eye = jnp.eye(prec.shape[0], dtype=prec.dtype)
    cov = jax.scipy.linalg.cho_solve((chol, True), eye)
    cov = 0.5 * (cov + cov.T)
    jac = jax.jacfwd(lambda f: ravel_pytree(constrained(f))[0])(u_star)
    var_flat = jnp.einsum("ij,jk,ik->i", jac, cov, jac)
    x_star = constrained(u_star)
    _, unravel_x = ravel_pytree(x_star)
    d = prec.shape[0]
    log_ev = (g_star + 0.5 * d * math.log(2 * math.pi)
              - jnp.sum(jnp.log(jnp.diagonal(chol))))
    post = MultivariateNormal({"x": prec @ u_star, "xxT": -0.5 * prec})
    result = LaplaceResult(post, x_star, unravel(u_star), x_star, unravel_x(var_flat),
                           log_ev, g_star, steps, jnp.sqrt(jnp.sum(grad * grad)))
    return result, ok, eigmin


_core_jit = jax.jit(_core, static_argnames=("model", "optimizer", "num_steps", "tol"))


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
        FitDivergedError: the Hessian at the optimum is not negative definite (the
            optimizer did not reach a strict mode: a flat direction, an improper
            posterior, or a saddle).
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
    result, ok, eigmin = _core_jit(model, data, u0, optimizer, int(num_steps), float(tol))
    if not _compat.is_tracer(ok) and not bool(ok):
        raise FitDivergedError(
            "the Hessian of the log density at the optimum is not negative definite "
            f"(smallest eigenvalue of -H: {float(eigmin):.3g}; |grad| "
            f"{float(result.grad_norm):.3g} after {int(result.num_steps)} steps). The "
            "posterior has a flat direction (e.g. an unidentified or improper model) or "
            "the optimizer stopped at a saddle; add a proper prior or start elsewhere "
            "(init=...).", step=int(result.num_steps))
    return result


__all__ = ["laplace", "LaplaceResult"]
