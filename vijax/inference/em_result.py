"""The result of :func:`vijax.em` and the reports of failed or degenerate fits."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _compat
from vijax.results.methods import with_result_methods
from vijax.errors import ConvergenceWarning, FitDivergedError


@with_result_methods
class EMResult(NamedTuple):
    """Result of :func:`em`.

    Attributes:
        params: the fitted parameters (same pytree structure as the initial ones).
        posterior: latent -> family object, q(Y) at the fitted parameters.
        elbo: final ELBO; equals ``log p(X | theta)`` when ``exact`` (see
            :attr:`log_likelihood`).
        trace: ELBO after the E-step of each iteration: entry 0 at the initial
            parameters, entry t after t M-steps (``max_iters + 1`` long; entries past
            ``num_iters`` repeat the last value). Never decreases.
        num_iters: M-steps run.
        converged: relative change of the ELBO fell below ``tol``.
        exact: True when the E-step is exact (then the trace is the log-likelihood).
        diagnostics: ``path`` ("factored" or "direct": the form of ``Q``, see
            :mod:`vijax.inference.em_choice`) and ``form_reason`` (why: the statistics
            through which the parameters enter, or the compiler's refusal), ``m_step`` ("modes" or
            "optimizer": what maximized Q), ``m_rejected`` (M-steps refused
            because Q decreased), ``m_iters`` (optimizer steps of the last M-step),
            ``max_decrease`` (largest drop of the trace, 0 up to rounding),
            ``invalid`` (an E-step update left its family's domain), ``invalid_latent``
            (its position in ``supports``, -1 if none).
        natural: natural parameters of q(Y) (``{latent: {stat: array}}``).
    """

    params: Any
    posterior: dict
    elbo: Any
    trace: Any
    num_iters: Any
    converged: Any
    exact: Any
    diagnostics: dict
    natural: dict

    @property
    def log_likelihood(self):
        """``log p(X | theta)`` at the fitted parameters (exact E-step only)."""
        if not bool(self.exact):
            raise ValueError("the E-step was variational: elbo is a lower bound on the "
                             "log-likelihood, not the log-likelihood itself")
        return self.elbo

    @property
    def log_likelihood_trace(self):
        """The trace when the E-step is exact (the log-likelihood after each iteration)."""
        if not bool(self.exact):
            raise ValueError("the E-step was variational: the trace holds ELBO values")
        return self.trace

    def __repr__(self):
        """One screen: the objective, iterations, form, and each parameter."""
        if any(_compat.is_tracer(x) for x in jax.tree_util.tree_leaves(self)):
            return "EMResult(<traced>)"
        d = self.diagnostics
        batched = np.ndim(self.elbo) > 0
        what = ("log likelihood" if bool(np.all(np.asarray(self.exact))) else "ELBO")
        lines = [f"EMResult: {what} {_fmt(self.elbo)}, {_fmt(self.num_iters)} iterations, "
                 f"converged {_fmt(self.converged)}" + (" (batched)" if batched else ""),
                 f"  form: {d.get('form_reason', d.get('path'))}",
                 f"  M-step: {d.get('m_step')}, rejected {_fmt(d.get('m_rejected'))}; "
                 f"E-step {'exact' if what == 'log likelihood' else 'variational'}"]
        leaves = jax.tree_util.tree_flatten_with_path(self.params)[0]
        for path, v in leaves:
            lines.append(f"  params{jax.tree_util.keystr(path)}: {_fmt(v)}")
        latents = ", ".join(f"{n} ({type(q).__name__})" for n, q in self.posterior.items())
        lines.append(f"  latents: {latents}")
        return "\n".join(lines)


def _fmt(x):
    a = np.asarray(x)
    if a.size == 1:
        v = a.reshape(()).item()
        return f"{v:.6g}" if isinstance(v, float) else str(v)
    flat = np.array2string(a.reshape(-1)[:6], precision=4, separator=", ")
    return f"shape {a.shape} {flat}{' ...' if a.size > 6 else ''}"


class Label(str):
    """A string in a result pytree that is structure, not data (no leaves), so that a
    result can be returned from ``jax.vmap``/``jit``."""


jax.tree_util.register_pytree_node(Label, lambda s: ((), str(s)), lambda aux, _: Label(aux))


def report_degenerate(spec, degen, reg, strict, result):
    """Errors for degeneracies no regularization repairs, warnings (or errors when
    ``strict``) for the repaired ones, each naming the parameter and the elements."""
    names = spec.param_names

    def where(mask):
        idx = [tuple(int(i) for i in ix) for ix in np.argwhere(np.asarray(mask))]
        return ", ".join(str(i if len(i) != 1 else i[0]) for i in idx[:8]) + (
            f" (and {len(idx) - 8} more)" if len(idx) > 8 else "")

    step = int(result.num_iters)
    problems = []
    for i, name in enumerate(names):
        if bool(jnp.any(degen["unbounded"][i])):
            raise FitDivergedError(
                f"the M-step objective grows without bound in {name} at index "
                f"{where(degen['unbounded'][i])}: it enters the log joint through its log "
                "with no term linear in it to counter it, so the likelihood has no maximum "
                "(a weight left unnormalized). Declare it vj.simplex(K) (or "
                "vj.unit_interval()) in param_supports, or normalize it in the log joint.",
                step=step, last_state=result.natural)
        col = degen["collapsed"][i]
        if bool(jnp.any(col)):
            if float(reg[i]) == 0.0:
                raise FitDivergedError(
                    f"component(s) {where(col)} of {name} collapsed onto single points "
                    "(spread at the rounding level): the likelihood is unbounded there and "
                    "the fit is degenerate. Pass reg_covar > 0 (scikit-learn uses 1e-6), "
                    "use fewer components, or start elsewhere.",
                    step=step, last_state=result.natural)
            problems.append(
                f"component(s) {where(col)} of {name} collapsed: their variance is at the "
                f"reg_covar floor ({float(reg[i]):.3g}; the precision is capped at "
                f"{1.0 / float(reg[i]):.3g}); the fit there reflects reg_covar, not the data "
                "(fewer components, other starts, or a reg_covar suited to the data scale).")
        if bool(jnp.any(degen["empty"][i])):
            problems.append(
                f"component(s) {where(degen['empty'][i])} of {name} are empty (no expected "
                "count): their weight is held at the count floor, near 0.")
    if problems:
        text = "EM: " + " ".join(problems)
        if strict:
            raise FitDivergedError(text + " (strict=True)", step=step,
                                   last_state=result.natural)
        warnings.warn(text, ConvergenceWarning, stacklevel=3)


def raise_if_failed(result, strict, names):
    d = result.diagnostics
    if bool(d["invalid"]):
        name = names[int(d["invalid_latent"])]
        raise FitDivergedError(
            f"the E-step update of latent '{name}' at EM iteration {int(result.num_iters)} "
            "left its family's valid region (e.g. a non-positive precision); check the "
            "initial parameters and the parameterization",
            step=int(result.num_iters), latent=name, last_state=result.natural)
    if not bool(jnp.isfinite(result.elbo)):
        raise FitDivergedError("the ELBO became non-finite during EM",
                               step=int(result.num_iters), last_state=result.natural)
    drop = float(d["max_decrease"])
    if strict and drop > 1e-9 * max(1.0, abs(float(result.elbo))):
        raise FitDivergedError(f"the EM trace decreased by {drop:.3g} (strict=True)",
                               step=int(result.num_iters), last_state=result.natural)


def build(spec, out, path, reason, reg, strict, max_iters):
    """The :class:`EMResult` of :func:`vijax.inference.em_steps.fit`, checked and
    reported outside ``jit``."""
    (state, run, trace, rejected, invalid, posterior, degen, exact, modes, _,
     mismatch) = out
    elbo = jnp.where(mismatch, jnp.nan, run.info.elbo)
    trace = trace[:max_iters + 1]
    diag = {"path": Label(path), "form_reason": Label(reason),
            "m_step": (Label("modes" if bool(modes) else "optimizer")
                       if not _compat.is_tracer(modes) else modes),
            "m_rejected": rejected, "m_iters": run.info.extra.m_iters,
            "max_decrease": run.max_decrease, "invalid": invalid >= 0,
            "invalid_latent": invalid, "form_mismatch": mismatch,
            **{k: spec.unflatten(v) for k, v in degen.items()}}
    any_degenerate = jnp.asarray(False)
    for v in degen.values():
        for m in v:
            any_degenerate = any_degenerate | jnp.any(m)
    diag["degenerate"] = any_degenerate
    result = EMResult(spec.unflatten(spec.theta(state.u)), posterior, elbo, trace,
                      run.num_iters, run.converged & ~mismatch, exact, diag, state.natural)
    if not _compat.is_tracer(elbo):
        raise_if_failed(result, strict, list(spec.latent_supports))
        report_degenerate(spec, degen, reg, strict, result)
    return result
