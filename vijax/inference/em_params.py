"""EM's parameters: their declaration (two equivalent forms), supports and domains.

An EM problem is one frozen :class:`Spec` (hashable: the jit cache key). It is built from
either form of :func:`vijax.em`:

- **the model form**: a :class:`vijax.Model` whose supports declare every latent *and*
  every parameter, ``log_joint(values, data)`` taking them all in one dict, and
  ``params=("mu", "pi")`` naming the point-estimated entries (:func:`from_model`);
- **the three-argument form** ``log_joint(params, latents, data)`` with a parameter
  pytree and ``param_supports`` (:func:`from_log_joint`).

Internally both are the three-argument form over a flat list of parameter arrays; the
model form's log joint is wrapped by :class:`_Joined`, a hashable adapter (so a second
fit of the same model hits the compile caches).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from vijax import _compat
from vijax.conjugacy.walker import CALL_PRIMITIVES
from vijax.errors import ModelSpecError
from vijax.model import Model
from vijax.supports import Support, real


@dataclasses.dataclass(frozen=True)
class Spec:
    """Static description of one EM problem (hashable: the jit cache key).

    ``log_joint(params, latents, data)`` with ``params`` of structure ``param_treedef``;
    ``param_names[i]`` names leaf ``i`` in messages and in the factored form."""

    log_joint: Callable
    supports: tuple  # ((latent, support), ...)
    param_supports: tuple
    param_treedef: Any
    param_names: tuple
    m_step: Any
    order: Any
    e_step_iters: int = 50
    force_direct: bool = False

    @property
    def latent_supports(self):
        return dict(self.supports)

    def theta(self, u):
        """Constrained parameter leaves from the unconstrained ones."""
        return [s.from_unconstrained(x) for s, x in zip(self.param_supports, u)]

    def unconstrained(self, theta):
        return [s.to_unconstrained(x) for s, x in zip(self.param_supports, theta)]

    def unflatten(self, leaves):
        return jax.tree_util.tree_unflatten(self.param_treedef, list(leaves))


@dataclasses.dataclass(frozen=True)
class _Joined:
    """The model form's ``log_joint(values, data)`` as ``(params, latents, data)``."""

    log_joint: Callable

    def __call__(self, params, latents, data):
        return self.log_joint({**params, **latents}, data)


def from_model(model, params, *, m_step, order, e_step_iters):
    """The :class:`Spec` of the model form; shapes are the declared supports'."""
    if not isinstance(model, Model):
        raise ModelSpecError(f"model must be a vj.Model, got {type(model).__name__}")
    if isinstance(params, str) or not params:
        raise ModelSpecError("params must name the point-estimated entries of the model's "
                             "supports, e.g. params=('weights', 'means'); got "
                             f"{params!r}")
    names = tuple(params)
    missing = [n for n in names if n not in model.supports]
    if missing or len(set(names)) != len(names):
        raise ModelSpecError(f"params {list(names)} must name distinct entries of the "
                             f"model's supports {sorted(model.supports)}; "
                             + (f"{missing} are not declared" if missing else "duplicated"))
    latents = {n: s for n, s in model.supports.items() if n not in names}
    if not latents:
        raise ModelSpecError("every entry of the model is a parameter: EM needs at least "
                             "one latent (use vj.laplace for a mode)")
    shapes = {n: jnp.zeros(model.supports[n].value_shape) for n in names}
    sups = [param_support(model.supports[n], shapes[n], f" '{n}'") for n in names]
    treedef = jax.tree_util.tree_structure({n: 0 for n in names})
    leaf_names = tuple(sorted(names))  # the order of a dict's leaves
    sups = [sups[names.index(n)] for n in leaf_names]
    return Spec(_Joined(model.log_joint), tuple(latents.items()), tuple(sups), treedef,
                leaf_names, m_step, order, int(e_step_iters))


def from_log_joint(log_joint, params, supports, param_supports, *, m_step, order,
                   e_step_iters):
    """The :class:`Spec` of the three-argument form; shapes are the values'."""
    if not callable(log_joint):
        raise ModelSpecError("vj.em takes a vj.Model (vj.em(model, data, params=..., "
                             "init=...)) or a log joint log_joint(params, latents, data); "
                             f"got {type(log_joint).__name__}")
    if not isinstance(supports, dict) or not supports:
        raise ModelSpecError("supports must be a non-empty dict: latent name -> support")
    sups, _, treedef, names = flatten_params(params, param_supports)
    return Spec(log_joint, tuple(supports.items()), tuple(sups), treedef, tuple(names),
                m_step, order, int(e_step_iters))


def param_support(sup, value, where):
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


