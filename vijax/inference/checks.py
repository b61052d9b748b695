"""Checks at the public entry points: fit options, data, and the log joint on the data.

Each check raises a named vijax error that says which argument (or data leaf, or
density) is wrong and what is allowed, before any fitting starts; the log joint on the
data is checked when a fit fails (:func:`explained_by_data`), where it names the cause. Checks that need
values skip traced arguments (under ``jit``/``vmap`` the fit reports failures through
its result instead).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _compat
from vijax.errors import (ArgumentTypeError, DataError, FitDivergedError,
                          InvalidParameterError, ModelSpecError, NonConjugateError)
from vijax.model import check_data


# ------------------------------------------------------------------ fit options
def check_positive_int(name, value, minimum=1):
    """``value`` is an int >= ``minimum`` (bools and floats refused); returns it as int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an integer >= {minimum}, got "
                                f"{type(value).__name__} {value!r}")
    if value < minimum:
        raise ModelSpecError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_tol(name, value):
    """``value`` is a finite real number >= 0 (a traced value is accepted as is)."""
    if _compat.is_tracer(value):
        return value
    if isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be a finite number >= 0, got bool {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"{name} must be a finite number >= 0, got "
                                f"{type(value).__name__} {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ModelSpecError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_key(key, name="key"):
    """A typed key (``jax.random.key``) or a legacy raw key (``jax.random.PRNGKey``:
    a uint32 vector); under ``vmap`` one lane's key."""
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dtype is not None and shape is not None:
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            if len(shape) == 0:
                return key
            raise ModelSpecError(f"{name} must be a single PRNG key, got a key array of "
                                 f"shape {tuple(shape)}; pass one key (vmap over a batch)")
        if np.dtype(dtype) == np.uint32 and len(shape) == 1:
            return key
    raise ArgumentTypeError(
        f"{name} must be a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)), got "
        f"{type(key).__name__}" + (f" of dtype {dtype} and shape {tuple(shape)}"
                                   if dtype is not None and shape is not None else f" {key!r}"))


def check_optimizer(optimizer, name="optimizer", allowed_strings=()):
    """An ``optax.GradientTransformation`` (or one of ``allowed_strings``)."""
    import optax
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if isinstance(optimizer, str) and optimizer in allowed_strings:
        return optimizer
    also = "".join(f" or {s!r}" for s in allowed_strings)
    hint = (f" (e.g. optax.{optimizer}(1e-2))"
            if isinstance(optimizer, str) and hasattr(optax, optimizer) else "")
    raise ArgumentTypeError(f"{name} must be an optax.GradientTransformation{also}, got "
                            f"{type(optimizer).__name__} {optimizer!r}{hint}")


def check_order(order, latents):
    """``order`` lists every latent of ``latents`` exactly once; returns it as a tuple."""
    latents = list(latents)
    if isinstance(order, str):
        raise ArgumentTypeError(f"order must be a sequence of latent names, got the string "
                                f"{order!r}; e.g. order=({order!r},)")
    try:
        order = tuple(order)
    except TypeError:
        raise ArgumentTypeError(f"order must be a sequence of latent names, got "
                                f"{type(order).__name__}") from None
    dup = sorted({n for n in order if order.count(n) > 1}, key=str)
    unknown = [n for n in order if n not in latents]
    missing = [n for n in latents if n not in order]
    if dup or unknown or missing:
        parts = ([f"duplicated {dup}"] if dup else []) + \
                ([f"unknown {unknown}"] if unknown else []) + \
                ([f"missing {missing}"] if missing else [])
        raise ModelSpecError(f"order must list every latent exactly once ({', '.join(parts)}); "
                             f"the latents are {latents}")
    return order


# ------------------------------------------------------------------------ data
class _Tagged(dict):
    """A dict that marks the ``KeyError`` it raises with where the dict came from."""

    def __init__(self, items, where):
        super().__init__(items)
        self.where = where

    def __missing__(self, key):
        err = KeyError(key)
        err.vijax_where = self.where
        err.vijax_keys = sorted(map(str, self.keys()))
        raise err


def _tag(tree, where):
    if isinstance(tree, dict) and not isinstance(tree, _Tagged):
        return _Tagged({k: _tag(v, f"{where}[{k!r}]") for k, v in tree.items()}, where)
    return tree


def _scalar(leaf):
    return isinstance(leaf, numbers.Number) or tuple(getattr(leaf, "shape", (1,))) == ()


def _number_lists(data, path="data"):
    """Paths of lists/tuples whose leaves are all scalars (Python numbers, or their
    abstract values when the compiler traces with shapes only)."""
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _number_lists(v, f"{path}[{k!r}]")]
    if isinstance(data, (list, tuple)) and data:
        leaves = jax.tree_util.tree_leaves(data)
        if leaves and all(_scalar(l) for l in leaves):
            return [path]
        return [p for i, v in enumerate(data) for p in _number_lists(v, f"{path}[{i}]")]
    return []


