"""One EM iteration as ``init``/``step`` (:class:`vijax.Algorithm`): the E-step (the CAVI
sweep on the form with the parameters' statistics, run to convergence by
:func:`vijax.run` for variational EM) and the M-step (closed-form conditional modes, or
an optax optimizer over the unconstrained parameters, kept only if ``Q`` increased).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from vijax import _xla
from vijax._lazy import optax

from vijax.errors import ModelSpecError
from vijax.inference import cavi, driver
from vijax.inference import meanfield as mf
from vijax.inference.driver import Info
from vijax.inference.fingerprint import as_optax
from vijax.inference.em_choice import agree, backend, is_exact, oracle
from vijax.inference.em_params import count_floor


class EMState(NamedTuple):
    """What the next EM iteration needs.

    Attributes:
        u: the parameters, unconstrained (one array per parameter leaf; the constrained
            ones: :meth:`vijax.PreparedEM.params`).
        natural: ``{latent: {stat: array}}``, the natural parameters of q(Y).
        mu: their mean parameters.
        elbo: the objective at this state (the log likelihood for an exact E-step, else
            the ELBO); NaN when the state is invalid (a step from it reports ``ok=False``).
    """

    u: Any
    natural: dict
    mu: dict
    elbo: Any


class MStepInfo(NamedTuple):
    """``Info.extra`` of an EM step: the M-step was ``accepted`` (Q did not decrease),
    ran ``m_iters`` optimizer steps or mode cycles; ``invalid_latent`` is the position in
    the supports of a latent whose E-step update left its family's domain (-1: none)."""

    accepted: Any
    m_iters: Any
    invalid_latent: Any


class Knobs(NamedTuple):
    """Numeric settings, traced (changing them does not recompile)."""

    tol: Any
    m_steps: Any
    m_tol: Any
    reg: Any = None  # one scalar per parameter leaf (reg_covar)


# ----------------------------------------------------------------------------- E-step

def _sweep(be, theta, natural, mu, order):
    """One CAVI sweep at fixed theta (the form with theta's statistics); ``invalid`` is
    the position in the supports of the first latent whose update left its family's
    domain (-1: none)."""
    fams = {n: mf.family_class(i) for n, i in be.y_infos.items()}
    natural, mu, e, bad = cavi.sweep(lambda m: be.form(theta, m), fams, natural, mu, order)
    names = list(be.cfg.latent_supports)
    pos = jnp.asarray([names.index(n) for n in order])
    return natural, mu, e, jnp.where(bad >= 0, pos[jnp.maximum(bad, 0)], -1)


def e_step(be, theta, natural, mu, order, exact, tol, iters):
    """q(Y) at theta: one sweep when it is exact, else CAVI sweeps run by
    :func:`vijax.run` (at most ``iters``, to its stopping rule at ``tol``). Returns
    ``(natural, mu, elbo, invalid)``."""
    if exact:
        return _sweep(be, theta, natural, mu, order)

    def sweep_step(s):
        nat, m = s
        nat, m, e, bad = _sweep(be, theta, nat, m, order)
        return (nat, m), Info(e, ok=bad < 0, extra=bad)

    dtype = jnp.result_type(*jax.tree_util.tree_leaves(natural))
    r = driver.run(sweep_step, (natural, mu), max_iters=iters, tol=tol,
                   info0=Info(jnp.zeros((), dtype), extra=jnp.asarray(-1)))
    (natural, mu), info = r.state, r.info
    return natural, mu, info.elbo, info.extra


# ----------------------------------------------------------------------------- M-step

def _tree_norm(t):
    return jnp.sqrt(sum(jnp.sum(jnp.abs(x) ** 2) for x in jax.tree_util.tree_leaves(t)))


