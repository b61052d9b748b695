"""Which form of ``Q`` an EM fit uses (:mod:`vijax.inference.em_forms`), and why.

The factored form needs every parameter to enter the log joint like a conjugate latent;
the model is compiled once with the parameters declared as latents and the answer read
off the compiler. When it refuses (a parameter through ``exp``, ``log_softmax``, a branch
on its value), the refusal's message is the recorded reason and the fit uses the direct
form. Only the compiler's refusals are caught (:class:`~vijax.errors.NonConjugateError`,
:class:`~vijax.errors.UnsupportedPrimitiveError`, or a latent left without a family);
any other error propagates. The reason is ``EMResult.diagnostics["form_reason"]``.
"""

from __future__ import annotations

import jax.numpy as jnp

from vijax.conjugacy.compile import compile_model, point_statistics
from vijax.conjugacy.program import _spec_key, data_spec
from vijax.conjugacy.program import build as build_program
from vijax.errors import NonConjugateError, UnsupportedPrimitiveError
from vijax.inference.em_forms import _Direct, _Factored
from vijax.model import Model
from vijax.supports import default_float

#: (EM spec, data shapes, dtype) -> (the factored program or None, the reason)
_FACTORED: dict = {}


def factored_program(spec, data):
    """``(program, reason)``: the model compiled with the parameters as latents, or
    ``None`` and why not. Reads only the data's shapes; cached per spec and data shapes
    (a second fit on new data of the same shapes, or one under ``jit``/``vmap``, does not
    analyse again)."""
    if spec.force_direct:
        return None, "direct: requested (force_direct)"
    names = list(spec.param_names)
    y_names = list(spec.latent_supports)
    clash = sorted(set(names) & set(y_names))
    if clash:
        return None, f"direct: the latents {clash} have the names of parameters"
    key = (spec, _spec_key(data_spec(data)), str(default_float()))
    if key not in _FACTORED:
        _FACTORED[key] = _analyse(spec, data, names, y_names)
    return _FACTORED[key]


def _analyse(spec, data, names, y_names):
    def joint(z, d):
        theta = spec.unflatten([z[n] for n in names])
        return spec.log_joint(theta, {n: z[n] for n in y_names}, d)

    sups = {**spec.latent_supports, **dict(zip(names, spec.param_supports))}
    try:
        prog = build_program(Model(joint, sups), data)
    except (NonConjugateError, UnsupportedPrimitiveError) as err:
        return None, f"direct: the parameters compiled as latents were refused: {err}"
    refused = [f"{'parameter' if n in names else 'latent'} {n}: {prog.infos[n].reason}"
               for n in names + y_names if prog.infos[n].family is None]
    if refused:
        return None, ("direct: with the parameters compiled as latents, no conjugate form "
                      "for " + "; ".join(refused))
    stats = "; ".join(f"{n}: {', '.join(prog.infos[n].stats)}" for n in names)
    return prog, ("factored: every parameter enters the log joint through the statistics "
                  f"of a conjugate family ({stats})")


def backend(spec, data, theta0, factored=None):
    """The form object: :class:`_Factored` over the materialized program ``factored``,
    else :class:`_Direct` (the model compiled with ``theta0`` as data; a latent without
    a closed-form update raises :class:`~vijax.errors.NonConjugateError`)."""
    if factored is not None:
        return _Factored(spec, factored, list(spec.param_names),
                         list(spec.latent_supports))
    model = Model(lambda z, d: spec.log_joint(spec.unflatten(d[0]), z, d[1]),
                  spec.latent_supports)
    compiled0 = compile_model(model, (list(theta0), data))
    compiled0.require_conjugate()
    return _Direct(spec, data, compiled0)


def is_exact(be):
    """Exact E-step: no term has statistics of two different latents Y."""
    y = set(be.y_names)
    for t in be.compiled.terms:
        if len({a.latent for a in t.atoms} & y) > 1:
            return False
    return True


def oracle(be, spec, theta0, data):
    """``(F(T(theta0), T(y0)), log p(x, y0 | theta0))`` at the latents' canonical point
    ``y0``: equal when the compiled form is the log joint there (a branch on a parameter
    resolved at its support's canonical point would not be)."""
    y0 = {n: be.y_infos[n].support.canonical_point() for n in be.y_names}
    compiled, stats = be.form(theta0, {n: point_statistics(be.y_infos[n], y0[n])
                                       for n in be.y_names})
    return compiled.F(stats), spec.log_joint(spec.unflatten(theta0), y0, data)


def agree(f_val, lj_val):
    """Where the two values of :func:`oracle` agree (to ``10 sqrt(eps)`` relative)."""
    tol = 10 * jnp.sqrt(jnp.finfo(jnp.result_type(lj_val, float)).eps) * jnp.maximum(
        1.0, jnp.abs(lj_val))
    return jnp.abs(f_val - lj_val) <= tol
