"""The data's plate: which latents are local to an observation, which terms of F sum over it.

Stochastic VI needs, for a model ``log p(X, Z) = log p(beta) + sum_n log p(x_n, z_n | beta)``,

- the **plate**: the leading axis of size ``N`` shared by the data leaves (the largest
  leading dimension, as :func:`vijax.inference.sharding.plate_size`);
- the **local latents** ``z_n``: those whose leading axis is the plate (shape only);
  every other latent is **global**;
- which terms of the compiled form ``F`` are **per-observation** (sum over the plate,
  scaled by ``N / B`` on a minibatch of ``B``) and which are the prior (unscaled).

The terms are classified from structure only, never from data values: the model is
compiled for minibatches of two sizes (``B`` and ``2B``, shapes only) and a term whose
labels or constants change size with the batch is a plate term. Refused
(:class:`ModelSpecError`, naming the latents):

- a term that pairs two different plate elements (``sum_{n,m}``; e.g. ``(sum_n x_n)^2``
  times a latent statistic): its sum is not additive over observations;
- a plate-free term whose constant was reduced from plate-carrying data before it met a
  latent (found by a reachability walk of the data-to-constants jaxpr), unless it is a
  sum over observations: such a term (``t * sum_n x_n^2`` in a normal model) must double
  when every observation of a probe minibatch is duplicated (random float data, the
  integer leaves of the first minibatch); ``mu * jnp.mean(x)`` or ``(sum_n x_n)^2``
  terms do not and are refused.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _compat
from vijax.conjugacy.program import data_spec, program_for
from vijax.errors import DataError, ModelSpecError
from vijax.inference.sharding import plate_size
from vijax.model import Model


@dataclasses.dataclass(frozen=True)
class Plate:
    """The plate of a model and data set.

    Attributes:
        n: number of observations ``N`` (the plate size).
        carries: per data leaf (flattened order), whether its leading axis is the plate.
        local: latents whose leading axis is the plate (updated per minibatch).
        global_: every other latent.
    """

    n: int
    carries: Tuple[bool, ...]
    local: Tuple[str, ...]
    global_: Tuple[str, ...]


def _shape(x):
    return tuple(getattr(x, "shape", np.shape(x)))


def find_plate(model, data) -> Plate:
    """The plate of ``data`` and the local/global split of ``model``'s latents (shapes
    only). Raises :class:`DataError` when no data leaf has a leading axis."""
    n = plate_size(data)
    if n is None:
        raise DataError("svi: no data leaf has a leading (plate) axis, so there is nothing "
                        "to subsample; fit this model with vj.cavi(model, data)")
    leaves = jax.tree_util.tree_leaves(data)
    carries = tuple(len(_shape(l)) >= 1 and _shape(l)[0] == n for l in leaves)
    local = tuple(k for k, s in model.supports.items() if s.shape and s.shape[0] == n)
    glob = tuple(k for k in model.supports if k not in local)
    return Plate(int(n), carries, local, glob)


def batch_model(model, plate: Plate, b: int) -> Model:
    """``model`` with every local latent's leading axis resized to ``b``."""
    sups = dict(model.supports)
    for k in plate.local:
        sups[k] = dataclasses.replace(sups[k], shape=(b,) + tuple(sups[k].shape[1:]))
    return Model(model.log_joint, sups, model.blocks)


def batch_spec(data, plate: Plate, b: int):
    """The data's shapes with every plate-carrying leaf's leading axis resized to ``b``."""
    leaves, treedef = jax.tree_util.tree_flatten(data_spec(data))
    out = [jax.ShapeDtypeStruct((b,) + tuple(s.shape[1:]), s.dtype) if c else s
           for s, c in zip(leaves, plate.carries)]
    return jax.tree_util.tree_unflatten(treedef, out)


def take(data, plate: Plate, idx):
    """The rows ``idx`` of every plate-carrying leaf (others unchanged)."""
    leaves, treedef = jax.tree_util.tree_flatten(data)
    out = [jnp.take(jnp.asarray(l), idx, axis=0) if c else l
           for l, c in zip(leaves, plate.carries)]
    return jax.tree_util.tree_unflatten(treedef, out)


def batch_program(model, data, plate: Plate, b: int):
    """The compiled program of the minibatch model for minibatches of ``b`` rows."""
    try:
        return program_for(batch_model(model, plate, b), batch_spec(data, plate, b))
    except ModelSpecError as e:
        raise ModelSpecError(
            f"svi: the model could not be compiled for a minibatch of {b} observations with "
            f"local latents {list(plate.local)} (leading axis {plate.n} -> {b}): {e}. A latent "
            "whose leading axis only happens to equal the number of observations is read as "
            "local; rename its axis order, or fit with vj.cavi.") from e


# --------------------------------------------------------------------------- terms

def _term_shapes(term, sizes):
    atoms = tuple((a.latent, a.stat, a.idx is not None, tuple(sizes[l] for l in a.labels))
                  for a in term.atoms)
    consts = tuple(tuple(np.shape(c)) for c, _ in term.consts)
    return atoms, consts


