"""From the walked terms to families and the multilinear function F.

Each term's atoms are grouped per latent and checked against the forms the registered
families of the latent's support accept (each family declares its ``walk_stats``, the
``(statistic, power)`` atoms it is conjugate to). Products of two first powers of one
latent are accepted where a family declares a ``pair_stat``; two atoms on different
elements need a family that ``couples_elements`` (the dense Gaussian), whose event spans
exactly the axes along which some such pair differs (the other axes are batch:
independent events). The registry then picks, per latent, the first family covering
every form used; any other pattern is reported as non-conjugate. Like terms are merged
(:mod:`~vijax.conjugacy.like_terms`), and F is their sum.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import jax.numpy as jnp
import numpy as np

from vijax.conjugacy import chains
from vijax.conjugacy import terms as T
from vijax.conjugacy.like_terms import (_fold_consts, merge_terms,  # noqa: F401
                                        simplify_terms)
from vijax.families import registry
from vijax.families.layout import EventLayout


def no_family_reason(support) -> str:
    """Why a latent of this support never gets a conjugate family."""
    kind = support.kind
    fallback = registry.default_family(kind)
    grads = "score-function" if support.is_discrete else "reparameterized"
    q = (f"a {fallback.__name__} q, {grads} gradients" if fallback is not None
         else "after registering a family for this support")
    return (f"{kind} latents (vj.{kind}()) have no conjugate update in this version; "
            f"marginalize it in the log joint, or fit by vj.fit_gradient ({q})")


class _Reject(Exception):
    def __init__(self, latent, detail, src):
        super().__init__(detail)
        self.latent, self.detail, self.src = latent, detail, src


@dataclasses.dataclass(unsafe_hash=True)
class LatentInfo:
    """What the compiler found for one latent.

    ``family`` is the registered name of the chosen family (None when not conjugate);
    :attr:`family_class` is the class.
    """

    name: str
    support: object
    family: str | None = None
    stats: tuple = ()
    reason: str | None = None
    source: str | None = None
    primitive: str | None = None
    event_axes: tuple = ()  # latent axes forming one dense event
    structure: str = chains.FACTORIZED  # "factorized", "dense" or "chain"
    structure_note: str | None = None  # why that structure
    chain_axes: tuple = ()  # a Gauss-Markov chain: (time axis, *state axes)
    #: a Markov chain whose terms are the same at every step: its pair statistic is
    #: summed over time (:func:`vijax.conjugacy.chains.sum_over_steps`)
    time_homogeneous: bool = False

    @property
    def family_class(self):
        """The family's class from the registry (None when not conjugate)."""
        return None if self.family is None else registry.get(self.family)

    @property
    def dense(self) -> bool:
        """The family is one dense event over :attr:`event_axes` (``couples_elements``),
        or a Gauss-Markov chain over them: its values have a :attr:`layout`."""
        return self.family is not None and (self.family_class.couples_elements
                                            or bool(self.chain_axes))

    @property
    def event_ndim(self):
        return len(self.event_axes)

    @property
    def layout(self) -> EventLayout:
        """Declared value shape <-> the family's ``batch_shape + (event_size,)`` (a
        Gauss-Markov chain's: ``batch_shape + (T, D)``)."""
        if self.chain_axes:
            from vijax.families.gauss_markov import ChainLayout
            return ChainLayout(tuple(self.support.shape), self.chain_axes[0],
                               tuple(self.chain_axes[1:]))
        return EventLayout(self.support.shape, self.event_axes)

    @property
    def batch_shape(self):
        return self.layout.batch_shape if self.event_axes else self.support.shape

    @property
    def event_size(self):
        return self.layout.event_size if self.event_axes else 1

    def stat_shape(self, stat):
        if self.chain_axes:
            return tuple(self.family_class.chain_stat_shape(self.layout, stat))
        custom = getattr(self.family_class, "latent_stat_shape", None)  # a chain
        if custom is not None:
            kw = {"homogeneous": True} if self.time_homogeneous else {}
            return tuple(custom(self.support, stat, **kw))
        nd = self.family_class.stat_event_ndims[stat]
        if self.dense:
            return tuple(self.batch_shape) + (self.event_size,) * nd
        return self.support.shape + (self.support.num_categories,) * nd

    def to_family(self, z):
        """A value of the declared shape in the family's layout."""
        return self.layout.to_family(z) if self.dense else z

    def to_value(self, x):
        """An array in the family's layout (a mean, a mode, a draw) in the declared
        shape (leading axes kept)."""
        return self.layout.to_value(x) if self.dense else x

    def value_of_sample(self, x):
        """A draw of the family as a value of the latent (declared shape; integers for
        a discrete support)."""
        x = self.to_value(x)
        return x.astype(jnp.int32) if self.support.is_discrete else x