def maximize(fun, x0, optimizer="lbfgs", max_steps=100, tol=1e-10):
    """Maximize ``fun`` over the pytree ``x0`` with an optax transformation (jittable).

    ``"lbfgs"`` means ``optax.lbfgs()`` with its zoom linesearch, whose cached value and
    gradient are reused (``optax.value_and_grad_from_state``). Stops after ``max_steps``,
    or once a step is shorter than ``tol * (1 + |x|)`` (Euclidean norms over the pytree;
    ``tol`` is raised to ``4 eps`` of the dtype, e.g. about 5e-7 in float32), or the
    gradient is zero; a step to a non-finite point is undone and ends the loop.

    Returns:
        ``(x, value, steps)``.

    Example:
        >>> import jax.numpy as jnp
        >>> x, v, _ = maximize(lambda x: -jnp.sum((x - 3.0) ** 2), jnp.zeros(2))
        >>> [round(float(a), 6) for a in x]
        [3.0, 3.0]
    """
    opt = as_optax(optimizer)

    def neg(x):
        return -fun(x)

    dt = jnp.result_type(*jax.tree_util.tree_leaves(x0), float)
    tol = jnp.maximum(jnp.asarray(tol, dt), 4 * jnp.finfo(dt).eps)
    state0 = opt.init(x0)
    cached = optax.tree.get(state0, "value") is not None
    vg = optax.value_and_grad_from_state(neg) if cached else jax.value_and_grad(neg)

    def cond(c):
        return (c[2] < max_steps) & ~c[3]

    def body(c):
        x, s, i, _ = c
        v, g = vg(x, state=s) if cached else vg(x)
        upd, s2 = opt.update(g, s, x, value=v, grad=g, value_fn=neg)
        x2 = optax.apply_updates(x, upd)
        finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(a))
                                      for a in jax.tree_util.tree_leaves(x2)]))
        x2 = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), x2, x)
        small = _tree_norm(upd) <= tol * (1.0 + _tree_norm(x))
        done = small | (_tree_norm(g) == 0) | ~finite
        return x2, s2, i + 1, done

    x, _, steps, _ = jax.lax.while_loop(
        cond, body, (x0, state0, jnp.asarray(0), jnp.asarray(False)))
    return x, fun(x), steps


def uses_modes(cfg, be):
    """Closed-form conditional modes (``m_step="auto"`` when available, or ``"modes"``)."""
    if cfg.m_step == "modes":
        if not be.has_modes():
            lacking = [n for n in getattr(be, "p_names", ())
                       if not mf.family_class(be.compiled.infos[n]).has_mode()]
            raise ModelSpecError(
                "m_step='modes' needs every parameter to enter the log joint like a "
                "conjugate latent with a closed-form mode; "
                + (f"no closed form for {lacking}" if lacking else
                   "the parameters could not be compiled as latents")
                + ". Use m_step='lbfgs' (or 'auto').")
        return True
    return cfg.m_step == "auto" and be.has_modes()


def m_step(cfg, knobs, be, mu, u, modes):
    """Generalized-EM safe M-step: maximize ``Q`` (closed-form conditional modes or an
    optax optimizer over the unconstrained parameters); keep the old parameters if ``Q``
    decreased. Returns ``(u, accepted, steps)``."""
    theta_ref = cfg.theta(u)
    reduced = be.reduce(mu)
    q_plain = be.Q(reduced, theta_ref)
    dt = jnp.result_type(*u, float)
    reg = knobs.reg if knobs.reg is not None else [jnp.zeros((), dt)] * len(theta_ref)
    # the regularized Q (reg_covar on precisions, a count floor on weights) is what both
    # M-steps maximize, and what the acceptance test below compares
    penalty, shifts = be.regularization(reduced, theta_ref, reg, count_floor(dt))

    def q(theta):
        return q_plain(theta) + penalty(theta)

    def obj(v):
        return q(cfg.theta(v))
    q_old = obj(u)  # 0 up to rounding: Q is measured from the current parameters
    if modes:
        tol = jnp.maximum(knobs.m_tol, jnp.sqrt(jnp.finfo(dt).eps))
        theta, steps = be.modes(reduced, theta_ref, knobs.m_steps, tol, shifts)
        u_new = cfg.unconstrained(theta)
        q_new = q(theta)
    else:
        u_new, q_new, steps = maximize(obj, u, cfg.m_step if cfg.m_step != "auto"
                                       else "lbfgs", knobs.m_steps, knobs.m_tol)
    accept = jnp.isfinite(q_new) & (q_new >= q_old)
    for x in jax.tree_util.tree_leaves(u_new):
        accept = accept & jnp.all(jnp.isfinite(x))
    u_out = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), u_new, u)
    return u_out, accept, steps


# ------------------------------------------------------------------------- init / step

def latent_order(spec, be):
    """The E-step's update order: continuous latents, then discrete ones."""
    if spec.order is not None:
        order = tuple(spec.order)
    else:
        order = cavi.default_order({n: be.y_infos[n] for n in be.y_names})
    if set(order) != set(be.y_names):
        raise ModelSpecError(f"order must list every latent once: {sorted(be.y_names)}")
    return order


