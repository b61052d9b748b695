"""Compile a model and its data into the multilinear form F.

``compile_model(model, data)`` traces ``log_joint`` to a jaxpr, walks it with the rule
table, matches every latent to an exponential family and returns a :class:`Compiled`
holding ``F(mean_params)`` with ``E_q[log p(x, z)] = F(E_q[T(z)])`` for mean-field q.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _compat
from vijax.conjugacy import terms as T
from vijax.conjugacy.matching import LatentInfo, match
from vijax.conjugacy.table import TABLE, SymbolicWalker
from vijax.conjugacy.values import Poison
from vijax.errors import ModelSpecError, NonConjugateError


def require_conjugate(infos, names=None):
    """Raise :class:`NonConjugateError` for the first latent (of ``names``) without a
    family, with the compiler's reason and source line."""
    for n in (names or infos):
        inf = infos[n]
        if inf.family is None:
            raise NonConjugateError(
                f"latent '{n}' has no conjugate update: {inf.reason}. Use "
                "vj.fit_gradient(model, data, key) for this model, or rewrite that term.",
                latent=n, primitive=inf.primitive, source=inf.source)


@dataclasses.dataclass
class Compiled:
    """The result of the conjugacy compiler for one model and data set."""

    infos: Dict[str, LatentInfo]
    const: Any
    terms: list
    sizes: dict

    @property
    def conjugate(self) -> bool:
        return all(i.family is not None for i in self.infos.values())

    def require_conjugate(self, names=None):
        require_conjugate(self.infos, names)

    def F(self, mean_params):
        """``E_q[log p]`` from the mean parameters ``{latent: {stat: array}}``."""
        total = jnp.asarray(self.const)
        for t in self.terms:
            total = total + T.eval_term(t, mean_params, self.sizes)
        return total

    def stats_at(self, latents):
        """The family statistics ``T(z)`` of a point ``z`` (so ``F(T(z)) = log p(x, z)``)."""
        out = {}
        for n, inf in self.infos.items():
            if inf.family is None:
                continue
            out[n] = point_statistics(inf, jnp.asarray(latents[n]))
        return out

    def stat_shapes(self):
        return {n: {s: i.stat_shape(s) for s in i.stats} for n, i in self.infos.items()
                if i.family is not None}


def _flatten(c: "Compiled"):
    leaves = [c.const]
    skeleton = []
    used = set()
    for t in c.terms:
        leaves.extend(arr for arr, _ in t.consts)
        atoms = []
        for a in t.atoms:
            if a.idx is not None:
                leaves.append(a.idx)
            atoms.append((a.latent, a.stat, a.labels, a.idx is not None, a.power))
            used.update(a.labels)
        used.update(t.out)
        for _, ls in t.consts:
            used.update(ls)
        skeleton.append((tuple(ls for _, ls in t.consts), tuple(atoms), t.out, t.src))
    sizes = tuple(sorted((l, c.sizes[l]) for l in used))
    aux = (tuple(c.infos.items()), sizes, tuple(skeleton))
    return leaves, aux


def _unflatten(aux, leaves):
    infos, sizes, skeleton = aux
    it = iter(leaves)
    const = next(it)
    terms = []
    for const_labels, atoms, out, src in skeleton:
        consts = tuple((next(it), ls) for ls in const_labels)
        ats = tuple(T.Atom(lat, st, labels, next(it) if has else None, power)
                    for lat, st, labels, has, power in atoms)
        terms.append(T.Term(consts, ats, out, src))
    return Compiled(dict(infos), const, terms, dict(sizes))


jax.tree_util.register_pytree_node(Compiled, _flatten, _unflatten)


def point_statistics(inf: LatentInfo, z):
    """Family statistics of one latent's value ``z`` (in the family's layout)."""
    kw = {"summed": True} if getattr(inf, "time_homogeneous", False) else {}
    return inf.family_class.point_stats(inf.to_family(z), inf.support, **kw)


def _latent_value(space, name, sup):
    """The initial symbolic value of a latent."""
    labels = space.fresh_many(sup.value_shape)
    if sup.kind == "categorical":
        K = sup.num_categories
        k = space.fresh(K)
        term = T.Term(((np.arange(K, dtype=np.float64), (k,)),),
                      (T.Atom(name, "onehot", labels + (k,)),), labels)
        return T.Sym(sup.shape, jnp.int32, (term,))
    dtype = np.dtype(np.int32) if sup.is_discrete else sup.dtype()
    return T.Sym(sup.value_shape, dtype, (T.Term((), (T.Atom(name, "x", labels),), labels),))