def raise_data_error(model, data, exc):
    """Raise a :class:`DataError` (from ``exc``) when tracing the log joint failed because
    of the data; return otherwise (the caller reports ``exc``)."""
    err = trace_failure(model, data, exc)
    if err is not None:
        raise err from exc


def trace_failure(model, data, exc):
    """A data error explaining why tracing the log joint failed, or None.

    Called by the compiler when ``make_jaxpr(log_joint)`` raises: a ``KeyError`` from
    a data dict is a missing data key (not an undeclared latent), and a failure with
    Python lists in the data is about the data.
    """
    if isinstance(exc, KeyError) and isinstance(data, dict):
        example = {n: s.canonical_point() for n, s in model.supports.items()}
        try:
            jax.eval_shape(lambda z, d: model.log_joint(_tag(z, "latents"), _tag(d, "data")),
                           example, data)
        except KeyError as e:
            where = getattr(e, "vijax_where", None)
            key = e.args[0] if e.args else None
            if where is not None and where != "latents":
                have = getattr(e, "vijax_keys", [])
                return DataError(f"the log joint reads {where}[{key!r}], but the data have no "
                                 f"key {key!r} (keys: {have}); add it to the data dict")
        except Exception:  # noqa: BLE001 - the caller reports the original failure
            return None
    lists = _number_lists(data)
    if lists:
        return DataError(f"{lists[0]} is a Python list of numbers; pass arrays as data, e.g. "
                         "jnp.asarray(...) (tracing the log joint failed with "
                         f"{type(exc).__name__}: {exc})")
    return None


# ------------------------------------------------- the log joint on the data
def _support_points(supports):
    """Four points of every latent's support, stacked on a leading axis
    (:meth:`~vijax.supports.Support.probe_points`)."""
    return {n: s.probe_points() for n, s in supports.items()}


_JITTED = weakref.WeakKeyDictionary()


def _batched(log_joint):
    """``log_joint`` vmapped over latent points (data shared), jitted once per function."""
    try:
        return _JITTED[log_joint]
    except (KeyError, TypeError):
        fn = jax.jit(jax.vmap(log_joint, in_axes=(0, None)))
        try:
            _JITTED[log_joint] = fn
        except TypeError:  # not weakly referenceable (e.g. a builtin): jit per call
            pass
        return fn


def _concrete(data):
    return not any(_compat.is_tracer(l) for l in jax.tree_util.tree_leaves(data))