def _form(name, stat, power):
    """How an atom reads in the user's terms: ``tau``, ``1/tau``, ``mu**2``, ``log(p)``."""
    if stat != "x":
        return f"{stat}({name})" + ("" if power == 1 else f"**{power:g}")
    if power == 1:
        return name
    return f"1/{name}" if power == -1 else f"{name}**{power:g}"


def _elements_over(w_sizes, a: T.Atom, shape, union):
    """The atom's flat index broadcast over the ``union`` labels."""
    idx = np.asarray(T.explicit_idx(a, shape))
    order = [a.labels.index(l) for l in union if l in a.labels]
    idx = np.transpose(idx, order) if idx.ndim else idx
    sh = [w_sizes[l] if l in a.labels else 1 for l in union]
    return np.broadcast_to(idx.reshape(sh), [w_sizes[l] for l in union])


def _classify(sizes, supports, t: T.Term):
    """Per latent: ('single', atom) or ('pair', atom_a, atom_b, union, ea, eb)."""
    groups = defaultdict(list)
    for a in t.atoms:
        groups[a.latent].append(a)
    out = {}
    for name, atoms in groups.items():
        sup = supports[name]
        kind = sup.kind
        forms = registry.walk_forms(kind)
        products = registry.accepts_products(kind)
        if len(atoms) == 1:
            a = atoms[0]
            if not forms:
                raise _Reject(name, no_family_reason(sup), t.src)
            if (a.stat, a.power) in forms:
                out[name] = ("single", a)
                continue
            allowed = ", ".join(_form(name, s, p) for s, p in forms)
            raise _Reject(name, f"'{name}' ({kind}) appears as {_form(name, a.stat, a.power)};"
                          f" a {kind} latent may appear only as {allowed}", t.src)
        if len(atoms) == 2 and products and all(
                a.stat == "x" and a.power == 1.0 for a in atoms):
            a, b = atoms
            if not (T.is_concrete(a.idx) and T.is_concrete(b.idx)):
                raise _Reject(name, f"two elements of '{name}' chosen by a data index are "
                              "multiplied together: which elements are coupled depends on "
                              "data values, so no family can be fixed from shapes alone. "
                              "Fit it by gradient, or index with a constant array", t.src)
            union = tuple(dict.fromkeys(a.labels + b.labels))
            ea = _elements_over(sizes, a, sup.shape, union)
            eb = _elements_over(sizes, b, sup.shape, union)
            out[name] = ("pair", a, b, union, ea, eb)
            continue
        chain = chains.classify_pair(sizes, sup, atoms)
        if chain is not None:  # one-hot statistics of two elements: a chain's transition
            out[name] = chain
            continue
        same = len(atoms) == 2 and atoms[0].labels == atoms[1].labels and (
            atoms[0].idx is None and atoms[1].idx is None)
        if products:
            raise _Reject(name, f"'{name}' appears in a product of {len(atoms)} factors "
                          f"(degree above 2 is not conjugate for a {kind} family)", t.src)
        if same:
            desc = " * ".join(_form(a.latent, a.stat, a.power) for a in atoms)
            raise _Reject(name, f"'{name}' appears as {desc} of one element: not a "
                          "statistic of an exponential family", t.src)
        raise _Reject(name, f"two elements of '{name}' are multiplied together: its "
                      "mean-field factor does not factorize over elements. Split the latent "
                      "into separate latents, or fit it by gradient", t.src)
    return out