def flatten_params(params, param_supports):
    """``(supports, values, treedef, names)`` of a parameter pytree's leaves."""
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
    out_sups, values, names = [], [], []
    for (path, v), s in zip(leaves_p, sups):
        where = jax.tree_util.keystr(path)
        out_sups.append(param_support(s, v, where))
        values.append(jnp.asarray(v, jnp.result_type(v, float)))
        names.append(f"params{where}")
    return out_sups, values, treedef, names


def start(spec, params):
    """The unconstrained leaves of initial parameters, checked against their supports."""
    if isinstance(spec.log_joint, _Joined) and (
            not isinstance(params, dict) or set(params) != set(spec.param_names)):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ModelSpecError(f"init must give a starting value for each parameter "
                             f"{sorted(spec.param_names)} (a dict by name), got {got}")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if treedef != spec.param_treedef:
        raise ModelSpecError(f"params must have the structure {spec.param_treedef} given "
                             f"to prepare, got {treedef}")
    u0 = []
    for name, sup, v in zip(spec.param_names, spec.param_supports, leaves):
        v = jnp.asarray(v, jnp.result_type(v, float))
        if tuple(v.shape) != tuple(sup.value_shape):
            raise ModelSpecError(f"{name} has shape {v.shape}, expected that of its "
                                 f"support {sup}")
        ok = sup.contains(v)
        if not _compat.is_tracer(ok) and not bool(jnp.all(ok)):
            raise ModelSpecError(f"the initial {name} is outside its support {sup}")
        u0.append(sup.to_unconstrained(v))
    return u0


def reg_leaves(reg_covar, treedef, dtype):
    """``reg_covar`` (a number, or a pytree with the structure of params) as one scalar
    per parameter leaf."""
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


def count_floor(dtype):
    """Pseudo-count added to every entry of a simplex (or unit-interval) parameter in the
    M-step: ``10 eps`` of the dtype, as scikit-learn adds to a component's count."""
    return 10 * jnp.finfo(dtype).eps


# ------------------------------------------------------- parameters used off their support

# the primitives' domains: the argument must be >= this (log 0 = -inf is allowed: a
# simplex entry can be 0)
_DOMAIN_LO = {"log": 0.0, "log1p": -1.0, "sqrt": 0.0, "rsqrt": 0.0}
_VIEWS = ("gather", "dynamic_slice", "slice", "reshape", "broadcast_in_dim", "squeeze",
          "expand_dims", "transpose", "convert_element_type", "copy", "copy_p",
          "reduce_precision")


def check_domains(cfg, leaves, data):
    """Refuse a parameter whose declared support (real by default) is wider than the
    domain of a function applied to it in the log joint: ``log w``, ``sqrt(tau)``,
    ``log(1 - p)`` of a view of the parameter (an index, slice, reshape, sign flip or
    shift by a constant). The M-step would move it where the log joint is undefined, or
    (``jnp.log(w)[z]`` with ``w`` real) where the likelihood grows without bound. Only
    what is provable is inferred: the support is never widened or narrowed silently; the
    user declares it."""
    ys = {n: jnp.asarray(s.canonical_point()) for n, s in cfg.supports}

    def f(theta):
        return cfg.log_joint(cfg.unflatten(theta), ys, data)

    try:
        closed = jax.make_jaxpr(f)([jnp.asarray(v) for v in leaves])
    except Exception:  # noqa: BLE001 - the compiler reports tracing failures itself
        return
    jaxpr, _ = _compat.open_jaxpr(closed)
    env = {}
    for i, (v, sup) in enumerate(zip(jaxpr.invars, cfg.param_supports)):
        env[v] = (i, *sup.interval[:2])

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
                    src = _compat.source_line(eqn)
                    raise ModelSpecError(
                        f"{cfg.param_names[i]} is declared {cfg.param_supports[i].kind} "
                        "(the default when param_supports does not name it) but the log "
                        f"joint applies {prim} to it{' at ' + src if src else ''}, which is "
                        f"defined only for arguments >= {_DOMAIN_LO[prim]:g}: the M-step "
                        "would leave the domain or drift without bound. Declare its "
                        "support (in param_supports, or in the vj.Model's supports): "
                        "vj.simplex(K) for weights, vj.positive() for precisions or "
                        "scales, vj.unit_interval() for probabilities.")
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
            elif prim in CALL_PRIMITIVES:
                try:
                    sub, _ = _compat.sub_jaxpr(eqn)
                except KeyError:
                    continue
                inner = {sv: x for sv, x in zip(sub.invars, ins) if x is not None}
                walk(sub, inner)

    walk(jaxpr, env)
