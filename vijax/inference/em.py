"""Expectation-maximization (EM) and variational EM derived from the log joint.

The model has parameters ``theta`` (point estimates) and latents ``Y``, ``log p(X, Y |
theta)`` (add a log prior on theta for MAP-EM). It is given as a :class:`vijax.Model`
whose supports declare the latents *and* the parameters, with ``params=`` naming the
parameters (or as ``log_joint(params, latents, data)``; :mod:`vijax.inference.em_params`).
Each iteration (DESIGN section 1, "EM") is one ``step`` of :func:`algorithm`
(:mod:`vijax.inference.em_steps`), run by :func:`vijax.run` in one jitted loop:

- **M-step**: maximize ``Q(theta) = E_q[log p(X, Y | theta)] = F(mu_Y; theta)``: in each
  parameter that enters like a conjugate latent, ``Q`` is ``<eta_i, T_i(theta_i)> +
  const`` with the ``eta_i = dF/dT_i`` CAVI computes, maximized by the family's mode
  (``m_step="auto"`` cycles these: ECM); otherwise optax L-BFGS (or any optax
  transformation: generalized EM) over the unconstrained parameters. A step that
  decreased ``Q`` is refused (counted in the diagnostics).
- **E-step**: q(Y) by the CAVI sweep (:func:`vijax.inference.cavi.sweep`) at the new
  theta. When no term couples two latents one sweep is the exact conditional
  ``p(Y | X, theta)`` and the objective is ``log p(X | theta)`` (exact EM); otherwise
  sweeps run to convergence (variational EM) and the objective is the ELBO.

So the trace never decreases. ``Q`` is built in one of two forms, recorded with the
reason in ``diagnostics["path"]``/``["form_reason"]`` (:mod:`vijax.inference.em_choice`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from vijax._lazy import optax

from vijax import _compat
from vijax.conjugacy import joint_blocks
from vijax.errors import ModelSpecError
from vijax.inference import checks, driver
from vijax.inference import em_params as P
from vijax.inference.driver import Algorithm
from vijax.inference.em_choice import backend, factored_program
from vijax.inference.em_result import EMResult
from vijax.inference.em_result import build as build_result
from vijax.inference.em_steps import EMState, Knobs, MStepInfo, build, fit_jit, maximize
from vijax.model import Model, check_data

_DEFAULTS = dict(max_iters=200, tol=1e-8, m_steps=100, m_tol=1e-10, reg_covar=1e-6)


def em(model, data, *legacy, params=None, init=None, param_supports=None, key=None,
       max_iters=200, tol=1e-8, m_step="auto", m_steps=100, m_tol=1e-10, e_step_iters=50,
       order=None, reg_covar=1e-6, strict=False, progress=None) -> EMResult:
    """EM for point-estimated parameters and latent variables (variational EM when the
    E-step is not exact).

    Two equivalent ways to state the model:

    - ``em(model, data, params=("w", "mu"), init={"w": ..., "mu": ...})``: ``model`` is a
      :class:`vijax.Model` whose ``log_joint(values, data)`` takes the latents and the
      parameters in one dict and whose supports declare both (with their shapes:
      ``vj.simplex(K)``, ``vj.real((K, D))``, ``vj.positive((K, D))``); ``params`` names
      the point-estimated entries, every other entry is a latent; ``init`` gives each
      parameter's starting value.
    - ``em(log_joint, params, supports, data, param_supports=...)``:
      ``log_joint(params, latents, data)`` with ``params`` the initial parameter pytree,
      ``supports`` the latents', ``param_supports`` (a pytree of the structure of
      ``params``) the parameters' (shapes from the values; default: real).

    Args:
        model: the :class:`vijax.Model` (or the three-argument log joint).
        data: the data pytree (in the three-argument form: the initial parameters).
        params: names of the model's point-estimated entries (model form).
        init: ``{name: initial value}`` for each of them (model form).
        param_supports: supports of the parameters (three-argument form). The M-step
            optimizes ``u = to_unconstrained(theta)`` (log, additive log-ratio, logit),
            so constrained parameters such as weights or precisions stay valid.
        key: PRNG key for the initial q(Y) (matters for variational EM only).
        max_iters: at most this many EM iterations (M-steps).
        tol: the stopping rule of :func:`vijax.run`: stop when
            ``|L_t - L_{t-1}| <= tol * max(|L_t|, 1)``; also the inner CAVI tolerance of
            variational E-steps.
        m_step: how ``Q`` is maximized. ``"auto"`` (default): ``"modes"`` when every
            parameter enters the log joint like a conjugate latent whose family has a
            closed-form mode (means, precisions or variances, weights, probabilities,
            regression or loading matrices), else ``"lbfgs"``. ``"modes"``: closed-form
            conditional maximization, one parameter at a time (ECM; exact in one cycle
            for mixtures and factor analysis), cycled until nothing changes.
            ``"lbfgs"``: ``optax.lbfgs()`` with zoom linesearch over the unconstrained
            parameters. Or any optax ``GradientTransformation`` (minimizing ``-Q``;
            generalized EM with a few steps).
        m_steps: at most this many optimizer steps (or mode cycles) per M-step.
        m_tol: an M-step stops once an optimizer step is shorter than
            ``m_tol * (1 + |u|)`` (see :func:`maximize`), or once a mode cycle changes
            no parameter by more than ``max(m_tol, sqrt(eps))`` relative (rounding in the
            statistics moves them by more than eps; every cycle already increases Q, and
            the EM fixed points do not depend on the number of cycles).
        e_step_iters: at most this many CAVI sweeps per variational E-step.
        order: update order of the latents in an E-step sweep.
        reg_covar: regularization of precision-like parameters, as scikit-learn's
            ``GaussianMixture(reg_covar=...)``: a parameter declared ``vj.positive()``
            that enters like a precision ``tau`` (through ``tau`` and ``log tau``) gets
            the variance floor ``1/tau = S/n + reg_covar`` (``S/n`` its unregularized
            maximizer), so ``tau <= 1/reg_covar``; one entering like a variance ``s``
            (``1/s``, ``log s``) gets ``s = S/n + reg_covar``. Both M-steps (modes and
            optimizer) maximize the same regularized ``Q``: ``Q - reg_covar * sum c tau``
            with ``c = dQ/d log tau`` at the current iterate (half a Gaussian precision's
            expected count). A number, or a pytree with the structure of the parameters (one
            number per parameter; 0 turns it off). A Gamma-form parameter that is not a
            precision (a Poisson rate) is shrunk likewise: give it 0. Applies on the
            factored path only (``diagnostics["path"]``). Independently, every entry of
            a simplex or unit-interval parameter gets a pseudo-count of ``10 eps`` (as
            scikit-learn adds to each component's count), so an empty mixture component
            gets a weight near 0 and the others are fitted as usual. The log-likelihood
            trace is then nondecreasing up to an ``O(reg_covar)`` effect.
        strict: raise :class:`FitDivergedError` if the trace decreased beyond rounding,
            or instead of the degeneracy warnings below.
        progress: report the objective every 100 iterations (a tqdm bar when tqdm is
            installed, else lines on stderr); None (default): on for ``max_iters >= 2000``
            when stderr is a terminal, never under ``jit``/``vmap``.

    Returns:
        :class:`EMResult`.

    Degenerate fits are reported, never returned silently: ``diagnostics["empty"]``,
    ``["collapsed"]`` and ``["unbounded"]`` hold, per parameter, boolean masks of its
    elements (a simplex entry without expected count; a precision whose component's
    spread is at most ``reg_covar`` or at the rounding level, i.e. a component on one
    point; an element in which ``Q`` has no maximum), ``["degenerate"]`` is their
    union. Empty and collapsed components repaired by the floors above give a
    :class:`~vijax.errors.ConvergenceWarning` naming the parameter and the indices; a
    collapse with ``reg_covar=0`` or an unbounded element raises. Under ``jit``/``vmap``
    only the diagnostics report them (and ``["form_mismatch"]``: a lane whose compiled
    form of the parameters disagreed with the log joint at the start gets a NaN ELBO).

    Raises:
        NonConjugateError: a latent has no closed-form update given the parameters.
        DataError: NaN or Inf in the data.
        ModelSpecError: a parameter's shape differs from its declared support, or a
            parameter left real (no support declared) enters the log joint through a
            function defined only on part of the reals (``log``, ``sqrt``, ...).
        FitDivergedError: an E-step update left its family's domain, the ELBO became
            non-finite, a component collapsed with ``reg_covar=0``, or the likelihood has
            no maximum in a parameter.

    Example (a two-component mixture of unit-variance normals, means estimated):
        >>> import jax, jax.numpy as jnp
        >>> from jax.scipy import stats
        >>> import vijax as vj
        >>> x = jnp.concatenate([jnp.full(5, -5.0), jnp.full(5, 5.0)])
        >>> def lj(v, x):
        ...     return jnp.sum(jnp.log(0.5) + stats.norm.logpdf(x, v["m"][v["c"]], 1.0))
        >>> model = vj.Model(lj, {"m": vj.real((2,)), "c": vj.categorical(2, shape=(10,))})
        >>> fit = em(model, x, params=("m",), init={"m": jnp.array([-1.0, 1.0])})
        >>> [round(float(v), 4) for v in fit.params["m"]]
        [-5.0, 5.0]
        >>> str(fit.diagnostics["path"])
        'factored'

    The same fit in the three-argument form:
        >>> lj3 = lambda p, z, x: lj({**p, **z}, x)
        >>> fit3 = em(lj3, {"m": jnp.array([-1.0, 1.0])}, {"c": vj.categorical(2, shape=(10,))}, x)
        >>> [round(float(v), 4) for v in fit3.params["m"]]
        [-5.0, 5.0]
    """
    if isinstance(model, Model):
        if legacy or param_supports is not None:
            raise ModelSpecError("em(model, data, params=..., init=...): the parameters' "
                                 "supports are the model's; pass no further positional "
                                 "arguments and no param_supports")
        if not isinstance(init, dict):
            raise ModelSpecError("init must be a dict giving each parameter named in "
                                 f"params its starting value, got {type(init).__name__}")
        prep = prepare(model, data, params=params, m_step=m_step, order=order,
                       e_step_iters=e_step_iters)
        start = init
    else:
        if len(legacy) != 2 or params is not None or init is not None:
            raise ModelSpecError(
                "vj.em takes em(model, data, params=(...), init={...}) with a vj.Model, or "
                "em(log_joint, params, supports, data, param_supports=...) with "
                "log_joint(params, latents, data)")
        start, (supports, data) = data, legacy
        prep = prepare(model, start, supports, data, param_supports=param_supports,
                       m_step=m_step, order=order, e_step_iters=e_step_iters)
    return prep.run(start, key=key, max_iters=max_iters, tol=tol, m_steps=m_steps,
                    m_tol=m_tol, reg_covar=reg_covar, strict=strict, progress=progress)


class PreparedEM:
    """A model and data analysed once for :func:`em` (built by :func:`prepare`; immutable).

    :meth:`run` fits from any start without analysing again (restarts, benchmarks);
    :meth:`algorithm` gives the same iteration as an ``init``/``step`` pair. ``path`` and
    ``form_reason`` say which form of ``Q`` the analysis chose and why."""

    def __init__(self, spec, data, factored, reason):
        self._spec, self._data, self._factored, self._reason = spec, data, factored, reason

    @property
    def path(self) -> str:
        return "factored" if self._factored is not None else "direct"

    @property
    def form_reason(self) -> str:
        return self._reason

    def run(self, params, *, key=None, max_iters=200, tol=1e-8, m_steps=100, m_tol=1e-10,
            reg_covar=1e-6, strict=False, progress=None, e_step_iters=None) -> EMResult:
        """EM from the initial ``params`` (the structure given to :func:`prepare`; a dict
        by name in the model form); the keyword arguments mean what they mean in
        :func:`em`. A start at which the factored form disagrees with the log joint (a
        branch on a parameter) is refitted on the direct form, recorded in
        ``diagnostics["form_reason"]``; under ``jit``/``vmap`` such a lane gets a NaN
        ELBO and ``diagnostics["form_mismatch"]``."""
        spec, data = self._spec, self._data
        if e_step_iters is not None and int(e_step_iters) != spec.e_step_iters:
            spec = dataclasses.replace(spec, e_step_iters=int(e_step_iters))
        checks.check_em_run_args(key, max_iters, tol)
        if max_iters < 0 or m_steps < 1 or spec.e_step_iters < 1:
            raise ModelSpecError("max_iters must be >= 0, m_steps and e_step_iters >= 1")
        u0 = P.start(spec, params)
        dtype = jnp.zeros(()).dtype
        reg = P.reg_leaves(reg_covar, spec.param_treedef, dtype)
        knobs = Knobs(jnp.asarray(tol, dtype), jnp.asarray(m_steps, jnp.int32),
                      jnp.asarray(m_tol, dtype), reg)
        # the trace is rounded up to a power of two so that nearby max_iters share one
        # compilation; it is cut to max_iters + 1 below
        length = max(8, 1 << int(max_iters).bit_length())
        key = jax.random.key(0) if key is None else key
        traced = any(_compat.is_tracer(x) for x in jax.tree_util.tree_leaves(
            (u0, data, key, tol)))
        show = driver.wants_progress(progress, traced, max_iters)
        args = (u0, key, data, knobs, jnp.asarray(max_iters))
        out = _fit(spec, args, length, self._factored, show, max_iters)
        path, reason = self.path, self._reason
        mismatch = out[-1]
        if not _compat.is_tracer(mismatch) and bool(mismatch):
            f_val, lj_val = (float(v) for v in out[-2])
            reason = (f"direct: the factored form disagreed with the log joint at the "
                      f"initial parameters (F = {f_val:.10g}, log p = {lj_val:.10g}: a "
                      "branch on a parameter's value?); refitted with the parameters as data")
            spec, path = dataclasses.replace(spec, force_direct=True), "direct"
            out = _fit(spec, args, length, None, show, max_iters)
        return build_result(spec, out, path, reason, reg, strict, int(max_iters))

    def params(self, state):
        """The parameters of an :class:`EMState` (constrained, in the structure of the
        initial ones: a dict by name in the model form)."""
        return self._spec.unflatten(self._spec.theta(state.u))

    def algorithm(self, *, tol=1e-8, m_steps=100, m_tol=1e-10, reg_covar=1e-6) -> Algorithm:
        """This EM iteration as an ``init``/``step`` pair (see :func:`algorithm`)."""
        spec, data = self._spec, self._data
        dtype = jnp.zeros(()).dtype
        knobs = Knobs(jnp.asarray(tol, dtype), jnp.asarray(m_steps, jnp.int32),
                      jnp.asarray(m_tol, dtype),
                      P.reg_leaves(reg_covar, spec.param_treedef, dtype))
        example = [jnp.asarray(s.canonical_point()) for s in spec.param_supports]
        steps = build(spec, backend(spec, data, example, self._factored), data, knobs)

        def init(params, key=None):
            key = jax.random.key(0) if key is None else key
            return steps.start(P.start(spec, params), key)[0]

        return Algorithm(init, steps.step)


def algorithm(model, data, params, **options) -> Algorithm:
    """EM / variational EM as an ``init``/``step`` pair (public as ``vj.algorithms.em``).

    ``model``, ``data`` and ``params`` as in :func:`em` (model form); ``options`` are
    ``m_step``, ``order``, ``e_step_iters`` (the analysis) and ``tol``, ``m_steps``,
    ``m_tol``, ``reg_covar`` (the iteration), as in :func:`em`.

    - ``init(params0, key=None) -> EMState``: the first E-step at the initial parameters
      (a dict by name); the state's ``elbo`` is NaN when that E-step failed or when the
      factored form of ``Q`` disagrees with the log joint there (:func:`em` refits on
      the direct form then).
    - ``step(state) -> (EMState, Info)``: one M-step and one E-step; ``Info.elbo`` is the
      log likelihood (exact E-step) or the ELBO, ``Info.ok`` false when an E-step update
      left its family's domain, ``Info.extra`` a :class:`MStepInfo`.

    ``vj.run(step, init(params0), max_iters=..., tol=..., elbo0=state.elbo)`` is the loop
    of :func:`em`, and ``jit``, ``vmap`` and ``lax.scan`` apply to both functions. The
    state holds the parameters unconstrained; ``vj.prepare_em(model, data,
    params=...).params(state)`` gives them constrained (the analysis is cached).
    """
    analysis = {k: options.pop(k) for k in ("m_step", "order", "e_step_iters")
                if k in options}
    return prepare(model, data, params=params, **analysis).algorithm(**options)


def prepare(model, data, *legacy, params=None, param_supports=None, m_step="auto",
            order=None, e_step_iters=50) -> PreparedEM:
    """Analyse the model once for repeated :func:`em` fits: ``prepare(model, data,
    params=(...))`` (model form) or ``prepare(log_joint, params, supports, data,
    param_supports=...)`` (``params`` gives the structure and shapes).

    Example:
        >>> import jax.numpy as jnp
        >>> from jax.scipy import stats
        >>> import vijax as vj
        >>> x = jnp.concatenate([jnp.full(5, -5.0), jnp.full(5, 5.0)])
        >>> def lj(v, x):
        ...     return jnp.sum(jnp.log(0.5) + stats.norm.logpdf(x, v["m"][v["c"]], 1.0))
        >>> model = vj.Model(lj, {"m": vj.real((2,)), "c": vj.categorical(2, shape=(10,))})
        >>> prep = prepare(model, x, params=("m",))
        >>> fits = [prep.run({"m": jnp.array(m0)}) for m0 in ([-1.0, 1.0], [1.0, -1.0])]
        >>> [round(float(f.params["m"][0]), 4) for f in fits]
        [-5.0, 5.0]
    """
    if not (m_step in ("auto", "modes", "lbfgs")
            or isinstance(m_step, optax.GradientTransformation)):
        raise ModelSpecError("m_step must be 'auto', 'modes', 'lbfgs' or an optax "
                             f"GradientTransformation, got {m_step!r}")
    if isinstance(model, Model):
        if legacy:
            raise ModelSpecError("prepare(model, data, params=(...)) takes no further "
                                 "positional arguments")
        joint_blocks.refuse_blocks(model, "vj.em")
        latents = {n: s for n, s in model.supports.items() if n not in (params or ())}
        order = None if order is None else tuple(checks.check_order(order, latents))
        spec = P.from_model(model, params, m_step=m_step, order=order,
                            e_step_iters=e_step_iters)
        leaves = [jnp.zeros(s.value_shape) for s in spec.param_supports]
    else:
        if len(legacy) != 2:
            raise ModelSpecError("prepare takes (model, data, params=(...)) or "
                                 "(log_joint, params, supports, data)")
        start, (supports, data) = data, legacy
        if isinstance(supports, dict) and order is not None:
            order = tuple(checks.check_order(order, supports))
        spec = P.from_log_joint(model, start, supports, param_supports, m_step=m_step,
                                order=order, e_step_iters=e_step_iters)
        leaves = jax.tree_util.tree_leaves(start)
    check_data(data)
    P.check_domains(spec, leaves, data)
    prog, reason = factored_program(spec, data)  # shapes only: cached, also under jit
    factored = None
    if prog is not None:  # constants on the device once, not at every run
        factored = jax.tree_util.tree_map(jnp.asarray, prog.materialize(data))
    return PreparedEM(spec, data, factored, reason)


def _fit(spec, args, length, factored, show, max_iters):
    u0, key, data, knobs, n = args
    if not show:
        return fit_jit(spec, u0, key, data, knobs, n, factored, length, False)
    with driver.reporting(driver.progress_printer(max_iters, "vj.em")):
        out = fit_jit(spec, u0, key, data, knobs, n, factored, length, True)
        return jax.block_until_ready(out)


__all__ = ["em", "prepare", "PreparedEM", "EMResult", "EMState", "MStepInfo", "algorithm",
           "maximize"]
