"""Integrate a conjugate latent out of a model in closed form (collapsing).

For a latent ``j`` whose complete conditional is an exponential family the log joint is,
as a function of ``z_j`` alone (the compiler's multilinear form, with every other latent
held as data),

.. math:: \\log p(x, z) = c(z_{-j}, x) + \\langle g(z_{-j}, x), T_j(z_j) \\rangle,

and since the family's density is ``h(z) exp(<eta, T(z)> - A(eta))`` with a constant base
measure ``h`` (every conjugate family of vijax has one), the integral is

.. math:: \\log p(x, z_{-j}) = c + A_j(g) - \\log h_j.

``g = dF/dmu_j`` is what CAVI computes for block ``j`` (``c`` is ``F`` at ``mu_j = 0``);
here both are computed from the *point* ``z_{-j}``: the log joint is analysed once with
``z_{-j}`` passed as data, so the other latents may be anything (non-conjugate ones
included), and the result is a plain jittable ``log_joint(latents, data)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vijax.conjugacy.compile import point_statistics
from vijax.conjugacy.program import data_spec, is_abstract, program_for
from vijax.errors import ModelSpecError, NonConjugateError
from vijax.model import Model, check_data


class CollapseError(NonConjugateError, ModelSpecError):
    """The latent to integrate out has no closed-form complete conditional.

    Both a :class:`~vijax.errors.NonConjugateError` (the cause) and a
    :class:`~vijax.errors.ModelSpecError` (so it passes through the tracing of a fit
    unchanged when it is found only then)."""


class Collapsed:
    """The log joint of a model with latent ``name`` integrated out (see module doc).

    Calling it with ``(latents, data)`` returns ``log p(data, latents)`` with ``name``
    marginalized; ``latents`` needs only the remaining latents (extra keys are ignored).

    Attributes:
        model: the original :class:`vijax.Model`.
        name: the latent integrated out.
        conditional: the :class:`~vijax.conjugacy.program.Program` of ``z_name`` given the
            other latents (passed as data), for the last data shapes seen.
    """

    def __init__(self, model: Model, name: str):
        self.model = model
        self.name = name
        self.rest = tuple(n for n in model.supports if n != name)
        lj = model.log_joint

        def conditional_log_joint(z, data_and_rest):
            data, rest = data_and_rest
            return lj({**rest, name: z[name]}, data)

        conditional_log_joint.__name__ = f"{getattr(lj, '__name__', 'log_joint')}|{name}"
        self._cond_model = Model(conditional_log_joint, {name: model.supports[name]})
        self.__name__ = f"{getattr(lj, '__name__', 'log_joint')}_without_{name}"
        self.conditional = None

    def program(self, data, rest):
        """``(program, by_point)``: the analysed form used for data and other latents
        shaped like ``(data, rest)``. When every latent of the model is conjugate it is
        the model's own program (``F`` holds every term, its like terms merged over all
        latents, so ``g`` reads as monomials of the others' statistics and the collapsed
        log joint stays conjugate where it should); otherwise the program of ``name``
        alone with the other latents passed as data (exact whatever they are).

        Raises:
            CollapseError: the complete conditional of ``name`` is not conjugate.
        """
        full = program_for(self.model, data)
        by_point = full.conjugate
        prog = full if by_point else program_for(self._cond_model, (data, rest))
        inf = prog.infos[self.name]
        if inf.family is None:
            gone = self.integrated_out()
            after = f" after integrating out {gone}" if gone else ""
            raise CollapseError(
                f"cannot marginalize latent '{self.name}': its complete conditional{after} has "
                f"no closed form ({inf.reason}). Only a conjugate latent (vj.analyze reports a "
                "family for it) can be integrated out; keep it, or rewrite that term.",
                latent=self.name, primitive=inf.primitive, source=inf.source)
        self._set_log_h(inf)
        self.conditional = prog
        return prog, by_point

    def integrated_out(self):
        """The latents integrated out of :attr:`model` before this one, in order."""
        inner = self.model.log_joint
        return inner.integrated_out() + [inner.name] if isinstance(inner, Collapsed) else []

    def _set_log_h(self, inf):
        """``log h`` of the conditional's family summed over the latent's elements (a
        constant: every conjugate family of vijax has a constant base measure)."""
        fam = inf.family_class
        pts = inf.support.probe_points()
        with jax.ensure_compile_time_eval():
            vals = [float(np.sum(np.asarray(fam.log_base_measure(inf.to_family(jnp.asarray(p))))))
                    for p in pts[:2]]
        if vals[0] != vals[1]:
            raise CollapseError(
                f"cannot marginalize latent '{self.name}': its family {fam.__name__} has a "
                "base measure that depends on the value", latent=self.name)
        self._log_h = vals[0]

    def parts(self, latents, data):
        """``(c, info, g)``: the log joint is ``c + <g, T(z_name)>`` at these values of
        the other latents (``info`` the compiler's record of ``name``: family, layout)."""
        from vijax.inference.cavi import rest_and_grad_block
        rest = {n: latents[n] for n in self.rest}
        prog, by_point = self.program(data, rest)
        if by_point:
            comp = prog.materialize(data)
            stats = {n: point_statistics(comp.infos[n], jnp.asarray(v)) for n, v in rest.items()}
        else:
            comp = prog.materialize((data, rest))
            stats = {}
        inf = comp.infos[self.name]
        zero = {s: jnp.zeros(inf.stat_shape(s), jnp.result_type(float)) for s in inf.stats}
        c, g = rest_and_grad_block(comp, {**stats, self.name: zero}, self.name)
        return c, inf, g

    def __call__(self, latents, data):
        c, inf, g = self.parts(latents, data)
        return c + jnp.sum(inf.family_class.log_normalizer(g)) - self._log_h

    def conditional_factor(self, latents, data):
        """The exact conditional ``p(z_name | other latents, data)`` as a family object."""
        _, inf, g = self.parts(latents, data)
        from vijax.inference.meanfield import factor
        return factor(inf, g)


def _as_model(model):
    from vijax.conjugacy.program import Program
    if isinstance(model, Program):
        return model.model
    if not isinstance(model, Model):
        raise ModelSpecError(f"expected a vijax.Model, got {type(model).__name__}")
    return model


def _names(model, names):
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ModelSpecError("marginalize: give the name of a latent to integrate out")
    for n in names:
        if not isinstance(n, str) or n not in model.supports:
            raise ModelSpecError(
                f"marginalize: {n!r} is not a latent of the model (latents: "
                f"{sorted(model.supports)})")
    if len(set(names)) != len(names):
        raise ModelSpecError(f"marginalize: {names} names a latent twice")
    if len(names) >= len(model.supports):
        raise ModelSpecError(
            f"marginalize: integrating out {sorted(names)} leaves no latent; the integral "
            "of the whole model is the log evidence log p(x): use "
            "vijax.marginalize.log_evidence(model, data)")
    return names


def marginalize(model: Model, name: str | Sequence[str], data_like=None) -> Model:
    """A new :class:`vijax.Model` over the remaining latents, with ``name`` integrated
    out in closed form: ``log p(x, z_-j) = c(z_-j) + A_j(g(z_-j)) - log h_j``.

    Args:
        model: a :class:`vijax.Model`.
        name: the latent to integrate out (its complete conditional must be one of the
            conjugate families), or a sequence of them, integrated out in that order
            (each must be conjugate in the model left by the previous ones).
        data_like: optional data (arrays or ``jax.ShapeDtypeStruct`` leaves): the
            conditional is analysed now, so a non-conjugate latent is refused here
            rather than at the first fit.

    Returns:
        A :class:`vijax.Model` whose log joint (a :class:`Collapsed`) is a plain jittable
        function of ``(latents, data)``: fit it with ``vj.cavi`` (where the collapsed
        latents are still conjugate), ``vj.fit_gradient``, ``vj.laplace``, ...
        Where the conditional of ``name`` is improper (``g`` outside the family's natural
        domain, e.g. a flat prior and no data) the integral diverges and the value is NaN
        (no guard: a branch on the latents would make the result unreadable to the
        compiler).

    Raises:
        ModelSpecError: an unknown name, or every latent named (use :func:`log_evidence`).
        NonConjugateError: (:class:`CollapseError`) the latent's complete conditional is
            not conjugate; names the latent and the compiler's reason.

    Example:
        >>> import jax.numpy as jnp, vijax as vj
        >>> from jax.scipy import stats
        >>> def lj(z, x):
        ...     return (stats.norm.logpdf(z["x1"]) + stats.norm.logpdf(z["x2"], z["x1"])
        ...             + stats.norm.logpdf(x, z["x2"]).sum())
        >>> m = marginalize(vj.Model(lj, {"x1": vj.real(), "x2": vj.real()}), "x1")
        >>> float(m.log_joint({"x2": jnp.array(1.0)}, jnp.zeros(0)))  # N(1 | 0, 2)
        -1.515...
    """
    model = _as_model(model)
    names = _names(model, name)
    for n in names:
        model = _marginalize_one(model, n, data_like)
    return model


def _marginalize_one(model, name, data_like):
    col = Collapsed(model, name)
    supports = {n: s for n, s in model.supports.items() if n != name}
    blocks = [[n for n in b if n != name] for b in model.blocks]
    new = Model(col, supports, [b for b in blocks if b] or None)
    if data_like is not None:
        rest = {n: jax.ShapeDtypeStruct(s.value_shape, s.dtype()) for n, s in supports.items()}
        col.program(data_spec(data_like), rest)
    return new


def log_evidence(model: Model, data, order: Sequence[str] | None = None):
    """The exact log evidence ``log p(x)`` of a model whose latents can be integrated
    out one after another in closed form (``order``, default the declared order).

    The last latent is integrated like the others, with nothing left:
    ``log p(x) = c + A(g) - log h`` with ``g`` its posterior natural parameter.

    Raises:
        NonConjugateError: (:class:`CollapseError`) a latent is not conjugate in the
            model left by the ones before it.
    """
    model = _as_model(model)
    names = list(model.supports) if order is None else list(order)
    if sorted(names) != sorted(model.supports):
        raise ModelSpecError(f"log_evidence: order must list every latent once: "
                             f"{sorted(model.supports)}; got {names}")
    if not is_abstract(data):
        check_data(data)
    if len(names) > 1:
        model = marginalize(model, names[:-1])
    col = Collapsed(model, names[-1])
    return col({}, data)


__all__ = ["marginalize", "log_evidence", "Collapsed", "CollapseError"]