def check_log_joint_on_data(model, data):
    """Raise a named error when the log joint is not finite anywhere on the supports.

    The log joint is evaluated at four points of every latent's support. If it is finite
    at one of them, nothing is reported. Otherwise a data leaf whose values lie outside a
    density's support is looked for (:class:`DataError` naming the leaf, its bad values,
    the density and the line); failing that, the first operation that turns finite
    inputs into a non-finite value is reported with its density and line
    (:class:`InvalidParameterError`: e.g. a Gamma shape of 0 or a negative rate).
    Skipped when the data are traced.
    """
    if not _concrete(data):
        return
    check_data(data)  # NaN/Inf first: they have their own message
    pts = _support_points(model.supports)
    try:
        vals = np.asarray(_batched(model.log_joint)(pts, data))
    except Exception:  # noqa: BLE001 - the compiler reports tracing failures itself
        return
    if np.any(np.isfinite(vals)):
        return
    z0 = {n: v[0] for n, v in pts.items()}
    density, line = _first_nonfinite(model.log_joint, z0, data)
    where = " (" + " at ".join(p for p in (density, line) if p) + ")"
    where = "" if where == " ()" else where
    leaf = _culprit_leaf(model.log_joint, z0, data)
    if leaf is not None:
        path, bad = leaf
        raise DataError(f"{path} has values outside the support of the density that "
                        f"reads it{where}: e.g. {bad}. The log joint is {vals[0]} at every "
                        "latent value; fix or remove those observations")
    raise InvalidParameterError(
        f"the log joint is {vals[0]} at every latent value tried, and no data leaf is the "
        f"cause: a density's parameter is outside its valid range{where} (e.g. a Gamma shape "
        "or rate <= 0, a negative scale or concentration). Fix the hyper-parameters")