def _event_axes(shape, pairs):
    """The smallest set of axes holding every coupled pair in one event: the axes along
    which some pair's two elements differ. Every pair then agrees on the other (batch)
    axes, so each pair lies within one event; no smaller set does, since leaving out an
    axis along which a pair differs splits that pair over two independent events."""
    axes = set()
    for ea, eb in pairs:
        ca, cb = np.unravel_index(ea, shape), np.unravel_index(eb, shape)
        axes.update(d for d in range(len(shape)) if np.any(ca[d] != cb[d]))
    return tuple(sorted(axes))


def _no_single_family(inf: LatentInfo, forms, where, coupled):
    """Set the reason of a latent whose forms no one family of its support holds: name
    two forms that no family has together, at the line of the second."""
    name, kind = inf.name, inf.support.kind
    fams = registry.conjugate_families(kind)
    best = max(fams, key=lambda c: len(forms & set(c.walk_stats)))
    extra = sorted(forms - set(best.walk_stats))
    if not extra:  # every form is held, but no family couples elements
        inf.reason = (f"elements of '{name}' are multiplied together, and no {kind} family "
                      "couples elements; fit it by gradient")
        inf.primitive = "mul"
        return
    e = extra[0]
    k = next((k for k in sorted(forms & set(best.walk_stats))
              if not any({k, e} <= set(c.walk_stats) for c in fams)), None)
    src_e, src_k = where.get((name, e)), where.get((name, k))
    names = ", ".join(c.__name__ for c in fams)
    first = "" if k is None else f" as {_form(name, *k)}" + (
        f" (at {src_k})" if src_k and src_k != src_e else "") + " and"
    inf.reason = (f"'{name}' appears both{first} as {_form(name, *e)}: no {kind} family "
                  f"({names}) has these statistics together, so its complete conditional "
                  "has no supported form" + (f" (at {src_e})" if src_e else ""))
    inf.source = src_e or src_k
    inf.primitive = "div" if e[1] < 0 else "mul"


