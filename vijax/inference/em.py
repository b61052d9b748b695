"""Expectation-maximization (EM) and variational EM derived from the log joint.

The model has parameters ``theta`` (point estimates) and latents ``Y``:
``log_joint(params, latents, data) = log p(X, Y | theta)`` (add a log prior on theta
for MAP-EM). Each iteration (DESIGN section 1, "EM"):

- **E-step**: ``q(Y)`` from closed-form coordinate updates at ``theta_n`` (the updates of
  :mod:`vijax.inference.cavi`: ``eta_j = dF/dmu_j``). When no term of the log joint
  couples two latents, one sweep gives the exact conditional ``q(Y) = p(Y | X, theta_n)``
  and the ELBO equals ``log p(X | theta_n)`` (exact EM). Otherwise a mean-field CAVI
  inner loop runs (variational EM) and the ELBO is a lower bound.
- **M-step**: maximize ``Q(theta) = E_q[log p(X, Y | theta)] = F(mu; theta)``. In each
  parameter that enters the log joint like a conjugate latent, ``Q`` is
  ``<eta_i, T_i(theta_i)> + const`` with the same ``eta_i = dF/dT_i`` that CAVI computes,
  so its maximizer is the family's mode: the default ``m_step="auto"`` cycles these
  closed-form conditional maximizations (ECM). Otherwise optax L-BFGS (or any optax
  transformation run for a few steps: generalized EM) over an unconstrained
  parameterization of theta. The step is kept only if ``Q`` did not decrease; otherwise
  theta stays (the rejection is counted in the diagnostics).

So the trace (log-likelihood for exact EM, ELBO for variational EM) never decreases.

How ``F(mu; theta)`` is built: when every parameter enters the log joint the way a
conjugate latent would (``log pi``, ``tau``, ``log tau``, ``mu``, ``mu^2``, ``W W^T`` ...),
the parameters are compiled *as latents* once, ``Q(theta) = F(T(theta), mu_Y)`` at the
point statistics ``T(theta)``, and before each M-step every term is contracted over the
data and ``mu_Y`` (the expected sufficient statistics), so the optimizer's evaluations
cost nothing data-sized (the "factored" path). Otherwise the model is recompiled with
theta as data (``F`` is differentiable in theta through the compiler) and each evaluation
touches the data (the "direct" path); see :mod:`vijax.inference.em_forms`. Both give the
same numbers; ``diagnostics["path"]`` says which ran.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vijax import _compat
from vijax.conjugacy.compile import point_statistics
from vijax.errors import ConvergenceWarning, FitDivergedError, ModelSpecError
from vijax.inference import cavi
from vijax.inference import meanfield as mf
from vijax.inference.em_forms import _backend, _is_exact, factored_form
from vijax.model import check_data
from vijax.inference import checks
from vijax.supports import Support, real


class EMState(NamedTuple):
    """Carry of the EM loop: unconstrained parameters, natural parameters of q(Y)."""

    u: Any
    natural: dict
    mean: dict
    elbo: Any
    it: Any
    trace: Any
    converged: Any
    m_rejected: Any
    m_iters: Any
    max_decrease: Any
    invalid: Any


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
        diagnostics: ``path`` ("factored" or "direct"), ``m_step`` ("modes" or
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


# ----------------------------------------------------------------------------- config

@dataclasses.dataclass(frozen=True)
class _Config:
    """Static description of one EM problem (hashable: the jit cache key)."""

    log_joint: Callable
    supports: tuple
    param_supports: tuple
    param_treedef: Any
    m_step: Any
    order: Any
    force_direct: bool = False

    @property
    def latent_supports(self):
        return dict(self.supports)

    def theta(self, u):
        """Constrained parameter leaves from the unconstrained ones."""
        return [s.from_unconstrained(x) for s, x in zip(self.param_supports, u)]

    def unflatten(self, leaves):
        return jax.tree_util.tree_unflatten(self.param_treedef, list(leaves))


class _Knobs(NamedTuple):
    """Numeric settings, passed traced (changing them does not recompile)."""

    max_iters: Any
    tol: Any
    m_steps: Any
    m_tol: Any
    e_step_iters: Any
    reg_covar: Any = None  # one scalar per parameter leaf (see em's reg_covar)


def _param_support(sup, value, where):
    """The support of one parameter leaf, its shape taken from the value."""
    value = jnp.asarray(value)
    if isinstance(sup, str):
        k = value.shape[-1] if value.ndim and value.shape[-1] >= 2 else 2
        sup = Support(sup, (), k if sup == "simplex" else None)
    if not isinstance(sup, Support):
        raise ModelSpecError(f"param_supports{where} must be a vijax support such as "
                             f"vj.positive(), got {sup!r}")
    if sup.is_discrete:
        raise ModelSpecError(f"parameter{where} has a discrete support ({sup.kind}); EM "
                             "parameters are continuous point estimates. Make it a latent.")
    if sup.kind == "simplex":
        if value.ndim < 1 or value.shape[-1] < 2:
            raise ModelSpecError(f"parameter{where} is declared simplex but has shape "
                                 f"{value.shape}; the last axis must hold K >= 2 entries")
        declared = tuple(sup.shape) + (sup.num_categories,)
        if value.shape[-1] != sup.num_categories or (
                sup.shape and tuple(sup.shape) != value.shape[:-1]):
            raise ModelSpecError(
                f"params{where} has shape {value.shape} but its support {sup} has value "
                f"shape {declared}{' (or (..., K))' if not sup.shape else ''}; make the "
                "parameter and its declared support agree")
        return Support("simplex", value.shape[:-1], value.shape[-1])
    # a declared shape () means "the shape of the value"; any other must match it
    if sup.shape and tuple(sup.shape) != value.shape:
        raise ModelSpecError(f"params{where} has shape {value.shape} but its support "
                             f"{sup} declares shape {tuple(sup.shape)}; make them agree")
    return Support(sup.kind, value.shape)


def _flatten_params(params, param_supports):
    leaves_p, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not leaves_p:
        raise ModelSpecError("params is empty; EM needs at least one parameter array")
    if param_supports is None:
        sups = [real()] * len(leaves_p)
    else:
        is_sup = lambda x: isinstance(x, (Support, str))  # noqa: E731
        sups, sdef = jax.tree_util.tree_flatten(param_supports, is_leaf=is_sup)
        if sdef != treedef:
            raise ModelSpecError(
                "param_supports must have the structure of params with one support per "
                f"array (e.g. {{'weights': vj.simplex(K), 'precisions': vj.positive()}}); "
                f"params has {treedef}, param_supports has {sdef}")
    out_sups, values = [], []
    for (path, v), s in zip(leaves_p, sups):
        out_sups.append(_param_support(s, v, jax.tree_util.keystr(path)))
        values.append(jnp.asarray(v, jnp.result_type(v, float)))
    return out_sups, values, treedef


# ------------------------------------------------------- parameters used off their support

_INTERVAL = {"real": (-float("inf"), float("inf")), "positive": (0.0, float("inf")),
             "unit_interval": (0.0, 1.0), "simplex": (0.0, 1.0)}
# the primitives' domains: the argument must be >= this (log 0 = -inf is allowed: a
# simplex entry can be 0)
_DOMAIN_LO = {"log": 0.0, "log1p": -1.0, "sqrt": 0.0, "rsqrt": 0.0}
_VIEWS = ("gather", "dynamic_slice", "slice", "reshape", "broadcast_in_dim", "squeeze",
          "expand_dims", "transpose", "convert_element_type", "copy", "copy_p",
          "reduce_precision")


def _check_param_domains(cfg, leaves, data):
    """Refuse a parameter whose declared support (real by default) is wider than the
    domain of a function applied to it in the log joint: ``log w``, ``sqrt(tau)``,
    ``log(1 - p)`` of a view of the parameter (an index, slice, reshape, sign flip or
    shift by a constant). The M-step would move it where the log joint is undefined, or
    (``jnp.log(w)[z]`` with ``w`` real) where the likelihood grows without bound. Only
    what is provable is inferred: the support is never widened or narrowed silently; the
    user declares it."""
    ys = {n: jnp.asarray(s.canonical_point()) for n, s in cfg.supports}
    names = None

    def f(theta):
        return cfg.log_joint(cfg.unflatten(theta), ys, data)

    try:
        closed = jax.make_jaxpr(f)([jnp.asarray(v) for v in leaves])
    except Exception:  # noqa: BLE001 - the compiler reports tracing failures itself
        return
    jaxpr, _ = _compat.open_jaxpr(closed)
    env = {}
    for i, (v, sup) in enumerate(zip(jaxpr.invars, cfg.param_supports)):
        env[v] = (i, *_INTERVAL.get(sup.kind, (-float("inf"), float("inf"))))

    def const(a):
        if _compat.is_literal(a):
            val = jnp.asarray(_compat.literal_value(a))
            if val.size == 1:
                return float(val.reshape(()))
        return None

    def walk(jaxpr, env):
        for eqn in jaxpr.eqns:
            prim = eqn.primitive.name
            ins = [env.get(a) if not _compat.is_literal(a) else None for a in eqn.invars]
            if not any(x is not None for x in ins):
                continue
            if prim in _DOMAIN_LO and ins[0] is not None:
                i, lo, _ = ins[0]
                if lo < _DOMAIN_LO[prim]:
                    nonlocal names
                    if names is None:
                        from vijax.inference.em_forms import _param_names
                        names = _param_names(cfg)
                    src = _compat.source_line(eqn)
                    raise ModelSpecError(
                        f"{names[i]} is declared {cfg.param_supports[i].kind} (the default "
                        "when param_supports does not name it) but the log joint applies "
                        f"{prim} to it{' at ' + src if src else ''}, which is defined only "
                        f"for arguments >= {_DOMAIN_LO[prim]:g}: the M-step would leave "
                        "the domain or drift without bound. Declare its support in "
                        "param_supports (vj.simplex(K) for weights, vj.positive() for "
                        "precisions or scales, vj.unit_interval() for probabilities).")
            elif prim in _VIEWS and ins[0] is not None:
                for o in eqn.outvars:
                    env[o] = ins[0]
            elif prim == "neg":
                i, lo, hi = ins[0]
                env[eqn.outvars[0]] = (i, -hi, -lo)
            elif prim in ("add", "sub", "mul") and len(ins) == 2:
                k = 0 if ins[0] is not None else 1
                c = const(eqn.invars[1 - k])
                if ins[1 - k] is not None or c is None:
                    continue
                i, lo, hi = ins[k]
                if prim == "add":
                    env[eqn.outvars[0]] = (i, lo + c, hi + c)
                elif prim == "sub":
                    env[eqn.outvars[0]] = ((i, lo - c, hi - c) if k == 0
                                           else (i, c - hi, c - lo))
                elif c > 0:
                    env[eqn.outvars[0]] = (i, lo * c, hi * c)
            elif prim in ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call",
                          "custom_vjp_call", "remat", "checkpoint"):
                try:
                    sub, _ = _compat.sub_jaxpr(eqn)
                except KeyError:
                    continue
                inner = {sv: x for sv, x in zip(sub.invars, ins) if x is not None}
                walk(sub, inner)

    walk(jaxpr, env)


# ----------------------------------------------------------------------------- E-step# ----------------------------------------------------------------------------- E-step

def _families(be):
    return {n: mf.family_class(i) for n, i in be.y_infos.items()}


def _sweep(be, theta, natural, mu, order):
    """One pass of closed-form updates over ``order`` at fixed theta (the CAVI sweep on
    the form with theta's statistics); returns (natural, mu, ELBO, invalid) with invalid
    the position in ``supports`` of the first latent whose update left its family's
    domain (-1: none)."""
    natural, mu, e, bad = cavi.sweep(lambda m: be.form(theta, m), _families(be), natural,
                                     mu, order)
    names = list(be.cfg.latent_supports)
    pos = jnp.asarray([names.index(n) for n in order])
    return natural, mu, e, jnp.where(bad >= 0, pos[jnp.maximum(bad, 0)], -1)


def _e_step(be, theta, natural, mu, order, exact, knobs):
    natural, mu, e, bad = _sweep(be, theta, natural, mu, order)
    if exact:
        return natural, mu, e, bad

    def cond(c):
        _, _, e, prev, i, bad = c
        rel = jnp.abs(e - prev) / jnp.maximum(jnp.abs(e), 1.0)
        return (i < knobs.e_step_iters) & (rel >= knobs.tol) & (bad < 0)

    def body(c):
        nat, mu, e, _, i, bad = c
        nat2, mu2, e2, bad2 = _sweep(be, theta, nat, mu, order)
        return nat2, mu2, e2, e, i + 1, jnp.where(bad >= 0, bad, bad2)

    natural, mu, e, _, _, bad = jax.lax.while_loop(
        cond, body, (natural, mu, e, jnp.full_like(e, -jnp.inf), jnp.asarray(1), bad))
    return natural, mu, e, bad


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
    if isinstance(optimizer, str):
        if optimizer != "lbfgs":
            raise ModelSpecError(f"optimizer must be 'lbfgs' or an optax "
                                 f"GradientTransformation, got {optimizer!r}")
        opt = optax.lbfgs()
    else:
        opt = optax.with_extra_args_support(optimizer)

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


def _uses_modes(cfg, be):
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


def _m_step(cfg, knobs, be, mu, u, modes):
    """Generalized-EM safe M-step: maximize ``Q`` (closed-form conditional modes or an
    optax optimizer over the unconstrained parameters); keep the old parameters if ``Q``
    decreased. Returns ``(u, accepted, steps)``."""
    theta_ref = cfg.theta(u)
    reduced = be.reduce(mu)
    q_plain = be.Q(reduced, theta_ref)
    dt = jnp.result_type(*u, float)
    reg = (knobs.reg_covar if knobs.reg_covar is not None
           else [jnp.zeros((), dt)] * len(theta_ref))
    # the regularized Q (reg_covar on precisions, a count floor on weights) is what both
    # M-steps maximize, and what the acceptance test below compares
    penalty, shifts = be.regularization(reduced, theta_ref, reg, _count_floor(dt))

    def q(theta):
        return q_plain(theta) + penalty(theta)

    def obj(v):
        return q(cfg.theta(v))
    q_old = obj(u)  # 0 up to rounding: Q is measured from the current parameters
    if modes:
        tol = jnp.maximum(knobs.m_tol, jnp.sqrt(jnp.finfo(dt).eps))
        theta, steps = be.modes(reduced, theta_ref, knobs.m_steps, tol, shifts)
        u_new = [s.to_unconstrained(x) for s, x in zip(cfg.param_supports, theta)]
        q_new = q(theta)
    else:
        u_new, q_new, steps = maximize(obj, u, cfg.m_step if cfg.m_step != "auto"
                                       else "lbfgs", knobs.m_steps, knobs.m_tol)
    accept = jnp.isfinite(q_new) & (q_new >= q_old)
    for x in jax.tree_util.tree_leaves(u_new):
        accept = accept & jnp.all(jnp.isfinite(x))
    u_out = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), u_new, u)
    return u_out, accept, steps


# ------------------------------------------------------------------------------- loop

def _run(cfg, u0, key, data, knobs, trace_len, factored=None):
    theta0 = cfg.theta(u0)
    be = _backend(cfg, data, theta0, factored)
    exact = _is_exact(be)
    modes = _uses_modes(cfg, be)
    order = tuple(cfg.order) if cfg.order is not None else tuple(
        [n for n in be.y_names if not be.y_infos[n].support.is_discrete]
        + [n for n in be.y_names if be.y_infos[n].support.is_discrete])
    if set(order) != set(be.y_names):
        raise ModelSpecError(f"order must list every latent once: {sorted(be.y_names)}")
    dtype = jnp.zeros(()).dtype
    nat0 = mf.default_init(_YOnly(be), key, dtype)
    fams = _families(be)
    mu0 = {n: fams[n].mean_params(nat0[n]) for n in nat0}
    # oracle at the start: F(T(theta0), T(y)) must equal log p(x, y | theta0) at a point y
    # (a parameter-dependent branch resolved at the support's canonical point would not)
    y0 = {n: be.y_infos[n].support.canonical_point() for n in be.y_names}
    compiled, stats = be.form(theta0, {n: point_statistics(be.y_infos[n], y0[n])
                                       for n in be.y_names})
    check = (compiled.F(stats), cfg.log_joint(cfg.unflatten(theta0), y0, data))
    nat, mu, e, bad = _e_step(be, theta0, nat0, mu0, order, exact, knobs)
    state = EMState(u0, nat, mu, e, jnp.asarray(0), jnp.full((trace_len,), e),
                    jnp.asarray(False), jnp.asarray(0), jnp.asarray(0),
                    jnp.zeros((), e.dtype), bad)

    def cond(s):
        return ((s.it < knobs.max_iters) & ~s.converged & (s.invalid < 0)
                & jnp.isfinite(s.elbo))

    def body(s):
        u, accept, steps = _m_step(cfg, knobs, be, s.mean, s.u, modes)
        nat, mu, e, bad = _e_step(be, cfg.theta(u), s.natural, s.mean, order, exact, knobs)
        rel = jnp.abs(e - s.elbo) / jnp.maximum(jnp.abs(e), 1.0)
        drop = jnp.where(jnp.isfinite(e), s.elbo - e, 0.0)
        it = s.it + 1
        return EMState(u, nat, mu, e, it, s.trace.at[it].set(e), rel < knobs.tol,
                       s.m_rejected + (~accept).astype(jnp.int32), steps,
                       jnp.maximum(s.max_decrease, drop), bad)

    state = jax.lax.while_loop(cond, body, state)
    trace = jnp.where(jnp.arange(trace_len) <= state.it, state.trace, state.elbo)
    posterior = {n: mf.factor(be.y_infos[n], state.natural[n], validate=False)
                 for n in state.natural}
    # degenerate components at the fit, from the statistics of the final E-step
    theta = cfg.theta(state.u)
    reg = (knobs.reg_covar if knobs.reg_covar is not None
           else [jnp.zeros((), e.dtype)] * len(theta))
    degenerate = be.degeneracy(be.reduce(state.mean), theta, reg, _count_floor(e.dtype))
    return (state._replace(trace=trace), posterior, jnp.asarray(exact),
            jnp.asarray(_PATHS.index(be.path)), jnp.asarray(modes), check, degenerate)


def _count_floor(dtype):
    """Pseudo-count added to every entry of a simplex (or unit-interval) parameter in the
    M-step: ``10 eps`` of the dtype, as scikit-learn adds to a component's count."""
    return 10 * jnp.finfo(dtype).eps


class _YOnly:
    """View of a backend with only the latents Y (for the default initialization)."""

    def __init__(self, be):
        self.infos = be.y_infos


_PATHS = ("factored", "direct")


class _Label(str):
    """A string in a result pytree that is structure, not data (no leaves), so that a
    result can be returned from ``jax.vmap``/``jit`` (restarts of :meth:`PreparedEM.run`)."""


jax.tree_util.register_pytree_node(_Label, lambda s: ((), str(s)), lambda aux, _: _Label(aux))
_run_jit = jax.jit(_run, static_argnames=("cfg", "trace_len"))


def em(log_joint, params, supports, data, *, param_supports=None, key=None, max_iters=200,
       tol=1e-8, m_step="auto", m_steps=100, m_tol=1e-10, e_step_iters=50,
       order=None, reg_covar=1e-6, strict=False) -> EMResult:
    """EM for point-estimated parameters and latent variables (variational EM when the
    E-step is not exact).

    Args:
        log_joint: ``log_joint(params, latents, data) -> scalar``: ``log p(X, Y | theta)``
            (plus ``log p(theta)`` for MAP-EM). ``params`` has the structure of
            ``params`` below, ``latents`` is a dict like in :class:`vijax.Model`.
        params: initial parameters, a pytree of float arrays.
        supports: latent name -> support (``vj.categorical(K, shape=(N,))``, ...). Every
            latent must be conjugate given the parameters.
        data: the data pytree.
        param_supports: optional pytree of the structure of ``params`` whose leaves are
            supports (``vj.real()``, ``vj.positive()``, ``vj.simplex(K)``,
            ``vj.unit_interval()``; shapes are taken from the parameter values). The M-step
            optimizes ``u = to_unconstrained(theta)`` (log, additive log-ratio, logit), so
            constrained parameters such as weights or precisions stay valid. Default: every
            parameter is real (parameterize it unconstrained yourself, e.g. ``exp(log_tau)``).
        key: PRNG key for the initial q(Y) (matters for variational EM only).
        max_iters: at most this many EM iterations (M-steps).
        tol: stop when ``|L_t - L_{t-1}| / max(|L_t|, 1) < tol``; also the inner CAVI
            tolerance of variational E-steps.
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
            expected count). A number, or a pytree with the structure of ``params`` (one
            number per parameter; 0 turns it off). A Gamma-form parameter that is not a
            precision (a Poisson rate) is shrunk likewise: give it 0. Applies on the
            factored path only (``diagnostics["path"]``). Independently, every entry of
            a simplex or unit-interval parameter gets a pseudo-count of ``10 eps`` (as
            scikit-learn adds to each component's count), so an empty mixture component
            gets a weight near 0 and the others are fitted as usual. The log-likelihood
            trace is then nondecreasing up to an ``O(reg_covar)`` effect.
        strict: raise :class:`FitDivergedError` if the trace decreased beyond rounding,
            or instead of the degeneracy warnings below.

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
        >>> def lj(p, z, x):
        ...     return jnp.sum(jnp.log(0.5) + stats.norm.logpdf(x, p["m"][z["c"]], 1.0))
        >>> fit = em(lj, {"m": jnp.array([-1.0, 1.0])}, {"c": vj.categorical(2, shape=(10,))}, x)
        >>> [round(float(v), 4) for v in fit.params["m"]]
        [-5.0, 5.0]
    """
    return prepare(log_joint, params, supports, data, param_supports=param_supports,
                   m_step=m_step, order=order).run(
        params, key=key, max_iters=max_iters, tol=tol, m_steps=m_steps, m_tol=m_tol,
        e_step_iters=e_step_iters, reg_covar=reg_covar, strict=strict)


class PreparedEM:
    """A model and data analysed once for :func:`em`; :meth:`run` fits from any start
    without analysing again (restarts, benchmarks). Built by :func:`prepare`."""

    def __init__(self, cfg, data, factored, param_treedef):
        self._cfg, self._data, self._factored = cfg, data, factored
        self._treedef = param_treedef

    def run(self, params, *, key=None, max_iters=200, tol=1e-8, m_steps=100, m_tol=1e-10,
            e_step_iters=50, reg_covar=1e-6, strict=False) -> EMResult:
        """EM from the initial ``params`` (same structure as at :func:`prepare`); the
        keyword arguments mean what they mean in :func:`em`."""
        cfg, data = self._cfg, self._data
        leaves, treedef = jax.tree_util.tree_flatten(params)
        if treedef != self._treedef:
            raise ModelSpecError(f"params must have the structure {self._treedef} given to "
                                 f"prepare, got {treedef}")
        checks.check_em_run_args(key, max_iters, tol)
        if max_iters < 0 or m_steps < 1 or e_step_iters < 1:
            raise ModelSpecError("max_iters must be >= 0, m_steps and e_step_iters >= 1")
        dtype = jnp.zeros(()).dtype
        u0 = []
        for sup, v in zip(cfg.param_supports, leaves):
            v = jnp.asarray(v, jnp.result_type(v, float))
            if tuple(v.shape) != tuple(sup.value_shape):
                raise ModelSpecError(f"a parameter has shape {v.shape}, expected that of "
                                     f"its support {sup}")
            ok = sup.contains(v)
            if not _compat.is_tracer(ok) and not bool(jnp.all(ok)):
                raise ModelSpecError(f"an initial parameter is outside its support {sup}")
            u0.append(sup.to_unconstrained(v))
        reg = _reg_leaves(reg_covar, treedef, dtype)
        knobs = _Knobs(jnp.asarray(max_iters, jnp.int32), jnp.asarray(tol, dtype),
                       jnp.asarray(m_steps, jnp.int32), jnp.asarray(m_tol, dtype),
                       jnp.asarray(e_step_iters, jnp.int32), reg)
        # the trace buffer is rounded up to a power of two so that nearby max_iters share
        # one compilation; it is cut to max_iters + 1 below
        trace_len = max(8, 1 << int(max_iters).bit_length())
        key = jax.random.key(0) if key is None else key
        state, posterior, exact, path, modes, check, degen = _run_jit(
            cfg, u0, key, data, knobs, trace_len, self._factored)
        traced = any(_compat.is_tracer(c) for c in check)
        if not traced and not _compat.is_tracer(path) and _PATHS[int(path)] == "factored" \
                and _disagree(*check):
            # the parameters' compiled form differs from the log joint at theta0 (a branch
            # on a parameter): recompile with the parameters as data, which is always exact
            cfg = dataclasses.replace(cfg, force_direct=True)
            self._cfg, self._factored = cfg, None
            state, posterior, exact, path, modes, check, degen = _run_jit(
                cfg, u0, key, data, knobs, trace_len, None)
        mismatch = jnp.asarray(False)
        if traced and not _compat.is_tracer(path) and _PATHS[int(path)] == "factored":
            # under jit/vmap the start-point oracle cannot pick the direct path in
            # Python: a lane whose compiled form disagrees with the log joint returns a
            # NaN ELBO and diagnostics["form_mismatch"], never a plausible wrong fit
            mismatch = ~_agree_traced(*check)
            state = state._replace(elbo=jnp.where(mismatch, jnp.nan, state.elbo),
                                   converged=state.converged & ~mismatch)
        state = state._replace(trace=state.trace[:int(max_iters) + 1])
        diag = {"path": _Label(_PATHS[int(path)]) if not _compat.is_tracer(path) else path,
                "m_step": (_Label("modes" if bool(modes) else "optimizer")
                           if not _compat.is_tracer(modes) else modes),
                "m_rejected": state.m_rejected, "m_iters": state.m_iters,
                "max_decrease": state.max_decrease, "invalid": state.invalid >= 0,
                "invalid_latent": state.invalid, "form_mismatch": mismatch,
                **{k: cfg.unflatten(v) for k, v in degen.items()}}
        any_degenerate = jnp.asarray(False)
        for v in degen.values():
            for m in v:
                any_degenerate = any_degenerate | jnp.any(m)
        diag["degenerate"] = any_degenerate
        params_out = cfg.unflatten(cfg.theta(state.u))
        result = EMResult(params_out, posterior, state.elbo, state.trace, state.it,
                          state.converged, exact, diag, state.natural)
        if not _compat.is_tracer(state.elbo):
            _raise_if_failed(result, strict, list(cfg.latent_supports))
            _report_degenerate(cfg, degen, reg, strict, result)
        return result


def prepare(log_joint, params, supports, data, *, param_supports=None, m_step="auto",
            order=None) -> PreparedEM:
    """Analyse the model once for repeated :func:`em` fits (arguments as in :func:`em`;
    ``params`` gives the parameters' structure and shapes).

    Example:
        >>> import jax.numpy as jnp
        >>> from jax.scipy import stats
        >>> import vijax as vj
        >>> x = jnp.concatenate([jnp.full(5, -5.0), jnp.full(5, 5.0)])
        >>> def lj(p, z, x):
        ...     return jnp.sum(jnp.log(0.5) + stats.norm.logpdf(x, p["m"][z["c"]], 1.0))
        >>> prep = prepare(lj, {"m": jnp.zeros(2)}, {"c": vj.categorical(2, shape=(10,))}, x)
        >>> fits = [prep.run({"m": jnp.array(m0)}) for m0 in ([-1.0, 1.0], [1.0, -1.0])]
        >>> [round(float(f.params["m"][0]), 4) for f in fits]
        [-5.0, 5.0]
    """
    check_data(data)
    sups, _, treedef = _flatten_params(params, param_supports)
    if not isinstance(supports, dict) or not supports:
        raise ModelSpecError("supports must be a non-empty dict: latent name -> support")
    if not (m_step in ("auto", "modes", "lbfgs")
            or isinstance(m_step, optax.GradientTransformation)):
        raise ModelSpecError("m_step must be 'auto', 'modes', 'lbfgs' or an optax "
                             f"GradientTransformation, got {m_step!r}")
    order = None if order is None else checks.check_order(order, supports)
    cfg = _Config(log_joint, tuple(supports.items()), tuple(sups), treedef, m_step,
                  None if order is None else tuple(order))
    _check_param_domains(cfg, jax.tree_util.tree_leaves(params), data)
    factored = factored_form(cfg, data)  # shapes only: cached, also under jit/vmap
    if factored is not None:  # constants on the device once, not at every run
        factored = jax.tree_util.tree_map(jnp.asarray, factored)
    return PreparedEM(cfg, data, factored, treedef)


def _disagree(f_val, lj_val):
    f_val, lj_val = float(f_val), float(lj_val)
    tol = 10 * float(jnp.sqrt(jnp.finfo(jnp.zeros(()).dtype).eps)) * max(1.0, abs(lj_val))
    return not abs(f_val - lj_val) <= tol


def _agree_traced(f_val, lj_val):
    """:func:`_disagree`'s test on traced values (True where the forms agree)."""
    tol = 10 * jnp.sqrt(jnp.finfo(jnp.result_type(lj_val, float)).eps) * jnp.maximum(
        1.0, jnp.abs(lj_val))
    return jnp.abs(f_val - lj_val) <= tol


def _reg_leaves(reg_covar, treedef, dtype):
    """``reg_covar`` (a number, or a pytree of numbers with the structure of params) as
    one scalar per parameter leaf."""
    if isinstance(reg_covar, (int, float)) or (hasattr(reg_covar, "shape")
                                               and jnp.ndim(reg_covar) == 0):
        leaves = [reg_covar] * treedef.num_leaves
    else:
        leaves, rdef = jax.tree_util.tree_flatten(reg_covar)
        if rdef != treedef:
            raise ModelSpecError("reg_covar must be a number or a pytree with the structure "
                                 f"of params ({treedef}), got {rdef}")
    out = []
    for r in leaves:
        r = jnp.asarray(r, dtype)
        if r.ndim != 0:
            raise ModelSpecError(f"reg_covar entries must be scalars, got shape {r.shape}")
        if not _compat.is_tracer(r) and not (bool(jnp.isfinite(r)) and float(r) >= 0):
            raise ModelSpecError(f"reg_covar must be finite and >= 0, got {float(r)}")
        out.append(r)
    return out


def _report_degenerate(cfg, degen, reg, strict, result):
    """Errors for degeneracies no regularization repairs, warnings (or errors when
    ``strict``) for the repaired ones, each naming the parameter and the elements."""
    import numpy as np

    from vijax.inference.em_forms import _param_names
    names = _param_names(cfg)

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


def _raise_if_failed(result, strict, names):
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


__all__ = ["em", "prepare", "PreparedEM", "EMResult", "EMState", "maximize"]