def classify_terms(comp_b, comp_2b, b: int):
    """Per term of ``comp_b`` (compiled for ``b`` rows): whether it sums over the plate.

    ``comp_2b`` is the same model compiled for ``2b`` rows; a term is a plate term when an
    atom's or a constant's axis changes size between the two. Raises ModelSpecError for a
    structure that differs between the sizes or a term pairing two plate elements."""
    if len(comp_b.terms) != len(comp_2b.terms):
        raise ModelSpecError(
            f"svi: the compiled form has {len(comp_b.terms)} terms for minibatches of {b} and "
            f"{len(comp_2b.terms)} for {2 * b}; pick another batch_size (>= 2)")
    plate = []
    for tb, t2 in zip(comp_b.terms, comp_2b.terms):
        (ab, cb), (a2, c2) = _term_shapes(tb, comp_b.sizes), _term_shapes(t2, comp_2b.sizes)
        same = len(ab) == len(a2) and len(cb) == len(c2) and all(
            x[:3] == y[:3] and len(x[3]) == len(y[3]) for x, y in zip(ab, a2))
        if not same:
            raise ModelSpecError(
                f"svi: a term of latents {sorted(tb.latents())} compiles differently for "
                f"minibatches of {b} and {2 * b}; pick another batch_size (>= 2)")
        labels = set()  # the 2b-program's labels that change size: the plate's
        for x, y, at in zip(ab, a2, t2.atoms):
            labels.update(l for l, s1, s2 in zip(at.labels, x[3], y[3]) if s1 != s2)
        for s1, (arr, ls) in zip(cb, t2.consts):
            s2 = tuple(np.shape(arr))
            if len(s1) == len(s2):
                labels.update(l for l, d1, d2 in zip(ls, s1, s2) if d1 != d2)
            else:  # a size-1 axis dropped at b == 1: the 2b-sized axes are the plate's
                labels.update(l for l, d in zip(ls, s2) if d == 2 * b)
        if len(labels) > 1:
            names = sorted(tb.latents())
            raise ModelSpecError(
                f"svi: latent(s) {names} cannot be classified: a term of F pairs different "
                f"observations (src {tb.src}), so it is not a sum over the data's plate and "
                "cannot be estimated from a minibatch. Fit this model with vj.cavi.")
        plate.append(bool(labels))
    return tuple(plate)


def _reach(jaxpr, deps_in):
    """Per outvar of ``jaxpr``: the set of inputs (ids) it depends on (call-like
    equations entered, every other equation all-to-all)."""
    env = {}
    for v, d in zip(jaxpr.invars, deps_in):
        env[v] = d

    def read(v):
        return frozenset() if _compat.is_literal(v) else env.get(v, frozenset())

    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        try:
            inner, _ = _compat.sub_jaxpr(eqn)
            inner_ok = len(inner.invars) == len(ins) and len(inner.outvars) == len(eqn.outvars)
        except (KeyError, AttributeError):
            inner_ok = False
        if inner_ok:
            outs = _reach(inner, ins)
        else:
            u = frozenset().union(*ins) if ins else frozenset()
            outs = [u] * len(eqn.outvars)
        for v, d in zip(eqn.outvars, outs):
            env[v] = d
    return [read(v) for v in jaxpr.outvars]


def reduced_terms(prog, spec, plate: Plate, is_plate):
    """Indices of the plate-free terms whose constants depend on plate-carrying data
    leaves: the walker summed the data over the plate before they met a latent (e.g.
    ``sum_n x_n^2`` times a precision). Found by a reachability walk of the
    data-to-constants jaxpr (structure only)."""
    leaves, treedef = jax.tree_util.tree_flatten(spec)

    def fn(*ls):
        comp = prog.materialize(jax.tree_util.tree_unflatten(treedef, list(ls)))
        return [[c for c, _ in t.consts] + [a.idx for a in t.atoms if a.idx is not None]
                for t in comp.terms]

    closed, shapes = _compat.make_jaxpr(fn, *leaves)
    jaxpr, _ = _compat.open_jaxpr(closed)
    deps = _reach(jaxpr, [frozenset([i]) if c else frozenset()
                          for i, c in enumerate(plate.carries)])
    out, k = [], 0
    for i, (per_term, p) in enumerate(zip(shapes, is_plate)):
        m = len(per_term)
        if not p and any(deps[k + j] for j in range(m)):
            out.append(i)
        k += m
    return tuple(out)


def probe_data(batch, plate: Plate, key):
    """``batch`` with its plate-carrying float leaves replaced by draws from U(0.5, 1.5)
    (a generic point: identities that hold there hold for all data with probability 1);
    integer leaves (indices, counts) are kept."""
    leaves, treedef = jax.tree_util.tree_flatten(batch)
    out = []
    for i, (l, c) in enumerate(zip(leaves, plate.carries)):
        l = jnp.asarray(l)
        if c and jnp.issubdtype(l.dtype, jnp.floating):
            l = jax.random.uniform(jax.random.fold_in(key, i), l.shape, l.dtype, 0.5, 1.5)
        out.append(l)
    return jax.tree_util.tree_unflatten(treedef, out)


def check_reduced(comp_b, comp_2b, index, stats):
    """A reduced term (see :func:`reduced_terms`) is a sum over observations iff it
    doubles when every observation is duplicated (checked at the generic probe point
    and the mean parameters ``stats``); returns the indices that do, refuses the rest."""
    from vijax.conjugacy import terms as T
    for i in index:
        t1, t2 = comp_b.terms[i], comp_2b.terms[i]
        v1 = jnp.sum(T.eval_term(t1, stats, comp_b.sizes))
        v2 = jnp.sum(T.eval_term(t2, stats, comp_2b.sizes))
        eps = float(jnp.finfo(jnp.result_type(v1)).eps)
        if not bool(jnp.abs(v2 - 2 * v1) <= 1e3 * eps * (jnp.abs(v2) + 1)):
            raise ModelSpecError(
                f"svi: latent(s) {sorted(t1.latents())} cannot be classified: a term of F "
                f"(src {t1.src}) reads the data through a reduction over the plate that is "
                "not a sum over observations (e.g. jnp.mean(x) or jnp.sum(x) ** 2), which a "
                "minibatch cannot estimate by rescaling. Write the log joint as a sum over "
                "observations, or fit with vj.cavi.")
    return tuple(index)
