"""The stopping rule the fitters share: a dtype-aware tolerance, the rounding bound of
the ELBO, and the :class:`~vijax.errors.ConvergenceWarning` of a fit that did not reach
an answer it can vouch for.

**Rounding bound.** The ELBO is a sum of terms, ``L = c + sum_t F_t(mu) + sum_j H_j``.
In floating point each term carries an error of a few ``eps`` times its own magnitude,
so the ELBO is known only to about

    R = ROUNDING_FACTOR * eps * S,      S = |c| + sum_t sum |summands of F_t(mu)|,

with ``eps = jnp.finfo(dtype).eps``. ``S`` is evaluated exactly as ``F`` with every
operand replaced by its absolute value. It is far larger than ``|L|`` where the terms
cancel: for Bayesian linear regression ``y^T y - 2 m^T X^T y + m^T X^T X m`` is about
500 times smaller than ``y^T y`` (N = 1e4, D = 50), so in float32 the ELBO moves by
``~1e-4 |L|`` from sweep to sweep at a fixed point, whatever the updates do. A change
below ``R`` carries no information and a decrease below ``R`` is not a decrease.

**Convergence.** A CAVI fit has converged when

    |L_t - L_{t-1}| <= tol * max(|L_t|, 1),

or when it decreased by no more than ``R_t`` (``-R_t <= L_t - L_{t-1} <= 0``): exact
coordinate ascent never decreases the ELBO, so such a step shows that the ELBO has reached
its resolution and further sweeps cannot be told apart from rounding. ``tol=None`` means
:func:`default_tol`: ``1e-8`` in float64 and ``eps`` in lower precisions (1.2e-7 in
float32), so that a float32 fit runs until the ELBO stops resolving its progress instead of
running to ``max_iters`` (the old ``1e-8`` is below float32's resolution).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from vijax.conjugacy import terms as T
from vijax.errors import ConvergenceWarning, FitDivergedError

#: multiple of ``eps * S`` that a change or a decrease of the ELBO must exceed to count
ROUNDING_FACTOR = 16.0
#: a dense Gaussian whose precision has ``cond * eps`` above this warns (mean inaccurate)
CONDITION_LIMIT = 1e-3


def default_tol(dtype) -> float:
    """Relative ELBO tolerance used when ``tol=None``: ``max(1e-8, eps)``
    (1e-8 in float64, about 1.2e-7 in float32, 9.8e-4 in float16)."""
    return max(1e-8, float(jnp.finfo(dtype).eps))


def default_gradient_tol(dtype) -> float:
    """Relative tolerance of a gradient fit's chunk means when ``tol=None``:
    ``max(1e-6, 8 * eps)`` (1e-6 in float64 and float32)."""
    return max(1e-6, 8.0 * float(jnp.finfo(dtype).eps))


def abs_terms(compiled):
    """The compiled terms with every constant replaced by its absolute value (taken once,
    before a loop; :func:`elbo_magnitude` evaluates them)."""
    return (jnp.abs(jnp.asarray(compiled.const)),
            tuple(t.with_(consts=tuple((jnp.abs(jnp.asarray(c)), ls) for c, ls in t.consts))
                  for t in compiled.terms))


def elbo_magnitude(absolute, sizes, mu):
    """``S``: the sum of the absolute values of every summand of ``F(mu)`` (see the module
    docstring). ``absolute`` comes from :func:`abs_terms`."""
    const, terms = absolute
    amu = jax.tree_util.tree_map(jnp.abs, mu)
    s = const
    for t in terms:
        s = s + jnp.sum(T.eval_term(t, amu, sizes))
    return s


def rounding_bound(magnitude, dtype):
    """``R = ROUNDING_FACTOR * eps * S`` in ``dtype``."""
    eps = jnp.finfo(dtype).eps
    return jnp.asarray(ROUNDING_FACTOR * eps, dtype) * jnp.asarray(magnitude, dtype)


def converged(change, elbo, tol, bound):
    """``|change| <= tol * max(|elbo|, 1)``, or a decrease no larger than the rounding
    bound (``-bound <= change <= 0``: the ELBO has reached its resolution), and a finite
    ELBO."""
    small = jnp.abs(change) <= tol * jnp.maximum(jnp.abs(elbo), 1.0)
    floor = (change <= 0) & (change >= -bound)
    return (small | floor) & jnp.isfinite(elbo)


def report(problems, strict, step=None, last_state=None, latent=None, stacklevel=3):
    """Warn (``ConvergenceWarning``) with every message in ``problems``, or raise
    :class:`FitDivergedError` with them when ``strict``. ``stacklevel`` points the
    warning at the user's call of the fitter."""
    if not problems:
        return
    text = " ".join(problems)
    if strict:
        raise FitDivergedError(text + " (strict=True)", step=step, latent=latent,
                               last_state=last_state)
    warnings.warn(text, ConvergenceWarning, stacklevel=stacklevel)


def condition_problems(posterior, dtype):
    """Messages for dense Gaussian factors whose precision is too ill-conditioned for
    ``dtype``: the posterior mean solves ``Lambda m = eta_x`` and is accurate only to about
    ``cond(Lambda) * eps`` relative."""
    from vijax.families.mvn import MultivariateNormal
    eps = float(jnp.finfo(dtype).eps)
    out = []
    for name, q in posterior.items():
        if not isinstance(q, MultivariateNormal):
            continue
        ev = jnp.linalg.eigvalsh(q.precision)
        cond = float(jnp.max(jnp.where(ev[..., 0] > 0, ev[..., -1] / ev[..., 0], jnp.inf)))
        if not cond * eps <= CONDITION_LIMIT:
            out.append(
                f"The precision of q({name}) has condition number {cond:.3g}, so in "
                f"{jnp.dtype(dtype).name} (eps {eps:.2g}) its mean is accurate only to about "
                f"{min(cond * eps, 1.0):.2g} relative. Center and scale the data (e.g. "
                "subtract column means) or fit in float64 (jax_enable_x64).")
    return out
