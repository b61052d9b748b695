"""Derivatives of a converged fit's objective by the envelope theorem.

A fit returns ``L*(theta) = max_q L(theta, q) = L(theta, q*(theta))``. At the optimum
``dL/dq = 0``, so the total derivative of ``L*`` equals the partial derivative with q held
fixed:

.. math:: \\frac{d L^*}{d \\theta} = \\frac{\\partial L}{\\partial \\theta}(\\theta, q^*).

:func:`value` attaches that derivative to the fit's value: the loop itself is never
differentiated (a ``lax.while_loop`` has no reverse-mode rule, and unrolling it would
cost memory per sweep), and the derivative costs one evaluation of ``L`` and its
linearization at ``q*``. The rule is a ``custom_jvp``, linear in the tangents, so JAX
transposes it for reverse mode: ``jax.grad``, ``jax.jvp``, ``jax.jacfwd`` and
``jax.vmap`` of either all work. For CAVI, ``theta`` is the compiled form ``F``, whose
constants are a JAX function of the data (:meth:`vijax.Program.materialize`), so
``jax.grad`` of ``vj.cavi(model, data).elbo`` reaches every float leaf of the data,
hyper-parameters included (empirical Bayes: type-II maximum likelihood by gradient
ascent on the ELBO). Integer leaves get ``float0`` cotangents, as everywhere in JAX.

The derivative is exact at the optimum; a fit stopped by its tolerance is off by a term
of the order of the remaining gradient ``dL/dq``, i.e. of the tolerance.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp


def value(objective: Callable, args, result):
    """``result`` (the converged ``objective(*args)``), differentiable in ``args`` with
    ``d result = d objective(*args)`` (``args`` hold the problem's parameters and the
    optimum, the latter a constant: the envelope theorem).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda t, q: -(q - t) ** 2 + t * q          # max over q at q* = 1.5 t
        >>> t = 2.0
        >>> q_star = jax.lax.stop_gradient(1.5 * t)
        >>> float(jax.grad(lambda t: value(f, (t, q_star), f(t, q_star)))(t))  # d(1.25 t^2)
        5.0
    """
    return _envelope(objective, args, result)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _envelope(objective, args, result):
    return result


@_envelope.defjvp
def _envelope_jvp(objective, primals, tangents):
    args, result = primals
    d_args, _ = tangents
    # a tangent of the optimum in args (normally none: it is a constant) would multiply
    # dL/dq = 0
    _, d = jax.jvp(lambda a: objective(*a), (args,), (d_args,))
    return result, jnp.asarray(d, jnp.result_type(result))
