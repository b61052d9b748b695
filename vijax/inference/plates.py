"""The data's plate: which latents are local to an observation, which terms of F sum over it.

Stochastic VI needs, for a model ``log p(X, Z) = log p(beta) + sum_n log p(x_n, z_n | beta)``,

- the **plate**: the leading axis of size ``N`` shared by the data leaves (the largest
  leading dimension, as :func:`vijax.inference.sharding.plate_size`);
- the **local latents** ``z_n``: those whose leading axis is the plate (shape only);
  every other latent is **global**;
- which terms of the compiled form ``F`` are **per-observation** (sum over the plate,
  scaled by ``N / B`` on a minibatch of ``B``) and which are the prior (unscaled).

The terms are classified from structure only, never from the plate's data values: the
model is compiled for minibatches of ``B``, ``2B`` and ``N`` rows (shapes only); a term
whose labels or constants change size with the batch is a plate term, and the program
that computes F's constants from the data is read in lockstep across the three sizes
(:mod:`vijax.inference.plate_sums`) to find which plate-free constants are sums over
observations (``t * sum_n x_n^2``, the count ``N / 2`` of ``log t``), possibly merged
with a prior part (``(a0 - 1 + N / 2) log t``). Refused (:class:`ModelSpecError`, naming
the latents and the line): a term that pairs two plate elements (``(sum_n x_n)^2`` times a
statistic, ``x_n * sum_m x_m``) or reads a reduction that is not a sum over observations
(``mu * jnp.mean(x)``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax.conjugacy.program import data_spec, program_for
from vijax.errors import DataError, ModelSpecError
from vijax.inference import plate_sums
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


class Split(NamedTuple):
    """How a minibatch's ``F`` is scaled to estimate the whole data's.

    ``kinds`` per term: ``"plate"`` (a sum over observations: times ``N / B``),
    ``"prior"`` (as it is), or ``("mixed", j, i)``: its ``j``-th constant is
    ``p + sum_n g(x_n)`` with prior part ``p = priors["terms"][i]`` (becomes
    ``p + (N / B)(c - p)``). ``priors["const"]``: the prior part of F's constant."""

    kinds: tuple
    priors: dict


def _probe_sizes(plate: Plate, b: int):
    n = plate.n
    return (b, 2 * b, n if n not in (b, 2 * b) else 3 * b)


def split_terms(model, first_batch, plate: Plate, b: int) -> Split:
    """Classify every term of the minibatch program from structure (see
    :mod:`vijax.inference.plate_sums`): the programs for ``B``, ``2B`` and ``N`` (or
    ``3B``) rows are traced on the data's shapes and walked in lockstep; values of
    ``first_batch`` are read only for its leaves without the plate.

    Raises ModelSpecError, naming the latents and the line, for a term that pairs two
    observations or reads the data through a reduction that is not a sum over them."""
    sizes = _probe_sizes(plate, b)
    fns, specs, boxes = [], [], []
    for s in sizes:
        prog = batch_program(model, first_batch, plate, s)
        leaves, treedef = jax.tree_util.tree_flatten(batch_spec(first_batch, plate, s))
        box = {}
        fns.append(_constants_fn(prog, treedef, box))
        specs.append(leaves)
        boxes.append(box)
    try:
        outs = plate_sums.classify(fns, specs, plate.carries,
                                   jax.tree_util.tree_leaves(first_batch), sizes)
    except plate_sums.Structure as e:
        raise ModelSpecError(
            f"svi: the model compiles to different programs for minibatches of "
            f"{', '.join(map(str, sizes))} observations ({e}); pick another batch_size, "
            "or fit with vj.cavi") from e
    comp_b, comp_2b = boxes[0]["comp"], boxes[1]["comp"]
    is_plate = classify_terms(comp_b, comp_2b, b)
    k, kinds, term_priors = 1, [], []
    for t, p in zip(comp_b.terms, is_plate):
        nc, ni = len(t.consts), sum(a.idx is not None for a in t.atoms)
        cs, ix = outs[k:k + nc], outs[k + nc:k + nc + ni]
        k += nc + ni
        allowed = (plate_sums.FREE, plate_sums.ROW) if p else (plate_sums.FREE,)
        if any(v.cls not in allowed for v in ix):
            _refuse(t, "reads the data through an index that is not per observation")
        if p:
            if any(v.cls not in allowed for v in cs):
                _refuse(t, "pairs different observations (a per-observation value times a "
                        "reduction of the data over the plate)")
            kinds.append("plate")
            continue
        sums = [j for j, v in enumerate(cs) if v.cls != plate_sums.FREE]
        if not sums:
            kinds.append("prior")
        elif len(sums) == 1 and cs[sums[0]].cls == plate_sums.SUM:
            kinds.append(("mixed", sums[0], len(term_priors)))
            term_priors.append(cs[sums[0]].val)
        else:
            _refuse(t, "reads the data through a reduction over the plate that is not a "
                    "sum over observations (e.g. jnp.mean(x) or jnp.sum(x) ** 2)")
    const = outs[0]
    if const.cls not in (plate_sums.FREE, plate_sums.SUM):
        raise ModelSpecError(
            "svi: the data-only part of the log joint (terms without latents) is not a sum "
            "over observations (e.g. jnp.mean(x) or jnp.sum(x) ** 2), so a minibatch "
            "cannot estimate the ELBO by rescaling. Write the log joint as a sum over "
            "observations, or fit with vj.cavi.")
    return Split(tuple(kinds), {"const": const.val, "terms": tuple(term_priors)})


def _constants_fn(prog, treedef, box):
    """data leaves -> [F's constant, then per term its constants and index arrays]."""
    def fn(*leaves):
        comp = prog.materialize(jax.tree_util.tree_unflatten(treedef, list(leaves)))
        box["comp"] = comp  # read for its structure (labels, shapes) only
        out = [comp.const]
        for t in comp.terms:
            out += [c for c, _ in t.consts] + [a.idx for a in t.atoms if a.idx is not None]
        return out
    return fn


def _refuse(term, why):
    raise ModelSpecError(
        f"svi: latent(s) {sorted(term.latents())} cannot be classified: a term of F "
        f"(src {term.src}) {why}, so it is not a sum over the data's plate and a minibatch "
        "cannot estimate it by rescaling. Write the log joint as a sum over observations, "
        "or fit with vj.cavi.")