def _culprit_leaf(log_joint, z0, data):
    """(pytree path, a few bad values) of the first data leaf that, filled with one of its
    own values, makes the log joint finite; None if no leaf does."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(data)
    for i, (path, leaf) in enumerate(leaves):
        arr = np.asarray(leaf)
        if arr.size == 0 or arr.dtype.kind not in "biuf":
            continue
        cands = np.unique(arr.ravel())
        if cands.size > 64:  # the extremes and a spread of the middle
            cands = np.unique(np.concatenate([cands[:16], cands[-16:], cands[::cands.size // 32]]))

        def at(v, i=i, arr=arr):
            new = [l for _, l in leaves]
            new[i] = jnp.full(arr.shape, v, arr.dtype)
            return log_joint(z0, jax.tree_util.tree_unflatten(treedef, new))
        ok = np.isfinite(np.asarray(jax.jit(jax.vmap(at))(jnp.asarray(cands, arr.dtype))))
        if ok.any() and not ok.all():
            bad = cands[~ok][:5].tolist()
            return "data" + jax.tree_util.keystr(path), bad
    return None


def _first_nonfinite(log_joint, z0, data):
    """(density, user's file:line) of the operation where the log joint's non-finite value
    arises, entering nested calls; (None, None) if it cannot be located."""
    try:
        closed, _ = _compat.make_jaxpr(log_joint, z0, data)
        jaxpr, consts = _compat.open_jaxpr(closed)
        args = jax.tree_util.tree_leaves((z0, data))
        with jax.ensure_compile_time_eval():
            return _origin(jaxpr, consts, args)
    except Exception:  # noqa: BLE001 - a locator: best effort, the caller still raises
        return None, None


def _finite(x):
    a = np.asarray(x)
    return a.dtype.kind not in "fc" or bool(np.all(np.isfinite(a)))


def _origin(jaxpr, consts, args):
    """Evaluate ``jaxpr``, then follow non-finite values back from its output to the
    equation none of whose variable inputs is non-finite (literal inputs such as the
    ``-inf`` of a support guard do not count): that equation makes the value."""
    env, producer = {}, {}

    def read(v):
        return _compat.literal_value(v) if _compat.is_literal(v) else env[v]
    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        outs = _compat.bind_eqn(eqn, [read(v) for v in eqn.invars])
        outs = outs if eqn.primitive.multiple_results else [outs]
        for v, o in zip(eqn.outvars, outs):
            env[v], producer[v] = o, eqn
    bad = [v for v in jaxpr.outvars if not _compat.is_literal(v) and not _finite(env[v])]
    seen = set()
    while bad:
        v = bad.pop()
        eqn = producer.get(v)
        if eqn is None or id(eqn) in seen:
            continue
        seen.add(id(eqn))
        ins = [u for u in eqn.invars if not _compat.is_literal(u) and not _finite(env[u])]
        if ins:
            bad.extend(ins)
            continue
        density, line = _describe(eqn)
        try:
            inner = _origin(*_compat.sub_jaxpr(eqn), [read(u) for u in eqn.invars])
        except KeyError:
            inner = (None, None)
        return inner[0] or density, inner[1] or line
    return None, None


def _describe(eqn):
    density = None
    for file, _ in reversed(_compat.user_frames(eqn)):
        parts = file.replace(os.sep, "/").split("/")
        if "stats" in parts[:-1] and "scipy" in parts[:-1]:
            density = f"jax.scipy.stats.{os.path.splitext(parts[-1])[0]}"
            break
    return density, _compat.source_line(eqn)


__all__ = ["check_positive_int", "check_tol", "check_key", "check_optimizer", "check_order",
           "trace_failure", "raise_data_error", "check_log_joint_on_data"]


# ------------------------------------------------- one call per entry point
def check_cavi_args(model, data, key, tol, max_iters, order):
    """The checks of :func:`vijax.cavi` before compiling (order may be None)."""
    check_positive_int("max_iters", max_iters)
    check_tol("tol", tol)
    if key is not None:
        check_key(key)
    if order is not None:
        check_order(order, model.supports)


def check_gradient_args(model, data, key, optimizer, num_samples, num_steps, tol, chunk):
    """The checks of :func:`vijax.fit_gradient` before compiling (optimizer may be None)."""
    check_key(key)
    if optimizer is not None:
        check_optimizer(optimizer)
    for name, v in (("num_samples", num_samples), ("num_steps", num_steps), ("chunk", chunk)):
        check_positive_int(name, v)
    check_tol("tol", tol)


@contextlib.contextmanager
def explained_by_data(model, data):
    """Run a fit; if it fails, look first for data outside a density's support or an
    invalid hyper-parameter (:func:`check_log_joint_on_data`), whose named error then
    replaces the fit's. A fit that succeeds pays nothing for the check (it evaluates
    the log joint on the data: a compile of its own)."""
    try:
        yield
    except (FitDivergedError, InvalidParameterError, DataError, NonConjugateError,
            ModelSpecError):
        check_log_joint_on_data(model, data)
        raise


def check_em_run_args(key, max_iters, tol):
    """The checks of :meth:`vijax.PreparedEM.run` (EM accepts ``max_iters=0``)."""
    check_positive_int("max_iters", max_iters, minimum=0)
    check_tol("tol", tol)
    if key is not None:
        check_key(key)


def nan_if_failed(result, posterior_of):
    """Under ``jit``/``vmap``: a lane whose fit failed (non-finite ELBO, or an update that
    left its family's domain) gets NaN natural parameters and posterior, never the
    initial or a half-updated one; ``diagnostics`` keep the flags.
    ``posterior_of(natural)`` rebuilds the posterior factors."""
    d = result.diagnostics
    failed = d["nonfinite"] | (d["invalid_latent"] >= 0)
    natural = jax.tree_util.tree_map(lambda x: jnp.where(failed, jnp.nan, x), result.natural)
    return result._replace(natural=natural, posterior=posterior_of(natural))


def raise_failed_update(result, order, what: str, unit: str, hint: str):
    """:class:`FitDivergedError` for a fit that failed: the latent (by its position in
    ``order``) whose update left its family's valid region, with the ``unit`` ("iteration",
    "step") it happened at; else a non-finite ELBO. ``what`` names the algorithm."""
    d = result.diagnostics
    bad = int(d["invalid_latent"])
    if bad >= 0:
        name, step = order[bad], int(d["invalid_iter"])
        raise FitDivergedError(
            f"{what} update of latent '{name}' at {unit} {step} left its family's valid "
            f"region {hint}", step=step, latent=name, last_state=result.natural)
    if bool(d["nonfinite"]) or not np.all(np.isfinite(np.asarray(result.elbo))):
        raise FitDivergedError(f"the ELBO became non-finite during {what}",
                               step=int(result.num_iters), last_state=result.natural)