def trace(model, data):
    """The closed jaxpr of ``log_joint`` (latents and data abstract), with checks."""
    example = {n: s.canonical_point() for n, s in model.supports.items()}
    shapes = {n: tuple(v.shape) for n, v in example.items()}
    try:
        closed, out_shape = _compat.make_jaxpr(model.log_joint, example, data)
    except KeyError as e:
        from vijax.inference.checks import raise_data_error
        raise_data_error(model, data, e)  # a missing data key, not an undeclared latent
        key = e.args[0] if e.args else e
        raise ModelSpecError(
            f"the log joint reads latent {key!r}, which is not declared in supports "
            f"(declared: {sorted(model.supports)}). Add it, e.g. supports[{key!r}] = vj.real()."
        ) from e
    except ModelSpecError:
        raise
    except Exception as e:  # re-raise with the shapes it was traced with
        from vijax.inference.checks import raise_data_error
        raise_data_error(model, data, e)  # e.g. Python lists as data
        raise ModelSpecError(
            f"tracing the log joint failed with {type(e).__name__}: {e}. It was called with "
            f"latents of shapes {shapes} (declared supports); check that the supports' shapes "
            "match how the log joint indexes them.") from e
    leaves = jax.tree_util.tree_leaves(out_shape)
    if len(leaves) != 1 or tuple(leaves[0].shape) != () or \
            not jnp.issubdtype(leaves[0].dtype, jnp.floating):
        desc = [(tuple(l.shape), str(l.dtype)) for l in leaves]
        raise ModelSpecError(f"the log joint must return one float scalar; it returned {desc}")
    return closed


def compile_model(model, data) -> Compiled:
    """The compiled form F of ``model`` for ``data``.

    The analysis (trace, walk, match) sees only the data's shapes and dtypes and is
    cached per model and shapes (:func:`vijax.conjugacy.program.program_for`); the data
    enter through the program's data-to-constants computation.
    """
    from vijax.conjugacy.program import program_for
    return program_for(model, data).materialize(data)


def canonical_latents(model):
    """Every latent at its support's canonical interior point."""
    return {n: s.canonical_point() for n, s in model.supports.items()}


def locate_nonfinite(model, closed, data):
    """(density, file:line, the non-finite value made there) where the log joint's
    non-finite value arises at the canonical point (traced data count as unknown)."""
    from vijax.conjugacy import nonfinite
    jaxpr, consts = _compat.open_jaxpr(closed)
    args = jax.tree_util.tree_leaves((canonical_latents(model), data))
    return nonfinite.locate(jaxpr, consts, args)


def _raise_if_nonfinite(model, closed, data, out, sizes):
    """ModelSpecError when a latent-free part of the walked log joint is a concrete -inf
    or NaN: the log joint is then non-finite at every value of the latents, whatever
    the data (their values are not known here)."""
    from vijax.conjugacy import nonfinite
    found = nonfinite.nonfinite_constant(out, sizes)
    if found is not None:
        bad, src = found
        density, line, _ = locate_nonfinite(model, closed, data)
        if src is not None and line != src:  # the term's own line; its density if known
            density = density if line is None else None
            line = src
        raise ModelSpecError(nonfinite.message(bad, density, line, data_dependent=False))


def _compile(model, data, closed, timings=None) -> Compiled:
    """Walk the jaxpr with ``data`` (abstract values under a trace) and match families.

    Constants the log joint closes over are folded eagerly (``ensure_compile_time_eval``
    in the caller), so structural decisions are taken on them and on shapes only."""
    import time
    t0 = time.perf_counter()
    space = T.Space()
    from vijax.supports import default_float
    dtype = default_float()
    w = SymbolicWalker(TABLE, model.supports, space, dtype)
    lat_vals = {n: _latent_value(space, n, s) for n, s in model.supports.items()}
    args = jax.tree_util.tree_leaves((lat_vals, data), is_leaf=lambda x: isinstance(x, T.Sym))
    (out,) = w.run(closed, args)
    reasons = ()
    if isinstance(out, Poison):
        reasons = out.reasons
        value = out.good
    elif isinstance(out, T.Sym):
        value = out
    else:
        value = None
    _raise_if_nonfinite(model, closed, data, out, space.sizes)
    seen = set(value.latents()) if value is not None else set()
    for r in reasons:
        seen |= set(r.latents)
    unused = sorted(set(model.supports) - seen)
    if unused:  # -inf + f(z) folds to -inf: a non-finite part is the cause, if any
        density, line, bad = locate_nonfinite(model, closed, data)
        if bad is not None and line is not None:
            from vijax.conjugacy import nonfinite
            raise ModelSpecError(nonfinite.message(bad, density, line, data_dependent=False))
        raise ModelSpecError(
            f"latent(s) {unused} are declared in supports but the log joint does not depend "
            "on them. Remove them from supports, or use them in the log joint.")
    t1 = time.perf_counter()
    infos, const, terms = match(space, model.supports, value, reasons, seen)
    if timings is not None:
        timings["walk"] += t1 - t0
        timings["match"] += time.perf_counter() - t1
    return Compiled(infos, const, terms, space.sizes)