class Steps(NamedTuple):
    """An EM problem's pure functions (see :func:`build`)."""

    start: Any
    step: Any
    exact: bool
    modes: bool


def build(spec, be, data, knobs) -> Steps:
    """``start(u0, key) -> (EMState, invalid_latent, form_mismatch, oracle values)`` (the
    first E-step at the initial parameters; the state's ELBO is NaN when it failed or
    when the factored form disagrees with the log joint there, see
    :func:`~vijax.inference.em_choice.oracle`) and ``step(state) -> (EMState, Info)`` (an
    M-step, then an E-step)."""
    exact = is_exact(be)
    modes = uses_modes(spec, be)
    order = latent_order(spec, be)
    dtype = jnp.zeros(()).dtype

    def start(u0, key):
        theta0 = spec.theta(u0)
        nat0 = mf.default_init(be.y_infos, key, dtype)
        fams = {n: mf.family_class(i) for n, i in be.y_infos.items()}
        mu0 = {n: fams[n].mean_params(nat0[n]) for n in nat0}
        check = (oracle(be, spec, theta0, data) if be.path == "factored"
                 else (jnp.zeros((), dtype), jnp.zeros((), dtype)))
        mismatch = ~agree(*check)
        nat, mu, e, bad = e_step(be, theta0, nat0, mu0, order, exact, knobs.tol,
                                 spec.e_step_iters)
        e = jnp.where(mismatch | (bad >= 0), jnp.nan, e)
        state = EMState(list(u0), nat, mu, e)
        return state, jnp.asarray(bad, jnp.int32), mismatch, check

    def step(state):
        u, accept, steps = m_step(spec, knobs, be, state.mu, state.u, modes)
        theta = spec.theta(u)
        nat, mu, e, bad = e_step(be, theta, state.natural, state.mu, order, exact,
                                 knobs.tol, spec.e_step_iters)
        ok = (bad < 0) & jnp.isfinite(state.elbo)
        extra = MStepInfo(accept, jnp.asarray(steps, jnp.int32), jnp.asarray(bad, jnp.int32))
        return EMState(u, nat, mu, e), Info(e, ok=ok, extra=extra)

    return Steps(start, step, exact, modes)


# ------------------------------------------------------------------------ the fit loop

def fit(spec, u0, key, data, knobs, max_iters, factored, length, progress):
    """One jitted EM fit: the first E-step, then :func:`vijax.run` over ``step``."""
    be = backend(spec, data, spec.theta(u0), factored)
    steps = build(spec, be, data, knobs)
    state0, bad0, mismatch, check = steps.start(u0, key)

    def step(carry):  # the EM step, plus the count of refused M-steps
        state, rejected = carry
        state, info = steps.step(state)
        return (state, rejected + (~info.extra.accepted).astype(jnp.int32)), info

    e0 = state0.elbo
    info0 = Info(e0, extra=MStepInfo(jnp.asarray(True), jnp.asarray(0, jnp.int32), bad0))
    # a failed start (or a form mismatch) runs no step
    n = jnp.where(jnp.isfinite(e0), max_iters, 0)
    run = driver.run(step, (state0, jnp.asarray(0, jnp.int32)), max_iters=n, length=length,
                     tol=knobs.tol, elbo0=e0, info0=info0, progress=progress)
    state, rejected = run.state
    posterior = {k: mf.factor(be.y_infos[k], state.natural[k], validate=False)
                 for k in state.natural}
    theta = spec.theta(state.u)
    reg = knobs.reg if knobs.reg is not None else [jnp.zeros((), e0.dtype)] * len(theta)
    degenerate = be.degeneracy(be.reduce(state.mu), theta, reg, count_floor(e0.dtype))
    invalid = jnp.where(bad0 >= 0, bad0, jnp.where(run.failed_at >= 0,
                                                   run.info.extra.invalid_latent, -1))
    trace = jnp.concatenate([e0[None], run.trace])
    return (state, run, trace, rejected, invalid, posterior, degenerate,
            jnp.asarray(steps.exact), jnp.asarray(steps.modes), check, mismatch)


fit_jit = _xla.jit(fit, static_argnames=("spec", "length", "progress"))