def match(space, supports, value, reasons, all_latents):
    """Families per latent, and final terms (over family statistics)."""
    info = {n: LatentInfo(n, supports[n]) for n in supports}
    for r in reasons:
        for n in sorted(r.latents):
            if info[n].reason is None:
                info[n].reason = (f"'{r.primitive}' at {r.source or 'unknown line'}: {r.detail}")
                info[n].source, info[n].primitive = r.source, r.primitive
    terms = simplify_terms(space, list(value.terms) if value is not None else [])
    # pass 1: classify, find coupled pairs
    classified = []
    pairs = defaultdict(list)
    chain_pairs = defaultdict(list)  # latent -> [(ea, eb, source)]
    used = defaultdict(set)  # latent -> {(stat, power)}
    where = {}  # (latent, (stat, power)) -> source of a term that holds it
    for t in terms:
        if not t.atoms:
            classified.append((t, {}))
            continue
        try:
            c = _classify(space.sizes, supports, t)
        except _Reject as e:
            if info[e.latent].reason is None:
                info[e.latent].reason = e.detail + (f" (at {e.src})" if e.src else "")
                info[e.latent].source = e.src
                info[e.latent].primitive = "mul"
            continue
        classified.append((t, c))
        for name, entry in c.items():
            if entry[0] == "chain":
                chain_pairs[name].append((entry[4], entry[5], t.src))
                continue
            if entry[0] == "pair":
                _, a, b, union, ea, eb = entry
                if not np.array_equal(ea, eb):
                    pairs[name].append((ea, eb))
                used[name].add(("x", 2.0))
            else:
                key = (entry[1].stat, entry[1].power)
                used[name].add(key)
                where.setdefault((name, key), t.src)
    for name, inf in info.items():
        if inf.reason is not None:
            continue
        if not registry.conjugate_families(inf.support.kind):
            inf.reason = no_family_reason(inf.support)
            continue
        if chain_pairs.get(name):
            chains.decide(inf, chain_pairs[name])
            continue
        forms, coupled = used.get(name, set()), bool(pairs.get(name))
        if coupled and chains.gauss_decide(
                inf, pairs[name], _event_axes(inf.support.shape, pairs[name])):
            continue
        cls = registry.select(inf.support.kind, forms, coupled)
        if cls is None:
            _no_single_family(inf, forms, where, coupled)
            continue
        if cls.couples_elements:
            inf.event_axes = _event_axes(inf.support.shape, pairs[name])
            inf.structure = chains.DENSE
            inf.structure_note = inf.structure_note or (
                f"one dense event over axes {inf.event_axes}: terms multiply elements of "
                f"'{name}' along them")
        elif inf.structure_note is None:
            inf.structure_note = f"no term multiplies two elements of '{name}'"
        inf.family, inf.stats = cls.__name__, tuple(cls.stat_names)
    # pass 2: rewrite atoms onto final statistics
    const = 0.0
    final = []
    for t, c in classified:
        if not c:
            const = const + T.const_value(t, space.sizes)
            continue
        if any(info[n].family is None for n in c):
            continue
        variants = [((), t.consts)]  # a Gauss-Markov latent may split a term in two
        for name, entry in c.items():
            opts = (chains.gauss_final_atoms(info[name], entry) if info[name].chain_axes
                    else [(_final_atom(space.sizes, info[name], entry), None)])
            variants = [(ats + (atom,), cs if mask is None else cs + ((mask, entry[3]),))
                        for ats, cs in variants for atom, mask in opts]
        for atoms, consts in variants:
            final.append(T.compress(T.Term(consts, atoms, t.out, t.src), space.sizes))
    merged = [_fold_consts(space, T.compress(T._merge_diagonals(t), space.sizes), final=True)
              for t in merge_terms(space, final)]
    merged = chains.sum_over_steps(space.sizes, info, merged)  # homogeneous Markov chains
    shapes = {n: {s: i.stat_shape(s) for s in i.stats} for n, i in info.items() if i.family}
    merged = [t.with_(atoms=tuple(T.as_identity(a, shapes[a.latent][a.stat], space)
                                  for a in t.atoms)) for t in merged]
    return info, const, merged


def _final_atom(sizes, inf: LatentInfo, entry):
    """The walk atom on the chosen family's statistic (its entries in the family's
    layout for a dense family)."""
    cls = inf.family_class
    if inf.structure == chains.CHAIN:
        return chains.final_atom(sizes, inf, entry)
    if not cls.couples_elements:
        if entry[0] == "pair":
            _, a, b, union, ea, eb = entry
            return T.Atom(inf.name, cls.pair_stat, union, np.array(ea))
        a = entry[1]
        return T.Atom(inf.name, cls.walk_stats[(a.stat, a.power)], a.labels, a.idx)
    # element e of the latent is entry b * E + p of the statistic x (and (b, p, p') of
    # xxT), with (b, p) its batch index and event position in the family's layout
    x_stat, xx_stat = cls.walk_stats[("x", 1.0)], cls.pair_stat
    E = inf.event_size
    lay = inf.layout
    if entry[0] == "pair":
        _, a, b, union, ea, eb = entry
        ba, pa = lay.element_position(np.asarray(ea))
        _, pb = lay.element_position(np.asarray(eb))
        return T.Atom(inf.name, xx_stat, union, np.array(ba * E * E + pa * E + pb))
    a = entry[1]
    if a.power == 1.0:
        if lay.trailing:  # a reshape: element ids are statistic entries
            if a.idx is None and inf.event_ndim > 1:  # the event axes are flattened
                return T.Atom(inf.name, x_stat, a.labels, T.explicit_idx(a, inf.support.shape))
            return T.Atom(inf.name, x_stat, a.labels, a.idx)
        bi, p = lay.element_position(T.host(T.explicit_idx(a, inf.support.shape)))
        return T.Atom(inf.name, x_stat, a.labels, bi * E + p)
    bi, p = lay.element_position(T.host(T.explicit_idx(a, inf.support.shape)))
    return T.Atom(inf.name, cls.walk_stats[(a.stat, a.power)], a.labels,
                  bi * E * E + p * E + p)
