"""A model analysed once for data of given shapes: the compiled program.

``vj.compile(model, data_like)`` traces the log joint, walks its jaxpr and matches
families with the data as **abstract values** (shapes and dtypes, never values). What the
walk does to the data (products such as ``x^2`` or ``X^T X``, one-hot tables of index
data) is recorded as a small jaxpr, ``data -> constants of F``, compiled by XLA once.
For any data set of the same shapes, :meth:`Program.materialize` runs that jaxpr and
returns the :class:`~vijax.conjugacy.compile.Compiled` form ``F`` (no new analysis, no
new XLA compile). Every fitter accepts a program in place of a model, and
:func:`program_for` caches programs by (model, data shapes and dtypes), so a second fit
on new data of the same shapes neither walks nor compiles again.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _compat, _xla
from vijax.families.registry import FAMILIES
from vijax.supports import default_float


def data_spec(data):
    """The data pytree as ``jax.ShapeDtypeStruct`` leaves (shapes and dtypes only)."""
    def one(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        aval = getattr(x, "aval", None)
        if aval is not None:
            return jax.ShapeDtypeStruct(tuple(aval.shape), aval.dtype)
        return jax.ShapeDtypeStruct(tuple(np.shape(x)), jnp.result_type(x))
    return jax.tree_util.tree_map(one, data)


def is_abstract(data) -> bool:
    """Whether ``data`` has ``jax.ShapeDtypeStruct`` leaves (shapes without values)."""
    return any(isinstance(l, jax.ShapeDtypeStruct) for l in jax.tree_util.tree_leaves(data))


def compile(model, data_like) -> "Program":  # noqa: A001 - the public name vj.compile
    """Analyse ``model`` once for data shaped like ``data_like`` (arrays or
    ``jax.ShapeDtypeStruct`` leaves) and return the reusable :class:`Program`.

    Example:
        >>> import jax, jax.numpy as jnp, vijax as vj
        >>> from jax.scipy import stats
        >>> m = vj.Model(lambda z, x: stats.norm.logpdf(z["mu"]) +
        ...              stats.norm.logpdf(x, z["mu"]).sum(), {"mu": vj.real()})
        >>> prog = vj.compile(m, jax.ShapeDtypeStruct((5,), jnp.float32))
        >>> prog.infos["mu"].family
        'Normal'
    """
    return program_for(model, data_like)


def _spec_key(spec):
    leaves, treedef = jax.tree_util.tree_flatten(spec)
    return treedef, tuple((tuple(l.shape), np.dtype(l.dtype).name) for l in leaves)


class Program:
    """The analysis of one model for data of one set of shapes and dtypes.

    Attributes:
        model: the :class:`vijax.Model`.
        spec: the data pytree as ``jax.ShapeDtypeStruct`` leaves.
        infos: latent -> :class:`~vijax.conjugacy.matching.LatentInfo` (family,
            statistics, or the reason it is not conjugate, with the source line).
        timings: seconds spent in ``trace`` (the log joint to a jaxpr), ``walk`` (the
            rule table), ``match`` (families, like-term merging) and ``xla_compile``
            (the data-to-constants program; filled in on first use).
    """

    def __init__(self, model, spec, infos, treedef, closed, timings):
        self.model = model
        self.spec = spec
        self.infos = infos
        self.timings = timings
        self._treedef = treedef
        self._jaxpr = closed.jaxpr
        # on the device once; placed, not staged (jnp.asarray of a numpy constant compiles
        # one XLA program per shape under ensure_compile_time_eval)
        self._consts = [jax.device_put(c) if isinstance(c, (np.ndarray, np.generic))
                        else jnp.asarray(c) for c in closed.consts]
        self._data_def = jax.tree_util.tree_structure(spec)
        self._fn = _xla.jit(self._evaluate)  # XLA's compile options of vijax's programs
        self._exe = {}  # executables by the data leaves' shardings (sharded data: one each)
        self._dependent = None  # data_dependent, on first use

    # ------------------------------------------------------------------ the model
    @property
    def log_joint(self):
        return self.model.log_joint

    @property
    def supports(self):
        return self.model.supports

    @property
    def blocks(self):
        return self.model.blocks

    def __call__(self, latents, data):
        return self.model.log_joint(latents, data)

    # ------------------------------------------------------------------ analysis
    @property
    def conjugate(self) -> bool:
        return all(i.family is not None for i in self.infos.values())

    def require_conjugate(self, names=None):
        """Raise :class:`NonConjugateError` for the first latent without a family."""
        from vijax.conjugacy.compile import require_conjugate
        require_conjugate(self.infos, names)

    @property
    def analysis_s(self) -> float:
        return float(sum(v for v in self.timings.values() if v is not None))

    def __repr__(self):
        fams = {n: i.family for n, i in self.infos.items()}
        return f"Program({self.model!r}, families={fams})"

    # ------------------------------------------------------------------ data
    @property
    def data_dependent(self) -> tuple:
        """One bool per leaf of ``F`` (flattened): whether it depends on the data.

        Read off the data program's jaxpr, from its structure only: an equation with a
        data-dependent input makes every output data-dependent (a conservative rule: a
        leaf marked independent never reads the data, whatever its values). Batched fits
        keep the independent leaves (priors, constants of the model) unbatched."""
        if self._dependent is None:
            dep = set(self._jaxpr.invars)
            for eqn in self._jaxpr.eqns:
                if any(not _compat.is_literal(v) and v in dep for v in eqn.invars):
                    dep.update(eqn.outvars)
            self._dependent = tuple(not _compat.is_literal(v) and v in dep
                                    for v in self._jaxpr.outvars)
        return self._dependent

    def batch_axes(self) -> tuple:
        """One batch axis per leaf of ``F`` (flattened): ``0`` where it depends on the
        data, ``None`` where not (the ``in_axes``/``out_axes`` of a batch of data sets'
        constants, as a flat list: :meth:`from_leaves` rebuilds ``F``)."""
        return tuple(0 if d else None for d in self.data_dependent)

    def from_leaves(self, leaves):
        """``F`` from its flattened leaves (the inverse of ``tree_leaves(F)``)."""
        return jax.tree_util.tree_unflatten(self._treedef, list(leaves))

    def _evaluate(self, consts, leaves):
        return _compat.eval_jaxpr(self._jaxpr, consts, *leaves)

    def _check(self, data):
        leaves, treedef = jax.tree_util.tree_flatten(data)
        if treedef != self._data_def:
            raise _mismatch(f"data has structure {treedef}, the program was compiled for "
                            f"{self._data_def}")
        specs = jax.tree_util.tree_leaves(self.spec)
        out = []
        for i, (x, s) in enumerate(zip(leaves, specs)):
            shape = tuple(x.aval.shape) if hasattr(x, "aval") else tuple(np.shape(x))
            if shape != tuple(s.shape):
                raise _mismatch(f"data leaf {i} has shape {shape}, the program was compiled "
                                f"for {tuple(s.shape)}")
            if _compat.is_tracer(x) or (isinstance(x, jax.Array) and x.dtype == s.dtype):
                out.append(x)  # kept where it is (split over devices or processes)
            else:
                out.append(jnp.asarray(x, s.dtype))
        return out

    def materialize(self, data):
        """The compiled form ``F`` for ``data`` (same shapes as the program's spec).

        Data split over devices (or over processes, ``jax.distributed``) stay split: one
        executable per placement of the data leaves, whose plate sums (``X^T X``, counts)
        are all-reduced by XLA; no value is read on the host."""
        leaves = self._check(data)
        if any(_compat.is_tracer(l) for l in leaves):
            out = self._fn(self._consts, leaves)
        else:
            where = tuple(getattr(l, "sharding", None) for l in leaves)
            exe = self._exe.get(where)
            if exe is None:
                t0 = time.perf_counter()
                exe = self._exe[where] = self._fn.lower(self._consts, leaves).compile()
                if self.timings["xla_compile"] is None:
                    self.timings["xla_compile"] = time.perf_counter() - t0
            out = exe(self._consts, leaves)
        return jax.tree_util.tree_unflatten(self._treedef, out)


def _mismatch(msg):
    from vijax.errors import DataError
    return DataError(msg + "; compile a program for these shapes with vj.compile(model, data)")


def build(model, data) -> Program:
    """Analyse ``model`` for data shaped like ``data`` (arrays or ShapeDtypeStructs)."""
    from vijax.conjugacy import fused
    from vijax.conjugacy.compile import _compile, trace
    spec = data_spec(data)
    timings = {"trace": 0.0, "walk": 0.0, "match": 0.0, "xla_compile": None}
    t0 = time.perf_counter()
    closed = trace(model, spec)
    timings["trace"] = time.perf_counter() - t0
    leaves_spec, data_def = jax.tree_util.tree_flatten(spec)
    box = {}

    def run(*leaves):
        d = jax.tree_util.tree_unflatten(data_def, leaves)
        with jax.ensure_compile_time_eval():
            comp = _compile(model, d, closed, timings)
            comp = fused.merge_data_constants(comp)  # x_n x_n^T etc.: once per data set
        out, box["treedef"] = jax.tree_util.tree_flatten(comp)
        box["infos"] = comp.infos
        return out

    staged = jax.make_jaxpr(run)(*leaves_spec)
    return Program(model, spec, box["infos"], box["treedef"], staged, timings)


def _model_key(model):
    return (model.log_joint, tuple(sorted(model.supports.items())),
            tuple(tuple(b) for b in model.blocks))


_CACHE: "collections.OrderedDict[Any, Program]" = collections.OrderedDict()
_CACHE_SIZE = 64


def program_for(model_or_program, data) -> Program:
    """The cached program of ``model`` for data of these shapes (built on first use).

    A :class:`Program` passed in is returned as it is (after a shape check on use)."""
    if isinstance(model_or_program, Program):
        return model_or_program
    model = model_or_program
    # the family registry is part of the key: registering a family changes the analysis
    key = (_model_key(model), _spec_key(data_spec(data)), str(default_float()),
           tuple((n, id(c)) for n, c in FAMILIES.items()))
    prog = _CACHE.get(key)
    if prog is not None:
        _CACHE.move_to_end(key)
        return prog
    # built eagerly even when the call is traced (a user's jit): the program outlives the
    # trace, so none of its constants may be a tracer of it
    with jax.ensure_compile_time_eval():
        prog = build(model, data)
    _CACHE[key] = prog
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return prog


_GENERATION = [0]  # counts clear_cache calls: caches built on programs key on it


def generation() -> int:
    """How many times :func:`clear_cache` ran (a cache of programs elsewhere, e.g.
    ``vj.batch_cavi``'s, keys on it so that a clear reaches it too)."""
    return _GENERATION[0]


def clear_cache():
    """Forget every cached program (they are rebuilt on next use)."""
    _CACHE.clear()
    _GENERATION[0] += 1
